"""Gradient flow: per-layer gradient norms during training (from the history) and at initialisation (live)."""
from functools import partial

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from pages.common import (LENGTH_HELP, LOG_LABELS, PANEL_BAR, PANEL_LEGEND_COLUMNS, by_name, default_pair, frame,
                          gallery_batch, header, length_ui, log_axis, log_ticks, markdown_text, model_legend,
                          picker_key, raised, short_runs_note, show_chart, show_panels, span, usable_checkpoints,
                          with_lengths)
from resnet_core import zoo
from resnet_core.models import PLAIN_VS_RESIDUAL_DEPTHS
from resnet_core.paper import SEED_REPORT_GRAD_NORMS

# Images per class in the live batch: 5 (50 images) keeps ten nets under a minute on two cores; the 1202-layer
# nets keep every activation of 1202 layers for the backward pass, so they get 1 per class (about 2 GB).
LIVE_IMAGES_PER_CLASS = 5
LIVE_IMAGES_PER_CLASS_BY_DEPTH = {1202: 1}
WHOLE = alt.Axis(format="d", tickMinStep=1)  # epochs and layers are counted, never fractional
MEASURE = (" Each value is the L2 norm of one layer's weight gradient of the mean cross-entropy (weight decay not "
           "included), per training step on the augmented batch, averaged over the epoch's steps. Layer k is the "
           "k-th weight layer on the main path in both nets (a 1x1 projection shortcut, as in ResNet-18/34, is left "
           "out).")
MAX_COLUMNS = 60  # epochs per heatmap row before neighbours are merged: 164 x 110 cells per panel draw slowly


def pair_ui(infos) -> tuple[list[str], int | None]:
    """Sidebar: one plain and one residual checkpoint, and the epoch of the per-layer profile."""
    plain_default, residual_default = default_pair(infos)
    kinds = {info.name: zoo.identity(info)["net"] for info in infos}
    with st.sidebar:
        st.subheader("During training")
        chosen = []
        for kind, default in (("plain", plain_default), ("residual", residual_default)):
            names = [n for n, k in kinds.items() if k == kind]
            if names:
                chosen.append(st.selectbox(f"{kind.capitalize()} checkpoint", names, index=names.index(default),
                                           format_func=with_lengths(infos), help=LENGTH_HELP,
                                           key=picker_key(f"gradients-{kind}", infos)))
        epochs = sorted({r["epoch"] for name in chosen for r in by_name(infos)[name].history["records"]})
        epoch = st.select_slider("Epoch of the layer profile", epochs, value=epochs[-1]) if len(epochs) > 1 else None
    return chosen, epoch or (epochs[-1] if epochs else None)


def live_ui() -> tuple[list[int], bool]:
    """Sidebar: the depths to analyse; main area: the button that starts the (slow, then cached) analysis."""
    with st.sidebar:
        st.subheader("At initialisation")
        depths = st.multiselect("Depths to analyse", PLAIN_VS_RESIDUAL_DEPTHS, default=PLAIN_VS_RESIDUAL_DEPTHS)
        deep = st.checkbox("Also 1202 layers", help="Roughly 20 s to over a minute and up to 2 GB of memory per "
                           "net, as timed on a 2-core CPU; longer on a busier one.")
    run = st.button("Run the live analysis", key="run-live", type="primary", icon=":material/play_arrow:")
    return depths + [1202] * deep, run


@st.cache_data(show_spinner=False, max_entries=64)
def init_norms(name: str) -> pd.DataFrame:
    depth = zoo.model_info(name)["depth"]
    images, labels = gallery_batch(LIVE_IMAGES_PER_CLASS_BY_DEPTH.get(depth, LIVE_IMAGES_PER_CLASS))
    return zoo.gradient_norms_at_init(name, images, labels)


def epoch_cells(data: pd.DataFrame) -> pd.DataFrame:
    """Heatmap cells: one per layer and run of `width` epochs (geometric mean, as the colour scale is log)."""
    width = int(np.ceil(data["epoch"].max() / MAX_COLUMNS))
    first = (data["epoch"] - 1) // width * width + 1
    cells = (data.assign(first_epoch=first, log_norm=np.log(data["grad_norm"]))
             .groupby(["checkpoint", "model", "net", "depth", "index", "layer", "first_epoch"], as_index=False)
             .agg(last_epoch=("epoch", "max"), log_norm=("log_norm", "mean")))
    return cells.assign(grad_norm=np.exp(cells.pop("log_norm")), e0=cells["first_epoch"] - 0.5,
                        e1=cells["first_epoch"] + width - 0.5, l0=cells["index"] - 0.5, l1=cells["index"] + 0.5)


