"""Architecture: any registered model's layers, parameters and FLOPs, and a plain block drawn next to a residual block."""
import altair as alt
import pandas as pd
import streamlit as st

from pages.common import NET_COLORS, header, linear_ticks, relabelled, show_chart
from resnet_core import zoo
from resnet_core.models import build_model, list_models, model_info

FAMILIES = {"cifar": "CIFAR 6n+2", "cifar-wide": "CIFAR ResNet-18/34", "imagenet": "ImageNet, 224x224"}
# The shortcut's label, in short lines: one long line widened the residual diagram, which Streamlit then shrank to
# fit its column until its text was 7 px high beside the plain one's 11.
SHORTCUTS = {"A": ["identity x", "(where the shape changes:", "stride 2, zero-padded)"],
             "B": ["identity x", "(where the shape changes:", "1x1 projection, stride 2)"]}
COUNTS = {"params": "parameters", "gflops": "FLOPs"}  # zoo.paper_totals' keys, as the caption names them


def architecture_ui() -> str:
    names = list_models()
    with st.sidebar:
        return st.selectbox("Model", names, index=names.index("resnet56"),
                            format_func=lambda n: f"{n}  ({FAMILIES[model_info(n)['family']]})")


@st.cache_data(show_spinner="Tracing the model...", max_entries=16)
def layers(name: str) -> tuple[pd.DataFrame, str, int]:
    """Layer table, block type and first-stage width of a registered model."""
    config = build_model(name).config
    return zoo.architecture_frame(name), config["block"], config["widths"][0]


def block_diagram(block: str, width: int, residual: bool, shortcut: str) -> str:
    """Graphviz DOT of one block: its weight layers in order, with the shortcut and the addition if residual."""
    if block == "Bottleneck":
        convs = [f"1x1 conv, {width}", f"3x3 conv, {width}", f"1x1 conv, {4 * width}"]
    else:
        convs = [f"3x3 conv, {width}", f"3x3 conv, {width}"]
    fill = NET_COLORS.range[1] if residual else NET_COLORS.range[0]
    ink = "white" if residual else "black"  # white 11 px text on the orange was faint (3.7:1); black is 5.7:1
    lines = ["digraph {", "rankdir=TB; bgcolor=transparent; node [fontname=Helvetica, fontsize=11];",
             'x [label="x", shape=plaintext]; out [label="output", shape=plaintext];',
             f'node [shape=box, style="rounded,filled", fillcolor="{fill}", fontcolor={ink}];']
    chain = ["x"]
    for i, conv in enumerate(convs):
        last = i == len(convs) - 1
        lines.append(f'c{i} [label="{conv}\\nBN{"" if last else ", ReLU"}"];')
        chain.append(f"c{i}")
    if residual:
        label = "".join(f"  {line}\\l" for line in SHORTCUTS[shortcut])  # left-aligned lines, clear of the edge
        lines += ['add [label="+", shape=circle, style=filled, fillcolor=white, fontcolor=black, fontsize=16];',
                  'relu [label="ReLU", shape=box, style=rounded, fontcolor=black];',
                  f'x -> add [label="{label}", style=dashed, fontsize=10];']
        chain += ["add", "relu"]
    else:
        lines.append('relu [label="ReLU", shape=box, style=rounded, fontcolor=black];')
        chain.append("relu")
    lines += [" -> ".join(chain + ["out"]) + ";", "}"]
    return "\n".join(lines)


header("Architecture", "With identity shortcuts (option A, the paper's CIFAR nets) a residual block is a plain block "
       "plus one shortcut: the same layers, parameters and FLOPs, and a single addition more. Projection shortcuts "
       "(option B) add a 1x1 convolution where the shape changes.")
st.caption("The paper's CIFAR nets have 6n+2 weight layers: a first 3x3 convolution, three stages of n blocks of two "
           "3x3 convolutions (16, 32 and 64 filters; 6n layers in all) and the final fully connected layer. n = 3, 5, "
           "7, 9, 18 and 200 give 20, 32, 44, 56, 110 and 1202 layers.")
