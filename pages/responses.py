"""Layer responses: the paper's Fig. 7, std of every 3x3 layer's BN output, in layer order and sorted."""
import shlex

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
# The two readings of Fig. 7's std (probes.response_std), pooled first, and the column each is in; the paper does not
# say which it took
STD_OVER = {"all of a layer's values (channels pooled)": "std",
            "each channel, then the mean over channels": "channel_std"}
AXIS_TITLES = {"std": "std of BN output (pooled over channels)", "channel_std": "mean per-channel std of BN output"}


def responses_ui(infos) -> tuple[list[str], str, str, bool]:
    names = [info.name for info in infos]
    with st.sidebar:
        chosen = st.multiselect("Checkpoints", names, default=[n for n in default_pair(infos) if n],
                                format_func=with_lengths(infos), help=LENGTH_HELP,
                                key=picker_key("responses-checkpoints", infos))
        source = st.radio("Responses", [RECORDED, LIVE],
                          help="Recorded: metrics.json, on the first 1,000 test images (fewer in a tiny run). Live: needs the weights.")
        over = st.radio("Std taken over", list(STD_OVER), key="responses-std-over",
                        help="The paper does not say. Pooled, a layer's std also counts how far apart BN puts its "
                             "channels' means; per channel, it does not. The two can disagree on which net responds "
                             "less.")
        # On by default: a net that cannot train (plain-110) has layers a thousand times larger than the rest
        log = st.toggle("Logarithmic std axis", value=True,
                        help="Spreads out the small responses when a few layers are large")
    return chosen, source, STD_OVER[over], log


@st.cache_data(show_spinner="Measuring the responses...", max_entries=32)
def live_responses(path: str, stamp: int | None) -> pd.DataFrame:
    # A private copy of the model: forward_intermediates hooks it, and the shared copy serves other sessions.
    # `stamp` (the weights' mtime) is only part of the cache key.
    model = load_pretrained(path)
    images, _ = gallery_batch(10, model.normalization)
    return pd.DataFrame(response_std(model, images))  # both stds; ranked by the one drawn


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


def without_channel_std(infos) -> bool:
    """Say which of the chosen checkpoints recorded the pooled std only (metrics.json from before the per-channel
    one was recorded), and the command that records both from their weights; whether any did."""
    old = [info for info in infos if zoo.has_responses(info) and not zoo.has_responses(info, "channel_std")]
    if not old:
        return False
    names = [info.name for info in old if info.has_weights]
    weightless = [info.name for info in old if not info.has_weights]
    st.info(f"**{markdown_text(', '.join(info.name for info in old))}**: recorded the pooled std only (before the "
            "per-channel one was recorded), so not drawn here"
            + (f"; record both from the weights with "
               f"{markdown_code(shlex.join(['python', '-m', 'resnet_core.report', '--responses', *names]))}"
               if names else "")
            + (f"; {markdown_text(', '.join(weightless))}: weights not bundled, so the live responses, pooled and "
               "per channel, are out of reach too" if weightless else "") + ".")
    return True


def recorded_frame(infos, value: str) -> pd.DataFrame:
    """The recorded responses of those of `infos` whose metrics.json records `value` (a STD_OVER column)."""
    data = frame(zoo.response_frame)
    names = [info.name for info in infos if zoo.has_responses(info, value)]
    return data[data["checkpoint"].isin(names)] if len(data) else data


