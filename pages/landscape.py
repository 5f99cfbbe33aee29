"""Loss landscape: the training loss around trained plain and residual nets along random directions (Li et al., 2018)."""
import numbers

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from pages.common import (LENGTH_HELP, LOG_LABELS, OWN_SIZE, PANEL_TITLE, by_name, csv_button, default_pair, draw,
                          file_stamp, header, length_ui, log_label, log_ticks, markdown_reason, markdown_text,
                          model_legend, picker_key, short_runs_note, show_chart, span, usable_checkpoints,
                          weights_stamp, with_lengths)
from resnet_core import zoo
from resnet_core.checkpoint import REPO_ROOT, CheckpointInfo, default_checkpoints_dir
from resnet_core.landscape import FILE, read_landscape

# The colour scale stops at this percentile of the surfaces' losses (colour_domain), or at the lower panel's where the
# other's is over CAP_RATIO times larger.
CAP_PERCENTILE, CAP_RATIO = 95, 10
# Each surface a square this many px a side, alpha and beta at one scale (a panel stretched to its column's width
# under a fixed height drew the round basin as an ellipse): two abreast, axes and all, in a 1280 px window with the
# sidebar open (one above the other at 1024 px).
SIZE = 300
SLICE_HEIGHT = 360  # px of the 1-D slices' plot
HALVES = alt.Axis(tickCount=5)  # a surface's alpha and beta axes: -1, -0.5, 0, 0.5, 1 over the default span
# Filter-normalised directions: a step of 1 moves every filter by its own norm (Li et al., 2018), hence the unit.
# short enough for a panel half a 1024 px window wide; the caption says what 1 means (one filter norm)
ALPHA, BETA = "alpha (along d1)", "beta (along d2)"
# What makes two landscapes' losses the same measurement, point for point (the device and the time taken do not).
COMPARED_SETTINGS = {"points": "training images", "precision": "precision", "grid": "grid", "span": "span",
                     "seed": "seed", "direction": "directions", "bn": "BN", "augmentation": "augmentation"}
# BN and augmentation are always eval and none (the caption says so); the long, constant direction goes last.
SETTINGS_COLUMNS = ["checkpoint", "parts", "points", "grid", "span", "seed", "device", "precision", "wall_time_s",
                    "center_loss", "center_error", "direction"]
HOW_TO_COMPUTE = """No `landscape.json` beside {which} yet. Compute one per checkpoint with

```
{commands}
```

Each evaluates the training loss at hundreds of points (by default a 21x21 grid and a 21-point slice, each point
on 2,000 training images, close to a million forward passes of one image): minutes on a GPU. On the CPU use a smaller
sample and grid, for example `--device cpu --points 256 --grid 9`. Then reload this page."""


@st.cache_data(max_entries=64, show_spinner=False)
def landscape(folder: str, stamp: int | None, weights: int | None) -> dict | None:
    # The mtimes of landscape.json (`stamp`) and model.safetensors (`weights`) are only part of the cache key: a
    # recomputed file is read afresh, and so is one whose checkpoint was retrained (read_landscape then refuses it).
    return read_landscape(folder)


def measured(infos: list[CheckpointInfo]) -> list[tuple[CheckpointInfo, dict]]:
    """(checkpoint, its landscape.json) for every checkpoint that has one; damaged files are listed and left out."""
    found, damaged = [], []
    for info in infos:
        try:
            data = landscape(str(info.path), file_stamp(info.path / FILE), weights_stamp(info))
        except ValueError as e:  # read_landscape names the file and says how to recompute it
            damaged.append(f"- **{markdown_text(info.name)}**: {markdown_reason(str(e))}")
            continue
        if data is not None:
            found.append((info, data))
    if damaged:
        st.warning(f"{len(damaged)} landscape file(s) left out:\n\n" + "\n".join(damaged))
    return found


def how_to_compute(missing: list[CheckpointInfo], which: str) -> str:
    root = default_checkpoints_dir()
    where = "" if root.resolve() == (REPO_ROOT / "checkpoints").resolve() else f" --checkpoints {root}"
    names = [info.name for info in missing if info.has_weights] or ["plain56"]
    commands = "\n".join(f"python -m resnet_core.landscape --model {name} --device cuda{where}" for name in names)
    unweighted = [info.name for info in missing if not info.has_weights]
    note = f"\n\n{', '.join(unweighted)}: weights not bundled, so train them first." if unweighted else ""
    return HOW_TO_COMPUTE.format(which=which, commands=commands) + note


