"""Classes: confusion matrices and per-class accuracy of any two checkpoints, which classes the shortcuts help, and
the mistakes a net makes most confidently."""
import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch
from PIL import Image

from pages.common import (LENGTH_HELP, OWN_SIZE, PANEL_TITLE, by_name, csv_button, default_pair, draw, frame, gallery,
                          header, length_ui, load_model, model_legend, percent, picker_key, short_runs_note, show_chart,
                          usable_checkpoints, with_lengths)
from resnet_core import zoo
from resnet_core.data import CLASSES, DatasetError, load_cifar10, resolve_data_dir
from resnet_core.explain import confident_mistakes
from resnet_core.paper import SEED_REPORT_CLASS_GAINS
from resnet_core.probes import input_stats

MISTAKES, PER_ROW = 12, 6
ZOOM = 3  # 32x32 shown as 96x96, nearest neighbour


def classes_ui(infos) -> tuple[str, str, str]:
    """Sidebar: checkpoints A and B to compare, and whose mistakes to show (B to start with), all of one training
    length (length_ui): between a 64k-iteration run and a 15-epoch one, B's gains would mostly measure the
    training length, not the shortcuts."""
    infos = length_ui(infos, "A and B trained equally long: across lengths, the gains would mostly measure the extra "
                             "training.")
    names = [info.name for info in infos]
    plain, residual = default_pair(infos)
    first = plain or names[0]
    second = residual or next((n for n in reversed(names) if n != first), first)  # B differs from A where it can
    with st.sidebar:
        labels = dict(format_func=with_lengths(infos), help=LENGTH_HELP)
        a = st.selectbox("Checkpoint A (usually plain)", names, index=names.index(first), **labels,
                         key=picker_key("classes-a", infos))
        b = st.selectbox("Checkpoint B (usually residual)", names, index=names.index(second), **labels,
                         key=picker_key("classes-b", infos))
        wrong = st.selectbox("Most confident mistakes of", names, index=names.index(b), key="mistakes_of", **labels)
    return a, b, wrong


@st.cache_resource(show_spinner="Reading the CIFAR-10 test set...", max_entries=2)
def full_test_set(folder: str) -> tuple[torch.Tensor, torch.Tensor]:
    return load_cifar10(folder, "test")  # (10000, 32, 32, 3) uint8, (10000,) int64; shared, read-only


def searched_images() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, str, str | None]:
    """Images (N, 32, 32, 3) uint8, labels (N,) and their indices in the test set: the whole CIFAR-10 test set
    where it can be found, else the 100 shipped with the app. Then a cache key naming the source, and why the
    full test set was not used (None if it was)."""
    try:
        folder = str(resolve_data_dir(splits=("test",)))
        images, labels = full_test_set(folder)
        return images, labels, np.arange(len(labels)), folder, None
    except DatasetError as e:
        images, labels, indices = gallery()
        return torch.from_numpy(images), torch.from_numpy(labels).long(), indices, "shipped", str(e)


@st.cache_data(max_entries=64, show_spinner=False)
def mistakes(checkpoint: str, stamp: int | None, source: str, _model, _images, _labels) -> list[dict]:
    """explain.confident_mistakes, cached by the checkpoint's folder, the stamp `_model` was loaded under
    (pages.common._model) and the image source; `_model` (the shared copy, not hashed) is only read, in eval mode
    under no_grad. A rerun requested meanwhile waits for the result."""
    return confident_mistakes(_model, _images, _labels, *input_stats(_model), k=MISTAKES)


def mistakes_section(info) -> None:
    st.subheader(f"What {info.name} gets wrong most confidently")
    recorded = info.metrics.get("confident_mistakes")
    images, labels, indices, source, why_not_all = searched_images()
    if recorded is not None and why_not_all is None and matches(recorded, labels):
        found = recorded[:MISTAKES]  # measured when the checkpoint was published: no need to classify again
        which = recorded_from(info)
    else:
        model = load_model(info)  # says why, with the command that regenerates them, if the weights are not bundled
        if model is None:
            if recorded:
                recorded_without_images(info, recorded[:MISTAKES], why_not_all)
            return
        with st.spinner(f"Classifying {len(labels):,} test images with {info.name} on the CPU (once per checkpoint)..."):
            found = mistakes(str(info.path), model.weights_stamp, source, model, images, labels)
        which = (f"Searched all {len(labels):,} CIFAR-10 test images." if why_not_all is None else
                 f"Searched the {len(labels)} test images shipped with the app (no CIFAR-10 test set could be "
                 "read, the ? says why: set CIFAR10_DIR to its folder to search all 10,000).")
    if not found:
        st.success(f"{info.name} classifies every one of them correctly.")
    for start in range(0, len(found), PER_ROW):
        for column, r in zip(st.columns(PER_ROW), found[start:start + PER_ROW]):
            pixels = Image.fromarray(images[r["index"]].numpy()).resize((32 * ZOOM, 32 * ZOOM), Image.Resampling.NEAREST)
            column.image(pixels, caption=f"test image #{indices[r['index']]}")
            column.markdown(f"**{r['predicted']}** {percent(r['probability'])}  \n"
                            f"true: {r['true']} ({percent(r['true_probability'])})")
    st.caption(f"{which} Under each image: the class {info.name} predicts, in bold, with its probability, "
               "then the true class with the probability the net gave it. Pick the checkpoint in the sidebar.",
               help=why_not_all)


