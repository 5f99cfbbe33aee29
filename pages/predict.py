"""Predict: classify uploaded images or shipped CIFAR-10 test images with a residual and a plain net side by side,
and show where each one looks."""
import hashlib

import altair as alt
import numpy as np
import streamlit as st
from PIL import Image

from pages.common import (LENGTH_HELP, NET_COLORS, by_name, default_pair, gallery, header, load_model, markdown_text,
                          percent, short_runs_note, show_chart, usable_checkpoints, with_lengths)
from resnet_core import zoo
from resnet_core.data import CLASSES
from resnet_core.explain import colormap, grad_cam, input_saliency, overlay
from resnet_core.predict import (FORMATS, MAX_UPLOAD_BYTES, OutOfMemory, Upload, framed, image_tensor, predict,
                                  read_upload)

# Each model's name over its top-5 bars, left-aligned, not turned on its side to the left of them.
MODEL_HEADER = alt.Header(labelOrient="top", labelAngle=0, labelAnchor="start", labelFontSize=13,
                          labelFontWeight="bold")
Image.init()
# Every file name ending of a format the decoder opens (.tif and .pgm too: a scanner's 16-bit greys), none other
IMAGE_TYPES = sorted(ext[1:] for ext, fmt in Image.registered_extensions().items() if fmt in FORMATS)
LABEL_INSIDE = 70  # % from which a bar's value is written inside it (a shorter bar's after it, within 300 px)
ZOOM = 4  # 32x32 shown as 128x128, nearest neighbour, so every pixel the model sees stays visible
# The maps' colour scale, low to high, as a strip under them: 128 x 12 px
COLOUR_KEY = Image.fromarray(colormap(np.tile(np.linspace(0, 1, 32 * ZOOM), (12, 1))).round().astype(np.uint8), "RGB")
TILE = 64  # gallery thumbnails (pixels): wide enough for the test-image number on the button under each
NAME_LIMIT = 120  # characters of an uploaded file's name shown, its start and its ending (a name may be 5,000)
MAX_FILES = 20  # uploads shown per run: each is a row of images and charts, all drawn again on every click


def models_ui(infos, nets: dict[str, str]) -> list[str]:
    """Sidebar: one plain and one residual checkpoint, in the order every panel shows them, plain first (either kind
    may be missing from the zoo)."""
    defaults = dict(zip(("plain", "residual"), default_pair(infos)))
    chosen = []
    with st.sidebar:
        for kind in ("plain", "residual"):
            names = [name for name, net in nets.items() if net == kind]
            if names:
                # keyed, so that a publish changing the labels' iteration counts leaves the pick as it was
                chosen.append(st.selectbox(f"{kind.capitalize()} checkpoint", names, index=names.index(defaults[kind]),
                                           format_func=with_lengths(infos), help=LENGTH_HELP, key=f"predict-{kind}"))
    return chosen


def length_warning(chosen: list[str], checkpoints: dict) -> str | None:
    """Words for two chosen checkpoints trained for different numbers of iterations, or None."""
    lengths = {name: zoo.iterations(checkpoints[name]) for name in chosen}
    if len(set(lengths.values())) < 2 and None not in lengths.values():
        return None
    said = " and ".join(f"{name} for {'an unknown number of' if n is None else f'{n:,}'} iterations"
                        for name, n in lengths.items())
    return (f"{said}: their answers differ by training length as well as by shortcuts. Pick two "
            "checkpoints trained as long to compare the nets.")


def pick(position: int) -> None:
    st.session_state["gallery_pick"] = position


def gallery_ui() -> int:
    """Ten shipped test images of one class, each with a button; returns the gallery position last picked."""
    images, labels, indices = gallery()
    name = st.segmented_control("Class", CLASSES, default=CLASSES[0], required=True, key="gallery_class")
    positions = [i for i, label in enumerate(labels) if CLASSES[label] == name]
    picked = st.session_state.get("gallery_pick", positions[0])
    if picked not in positions:  # the last pick was of another class: show this class's first image, not that one
        picked = positions[0]
    with st.container(horizontal=True):  # wraps onto a second row in a narrow window, never squeezing a tile
        for i in positions:
            with st.container(width=TILE):
                st.image(Image.fromarray(images[i]).resize((TILE, TILE), Image.Resampling.NEAREST))
                st.button(f"#{indices[i]}", key=f"gallery-{i}", help="Classify this image", on_click=pick, args=(i,),
                          type="primary" if i == picked else "secondary", width="stretch")
    return picked


