"""Streamlit glue every page shares: cached checkpoints, frames and models, colours, CSV downloads, the how-to-train message."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from urllib.parse import urlparse

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch

from resnet_core import zoo
from resnet_core.checkpoint import (CheckpointError, CheckpointInfo, default_checkpoints_dir, list_checkpoints, load_pretrained)
from resnet_core.data import CIFAR10_MEAN, CIFAR10_STD, normalize
from resnet_core.gallery import load_gallery
from resnet_core.paper import PAPER_ITERATIONS

HOW_TO_TRAIN = """No trained checkpoints in `{root}` yet. Make them with the trainer, for example

```
python train.py --all                # the ten 6n+2 nets, 20 to 110 layers, plain and residual
python train.py --depth 56 --plain   # one net: plain56
```

then reload this page (set `RESNET_CHECKPOINTS` to read another folder)."""

# Plain nets in oranges, residual nets in blues: the kind's own colour (NET_COLORS) where a chart shows one depth of
# it, as Predict's bars and the Classes gains do (plain56 beside resnet56 alone is this orange and this blue, not a
# dark brown and a navy). Several depths of a kind spread light to dark over these shades, darker = deeper (and of two
# runs of one depth, the longer), so that neighbouring depths stay apart (model_color): a model's shade depends on its
# chart's company, but never on the other kind's. Light, the kind's own, dark: through the middle stop, the ladder
# stays a clear orange or blue (straight from light to dark, its middle was a muddy brown and a slate).
NET_COLORS = alt.Scale(domain=["plain", "residual"], range=["#e6550d", "#2171b5"])
PLAIN_SHADES = ("#fdae6b", NET_COLORS.range[0], "#7f2704")
RESIDUAL_SHADES = ("#9ecae1", NET_COLORS.range[1], "#08306b")
# Fig. 6's convention on every chart with both: training error dashed, test error solid.
TRAIN_DASHED = alt.Scale(domain=["train", "test"], range=[[6, 4], [1, 0]])


def dashes_of(splits) -> alt.Scale:
    """TRAIN_DASHED for the splits drawn alone: its legend lists no 'train' under a chart of test errors only."""
    kept = [k for k, split in enumerate(TRAIN_DASHED.domain) if split in set(splits)]
    return alt.Scale(domain=[TRAIN_DASHED.domain[k] for k in kept], range=[TRAIN_DASHED.range[k] for k in kept])


PANEL_TITLE = dict(fontSize=16, fontWeight="bold", anchor="middle")  # "plain" / "residual" over each panel
# Legend entries abreast under a panel: four ran past the panel's edge at 1024 px, cutting "plain1202" to "plain".
PANEL_LEGEND_COLUMNS = 2
# Legends under the plot, one under another, where beside it they would squeeze the plot in a 1024 px window
# (Vega-Lite takes Vega's legend layout only as an expression). Such a chart fits its width alone ("fit-x"): its
# height is the plot's, the legends adding to it rather than squashing the plot.
LEGENDS_BELOW = dict(orient="bottom", layout=alt.ExprRef(expr="{bottom: {direction: 'vertical', anchor: 'start'}}"))
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")
# A chart drawn at its own size (draw's width "content"): its plot as large as it says, axes and legends around it
# (Streamlit's default, fit, would squeeze them into that size too).
OWN_SIZE = alt.AutoSizeParams(type="pad")
LOG_TICKS = 8  # labels on a log axis or colour bar at most (log_ticks): past that, every second or third power of ten
# Chart text a room can read off a projector: dark, not Vega's grey, at these sizes (px), on every chart (styled).
INK = "#31333F"  # Streamlit's own text colour
LABEL_PX, TITLE_PX, CHART_TITLE_PX = 13, 14, 16  # tick and legend labels; axis titles; chart titles
AXIS_STYLE = dict(labelFontSize=LABEL_PX, titleFontSize=TITLE_PX, labelColor=INK, titleColor=INK)
LEGEND_STYLE = dict(labelFontSize=LABEL_PX, titleFontSize=LABEL_PX, labelColor=INK, titleColor=INK, labelLimit=0,
                    titleLimit=0)  # labels and titles never cut short
PANEL_BAR = 170  # px: a colour bar under a panel of show_panels, no longer than a narrow panel's plot
# Log-scale tick labels: the ends of a domain to two significant figures (0.0078, 1,300), the powers of ten
# between as numbers from 0.001 to 10,000, beyond as 10⁵ or 2.2 × 10⁵ (plain-110's loss reaches 10¹⁵), at
# log_ticks' values (Vega's own label only some of the values given it on a log axis: 1, 0.4, 0.2, 0.05). The
# exponent in superscript digits, each digit replaced in turn: "10^8" read as a formula on a projector.
_EXPONENT = "floor(log(datum.value) / LN10 + 1e-9)"


def _superscript(expr: str) -> str:
    """A Vega expression: the string `expr` with its digits and minus sign raised, "-15" to "⁻¹⁵" (replace() takes
    one pattern; Vega's format writes a minus as U+2212)."""
    for digit, raised in [*enumerate("⁰¹²³⁴⁵⁶⁷⁸⁹"), ("\u2212", "⁻"), ("-", "⁻")]:
        expr = f"replace({expr}, regexp('{digit}', 'g'), '{raised}')"
    return expr


LOG_LABELS = (f"datum.value >= 0.001 && datum.value < 100000 ? format(datum.value, ',.2~r') : "
              f"(abs(datum.value / pow(10, {_EXPONENT}) - 1) < 0.001 ? '' : "
              f"format(datum.value / pow(10, {_EXPONENT}), '.2~g') + ' × ') + '10' + "
              + _superscript(f"format({_EXPONENT}, 'd')"))


RAISED = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")  # str.translate: an exponent in superscript


def log_label(value: float) -> str:
    """`value` as LOG_LABELS writes it on a chart: 0.0078, 1,300, 10⁵, 2.2 × 10¹⁵."""
    if 0.001 <= value < 100_000:
        rounded = float(f"{value:.2g}")
        text = f"{rounded:,.{max(0, 1 - math.floor(math.log10(rounded)))}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = value / 10 ** exponent
    times = "" if abs(mantissa - 1) < 0.001 else f"{float(f'{mantissa:.2g}'):g} × "
    return times + "10" + str(exponent).translate(RAISED)


# Escaped in text from outside (an uploaded file's or a checkpoint folder's name, a damaged file's reason) shown with
# st.markdown, always after "**" or "- " (so never at a line's start, where # - + and "1." would matter too)
MARKDOWN_SPECIAL = set("\\`*_{}[]()<>!|~$&")
# Unicode's direction controls: in a name, U+202E shows "gnp.exe" as "exe.png" and reverses the text after it
BIDI_CONTROLS = set("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def markdown_text(text: str, limit: int | None = None) -> str:
    """`text` (a name chosen by whoever uploaded the file or named the folder) shown as it is in st.markdown: no bold,
    image, HTML, maths or icon made of its characters, and on one line (a name that reads as a web address may still show as a
    link, which fetches nothing). A colon is followed by a zero-width space: Streamlit reads :icon: codes after
    markdown's escapes are undone. Direction controls are dropped; longer than `limit` characters, the middle is
    left out ("…")."""
    text = "".join(c for c in text if c not in BIDI_CONTROLS)
    if limit is not None and len(text) > limit:
        text = text[:limit * 2 // 3] + "…" + text[len(text) - (limit - limit * 2 // 3 - 1):]
    return "".join(f"\\{c}" if c in MARKDOWN_SPECIAL else ":\u200b" if c == ":" else " " if c in "\r\n" else c
                   for c in text)


def markdown_reason(text: str) -> str:
    """A reason (a CheckpointError's words, which may quote a folder's name) for st.markdown: its `code` spans kept as
    code, which shows their characters as they are, and the rest escaped as markdown_text does. With an odd number of
    backticks (a name holding one), no span is trusted and all of it is escaped."""
    parts = text.split("`")
    if len(parts) % 2 == 0:
        return markdown_text(text)
    return "`".join(part if i % 2 else markdown_text(part) for i, part in enumerate(parts))


def markdown_code(text: str, block: bool = False) -> str:
    """`text` (a command from a checkpoint's config.json) as a markdown code span, or a fenced block, that it cannot
    close: on one line, between runs of backticks longer than any in it. A blank line or a ``` of its own would
    end it and show the rest as markdown."""
    text = " ".join(text.splitlines())
    fence = "`" * max(3 if block else 1, 1 + max(map(len, re.findall("`+", text)), default=0))
    return f"\n\n{fence}\n{text}\n{fence}\n\n" if block else f"{fence} {text} {fence}"  # a span drops the spaces


ROUTED = "routed_by_app"  # set by app.py on every run, before the page runs
DEEP_LINK = "deep_link"  # the page a visitor asked for before app.py had routed them (see header)
MENU = "menu"  # app.py's st.Page list, in menu order, set with ROUTED (Home links every page)


def header(title: str, sentence: str):
    """The page's title and its one sentence; returns the sentence's place, for a page that words it again once it
    has measured what it draws (Layer responses)."""
    if not st.session_state.get(ROUTED):
        # Streamlit 1.67 starts in its old pages/-folder mode until app.py has called st.navigation once, so
        # when the first request after a server start is a deep link it runs the page file alone (wrong
        # sidebar, no page config): send that one visitor through app.py, which forwards them to this page.
        st.session_state[DEEP_LINK] = urlparse(st.context.url or "").path.rstrip("/").rpartition("/")[2]
        st.switch_page("app.py")
    st.title(title)
    said = st.empty()
    said.markdown(sentence)
    return said


# -- checkpoints, frames, models: read once per change on disk, shared by every session ---------------
def file_stamp(path: Path) -> int | None:
    """Modification time, or None for a missing file (the trainer may be swapping a folder this very moment)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _signature(root: Path) -> tuple:
    """Names and modification times of every file the app reads: a new or rewritten checkpoint changes it.
    Hidden folders are the trainer's half-written ones, which list_checkpoints skips too."""
    if not root.is_dir():
        return ()
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return tuple((folder.name, name, file_stamp(folder / name)) for folder in folders
                 for name in ("config.json", "history.json", "metrics.json", "model.safetensors"))


def _where() -> tuple[str, tuple]:
    root = default_checkpoints_dir()
    return str(root), _signature(root)


@st.cache_resource(max_entries=4, show_spinner=False)
def _checkpoints(root: str, signature: tuple) -> tuple[list[CheckpointInfo], dict[str, str]]:
    return list_checkpoints(Path(root))


def checkpoints() -> tuple[list[CheckpointInfo], dict[str, str]]:
    """Usable checkpoints, and {folder: reason} for every folder that is not."""
    return _checkpoints(*_where())


@st.cache_data(max_entries=64, show_spinner=False)
def _frame(build: str, root: str, signature: tuple) -> pd.DataFrame:
    return getattr(zoo, build)(_checkpoints(root, signature)[0])


def frame(build) -> pd.DataFrame:
    """`build(checkpoints)` (a resnet_core.zoo function) over the current checkpoints, cached until one changes."""
    return _frame(build.__name__, *_where())


def usable_checkpoints(stop: bool = True, short_runs: bool = True) -> list[CheckpointInfo]:
    """The usable checkpoints, after listing the unreadable ones and (`short_runs`) short_runs_note on all of them;
    with none, say how to train (and stop). A page that shows some runs only passes False and notes the ones it
    shows."""
    infos, bad = checkpoints()
    if bad:
        st.warning(f"{len(bad)} checkpoint folder(s) could not be read and are left out:\n\n"
                   + "\n".join(f"- **{markdown_text(name)}**: {markdown_reason(reason)}" for name, reason in bad.items()))
    if not infos:
        st.info(HOW_TO_TRAIN.format(root=default_checkpoints_dir()))
        if stop:
            st.stop()
    if short_runs:
        short_runs_note(infos)
    return infos


def short_runs_note(shown: list[CheckpointInfo]) -> None:
    """A line naming those of the `shown` runs trained for less than the paper's 64k iterations, whose numbers are
    not Table 6's; none where every one trained that long (above a chart of 64k runs it would only mislead)."""
    short = [info for info in shown if zoo.is_short(info)]
    if short:
        st.caption(f":material/info: Short runs, not the paper's schedule: {', '.join(i.name for i in short)} "
                   f"({zoo.short_run_length(*short)}).")


def percent(p: float, unit: str = "\u00a0%") -> str:
    """A probability in percent to one decimal, never rounded to a certainty the net did not give: 0.99996
    reads '>99.9 %' and 4e-5 reads '<0.1 %' (not 100.0 and 0.0). The space before % does not break: a narrow
    gallery tile wrapped '%' onto a line of its own."""
    v = 100 * float(p)
    return f">99.9{unit}" if v >= 99.95 else f"<0.1{unit}" if v < 0.05 else f"{v:.1f}{unit}"


def by_name(infos: list[CheckpointInfo]) -> dict[str, CheckpointInfo]:
    return {info.name: info for info in infos}


# A checkpoint picker's options read 'resnet110 (5,850 it.)': its help says what the number is.
LENGTH_HELP = (f"it.: the iterations (SGD steps of 128 images) the checkpoint trained for; the paper trains for "
               f"{PAPER_ITERATIONS:,}. Compare nets trained equally long.")


def with_lengths(infos: list[CheckpointInfo]):
    """format_func for a picker of checkpoint names: each with its training length (zoo.with_length)."""
    named = by_name(infos)
    return lambda name: zoo.with_length(named[name])


# The pair every page starts on: the paper's own example of degradation (Fig. 1: 20 vs 56 layers). The deepest pair
# would open a lecture on plain-110, which may not train at all (chance on every image, Predict's bars flat).
DEFAULT_DEPTH = 56


def length_ui(infos: list[CheckpointInfo], help: str) -> list[CheckpointInfo]:
    """Sidebar: the checkpoints of one training length, where there are several. On one axis a 64k-iteration run
    would squeeze 15-epoch ones into its first tenth, and a 64k net beside a 15-epoch one compares training
    lengths, not shortcuts. Opens on the length of the pair every page opens on (default_pair: the 56-layer one,
    the longest trained equally), else on the length with the most runs (the longer of a tie)."""
    runs = {zoo.iterations(group[0]): group for group in zoo.schedules(infos)}
    if len(runs) < 2:
        return infos
    lengths = {zoo.iterations(info) for info in infos if info.name in default_pair(infos)} - {None}  # None: in no group
    start = lengths.pop() if len(lengths) == 1 else max(runs, key=lambda n: (len(runs[n]), n))
    with st.sidebar:
        # keyed: unkeyed, the widget is known by its labels, and a publish that changes a count would reset it
        n = st.radio("Training length", list(runs), index=list(runs).index(start), key="training-length",
                     format_func=lambda n: f"{n:,} iterations ({len(runs[n])} runs)", help=help)
    return runs[n]


def picker_key(widget: str, infos: list[CheckpointInfo]) -> str:
    """The key of a picker over `infos` (one training length's runs, length_ui): each length keeps its own picks and
    opens on its own defaults, and a run published beside the app leaves them as they were. Unkeyed, a widget is
    known by its labels, so a new "(N runs)" or "(640 it.)" made a new one, back on its default, at the next click."""
    lengths = sorted({zoo.iterations(info) or 0 for info in infos})
    return "-".join([widget, *map(str, lengths)])


def default_pair(infos: list[CheckpointInfo]) -> tuple[str | None, str | None]:
    """(plain, residual) checkpoint names to start with: the 56-layer pair, else the deepest depth that has both,
    else the deepest of each. Where a depth has runs of several lengths, the longest pair trained equally long."""
    longest = zoo.longest(infos)  # {model: its longest run}
    ids = sorted((zoo.identity(info) for info in longest.values()), key=lambda r: (r["depth"], r["checkpoint"]))
    plain = {r["depth"]: r["model"] for r in ids if r["net"] == "plain"}
    residual = {r["depth"]: r["model"] for r in ids if r["net"] == "residual"}
    both = sorted(set(plain) & set(residual))
    if both:
        depth = DEFAULT_DEPTH if DEFAULT_DEPTH in both else both[-1]
        pair = zoo.equally_trained(infos, plain[depth], residual[depth])
        return tuple(i.name for i in pair) if pair else (longest[plain[depth]].name, longest[residual[depth]].name)
    return tuple(longest[kind[max(kind)]].name if kind else None for kind in (plain, residual))


@st.cache_resource(max_entries=16, show_spinner="Loading the model...")
def _model(path: str, stamp: int | None) -> torch.nn.Module:
    # One copy per checkpoint for every session: read-only, always in eval mode, never hooked. It carries the stamp it
    # was cached under, for the caches of what it computes: a stamp read again later could be a newer publish's, and
    # this model's results would then be filed under the new weights, for good.
    model = load_pretrained(path)
    model.weights_stamp = stamp
    return model


def load_model(info: CheckpointInfo) -> torch.nn.Module | None:
    """The checkpoint's model, shared by every session; None (with the reason shown) if it has no usable weights."""
    if not info.has_weights:
        st.info(f"**{markdown_text(info.name)}** ships curves and metrics only: its weights are not bundled. "
                f"Regenerate them with{markdown_code(info.regenerate_command(), block=True)}{info.regenerate_note()}")
        return None
    try:
        return _model(str(info.path), weights_stamp(info))
    except CheckpointError as e:
        st.error(f"**{markdown_text(info.name)}**: {markdown_reason(str(e))}")
        return None


def weights_stamp(info: CheckpointInfo) -> int | None:
    """Part of every cache key that depends on the weights, so regenerated weights are loaded afresh."""
    return file_stamp(info.path / "model.safetensors")


@st.cache_data(show_spinner=False)
def gallery() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shipped CIFAR-10 test sample: (100, 32, 32, 3) uint8 images, labels, test-set indices."""
    return load_gallery()


def gallery_batch(per_class: int, normalization: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class` gallery images of each class, normalised: (B, 3, 32, 32) float, (B,) int64."""
    images, labels, _ = gallery()
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    norm = normalization or {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}
    return normalize(torch.from_numpy(images[keep]), norm["mean"], norm["std"]), torch.from_numpy(labels[keep]).long()


# -- colours and charts ------------------------------------------------------------------------------
def _shade(stops: tuple[str, ...], t: float) -> str:
    """The colour a fraction `t` (0 to 1) along evenly spaced `stops`, mixed in RGB between the two around it."""
    rgb = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in stops])  # (stops, 3)
    at = t * (len(stops) - 1)
    k = min(int(at), len(stops) - 2)  # the stop below, or the one before the last at t = 1
    return "#" + "".join(f"{int(round(v)):02x}" for v in rgb[k] + (rgb[k + 1] - rgb[k]) * (at - k))


def model_color(net: str, depth, depths) -> str:
    """Oranges for plain, blues for residual, light to dark over the depths of that kind a chart draws (`depths`),
    so that four depths on one chart use the whole range of the shade rather than a slice of it. The light end is
    still a clear orange or blue on a projector, and a depth alone of its kind gets the kind's own (NET_COLORS), the
    middle of its shades. A depth may be any sortable rung, such as model_colors' (depth, iterations, name)."""
    ladder = sorted(set(depths) | {depth})
    t = 0.5 if len(ladder) == 1 else 0.25 + 0.75 * ladder.index(depth) / (len(ladder) - 1)
    return _shade(PLAIN_SHADES if net == "plain" else RESIDUAL_SHADES, t)


def colour_key(data: pd.DataFrame) -> str:
    """'checkpoint' where any checkpoint in `data` is not named after its model: the name the sidebar and the text
    use (resnet56-15ep), and two runs of one model (a long and a short one) told apart; else 'model', which then
    says the same. Fresh nets at initialisation are of no checkpoint."""
    renamed = "checkpoint" in data and bool((data["checkpoint"] != data["model"]).any())
    return "checkpoint" if renamed else "model"


def model_colors(data: pd.DataFrame, by: str = "model") -> alt.Scale:
    """Colour scale over the frame's `by` column (model or checkpoint): plain first, then residual, shallow to deep,
    and at one depth the shorter run lighter; each kind on a ladder of its own (model_color)."""
    length = data["iterations"] if "iterations" in data else [0] * len(data)
    rungs = data.assign(rung=list(zip(data["depth"], length, data[by])))  # a step of its own for every `by`
    keys = rungs[[by, "net", "rung"]].drop_duplicates(by).sort_values(["net", "rung"])
    ladders = keys.groupby("net")["rung"].agg(set)
    return alt.Scale(domain=list(keys[by]),
                     range=[model_color(n, r, ladders[n]) for n, r in zip(keys["net"], keys["rung"])])


def model_legend(data: pd.DataFrame, **legend) -> alt.Color:
    """Colour by model, or by checkpoint where a model has several (colour_key; model_colors); `legend`: alt.Legend's
    options, such as columns for a legend below."""
    by = colour_key(data)
    return alt.Color(f"{by}:N", scale=model_colors(data, by), title=by, sort=None, legend=alt.Legend(**legend))


def relabelled(names: dict[str, str]) -> str:
    """A legend's labelExpr that writes each of its values as `names` says, others as they are."""
    said = "".join(f"datum.label === {json.dumps(key, ensure_ascii=False)} ? {json.dumps(text, ensure_ascii=False)} : "
                   for key, text in names.items())
    return said + "datum.label"


def linear_ticks(high: float, count: int = 5) -> list[float]:
    """Round values from 0 to the first one at or above `high` (> 0), about `count` steps of 1, 2, 2.5 or 5 times a
    power of ten: a linear axis's ticks that end at a labelled value above its tallest bar."""
    rough = high / count
    power = 10 ** math.floor(math.log10(rough))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= rough)
    return [float(f"{k * step:.12g}") for k in range(math.ceil(high / step - 1e-9) + 1)]