def matches(recorded: list[dict], labels: torch.Tensor) -> bool:
    """Whether the test set found is the one the mistakes were recorded on: each index in range, its label the
    recorded true class."""
    return all(r["index"] < len(labels) and CLASSES[int(labels[r["index"]])] == r["true"] for r in recorded)


def recorded_from(info) -> str:
    """Where the recorded mistakes come from, as a sentence."""
    how = info.metrics.get("confident_mistakes_from", "its weights at the time")
    return f"Read from {info.name}'s metrics.json: measured with {how}."


def recorded_without_images(info, found: list[dict], why_not_all: str | None) -> None:
    """The mistakes recorded in metrics.json, as a table: no weights to search the shipped images with, and the
    test set that holds the recorded ones is not here."""
    st.table(pd.DataFrame({
        "test image": [f"#{r['index']}" for r in found], "predicted": [r["predicted"] for r in found],
        "probability (%)": [percent(r["probability"], "") for r in found], "true class": [r["true"] for r in found],
        "its probability (%)": [percent(r["true_probability"], "") for r in found]}))
    st.caption(f"{recorded_from(info)} No CIFAR-10 test set "
               "could be read (the ? says why), so the images cannot be shown: set CIFAR10_DIR to its folder.",
               help=why_not_all)


AHEAD_COLOURS = ["#1b9e77", "#7570b3"]  # B ahead, A ahead: teal and purple, apart from the nets' blue and orange
# Class names under a chart, slanted rather than on their side: read without turning one's head
SLANTED = alt.Axis(labelAngle=-40, labelOverlap=False)  # slanted names never collide: keep all ten
# Each confusion matrix this many px square, a chart of its own with its row names: abreast in a 1280 px window with
# the sidebar open, one above the other at 1024 px; a 26 px cell holds "100" in 12 px figures. (At 210 px, both in one
# faceted chart to fit 1024 px, the cells were cramped.)
CONFUSION_SIZE = 260
# Most confusions are 0-10 % of a class: on a linear 0-100 % scale they were all near-white. On a square-root
# scale 1 % is already a grey and 10 % a third of the way to black; the colour bar's title and labels say so.
CONFUSION_SCALE = alt.Scale(type="sqrt", scheme="greys", domain=[0, 100])
# Apart on a colour bar as long as the matrix is wide, where 1 sits a tenth of the way: 28 px from "0" (on the
# default 200 px bar, "0" and "1" touched).
CONFUSION_TICKS = [0, 1, 5, 25, 50, 100]


def confusion_matrix(rows: pd.DataFrame, name: str) -> alt.LayerChart:
    """`name`'s confusion matrix (its `rows`), titled with it: cells coloured by the percentage of the true class, on
    the colour scale every matrix shares, with the number."""
    cells = alt.Chart(rows).encode(
        x=alt.X("predicted:N", sort=list(CLASSES), title="predicted class", axis=SLANTED),
        y=alt.Y("true:N", sort=list(CLASSES), title="true class"))
    heat = cells.mark_rect().encode(
        # grey, not blue: blue is the residual nets' colour on every page, and this matrix may be a plain net's
        color=alt.Color("percent:Q", scale=CONFUSION_SCALE, title="% of the true class (square-root scale)",
                        legend=alt.Legend(values=CONFUSION_TICKS, gradientLength=CONFUSION_SIZE)),
        tooltip=["checkpoint", "true", "predicted", "count",
                 alt.Tooltip("percent:Q", format=".1f", title="% of true class")])
    labels = cells.mark_text(fontSize=12).encode(  # "100" still fits a cell
        text=alt.Text("percent:Q", format=".0f"),
        # white where it reads better than black: past 40 %, a grey darker than #777 on the square-root scale
        color=alt.condition("datum.percent > 40", alt.value("white"), alt.value("black")))
    return alt.layer(heat, labels).properties(width=CONFUSION_SIZE, height=CONFUSION_SIZE, autosize=OWN_SIZE,
                                              title=alt.Title(name, **PANEL_TITLE))