def heatmap_panel(rows: pd.DataFrame, shown: pd.DataFrame) -> alt.Chart:
    """One net's heatmap cells (`rows`), on the axes and colour scale of all the `shown` cells: both panels alike."""
    domain = span(shown, "grad_norm")
    norm_scale = alt.Scale(type="log", scheme="viridis", domain=domain)
    # each cell outlined 1 px in its own colour: abutting cells otherwise leave antialiased seams, a grid on a projector
    # (on a copy of the field: on the same field Vega-Lite merges the stroke into the colour legend, and drops both)
    return alt.Chart(rows).transform_calculate(outline="datum.grad_norm").mark_rect(strokeWidth=1).encode(
        x=alt.X("e0:Q", title="epoch", axis=WHOLE, scale=alt.Scale(domain=span(shown, "e0", "e1"), nice=False)),
        x2="e1:Q",
        y=alt.Y("l0:Q", title="layer (1 = first conv; last = fc)", axis=WHOLE,
                scale=alt.Scale(domain=span(shown, "l0", "l1"), reverse=True, nice=False)),
        y2="l1:Q",
        # labelled at its ends and round values between: Vega's own labels printed the domain's ends in full, run
        # together ("0.0000079619...0.58058262" for plain-110), or only 0.01 and 0.1 for the 56-layer nets
        color=alt.Color("grad_norm:Q", title=["gradient norm", "(L2, log scale)"], scale=norm_scale, legend=alt.Legend(
            labelExpr=LOG_LABELS, values=log_ticks(domain, length=PANEL_BAR, across=True))),
        stroke=alt.Stroke("outline:Q", scale=norm_scale, legend=None),
        tooltip=["checkpoint", "first_epoch", "last_epoch", "index", "layer",
                 alt.Tooltip("grad_norm:Q", format=".3g", title="gradient norm")],
    ).properties(height=300)


def init_panel(rows: pd.DataFrame, shown: pd.DataFrame) -> alt.Chart:
    """One kind of net's gradient norms at initialisation (`rows`), on the axes of all the `shown` ones."""
    return alt.Chart(rows).mark_line().encode(
        x=alt.X("index:Q", title="layer (1 = first conv; last = fc)", scale=alt.Scale(domain=span(shown, "index"))),
        # ticks at powers of ten (Vega's own drew nine gridlines a decade); the axis ends at the data of all the
        # `shown` nets (nice=False), a domain that both panels share
        y=alt.Y("grad_norm:Q", title="gradient norm (L2, log scale)", **log_axis(shown, "grad_norm", nice=False)),
        color=model_legend(rows, columns=PANEL_LEGEND_COLUMNS),
        tooltip=["model", "layer", alt.Tooltip("grad_norm:Q", format=".3g", title="gradient norm")],
    ).properties(height=300)


def left_out_of_profile(chosen: list[str], norms: pd.DataFrame, epoch: int) -> dict[str, str]:
    """{checkpoint: why it has no line in the per-layer profile at `epoch`}, for each chosen one without a finite,
    positive gradient norm there (`norms`: grad_norm_frame, unfiltered)."""
    why = {}
    for name in chosen:
        rows = norms.loc[(norms["checkpoint"] == name) & (norms["epoch"] == epoch), "grad_norm"] if len(norms) else []
        finite = [v for v in rows if np.isfinite(v)]
        if not len(rows):
            why[name] = f"its history records no gradient norms at epoch {epoch}"
        elif not finite:
            why[name] = f"every layer's norm overflowed (infinite or NaN) at epoch {epoch}: the loss diverged"
        elif max(finite) <= 0:
            why[name] = f"every layer's norm is 0 at epoch {epoch}, which a log axis cannot show"
    return why