def raised(text: str) -> str:
    """zoo.figures' powers of ten written as the charts' axes write them: "1.6 × 10^6" as "1.6 × 10⁶"."""
    return re.sub(r"10\^(-?\d+)", lambda m: "10" + m.group(1).translate(RAISED), text)


def log_ticks(domain, nice: bool = False, length: float = 300, across: bool = False):
    """Values for a log axis's ticks or a log colour bar's labels over `domain`, [low, high] as span gives it
    (`nice`: from the powers of ten around them, as a log axis's nice domain runs): both ends, so that a reader sees
    where the data stop (LOG_LABELS writes them to two significant figures), and the powers of ten between them
    (every second or third where they would be more than LOG_TICKS), else 1-3-10, 1-2-5 or 1-2-...-9 steps, the
    first that puts a label between the ends. A value whose label would touch its neighbour's on an axis or bar
    `length` px long is left out: a power of ten next to an end, never the end (labels `across` it, as on a
    horizontal colour bar, take their width, and Vega sets the end ones inside the bar; on a vertical axis, a
    line). Undefined (Vega-Lite's own) without a domain. Vega's own labels on a log axis read 0.001, 0.009, 0.08,
    0.7, 6, 50, leave the ends unlabelled, and crowd a colour bar."""
    low, high = domain if isinstance(domain, (list, tuple)) else (0, 0)
    if not (0 < low <= high < math.inf):
        return alt.Undefined
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    if nice:
        low, high = float(f"1e{first}"), float(f"1e{last}")
    if high / low < 1 + 1e-9:
        return [low]

    def reach(value: float, toward_high: bool) -> float:
        """px a value's label takes from its tick toward the other end: all its width from an end, else half."""
        if not across:
            return (LABEL_PX + 5) / 2
        width = 0.6 * LABEL_PX * len(log_label(value)) + 4
        return width if value == (low if toward_high else high) else width / 2

    def apart(a: float, b: float) -> bool:  # a < b: their labels do not touch
        return math.log10(b / a) / math.log10(high / low) * length >= reach(a, True) + reach(b, False)

    def fits(inner: list[float]) -> bool:
        values = [low, *inner, high]
        return len(values) <= LOG_TICKS and all(apart(a, b) for a, b in zip(values, values[1:]))

    # float(f"1e{e}"), not 10 ** e: 10^-1 is 0.1, not 0.1000000000000000055...
    powers = [float(f"1e{e}") for e in range(first, last + 1) if low < float(f"1e{e}") < high]
    for step in range(1, len(powers) + 1):  # every power of ten, else every second, every third...
        kept = [v for v in powers if round(math.log10(v)) % step == 0]
        kept = [v for v in kept if apart(low, v) and apart(v, high)]  # none too near an end
        if kept and fits(kept):
            return [low, *kept, high]
    for mantissas in ((1, 3), (1, 2, 5), range(1, 10)):  # no power of ten between the ends: finer round values
        inner = []
        for value in (float(f"{m}e{e}") for e in range(first, last + 1) for m in mantissas):
            if low < value < high and apart(inner[-1] if inner else low, value) and apart(value, high):
                inner.append(value)
        if inner and fits(inner):
            return [low, *inner, high]
    return [low, high] if apart(low, high) else [high]


