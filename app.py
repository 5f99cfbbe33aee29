"""ResNet Explorer: the home page (the degradation problem and the model zoo) and the list of pages."""
import altair as alt
import streamlit as st

from pages.common import NET_COLORS, frame, header, show_chart, usable_checkpoints
from resnet_core import zoo

DASHES = alt.Scale(domain=["train", "test"], range=[[6, 4], [1, 0]])  # Fig. 6's convention: train dashed, test solid


def home() -> None:
    header("ResNet Explorer", "Deeper plain nets train *worse*; deeper residual nets train better. "
           "Our runs are the filled points, reference numbers from the paper and the seed reports are hollow.")
    st.markdown(
        "Adding layers to a plain convolutional network should never hurt, since the extra layers could learn the "
        "identity, yet beyond about 20 layers plain nets reach a *higher training error*. "
        "This **degradation problem** is a failure of optimisation, not overfitting. "
        "Residual networks (He et al., 2016) let each block learn a correction F(x) that a shortcut adds to its "
        "input x, and with them deeper really is better.")
    usable_checkpoints()
    depth_chart()
    zoo_table()


def depth_chart() -> None:
    data = frame(zoo.headline_frame)
    ours, refs = data[data["source"] == "ours"], data[data["source"] != "ours"]
    x = alt.X("depth:O", title="depth (weight layers)")
    y = alt.Y("error:Q", title="final error (%)")
    color = alt.Color("net:N", scale=NET_COLORS, title="network")
    tooltip = ["source", "model", "checkpoint", "split", alt.Tooltip("error:Q", format=".2f", title="error (%)")]
    lines = alt.Chart(ours).mark_line(point=alt.OverlayMarkDef(size=60, filled=True)).encode(
        x, y, color, strokeDash=alt.StrokeDash("split:N", scale=DASHES, title="error on"), tooltip=tooltip)
    points = alt.Chart(refs).mark_point(filled=False, size=110, strokeWidth=2).encode(
        x, y, color, shape=alt.Shape("source:N", title="reference (test error)"), tooltip=tooltip)
    show_chart((lines + points).properties(height=380), data, "final_error_vs_depth")


def zoo_table() -> None:
    st.subheader("Model zoo")
    st.caption("One row per checkpoint in the checkpoints folder. Train error is on the augmented batches of the last "
               "epoch (as in Fig. 6); FLOPs are multiply-adds per 32x32 image; the paper column is Table 6 (residual "
               "nets only: the paper gives the plain nets as curves).")
    st.dataframe(frame(zoo.zoo_frame), hide_index=True, column_config={
        "checkpoint": "checkpoint", "net": "shortcuts?", "params": st.column_config.NumberColumn("parameters", format="compact"),
        "flops": st.column_config.NumberColumn("FLOPs (mult-adds)", format="compact"),
        "train_error": st.column_config.NumberColumn("train error %", format="%.2f"),
        "test_error": st.column_config.NumberColumn("test error %", format="%.2f"),
        "paper_test_error": st.column_config.NumberColumn("paper test error % (Table 6)", format="%.2f"),
        "train_minutes": st.column_config.NumberColumn("training time (min)", format="%.1f"),
        "weights": st.column_config.CheckboxColumn("weights bundled")})


st.set_page_config(page_title="ResNet Explorer", page_icon=":material/stacked_line_chart:", layout="wide")
st.navigation([
    st.Page(home, title="Home", icon=":material/home:", default=True),
    st.Page("pages/curves.py", title="Degradation curves", icon=":material/show_chart:"),
    st.Page("pages/gradients.py", title="Gradient flow", icon=":material/gradient:"),
    st.Page("pages/responses.py", title="Layer responses", icon=":material/equalizer:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    st.Page("pages/classes.py", title="Classes", icon=":material/grid_on:"),
    st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:"),
]).run()