def landscape_ui(found: list[tuple[CheckpointInfo, dict]]) -> tuple[list[str], list[str]]:
    """Sidebar: the training length, one plain and one residual 2-D surface of it (either kind may be missing), and
    the 1-D slices to draw, of that length too: by default the surfaces' own, else (landscapes computed with
    `--dims 1`) default_pair's. All at once, they mix samples of 500 to 2,000 images, and plain-110's 10^9 squeezes
    the rest into the bottom of a log axis."""
    kept = {info.name for info in length_ui([info for info, _ in found], "Plain and residual runs of one length at a "
                                                                          "time, surfaces and slices alike.")}
    found = [(info, data) for info, data in found if info.name in kept]
    with_surface = [info for info, data in found if data.get("surface_2d")]
    sliced = [info for info, data in found if data.get("slice_1d")]
    with_slice = [info.name for info in sliced]
    defaults = dict(zip(("plain", "residual"), default_pair(with_surface)))
    surfaces = []
    with st.sidebar:
        for kind in ("plain", "residual"):
            names = [info.name for info in with_surface if zoo.identity(info)["net"] == kind]
            if names:
                surfaces.append(st.selectbox(f"{kind.capitalize()} checkpoint (surface)", names,
                                             index=names.index(defaults[kind]),
                                             key=picker_key(f"landscape-{kind}", with_surface),
                                             format_func=with_lengths(with_surface), help=LENGTH_HELP))
        drawn = [n for n in surfaces if n in with_slice] or [n for n in default_pair(sliced) if n]
        slices = st.multiselect("1-D slices", with_slice, default=drawn, format_func=with_lengths(sliced), help=LENGTH_HELP,
                                key=picker_key("-".join(["landscape-slices", *surfaces]), sliced))  # follow the surfaces
    return surfaces, slices


def differences(settings, chosen: list[str]) -> str:
    """'training images: plain20 500, resnet56 2,000; precision: ...' for each of COMPARED_SETTINGS in which the
    `chosen` checkpoints' landscapes differ; '' where they were measured alike."""
    def words(value) -> str:  # 2,000 images, span 1, 'bf16 autocast'; a file older than the setting lacks it
        if isinstance(value, str):
            return value
        if value is None or isinstance(value, numbers.Real) and np.isnan(value):  # absent or null in the file
            return "not recorded"
        # 15 digits: 2,000 (not 2000.0 where another file lacks it), and any two seeds told apart
        return f"{value:,.15g}" if isinstance(value, numbers.Real) else str(value)

    rows = settings.set_index("checkpoint").loc[chosen]
    # Compared as written: a setting one file lacks (NaN, which nunique would skip) differs from a recorded one.
    return "; ".join(f"{label}: " + ", ".join(f"{name} {words(value)}" for name, value in rows[column].items())
                     for column, label in COMPARED_SETTINGS.items() if rows[column].map(words).nunique() > 1)


def not_alike(settings, chosen: list[str], what: str) -> bool:
    """Warn (and say True) where the `chosen` landscapes were measured with different settings."""
    differ = differences(settings, chosen)
    if differ:
        st.warning(f"**{what} were measured differently** ({differ}): the same colour or height is not the same "
                   "measurement, and part of a difference between them may be the measurement's, not the nets'. The "
                   "table at the bottom gives every setting; `python -m resnet_core.landscape --model NAME "
                   "--overwrite` recomputes one.")
    return bool(differ)


def colour_domain(shown) -> tuple[list[float] | None, str | None]:
    """The shared colour scale's [low, top] over the `shown` surfaces, and why it stops at top (None where it spans
    every loss). From the lowest loss to the highest, the few cells at a surface's far corners took the upper
    decades of the palette and left the basin, where most of the surface lies, a few shades of one colour; so the
    scale stops at the losses' CAP_PERCENTILE-th percentile, rounded to two figures as its colour bar labels it, and
    a cell above it is drawn in the top colour (its tooltip keeps its loss). Where one panel's percentile is over
    CAP_RATIO times the other's (a diverging plain net reaches 10^15 where the residual net beside it stays under
    10^5), the scale stops at the lower one: on a scale of both, the residual surface would be a single colour.
    None where no loss is finite."""
    finite = shown[np.isfinite(shown["loss"])]
    if finite.empty:
        return None, None
    low, highest = float(finite["loss"].min()), float(finite["loss"].max())
    tops = finite.groupby("checkpoint")["loss"].quantile(CAP_PERCENTILE / 100)
    if tops.max() <= CAP_RATIO * tops.min():
        top = finite["loss"].quantile(CAP_PERCENTILE / 100)
        why = f"the {CAP_PERCENTILE}th percentile of the losses" + (" of both surfaces" if len(tops) > 1 else "")
    else:
        top, why = tops.min(), (f"{tops.idxmin()}'s {CAP_PERCENTILE}th percentile, so that the surface that stays low "
                                "keeps the whole palette")
    top = float(f"{top:.2g}")
    return ([low, top], why) if low < top < highest else ([low, highest], None)