name = architecture_ui()
info = model_info(name)
table, block, width = layers(name)
shortcut = info["default_shortcut"]

plain_side, residual_side = st.columns(2)
plain_side.markdown(f"**Plain {block}** (first stage)")
plain_side.graphviz_chart(block_diagram(block, width, False, shortcut))
residual_side.markdown(f"**Residual {block}**: F(x) + x")
residual_side.graphviz_chart(block_diagram(block, width, True, shortcut))

size = "224x224" if info["family"] == "imagenet" else "32x32"
params, macs = int(table["params"].sum()), int(table["macs"].sum())
paper = zoo.paper_totals(name)  # under each count, in grey, the paper's where it gives one


def paper_line(key: str) -> dict:
    """The paper's figure under our count, attributed in a few words: a longer description (which table, whose
    figure) was cut to 'He et al. (2016), Table 6:...' by the metric's width; the caption below gives it whole."""
    if key not in paper:
        return {}
    return dict(delta=f"paper: {paper[key][0]}", delta_color="off", delta_arrow="off",
                delta_description="He et al. (2016)")


cells = st.columns(2, width=520)
cells[0].metric("Parameters", f"{params / 1e6:.2f} M", **paper_line("params"))
cells[1].metric("FLOPs", f"{macs / 1e9:.3f} G", help=f"Multiply-adds for one {size} image.", **paper_line("gflops"))
if paper:
    sources = "; ".join(f"{COUNTS[key]} from {source}" for key, (_, source) in paper.items())
    st.caption(f"In grey under a count: the paper's figure (He et al., 2016), quoted, not measured here: {sources}.")

compute = table[table["macs"] > 0].assign(weight_layer=lambda t: range(1, len(t) + 1), mflops=lambda t: t["macs"] / 1e6)
# The axis ends at a labelled round number above the tallest bar: Vega's own stopped at the bar, over the last label.
ticks = linear_ticks(float(compute["mflops"].max()))
# Greys, not the default blue, which means "residual" on every other page (and this may be a plain net); each type
# named in words, and the fc layer said to be there where its bar is too short to see.
summary = zoo.compute_summary(table)
names = {"Conv2d": "convolution", "Linear": "fc layer" + (
    ", too small to see" if summary.endswith("(too few to see).") else "")}
st.subheader("Where the compute goes")
st.markdown(summary)
show_chart(alt.Chart(compute).mark_bar().encode(
    x=alt.X("weight_layer:Q", title="weight layer (forward order)",
            scale=alt.Scale(domain=[0, len(compute) + 1], nice=False)),
    y=alt.Y("mflops:Q", title="million multiply-adds", scale=alt.Scale(domain=[0, ticks[-1]], nice=False),
            axis=alt.Axis(values=ticks)),
    color=alt.Color("type:N", title="layer type", scale=alt.Scale(range=["#737373", "#252525"]),
                    legend=alt.Legend(labelExpr=relabelled(names))),
    tooltip=["layer", "type", "output_shape", "params", alt.Tooltip("mflops:Q", format=".2f", title="MFLOPs")],
).properties(height=300), compute, f"flops_{name}")

st.subheader(f"{name}: every layer")
st.dataframe(table, hide_index=True, column_config={
    "index": "#", "output_shape": "output shape (C x H x W)",
    "params": st.column_config.NumberColumn("parameters", format="localized"),
    "macs": st.column_config.NumberColumn("FLOPs (multiply-adds)", format="localized")})
st.caption(f"Pick any registered model in the sidebar: {info['depth']} weight layers, "
           f"{'shortcuts ' + shortcut if info['residual'] else 'no shortcuts'}, {info['num_classes']} classes. "
           "FLOPs count the multiply-adds of convolutions and fc layers, as the paper's Table 1 does.")