@st.cache_data(max_entries=256, show_spinner=False)
def where_it_looks(pixels: bytes, checkpoint: str, stamp: int | None, _model) -> tuple[Image.Image, Image.Image, str]:
    """Grad-CAM and input-saliency overlays on the 32x32 RGB image `pixels`, for the class the model predicts, and
    that class. Keyed by the pixels, the checkpoint's folder and the stamp `_model` was loaded under (the shared
    copy, not hashed: pages.common._model)
    is only read: explain works in eval mode with autograd.grad, no hooks, no .grad, and gives the mode back."""
    img32 = Image.frombytes("RGB", (32, 32), pixels)
    x = image_tensor(img32, _model.normalization)  # (1, 3, 32, 32)
    cam, index = grad_cam(_model, x)
    saliency = input_saliency(_model, x, target=index)
    return overlay(img32, cam, scale=ZOOM), overlay(img32, saliency, scale=ZOOM), CLASSES[index]


def show_where_they_look(img32: Image.Image, models: dict, checkpoints: dict) -> None:
    """Per model, side by side: its Grad-CAM and its input saliency, each for its own top class."""
    with st.container(horizontal=True):  # a model's two maps side by side; the models' pairs wrap if need be
        for name, model in models.items():
            folder = str(checkpoints[name].path)
            cam, saliency, top = where_it_looks(img32.tobytes(), folder, model.weights_stamp, model)
            with st.container(horizontal=True, width="content"):
                st.image(cam, caption=f"{name}: Grad-CAM ({top})", width=32 * ZOOM)
                st.image(saliency, caption=f"{name}: input saliency ({top})", width=32 * ZOOM)
    st.image(COLOUR_KEY, width=32 * ZOOM, caption="colour key: low (left) to high (right)")
    st.caption("Both maps are for the class each model predicts, in the colour key's colours, blended half and half "
               "with the image. Grad-CAM: bright where the last stage's feature maps "
               "raise that class's score (coarse: one cell per feature-map position, 8x8 for the 6n+2 nets, 4x4 for "
               "ResNet-18/34). Input saliency: bright where changing a pixel moves the score most, up or down "
               "(the gradient's size, not its sign).")


@st.cache_data(max_entries=256, show_spinner=False)
def read(digest: str, _data: bytes) -> tuple[Upload | None, str]:
    """(what the page shows of the upload `_data`, "") or (None, why it cannot be read), from one decode; a rerun
    (any click) decodes nothing again, and a bad file is not read twice either. Keyed by `digest`, the SHA-256 of
    the bytes: handed the bytes, Streamlit would copy them to hash them, on every run."""
    try:
        return read_upload(_data), ""
    except OutOfMemory:
        raise  # not kept: the next run may have the memory (the caller shows it)
    except ValueError as e:  # load_image's message is written for the user
        return None, str(e)