def colour_bar(domain) -> alt.Legend:
    """A surface's colour bar over `domain`, as long as the plot is wide: labelled at its ends and the powers of ten
    between that leave room for their labels (log_ticks)."""
    return alt.Legend(values=log_ticks(domain, length=SIZE, across=True), labelExpr=LOG_LABELS, gradientLength=SIZE)


def surface_panel(rows, shown, grid) -> alt.LayerChart:
    """One checkpoint's loss surface (`rows`, every point) with a cross on the trained weights, on the axes of all
    the `grid` cells (an overflowed one stays in place, blank) and the colour scale of colour_domain(`shown`): the
    same colour is the same loss in every panel, up to the cap. Where every point overflowed, the empty frame says
    so in its middle."""
    drawn = rows[rows["loss"] > 0]  # a log scale has no place for an overflowed (NaN) or zero loss
    domain, capped = colour_domain(shown)
    title = ["training loss (cross-entropy, log scale)"] + (
        [f"values above {log_label(domain[1])} shown as {log_label(domain[1])}"] if capped else [])
    loss_scale = alt.Scale(type="log", scheme="viridis", domain=domain or alt.Undefined, clamp=True)
    # each cell outlined 1 px in its own colour: abutting cells otherwise leave antialiased seams, a grid on a projector
    # (on a copy of the field: on the same field Vega-Lite merges the stroke into the colour legend, and breaks it)
    cells = alt.Chart().transform_calculate(outline="datum.loss").mark_rect(strokeWidth=1).encode(
        # five ticks a side: eleven (-1.0, -0.8, ...) ran together at 13 px
        x=alt.X("a0:Q", title=ALPHA, scale=alt.Scale(domain=span(grid, "a0", "a1"), nice=False), axis=HALVES),
        x2="a1:Q",
        y=alt.Y("b0:Q", title=BETA, scale=alt.Scale(domain=span(grid, "b0", "b1"), nice=False), axis=HALVES),
        y2="b1:Q",
        color=alt.Color("loss:Q", title=title, scale=loss_scale, legend=colour_bar(domain) if len(drawn) else None),
        stroke=alt.Stroke("outline:Q", scale=loss_scale, legend=None),
        tooltip=["checkpoint", alt.Tooltip("alpha:Q", format=".2f"), alt.Tooltip("beta:Q", format=".2f"),
                 alt.Tooltip("loss:Q", format=".4g"), alt.Tooltip("error:Q", format=".1f", title="error (%)")])
    trained = alt.Chart().mark_point(shape="cross", size=140, filled=True, color="white").encode(
        x=alt.X("alpha:Q", title=ALPHA), y=alt.Y("beta:Q", title=BETA),
        tooltip=[alt.Tooltip("checkpoint", title="trained weights of")]
    ).transform_filter("datum.alpha == 0 && datum.beta == 0")
    layers = [cells, trained]
    if drawn.empty:  # kept beside the other panel, so that a reader sees the surface is there but has no colour
        layers.append(alt.Chart(rows).transform_aggregate(alpha="mean(alpha)", beta="mean(beta)").mark_text(
            fontSize=14).encode(x=alt.X("alpha:Q", title=ALPHA), y=alt.Y("beta:Q", title=BETA),
                                text=alt.value("every point overflowed")))
    return alt.layer(*layers, data=drawn).properties(width=SIZE, height=SIZE)


def surface_section(surface, settings, chosen: list[str]) -> None:
    data = surface[surface["checkpoint"].isin(chosen)]
    if data.empty:
        return
    shown = data[data["loss"] > 0]  # a log scale has no place for an overflowed (NaN) or zero loss
    st.subheader("2-D surface: plain and residual")
    unlike = not_alike(settings, chosen, f"The surfaces of {' and '.join(chosen)}")
    # Not show_panels: it stretches each panel to its column's width, and a square needs a fixed one. Drawn at their
    # own size (OWN_SIZE), abreast where they fit, one above the other in a narrow window.
    with st.container(horizontal=True):
        for name in [name for name in chosen if (data["checkpoint"] == name).any()]:
            panel = surface_panel(data[data["checkpoint"] == name], shown, data).properties(
                title=alt.Title(name, **PANEL_TITLE), autosize=OWN_SIZE)
            draw(panel, legends_below=True, width="content")
    csv_button(data, "loss_surfaces")
    st.markdown(f"**Measured here**, training loss over each surface: {zoo.surface_summary(data)}.")
    blank = [name for name in dict.fromkeys(data["checkpoint"]) if name not in set(shown["checkpoint"])]
    overflowed = len(data[~data["checkpoint"].isin(blank)]) - len(shown)  # in the panels drawn; the blank ones apart
    domain, capped = colour_domain(shown)
    cap = ""
    if capped:
        cells = shown.groupby("checkpoint")["loss"].agg(above=lambda loss: int((loss > domain[1]).sum()), total="size")
        above = ", ".join(f"{row.above} of {name}'s {row.total}" for name, row in cells.iterrows() if row.above)
        cap = (f" The colour scale ends at {log_label(domain[1])}, {capped}: the cells above it ({above}) are drawn in "
               "the top colour; hover for their loss.")
    scale = ("Both panels share one colour scale, over surfaces measured differently (see the warning above)."
             if unlike else "Both panels share one colour scale: the same colour is the same loss.")
    if blank:  # a scale shared with an empty panel would be a claim about nothing
        whose = " and ".join(f"{name}'s" for name in blank)
        scale = (f"Every point of {whose} surface overflowed: nothing to colour, so "
                 f"{'its panel is' if len(blank) == 1 else 'their panels are'} left blank"
                 + (", and the colour scale is the other panel's alone." if len(shown) else "."))
    st.caption(scale + cap + " The cross marks the trained "
               "weights (alpha = beta = 0); the weights at (alpha, beta) are trained + alpha d1 + beta d2, where d1 "
               "and d2 are random directions rescaled filter by filter to the trained filters' norms (so 1 moves each "
               "filter by its own norm). Pick the "
               "checkpoints in the sidebar." + (f" {overflowed} points overflowed and are left blank." if overflowed else ""))


