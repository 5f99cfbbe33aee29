"""ResNet Explorer: the page config and the list of pages; `streamlit run app.py`."""
import streamlit as st

from pages.common import DEEP_LINK, MENU, ROUTED

st.set_page_config(page_title="ResNet Explorer", page_icon=":material/stacked_line_chart:", layout="wide")
pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/curves.py", title="Degradation curves", icon=":material/show_chart:"),
    st.Page("pages/gradients.py", title="Gradient flow", icon=":material/gradient:"),
    st.Page("pages/responses.py", title="Layer responses", icon=":material/equalizer:"),
    st.Page("pages/landscape.py", title="Loss landscape", icon=":material/landscape:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    st.Page("pages/classes.py", title="Classes", icon=":material/grid_on:"),
    st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:"),
]
page = st.navigation(pages)
st.session_state[ROUTED] = True
st.session_state[MENU] = pages  # Home's tour links them
asked = st.session_state.pop(DEEP_LINK, None)  # a deep link that arrived before the first routing (pages.common.header)
forward = [p for p in pages if asked and p.url_path == asked != page.url_path]
if forward:
    st.switch_page(forward[0])
page.run()