header("Classes", "Where the two nets differ class by class: each confusion matrix shows which classes a net mistakes "
       "for which (dark cells off the diagonal), and the chart *Which classes B gains on over A* how many points of "
       "accuracy B gains over A on each class (a seed report claims shortcuts help 'bird' most).")
infos = usable_checkpoints(short_runs=False)  # noted for the checkpoints chosen
a, b, wrong = classes_ui(infos)
chosen = [a] if a == b else [a, b]
short_runs_note([by_name(infos)[name] for name in dict.fromkeys([*chosen, wrong])])

confusion = frame(zoo.confusion_frame)
confusion = confusion[confusion["checkpoint"].isin(chosen)]
with st.container(horizontal=True):  # abreast where they fit, one above the other in a narrow window
    for name in chosen:
        draw(confusion_matrix(confusion[confusion["checkpoint"] == name], name), legends_below=True, width="content")
csv_button(confusion, "confusion_matrices")
st.caption("Rows are the true class and add up to 100 %; the diagonal is the per-class accuracy on the test set.")

accuracy = frame(zoo.class_accuracy_frame)
accuracy = accuracy[accuracy["checkpoint"].isin(chosen)]
show_chart(alt.Chart(accuracy).mark_bar().encode(
    x=alt.X("class:N", sort=list(CLASSES), title=None, axis=SLANTED), xOffset=alt.XOffset("checkpoint:N", sort=chosen),
    y=alt.Y("accuracy:Q", title="test accuracy (%)", scale=alt.Scale(domain=[0, 100])),
    color=model_legend(accuracy), tooltip=["checkpoint", "class", alt.Tooltip("accuracy:Q", format=".1f")],
).properties(height=300, title="Per-class accuracy"), accuracy, "per_class_accuracy")

if a != b:
    gains = dict(zoo.class_gains(by_name(infos)[b], by_name(infos)[a]))  # class: B minus A (points)
    gain = pd.DataFrame({"class": list(CLASSES), "gain": [gains[c] for c in CLASSES],
                         "source": f"{b} minus {a} (ours)"})
    claims = pd.DataFrame({"class": list(SEED_REPORT_CLASS_GAINS), "gain": list(SEED_REPORT_CLASS_GAINS.values()),
                           "source": "seed report 000's claim at 18 layers: ResNet-18 minus Plain-18"})
    # The claim is about shortcuts alone (a residual net over a plain one as deep): beside any other A and B its
    # diamonds would read as a prediction for them.
    a_id, b_id = (zoo.identity(by_name(infos)[name]) for name in (a, b))
    paired = a_id["net"] == "plain" and b_id["net"] == "residual" and a_id["depth"] == b_id["depth"]
    order = gain.sort_values("gain", ascending=False)["class"].tolist()
    x = alt.X("class:N", sort=order, title=None, axis=SLANTED)
    y = alt.Y("gain:Q", title="accuracy of B minus A (points)")
    tooltip = ["source", "class", alt.Tooltip("gain:Q", format="+.1f", title="points")]
    # Which net is ahead, in colours of their own: in the nets' blue and orange, a plain B's gains would be drawn
    # in the residual blue.
    ahead = [f"B ({b}) ahead", f"A ({a}) ahead"]
    gain["ahead"] = [ahead[0] if g >= 0 else ahead[1] for g in gain["gain"]]
    bars = alt.Chart(gain).mark_bar().encode(
        x, y, tooltip=tooltip, color=alt.Color("ahead:N", title="on the class", scale=alt.Scale(
            domain=ahead, range=AHEAD_COLOURS)))
    ticks = alt.Chart(claims).mark_point(filled=False, size=140, strokeWidth=2, color="black").encode(
        x, y, shape=alt.Shape("source:N", title="reference (not measured here)", scale=alt.Scale(range=["diamond"])),
        tooltip=tooltip)
    # A heading rather than a chart title: a layered chart's title is drawn over the button above it.
    st.markdown(f"**Which classes B ({b}) gains on over A ({a})**")
    drawn = [gain, claims] if paired else [gain]
    show_chart((bars + ticks if paired else bars).properties(height=280), pd.concat(drawn, ignore_index=True),
               "class_gains", legends_below=True)
    if not paired:
        st.caption(f"The seed report's 18-layer claim (shortcuts help 'bird' most) is drawn where A is a plain net and "
                   f"B a residual net as deep; {a} and {b} are not such a pair.")
    elif a_id["depth"] != 18:
        st.caption("Diamonds: the gains a seed report claims for CIFAR ResNet-18 over Plain-18 (200 epochs), not "
                   f"measured here and not on {a_id['depth']}-layer nets: only their pattern across classes compares "
                   "with the bars.")
st.caption("Choose checkpoints A and B in the sidebar: any two trained for as many iterations (the training length "
           "is picked there too, where there are several).")

mistakes_section(by_name(infos)[wrong])