def by_depth(data: pd.DataFrame, log: bool, value: str) -> alt.VConcatChart:
    """Fig. 7's two views (in layer order, sorted by magnitude) of each depth's nets in `data`, one depth under
    another, each depth on a std axis of its own: on one axis plain-110's early layers (std up to 1,000) squeezed
    every 20- and 56-layer net into its bottom band. A depth's plain and residual nets share their axis: Fig. 7's
    comparison. `value`: the column drawn (a STD_OVER one); `data`'s ranks are by it."""
    tooltip = ["checkpoint", "layer", "index", "rank",
               alt.Tooltip(f"{value}:Q", format=".3f", title=zoo.RESPONSE_MEASURES[value])]
    color = model_legend(data)  # one colour per net across the depths
    charts = []
    for depth, rows in data.groupby("depth"):
        base = alt.Chart(rows).mark_line(point=alt.OverlayMarkDef(size=18)).encode(
            # log: from the smallest std to the largest, not the powers of ten around them (0.1 to 10: 40 % empty)
            y=alt.Y(f"{value}:Q", title=AXIS_TITLES[value] + (" (log scale)" if log else ""),
                    **(log_axis(rows, value, nice=False, length=HEIGHT) if log else {})),
            color=color, detail="checkpoint:N", tooltip=tooltip)
        layers = alt.Scale(domain=[int(rows["index"].min()), int(rows["index"].max())], nice=False)  # no empty tail
        ranks = alt.Scale(domain=[1, int(rows["rank"].max())], nice=False)
        charts += [base.encode(x=alt.X("index:Q", title="3x3 layer, in forward order", scale=layers))
                   .properties(height=HEIGHT, title=f"{depth} layers, in layer order (Fig. 7, top)"),
                   base.encode(x=alt.X("rank:Q", title=f"3x3 layer, sorted by {zoo.RESPONSE_MEASURES[value]} "
                                                       "(1 = largest)", scale=ranks))
                   .properties(height=HEIGHT, title=f"{depth} layers, sorted by magnitude (Fig. 7, bottom)")]
    return alt.vconcat(*charts).resolve_scale(x="independent", y="independent", color="shared")


PAPER = ("In the paper (Fig. 7) residual nets' layers respond with *smaller* standard deviations than plain nets' "
         "(blues below oranges): each residual branch only adds a small correction to its input.")
# The claim alone until the page has measured the nets it draws; then what they show first (zoo.responses_measured)
said = header("Layer responses", PAPER)
infos = usable_checkpoints(short_runs=False)  # noted for the checkpoints chosen
chosen, source, value, log = responses_ui(length_ui(infos, "Plain and residual runs of one length at a time: a "
                                                           "15-epoch net beside a 64k-iteration one compares training "
                                                           "lengths, not shortcuts."))
picked = [by_name(infos)[name] for name in chosen]
short_runs_note(picked)
if source == LIVE:
    data = live_frame(picked)
else:
    data = recorded_frame(picked, value)
    noted = value != "std" and without_channel_std(picked)
if data.empty:
    if not (source != LIVE and noted):  # the note said why: their responses are recorded, the per-channel std not
        st.info("Pick at least one checkpoint with recorded responses (or weights, for the live measurement) in the "
                "sidebar.")
    st.stop()
data = zoo.with_ranks(data.reset_index(drop=True), value, by="checkpoint")  # Fig. 7, bottom: by the std drawn
if line := zoo.responses_measured(data, value):
    said.markdown(f"{line} {PAPER}")
if left_out := zoo.responses_left_out(data, markdown_text):  # drawn below, but not in the comparison: say which
    st.warning(f"{left_out} To compare one left out instead, take the other out of *Checkpoints* in the sidebar.")
if source == LIVE:  # one batch of 100 images against the recorded one: say where they tell different stories
    recorded = zoo.response_pairs(stored, value) if len(stored := recorded_frame(picked, value)) else {}
    pairs = zoo.response_pairs(data, value)
    for run, pair in pairs.items():
        below, layers = zoo.responses_below(*pair)
        was = zoo.responses_below(*recorded[run]) if run in recorded else None
        if was and (2 * was[0] > was[1]) != (2 * below > layers):
            st.warning(f"At {zoo.run_label(run, pairs)} these 100 images and the batch recorded at the end of "
                       f"training disagree: the residual net responds less at {below} of {layers} layers here, at {was[0]} of {was[1]} "
                       "there. The responses depend on the images, so neither batch settles Fig. 7 at this depth.")
show_chart(by_depth(data, log, value), data, "layer_responses")
how = ("pooled over all of a layer's values (channels, positions and images)" if value == "std" else
       "of each channel over its positions and images, averaged over the layer's channels")
st.caption(f"Responses {source}: the std over a batch of each 3x3 conv's batch-normalised output, before the ReLU "
           f"and the addition, {how}. The paper does not say which of the two it took, and they can disagree: pooled, "
           "the std also counts how far apart BN puts the channels' means. Each depth has a std axis of its own. "
           "Choose checkpoints (and, where there are several, the training length), the source and the std in the "
           "sidebar.")