def show_chart(chart: alt.TopLevelMixin, data: pd.DataFrame, name: str, legends_below: bool = False) -> None:
    """Draw an Altair chart as wide as the page (a faceted one at its own size: Vega-Lite cannot fit facets to a
    width), its legends on the right or (`legends_below`) below, and offer exactly the data it draws as CSV."""
    draw(chart, legends_below, width="content" if isinstance(chart, alt.FacetChart) else "stretch")
    csv_button(data, name)


def show_panels(panel_of, data: pd.DataFrame, name: str, by: str = "net", order=("plain", "residual")) -> None:
    """One panel per value of `by` found in `data`, in `order`: the chart `panel_of(rows)` titled with the value,
    legends below, in columns of equal width (Vega-Lite cannot fit a faceted chart to its container), so that plain
    and residual stand abreast even on a 1024 px projector with the sidebar open (panels of a fixed 390 px stood
    one above the other there: the comparison took a scroll); Streamlit stacks the columns on a phone. Panels share
    a scale only where `panel_of` fixes its domain. Then one CSV of all the panels' data."""
    values = [v for v in order if (data[by] == v).any()]
    for column, value in zip(st.columns(len(values), gap="medium") if values else [], values):
        with column:
            panel = panel_of(data[data[by] == value]).properties(title=alt.Title(value, **PANEL_TITLE))
            # a colour bar no longer than a narrow panel's plot, so that its last label is not cut off, and no two
            # of its labels over each other
            draw(panel, legends_below=True, width="stretch", gradientLength=PANEL_BAR, labelOverlap="greedy")
    csv_button(data, name)