def slice_section(slices, settings, chosen: list[str]) -> None:
    data = slices[slices["checkpoint"].isin(chosen)]
    if data.empty:
        return
    shown = data[data["loss"] > 0]
    st.subheader("1-D slices: every chosen checkpoint")
    not_alike(settings, chosen, "These slices")
    show_chart(alt.Chart(shown).mark_line(point=alt.OverlayMarkDef(size=25)).encode(
        x=alt.X("alpha:Q", title="alpha (along one random direction; 1 = each filter moved by its own norm)"),
        y=alt.Y("loss:Q", scale=alt.Scale(type="log"), title="training loss (log scale)",
                axis=alt.Axis(labelExpr=LOG_LABELS,
                              values=log_ticks(span(shown, "loss"), nice=True, length=SLICE_HEIGHT))),
        color=model_legend(shown), detail="checkpoint:N",
        tooltip=["checkpoint", alt.Tooltip("alpha:Q", format=".2f"), alt.Tooltip("loss:Q", format=".4g"),
                 alt.Tooltip("error:Q", format=".1f", title="error (%)")],
    ).properties(height=SLICE_HEIGHT), shown, "loss_slices")
    st.caption("Loss: the mean cross-entropy. Plain nets in oranges, residual nets in blues, darker = deeper (and of "
               "two runs of one model, the longer). Computed with the same seed as the surface, a slice is the "
               "surface's beta = 0 row. By default the two surfaces' slices; add others of the same training length "
               "in the sidebar.")


header("Loss landscape", "The training loss as each net's trained weights move along random, filter-normalised "
       "directions. Li et al. (2018) found a smooth, nearly convex basin around residual nets and a chaotic one "
       "around deep plain nets; the numbers under the surfaces say what we measured.")
infos = usable_checkpoints(short_runs=False)  # noted for the landscapes drawn, once chosen
found = measured(infos)
missing = [info for info in infos if info.name not in {i.name for i, _ in found}]
if not found:
    st.info(how_to_compute(missing, "any checkpoint"))
    st.stop()

surfaces, slice_names = landscape_ui(found)
short_runs_note([by_name(infos)[name] for name in dict.fromkeys(surfaces + slice_names)])
slices, surface, settings = zoo.landscape_frames(found)
surface_section(surface, settings, surfaces)
slice_section(slices, settings, slice_names)

st.subheader("How each landscape was measured")
st.dataframe(settings, hide_index=True, column_order=SETTINGS_COLUMNS, column_config={
    "points": st.column_config.NumberColumn("training images", help="The first N images of the training set."),
    "grid": st.column_config.NumberColumn("grid", help="Values per axis."),
    "span": st.column_config.NumberColumn("span", help="Coefficients from -span to +span.", format="%.2f"),
    "wall_time_s": st.column_config.NumberColumn("time (s)", format="%.1f"),
    "center_loss": st.column_config.NumberColumn("centre loss", format="%.4f", help="At the trained weights."),
    "center_error": st.column_config.NumberColumn("centre error %", format="%.2f", help="At the trained weights.")})
st.caption("Losses are on the first training images, without augmentation and with BN on its running statistics "
           "(eval mode), written by `python -m resnet_core.landscape` beside each checkpoint.")
if missing:
    with st.expander(f"No landscape yet for {len(missing)} checkpoint(s): how to compute them"):
        st.markdown(how_to_compute(missing, ", ".join(info.name for info in missing)))