def training_section(infos) -> None:
    chosen, epoch = pair_ui(length_ui(infos, "Plain and residual runs of one length at a time, on one epoch axis."))
    norms = frame(zoo.grad_norm_frame)
    data = norms[norms["checkpoint"].isin(chosen) & (norms["grad_norm"] > 0)] if len(norms) else norms
    if data.empty:
        st.info("These checkpoints recorded no gradient norms.")
        return
    st.subheader("During training: every layer, every epoch")
    short_runs_note([by_name(infos)[name] for name in chosen])
    cells = epoch_cells(data)
    show_panels(partial(heatmap_panel, shown=cells), cells, "gradient_norms_training")
    merged = "" if cells["first_epoch"].nunique() == data["epoch"].nunique() else (
        f" Long runs are drawn with at most {MAX_COLUMNS} columns: each cell is the geometric mean of neighbouring epochs.")
    st.caption("Both panels share one colour scale and one epoch axis: the two runs trained equally long. Pick the "
               "checkpoints (and, where there are several, the training length) in the sidebar." + merged + MEASURE)

    profile = data[(data["epoch"] == epoch) & np.isfinite(data["grad_norm"])]
    if left_out := left_out_of_profile(chosen, norms, epoch):  # a net may overflow while its twin trains on
        st.warning("Left out of the per-layer profile: "
                   + "; ".join(f"**{markdown_text(name)}**, {why}" for name, why in left_out.items())
                   + ". Pick another epoch in the sidebar.")
    if profile.empty:
        return
    show_chart(alt.Chart(profile).mark_line(point=True).encode(
        x=alt.X("index:Q", title="layer (1 = first conv; last = fc)", axis=WHOLE,
                scale=alt.Scale(domain=[1, int(profile["index"].max())], nice=False)),
        y=alt.Y("grad_norm:Q", title="gradient norm (L2, log scale)", **log_axis(profile, "grad_norm")),
        color=model_legend(profile), detail="checkpoint:N",
        tooltip=["checkpoint", "layer", alt.Tooltip("grad_norm:Q", format=".3g", title="gradient norm")],
    ).properties(height=300, title=f"Gradient norm per layer at epoch {epoch}"), profile, "gradient_norms_epoch")
    st.markdown(f"**Measured here**, epoch {epoch}, smallest to largest layer norm: {raised(zoo.norm_spans(profile))}.")
    resnet_range, plain_range = SEED_REPORT_GRAD_NORMS["resnet18"], SEED_REPORT_GRAD_NORMS["plain18"]
    st.caption(f"For reference, seed report 000 states norms of {resnet_range[0]}-{resnet_range[1]} for ResNet-18 and "
               f"{plain_range[0]}-{plain_range[1]} for Plain-18 (its claim, not measured here). The epoch slider is "
               "in the sidebar.")


def live_section() -> None:
    st.subheader("At initialisation: fresh nets, one backward pass (live)")
    depths, run = live_ui()
    if run:
        st.session_state["live_depths"] = depths
    depths = st.session_state.get("live_depths")
    if not depths:
        st.markdown("Builds plain and residual nets of the chosen depths with the paper's initialisation, runs one "
                    "forward and backward pass on a batch of the shipped CIFAR-10 test images, and measures each "
                    "layer's gradient. Results are cached for every visitor; pick the depths in the sidebar.")
        return
    names = [f"{kind}{d}" for d in sorted(depths) for kind in ("plain", "resnet")]
    progress = st.progress(0.0)
    parts = []
    for i, name in enumerate(names):
        progress.progress(i / len(names), text=f"{name}: one forward and backward pass on the CPU...")
        parts.append(init_norms(name))
    progress.empty()
    data = pd.concat(parts, ignore_index=True)
    finite = np.isfinite(data["grad_norm"])
    broken = sorted(data.loc[~finite, "model"].unique())
    if broken:
        st.warning(f"Gradients overflowed (inf/NaN) in {', '.join(broken)}: those layers are left out of the chart.")
    zero = sorted(data.loc[data["grad_norm"] == 0, "model"].unique())
    if zero:
        st.info(f"Some layers of {', '.join(zero)} got no gradient at all (norm 0): a log axis cannot show them.")
    shown = data[finite & (data["grad_norm"] > 0)]
    show_panels(partial(init_panel, shown=shown), shown, "gradient_norms_init")
    # a table, not a sentence: ten nets in one sentence made six lines of figures
    st.markdown("**Measured here**, at initialisation: each net's smallest and largest layer gradient norm.")
    spans = zoo.norm_span_frame(shown, by="model").rename(columns={"model": "net"})
    # 1.6 × 10⁶, as the axes write it
    st.dataframe(spans.map(lambda v: raised(v) if isinstance(v, str) else v), hide_index=True)
    exceptions = ", ".join(f"{n} for {d} layers" for d, n in LIVE_IMAGES_PER_CLASS_BY_DEPTH.items())
    st.caption(f"Batch: the first {LIVE_IMAGES_PER_CLASS} shipped test images of each class ({exceptions}), seed 0, "
               "BN on batch statistics. Layer k is the k-th weight layer on the main path in every net (a 1x1 "
               "projection shortcut, as in ResNet-18/34, is left out).")


header("Gradient flow", "How large a gradient each weight layer gets, during training and in a freshly "
       "initialised net: see how far apart the layers' norms lie in the plain net, and how far in the residual "
       "net as deep. Each chart says what it measured.")
st.caption("A measurement, not the paper's explanation of degradation: He et al. (Sec. 4.1) train their plain nets with "
           "BN, report that the backward gradients 'exhibit healthy norms', and conjecture that deep plain nets "
           "instead converge exponentially slowly. Vanishing gradients are not what they blame.")
infos = usable_checkpoints(stop=False, short_runs=False)  # training_section notes the runs it shows
if infos:
    training_section(infos)
live_section()