def styled(chart: alt.TopLevelMixin, legends_below: bool = False, **legend) -> alt.TopLevelMixin:
    """`chart` with the text every chart here shares (AXIS_STYLE, LEGEND_STYLE: dark, and large enough for a room),
    its legends on the right or (`legends_below`) below (`legend`: more of the legends' configuration). Vega-Lite
    takes a configuration on the top-level chart only, so this is the last step before drawing, layered and
    concatenated charts alike."""
    placed = LEGENDS_BELOW if legends_below else dict(orient="right")
    return (chart.configure_axis(**AXIS_STYLE).configure_legend(**LEGEND_STYLE, **placed, **legend)
            .configure_header(titleFontSize=TITLE_PX, titleColor=INK, labelColor=INK)
            .configure_title(fontSize=CHART_TITLE_PX, color=INK, subtitleFontSize=LABEL_PX, subtitleColor=INK))


def draw(chart: alt.TopLevelMixin, legends_below: bool = False, width: str = "stretch", **legend) -> None:
    """st.altair_chart of the chart styled (styled: legends placed, text readable), as wide as its container
    (`width` "stretch") or at its own size ("content"). Below the plot, the legends add to its height instead of
    squeezing it (FIT_WIDTH)."""
    # a faceted chart is its panels' height already; a chart sized on purpose (Loss landscape's squares) keeps it
    if legends_below and not isinstance(chart, alt.FacetChart) and chart.autosize is alt.Undefined:
        chart = chart.properties(autosize=FIT_WIDTH)
    st.altair_chart(styled(chart, legends_below, **legend), width=width)


