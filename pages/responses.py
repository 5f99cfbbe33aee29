"""Layer responses: the paper's Fig. 7, std of every 3x3 layer's BN output, in layer order and sorted."""
import altair as alt
import pandas as pd
import streamlit as st

from pages.common import (by_name, default_pair, frame, gallery_batch, header, model_legend, show_chart,
                          usable_checkpoints, weights_stamp)
from resnet_core import zoo
from resnet_core.checkpoint import CheckpointError, load_pretrained
from resnet_core.probes import response_std

RECORDED, LIVE = "recorded at the end of training", "live, on the 100 shipped test images"


def responses_ui(infos) -> tuple[list[str], str]:
    names = [info.name for info in infos]
    with st.sidebar:
        chosen = st.multiselect("Checkpoints", names, default=[n for n in default_pair(infos) if n])
        source = st.radio("Responses", [RECORDED, LIVE],
                          help="Recorded: metrics.json, on the first 1,000 test images. Live: needs the weights.")
    return chosen, source


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
            st.info(f"**{info.name}**: weights not bundled, so no live responses; regenerate them with "
                    f"`{info.config.get('command', 'python train.py')}`.")
            continue
        try:
            frames.append(live_responses(str(info.path), weights_stamp(info)).assign(**zoo.identity(info)))
        except CheckpointError as e:
            st.error(f"**{info.name}**: {e}")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


header("Layer responses", "In the paper (Fig. 7) residual nets' layers respond with *smaller* standard deviations than "
       "plain nets' (blues below oranges): each residual branch only adds a small correction to its input.")
infos = usable_checkpoints()
chosen, source = responses_ui(infos)
picked = [by_name(infos)[name] for name in chosen]
if source == LIVE:
    data = live_frame(picked)
else:
    data = frame(zoo.response_frame)
    data = data[data["checkpoint"].isin(chosen)] if len(data) else data
if data.empty:
    st.info("Pick at least one checkpoint with recorded responses (or weights, for the live measurement) in the sidebar.")
    st.stop()
tooltip = ["checkpoint", "layer", "index", "rank", alt.Tooltip("std:Q", format=".3f", title="std")]
base = alt.Chart(data).mark_line(point=alt.OverlayMarkDef(size=18)).encode(
    y=alt.Y("std:Q", title="std of BN output"), color=model_legend(data), detail="checkpoint:N", tooltip=tooltip)
by_layer = base.encode(x=alt.X("index:Q", title="3x3 layer, in forward order")).properties(
    height=260, title="In layer order (Fig. 7, top)")
by_size = base.encode(x=alt.X("rank:Q", title="3x3 layer, sorted by std (1 = largest)")).properties(
    height=260, title="Sorted by magnitude (Fig. 7, bottom)")
show_chart(alt.vconcat(by_layer, by_size).resolve_scale(y="shared"), data, "layer_responses")
st.caption(f"Responses {source}: the std over a batch of each 3x3 conv's batch-normalised output, before the ReLU "
           "and the addition. Choose checkpoints and the source in the sidebar.")