def show_prediction(key: str, upload: Upload | None, img32: Image.Image, models: dict, checkpoints: dict,
                    true_label: str | None = None, looks: bool = False) -> None:
    """The uploaded image (none for a gallery one: it is the 32x32 itself), what the model sees, each model's top-5
    as bars, and (a toggle, on if `looks`) where each model looks."""
    data = zoo.prediction_frame({name: predict(model, img32) for name, model in models.items()})
    data["net"] = data["model"].map(lambda name: zoo.identity(checkpoints[name])["net"])
    # One model's top-5 under the other's, on one probability axis: narrow enough to sit beside the images
    # in a 1024 px window; the row wraps (the bars under the images) where it cannot.
    data["label"] = [percent(p / 100) for p in data["probability"]]  # '>99.9 %', never a certainty it did not give
    base = alt.Chart().encode(
        x=alt.X("probability:Q", title="probability (%)", scale=alt.Scale(domain=[0, 100]),
                axis=alt.Axis(values=[0, 20, 40, 60, 80, 100])),
        # in rank order: sorting on x took each layer's own data, the labels' split in two, and came out alphabetical
        y=alt.Y("class:N", sort=alt.EncodingSortField(field="rank", op="min", order="ascending"), title=None),
        tooltip=["model", "rank", "class", alt.Tooltip("probability:Q", format=".1f", title="probability (%)")])
    # Each bar's value written on it, to be read without a mouse: inside a long bar, after a short one
    long = alt.datum.probability >= LABEL_INSIDE
    labels = [base.mark_text(align="right", dx=-4, color="white", fontWeight="bold").encode(text="label:N")
              .transform_filter(long),
              base.mark_text(align="left", dx=4).encode(text="label:N").transform_filter(~long)]  # the theme's colour
    bars = alt.layer(base.mark_bar().encode(color=alt.Color("net:N", scale=NET_COLORS, title="network")), *labels,
                     data=data).properties(width=300, height=110).facet(
        row=alt.Row("model:N", title=None, sort=list(models), header=MODEL_HEADER))
    with st.container(horizontal=True, vertical_alignment="center"):
        if upload is not None:
            width, height = upload.stored_size
            st.image(upload.preview, caption=f"input ({width}x{height})")
        with st.container(width=32 * ZOOM + 2):  # the framed image's width: the label wraps under it
            st.image(framed(img32.resize((32 * ZOOM, 32 * ZOOM), Image.Resampling.NEAREST)),
                     caption="what the model sees (32x32)")
            if true_label:
                st.markdown(f"true label: **{true_label}**")
        with st.container(width="content"):  # the chart and its CSV button as one item of the row
            show_chart(bars.resolve_scale(y="independent"), data, f"top5_{key}", legends_below=True)
    if st.toggle("Show where each model looks", value=looks, key=f"looks_{key}"):
        show_where_they_look(img32, models, checkpoints)


def loaded_models(infos, names: list[str]) -> dict:
    """{checkpoint name: model} for the chosen checkpoints that have weights; says why for the others."""
    models = {name: load_model(by_name(infos)[name]) for name in names}
    return {name: model for name, model in models.items() if model is not None}


header("Predict", "Upload photos or pick a CIFAR-10 test image: both nets see the same 32x32 thumbnail; "
       "compare how sure each one is, and where each one looks.")
st.caption(f"The nets know only CIFAR-10's ten classes ({', '.join(CLASSES)}): a photo of anything else still gets "
           "one of them. They see the centre square of a photo, shrunk to 32x32 pixels: the image captioned 'what "
           "the model sees'.")
infos = usable_checkpoints(short_runs=False)  # noted for the two chosen
nets = {info.name: zoo.identity(info)["net"] for info in infos}
chosen = models_ui(infos, nets)
checkpoints = by_name(infos)
short_runs_note([checkpoints[name] for name in chosen])
if warning := length_warning(chosen, checkpoints):
    st.warning(warning, icon=":material/warning:")
models = loaded_models(infos, chosen)
if not models:
    st.stop()

uploads = st.file_uploader("Images (PNG, JPEG, WebP, BMP, GIF, TIFF, PPM/PGM; several at once)", type=IMAGE_TYPES,
                           accept_multiple_files=True, max_upload_size=MAX_UPLOAD_BYTES // 2**20) or []
if len(uploads) > MAX_FILES:
    st.warning(f"{len(uploads)} files uploaded, {MAX_FILES} at most are shown: the last {len(uploads) - MAX_FILES} "
               "were skipped. Remove some files to see those.")
for n, upload in enumerate(uploads[:MAX_FILES]):
    st.markdown(f"**{markdown_text(upload.name, limit=NAME_LIMIT)}**")
    data = upload.getvalue()
    try:
        shown, refused = read(hashlib.sha256(data).hexdigest(), data)
    except OutOfMemory as e:
        shown, refused = None, str(e)
    if shown is None:  # the other files go on
        st.error(f"**{markdown_text(upload.name, limit=NAME_LIMIT)}**: {refused}")
        continue
    for note in shown.notes:
        st.caption(note)
    show_prediction(f"upload_{n}", shown, shown.model_input, models, checkpoints)

st.subheader("CIFAR-10 test images shipped with the app")
st.caption("The first ten test images of each class. Pick a class, then press the number under an image.")
picked = gallery_ui()
images, labels, indices = gallery()
show_prediction("gallery", None, Image.fromarray(images[picked]), models, checkpoints,
                true_label=f"{CLASSES[labels[picked]]} (test image #{indices[picked]})", looks=True)