def span(data: pd.DataFrame, low: str, high: str | None = None):
    """[smallest `low`, largest `high` (default: `low`)] over `data`'s finite values: a domain every panel of
    show_panels shares; Undefined (Vega-Lite's own domain) where there are none (an inf in a spec breaks the chart)."""
    lows, highs = (pd.to_numeric(data[c], errors="coerce") for c in (low, high or low))
    lows, highs = lows[np.isfinite(lows)], highs[np.isfinite(highs)]
    return [float(lows.min()), float(highs.max())] if len(lows) and len(highs) else alt.Undefined


def log_axis(data: pd.DataFrame, column: str, nice: bool = True, length: float = 300) -> dict:
    """scale= and axis= for a vertical log axis `length` px tall over `column`'s finite values: ticks at log_ticks'
    values, its ends labelled; `nice=False` ends the axis at the data, not at the powers of ten around them."""
    domain = span(data[pd.to_numeric(data[column], errors="coerce") > 0], column)  # a log axis has no room for 0
    scale = alt.Scale(type="log") if nice or domain is alt.Undefined else alt.Scale(type="log", domain=domain, nice=False)
    return dict(scale=scale, axis=alt.Axis(labelExpr=LOG_LABELS, values=log_ticks(domain, nice=nice, length=length)))


def csv_button(data: pd.DataFrame, name: str) -> None:
    st.download_button("Download this chart's data (CSV)", data.to_csv(index=False).encode(), f"{name}.csv",
                       "text/csv", key=f"csv-{name}", on_click="ignore", icon=":material/download:")
