"""Layer responses: the paper's Fig. 7, std of every 3x3 layer's BN output, in layer order and sorted."""
import altair as alt
import pandas as pd
import streamlit as st

from pages.common import (LENGTH_HELP, by_name, default_pair, frame, gallery_batch, header, length_ui, log_axis,
                          markdown_code, markdown_reason, markdown_text, model_legend, picker_key, short_runs_note,
                          show_chart, usable_checkpoints, weights_stamp, with_lengths)
from resnet_core import zoo
from resnet_core.checkpoint import CheckpointError, load_pretrained
from resnet_core.probes import response_std

RECORDED, LIVE = "recorded at the end of training", "live, on the 100 shipped test images"
HEIGHT = 220  # px per chart: two charts per depth, one depth above another


def responses_ui(infos) -> tuple[list[str], str, bool]:
    names = [info.name for info in infos]
    with st.sidebar:
        chosen = st.multiselect("Checkpoints", names, default=[n for n in default_pair(infos) if n],
                                format_func=with_lengths(infos), help=LENGTH_HELP,
                                key=picker_key("responses-checkpoints", infos))
        source = st.radio("Responses", [RECORDED, LIVE],
                          help="Recorded: metrics.json, on the first 1,000 test images (fewer in a tiny run). Live: needs the weights.")
        # On by default: a net that cannot train (plain-110) has layers a thousand times larger than the rest
        log = st.toggle("Logarithmic std axis", value=True,
                        help="Spreads out the small responses when a few layers are large")
    return chosen, source, log


@st.cache_data(show_spinner="Measuring the responses...", max_entries=32)
def live_responses(path: str, stamp: int | None) -> pd.DataFrame:
    # A private copy of the model: forward_intermediates hooks it, and the shared copy serves other sessions.
    # `stamp` (the weights' mtime) is only part of the cache key.
    model = load_pretrained(path)
    images, _ = gallery_batch(10, model.normalization)
    return zoo.with_ranks(response_std(model, images), "std")


def live_frame(infos) -> pd.DataFrame:
    frames = []
    for info in infos:
        if not info.has_weights:
            st.info(f"**{markdown_text(info.name)}**: weights not bundled, so no live responses; regenerate them with "
                    f"{markdown_code(info.regenerate_command())}. {info.regenerate_note()}")
            continue
        try:
            frames.append(live_responses(str(info.path), weights_stamp(info)).assign(**zoo.identity(info)))
        except CheckpointError as e:
            st.error(f"**{markdown_text(info.name)}**: {markdown_reason(str(e))}")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def by_depth(data: pd.DataFrame, log: bool) -> alt.VConcatChart:
    """Fig. 7's two views (in layer order, sorted by magnitude) of each depth's nets in `data`, one depth under
    another, each depth on a std axis of its own: on one axis plain-110's early layers (std up to 1,000) squeezed
    every 20- and 56-layer net into its bottom band. A depth's plain and residual nets share their axis: Fig. 7's
    comparison."""
    tooltip = ["checkpoint", "layer", "index", "rank", alt.Tooltip("std:Q", format=".3f", title="std")]
    color = model_legend(data)  # one colour per net across the depths
    charts = []
    for depth, rows in data.groupby("depth"):
        base = alt.Chart(rows).mark_line(point=alt.OverlayMarkDef(size=18)).encode(
            # log: from the smallest std to the largest, not the powers of ten around them (0.1 to 10: 40 % empty)
            y=alt.Y("std:Q", title="std of BN output" + (" (log scale)" if log else ""),
                    **(log_axis(rows, "std", nice=False, length=HEIGHT) if log else {})),
            color=color, detail="checkpoint:N", tooltip=tooltip)
        layers = alt.Scale(domain=[int(rows["index"].min()), int(rows["index"].max())], nice=False)  # no empty tail
        ranks = alt.Scale(domain=[1, int(rows["rank"].max())], nice=False)
        charts += [base.encode(x=alt.X("index:Q", title="3x3 layer, in forward order", scale=layers))
                   .properties(height=HEIGHT, title=f"{depth} layers, in layer order (Fig. 7, top)"),
                   base.encode(x=alt.X("rank:Q", title="3x3 layer, sorted by std (1 = largest)", scale=ranks))
                   .properties(height=HEIGHT, title=f"{depth} layers, sorted by magnitude (Fig. 7, bottom)")]
    return alt.vconcat(*charts).resolve_scale(x="independent", y="independent", color="shared")


PAPER = ("In the paper (Fig. 7) residual nets' layers respond with *smaller* standard deviations than plain nets' "
         "(blues below oranges): each residual branch only adds a small correction to its input.")
# The claim alone until the page has measured the nets it draws; then what they show first (zoo.responses_measured)
said = header("Layer responses", PAPER)
infos = usable_checkpoints(short_runs=False)  # noted for the checkpoints chosen
chosen, source, log = responses_ui(length_ui(infos, "Plain and residual runs of one length at a time: a 15-epoch net "
                                                    "beside a 64k-iteration one compares training lengths, not shortcuts."))
picked = [by_name(infos)[name] for name in chosen]
short_runs_note(picked)
if source == LIVE:
    data = live_frame(picked)
else:
    data = frame(zoo.response_frame)
    data = data[data["checkpoint"].isin(chosen)] if len(data) else data
if data.empty:
    st.info("Pick at least one checkpoint with recorded responses (or weights, for the live measurement) in the sidebar.")
    st.stop()
if line := zoo.responses_measured(data):
    said.markdown(f"{line} {PAPER}")
if source == LIVE:  # one batch of 100 images against the recorded one: say where they tell different stories
    stored = frame(zoo.response_frame)
    recorded = zoo.response_pairs(stored[stored["checkpoint"].isin(chosen)]) if len(stored) else {}
    pairs = zoo.response_pairs(data)
    for run, pair in pairs.items():
        below, layers = zoo.responses_below(*pair)
        was = zoo.responses_below(*recorded[run]) if run in recorded else None
        if was and (2 * was[0] > was[1]) != (2 * below > layers):
            st.warning(f"At {zoo.run_label(run, pairs)} these 100 images and the batch recorded at the end of "
                       f"training disagree: the residual net responds less at {below} of {layers} layers here, at {was[0]} of {was[1]} "
                       "there. The responses depend on the images, so neither batch settles Fig. 7 at this depth.")
show_chart(by_depth(data, log), data, "layer_responses")
st.caption(f"Responses {source}: the std over a batch of each 3x3 conv's batch-normalised output, before the ReLU "
           "and the addition. Each depth has a std axis of its own. Choose checkpoints (and, where there are several, "
           "the training length) and the source in the sidebar.")
