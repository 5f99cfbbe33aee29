"""Classes: confusion matrices and per-class accuracy of any two checkpoints, and which classes the shortcuts help."""
import altair as alt
import pandas as pd
import streamlit as st

from pages.common import default_pair, frame, header, model_legend, show_chart, usable_checkpoints
from resnet_core import zoo
from resnet_core.data import CLASSES
from resnet_core.paper import SEED_REPORT_CLASS_GAINS


def classes_ui(infos) -> tuple[str, str]:
    names = [info.name for info in infos]
    plain, residual = default_pair(infos)
    first, second = plain or names[0], residual or names[-1]
    with st.sidebar:
        a = st.selectbox("Checkpoint A (usually plain)", names, index=names.index(first))
        b = st.selectbox("Checkpoint B (usually residual)", names, index=names.index(second))
    return a, b


header("Classes", "Where the two nets differ class by class: the bottom chart shows how many points of accuracy "
       "B gains over A on each class (a seed report claims shortcuts help 'bird' most).")
infos = usable_checkpoints()
a, b = classes_ui(infos)
chosen = [a] if a == b else [a, b]

confusion = frame(zoo.confusion_frame)
confusion = confusion[confusion["checkpoint"].isin(chosen)]
cells = alt.Chart().encode(
    x=alt.X("predicted:N", sort=list(CLASSES), title="predicted class"),
    y=alt.Y("true:N", sort=list(CLASSES), title="true class"))
heat = cells.mark_rect().encode(
    color=alt.Color("percent:Q", scale=alt.Scale(scheme="blues", domain=[0, 100]), title="% of the true class"),
    tooltip=["checkpoint", "true", "predicted", "count", alt.Tooltip("percent:Q", format=".1f", title="% of true class")])
labels = cells.mark_text(fontSize=9).encode(
    text=alt.Text("percent:Q", format=".0f"),
    color=alt.condition("datum.percent > 50", alt.value("white"), alt.value("black")))
show_chart(alt.layer(heat, labels, data=confusion).properties(width=330, height=330).facet(
    column=alt.Column("checkpoint:N", title=None, sort=chosen, header=alt.Header(labelFontSize=14, labelFontWeight="bold"))),
    confusion, "confusion_matrices", stretch=False)
st.caption("Rows are the true class and add up to 100 %; the diagonal is the per-class accuracy on the test set.")

accuracy = frame(zoo.class_accuracy_frame)
accuracy = accuracy[accuracy["checkpoint"].isin(chosen)]
show_chart(alt.Chart(accuracy).mark_bar().encode(
    x=alt.X("class:N", sort=list(CLASSES), title=None), xOffset=alt.XOffset("checkpoint:N", sort=chosen),
    y=alt.Y("accuracy:Q", title="test accuracy (%)", scale=alt.Scale(domain=[0, 100])),
    color=model_legend(accuracy), tooltip=["checkpoint", "class", alt.Tooltip("accuracy:Q", format=".1f")],
).properties(height=300, title="Per-class accuracy"), accuracy, "per_class_accuracy")

if a != b:
    wide = accuracy.pivot(index="class", columns="checkpoint", values="accuracy")
    gain = pd.DataFrame({"class": wide.index, "gain": wide[b] - wide[a], "source": f"{b} minus {a} (ours)"})
    claims = pd.DataFrame({"class": list(SEED_REPORT_CLASS_GAINS), "gain": list(SEED_REPORT_CLASS_GAINS.values()),
                           "source": "seed report 000 claim: ResNet-18 minus Plain-18"})
    order = gain.sort_values("gain", ascending=False)["class"].tolist()
    x = alt.X("class:N", sort=order, title=None)
    y = alt.Y("gain:Q", title="accuracy of B minus A (points)")
    tooltip = ["source", "class", alt.Tooltip("gain:Q", format="+.1f", title="points")]
    bars = alt.Chart(gain).mark_bar().encode(
        x, y, color=alt.condition("datum.gain >= 0", alt.value("#2171b5"), alt.value("#e6550d")), tooltip=tooltip)
    ticks = alt.Chart(claims).mark_point(shape="diamond", filled=False, size=140, strokeWidth=2, color="black").encode(
        x, y, shape=alt.Shape("source:N", title="reference"), tooltip=tooltip)
    show_chart((bars + ticks).properties(height=280, title=f"Which classes B ({b}) gains on over A ({a})"),
               pd.concat([gain, claims], ignore_index=True), "class_gains")
st.caption("Choose checkpoints A and B in the sidebar; any two checkpoints can be compared.")
