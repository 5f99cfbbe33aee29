"""Degradation curves: the paper's Fig. 6 for our runs, plain and residual side by side."""
import math
from functools import partial

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from pages.common import (LOG_LABELS, PANEL_LEGEND_COLUMNS, colour_key, dashes_of, frame, header, length_ui, log_ticks,
                          model_legend, picker_key, relabelled, short_runs_note, show_panels, span, usable_checkpoints)
from resnet_core import zoo
from resnet_core.paper import PAPER_ITERATIONS

PANEL_HEIGHT = 320  # px of plot in each panel
LABEL_PX = 15  # px a line-end label takes up and down: labels nearer than that are moved apart


def curves_ui(depths: list[int], runs) -> tuple[list[int], str, bool]:
    with st.sidebar:
        chosen = st.multiselect("Depths", depths, default=depths, help="One line per depth and kind of net.",
                                key=picker_key("curves-depths", runs))
        metric = st.radio("Metric", ["top-1 error", "top-5 error", "loss"],
                          help="Top-5 error is recorded on the test set only.")
        # On by default: on a linear 0-90 % axis the finding, training errors that end between 0.04 and 8 %, lies
        # squeezed into the bottom tenth of the panels, the 20- and 56-layer residual nets' on top of each other.
        log = st.toggle("Log scale", value=True, help="Spreads out the small errors at the end of training: 0.1 %, "
                        "1 %, 10 % and 100 % are evenly spaced. Off: a linear axis.")
    return chosen, metric, log


def wrapped_table(frame, verdicts: str | None = None) -> None:
    """A static table, so that long claims and evidence wrap (st.dataframe cuts them off), with the `verdicts`
    column tinted: green where the claim holds, amber where it holds in part, grey where the numbers are too close
    to tell, red where it does not. No index column: st.table ignores a Styler's hidden index, and would show a
    filtered frame's (1, 3, 5, ...)."""
    tint = {"yes": "background-color: #d9f0d3", "partly": "background-color: #fbe5b6",
            "within noise": "background-color: #e4e8ef", "no": "background-color: #f4cccc"}
    style = frame.style
    st.table(style.map(lambda v: tint.get(v, ""), subset=[verdicts]) if verdicts else style, hide_index=True)


def value_domain(shown: pd.DataFrame, log: bool) -> list[float]:
    """The value axis every panel shares, from 0 (or, on a log axis, the power of ten below the smallest value) to
    the round number above the largest: a domain known here, on which line_ends spaces its labels."""
    low, high = span(shown, "value")
    if log:
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        return [float(f"1e{first}"), float(f"1e{max(last, first + 1)}")]  # whole decades, each end labelled
    step = 10.0 ** math.floor(math.log10(high)) / 2 if high > 0 else 1.0  # 89.7 % -> 90, a loss of 2.3 -> 2.5
    return [0.0, max(math.ceil(high / step), 1) * step]


def spread(wanted: list[float], gap: float, low: float, high: float) -> list[float]:
    """Heights for labels wanted at `wanted` (ascending), `gap` apart at least and between `low` and `high`: each
    run of labels that would overlap is centred on where its labels are wanted, so none moves further than its
    neighbours make it."""
    runs = []  # [sum of the wanted heights, labels, height of the first]
    for want in wanted:
        runs.append([want, 1, want])
        while len(runs) > 1 and runs[-2][2] + runs[-2][1] * gap > runs[-1][2]:  # overlaps the run below: merge
            total, count, _ = runs.pop()
            runs[-1][0] += total
            runs[-1][1] += count
            runs[-1][2] = runs[-1][0] / runs[-1][1] - (runs[-1][1] - 1) * gap / 2
    heights = [first + k * gap for _, count, first in runs for k in range(count)]
    for i in range(len(heights)):  # up from the floor, then down from the ceiling: never over the axis' labels
        heights[i] = max(heights[i], heights[i - 1] + gap if i else low)
    for i in reversed(range(len(heights))):
        heights[i] = min(heights[i], heights[i + 1] - gap if i < len(heights) - 1 else high)
    return heights


def line_ends(rows: pd.DataFrame, domain: list[float], log: bool) -> pd.DataFrame:
    """`rows` with each checkpoint's test curve (solid; its train curve where it has no test one) ending in a label,
    so that lines of neighbouring shades (four blues, 20 to 110 layers) are read at their ends: `label_at`, on the
    curve's last point, the height of its label, and `label`, its text (depth_labels). Labels nearer than LABEL_PX
    are spread apart in the order of the ends, so that no two leaders cross. One label a checkpoint: a label shared
    by a train and a test end drew two leaders, which crossed, and read as another curve's where one ended between."""
    ends = rows.sort_values("iteration").groupby(["checkpoint", "split"]).tail(1)
    ends = ends.sort_values("split", key=lambda split: split != "test").groupby("checkpoint").head(1)  # test first
    scaled = np.log10 if log else (lambda v: v)  # heights on the axis, where pixels are even
    low, high = scaled(np.array(domain, dtype=float))
    gap = (high - low) * LABEL_PX / PANEL_HEIGHT
    ends = ends.assign(height=scaled(ends["value"].to_numpy(dtype=float))).sort_values("height")
    heights = spread(ends["height"].tolist(), gap, low + gap / 2, high - gap / 2)
    texts = depth_labels(rows)
    rows = rows.assign(label_at=np.nan, label=None)
    for height, (index, end) in zip(heights, ends.iterrows()):
        rows.loc[index, ["label_at", "label"]] = [10 ** height if log else height, texts[end[colour_key(rows)]]]
    return rows


def depth_labels(rows: pd.DataFrame) -> dict[str, str]:
    """{colour key (colour_key: model or checkpoint): its label}: the depth, or the checkpoint's name where two runs
    of one depth are drawn. The line ends and the colour legend say the same."""
    by = colour_key(rows)
    one_per_depth = rows.groupby("depth")[by].nunique().max() == 1
    return {key: str(depth) if one_per_depth else key for key, depth in rows.groupby(by)["depth"].first().items()}


def curves_panel(rows: pd.DataFrame, shown: pd.DataFrame, metric: str, log: bool) -> alt.LayerChart:
    """One net's curves (`rows`), on axes that span all the `shown` curves: both panels the same. Each test curve
    ends in a label naming its depth (line_ends), in the margin right of the plot, with a short leader from the
    line's end; the colour legend says it too, and a click on one of its entries brings that depth forward (the
    others fade). A curve of one epoch is a single point, which a line alone does not draw: then every curve gets
    its points."""
    title = ("cross-entropy loss" if metric == "loss" else f"{metric} (%)") + (", log scale" if log else "")
    last = span(shown, "iteration")
    # The plot ends at the last iteration, so that the labels stand just past the lines' ends.
    x = alt.X("iteration:Q", title="iteration (SGD steps)",
              scale=alt.Scale(domain=alt.Undefined if last is alt.Undefined else [0, last[1]], nice=False))
    domain = value_domain(shown, log)
    # log_ticks' values (0.01, 0.1, 1, 10, 100, each labelled), on a domain fixed here: both panels the same
    y = dict(scale=alt.Scale(type="log", domain=domain, nice=False), axis=alt.Axis(
        labelExpr=LOG_LABELS, values=log_ticks(domain, length=PANEL_HEIGHT))) if log else dict(
        scale=alt.Scale(domain=domain, nice=False))
    single = rows.groupby(["checkpoint", "split"]).size().min() < 2
    by, texts = colour_key(rows), depth_labels(rows)
    depth_named = all(text.isdigit() for text in texts.values())
    # the legend's entries named as the line ends are
    color = model_legend(rows, columns=PANEL_LEGEND_COLUMNS, labelExpr=relabelled(texts),
                         title="depth (layers)" if depth_named else "checkpoint", symbolType="stroke",
                         symbolStrokeWidth=3, symbolSize=300)
    highlight = alt.selection_point(fields=[by], bind="legend")  # a click on a legend entry
    faded = alt.condition(highlight, alt.value(1.0), alt.value(0.15))
    base = alt.Chart(line_ends(rows, domain, log)).encode(x, color=color, opacity=faded)
    lines = base.mark_line(strokeWidth=1.8, point=bool(single)).encode(
        y=alt.Y("value:Q", title=title, **y),
        strokeDash=alt.StrokeDash("split:N", scale=dashes_of(shown["split"]), title="measured on",
                                  legend=alt.Legend(symbolSize=600, symbolStrokeWidth=2)),
        detail="checkpoint:N",
        tooltip=["checkpoint", "split", "epoch", "iteration", alt.Tooltip("value:Q", format=".3f", title=title)],
    ).add_params(highlight)
    ends = base.transform_filter("isValid(datum.label_at)")
    leaders = ends.mark_rule(strokeWidth=1, x2Offset=7).encode(
        y=alt.Y("value:Q", title=title, **y), x2="iteration:Q", y2="label_at:Q")
    labels = ends.mark_text(align="left", baseline="middle", dx=9, fontSize=13, fontWeight="bold").encode(
        y=alt.Y("label_at:Q", title=title, **y), text="label:N", tooltip=["checkpoint"])
    return alt.layer(lines, leaders, labels).properties(height=PANEL_HEIGHT)


header("Degradation curves", "In the paper (Fig. 6), deeper plain nets end *above* the shallow ones, in training error "
       "(dashed) as well as test error (solid), while deeper residual nets end lower, from 20 to 110 layers. The "
       "checks below the charts say which of that our runs show.")
infos = usable_checkpoints(short_runs=False)
history = frame(zoo.history_frame)
runs = length_ui(infos, "Runs of one length at a time, on one iteration axis.")
short_runs_note(runs)
if unknown := zoo.length_unknown(infos):
    st.caption(f":material/info: {unknown}")
shown_runs = [i.name for i in runs]
history = history[history["checkpoint"].isin(shown_runs)]
depths, metric, log = curves_ui(sorted(history["depth"].unique().tolist()), runs)
data = history[history["depth"].isin(depths) & (history["metric"] == metric)]
if unplaced := zoo.without_iterations([i for i in runs if i.name in set(data["checkpoint"])]):
    st.info(f"Not on the iteration axis, so left out of the curves: {unplaced}.")
    data = data[data["iteration"].notna()]
# Values not recorded (a metric a run lacks, a loss that overflowed) are no points; a log axis has no room for 0 either
values = pd.to_numeric(data["value"], errors="coerce")
data = data[np.isfinite(values) & ((values > 0) if log else True)]
if data.empty:
    st.info("No curves to draw: " + ("none of the chosen runs can be placed on an iteration axis." if unplaced else
                                     f"the chosen runs recorded no {metric} to draw." if depths else
                                     "pick at least one depth in the sidebar."))
else:
    show_panels(partial(curves_panel, shown=data, metric=metric, log=log), data, f"curves_{metric.replace(' ', '_')}")
st.caption("Both panels share the same axes. Pick depths, the metric and the scale in the sidebar; every line is "
           "one checkpoint, sampled once per epoch, and each solid test curve ends in its depth (weight layers; the "
           "checkpoint's name where two runs of one depth are drawn), as the colour legend says: click an entry there "
           "to bring that depth forward, and double-click the plot to bring all back. The dashed training curve is "
           "the running error on each epoch's augmented batches (cropped and flipped, while the weights were still "
           "moving), our measure for the paper's dashed training curves, which it does not say how it measured.")

st.subheader("Final errors next to the references")
finals = frame(zoo.final_errors_frame)
finals = finals[finals["checkpoint"].isin(shown_runs) & finals["depth"].isin(depths)]  # the runs drawn above
finals = finals.reset_index(drop=True)  # its gappy index (1, 3, ...) once showed as the table's first column
if all(c == m or c.startswith(f"{m}-") for c, m in zip(finals["checkpoint"], finals["model"])):
    finals = finals.drop(columns="model")  # a folder named after its model ("resnet56", "resnet56-15ep") says it twice
table = zoo.final_errors_table(finals)
st.caption("Our errors (%) at the end of training, the final weights as published; each reference column gives "
           "their test error and, in brackets, ours minus theirs in percentage points (negative: ours is lower).")
with st.expander("How these numbers are measured"):
    st.caption("The train error is the final model's on the clean training set (the last epoch's running error in "
               "checkpoints that did not record it), which is why it differs from the dashed curve's last point (the "
               "running error on augmented batches). Both are the final weights' as published (fp16), scored in "
               "fp32, which is what reloading the checkpoint gives; the solid curve is the trainer's evaluation at "
               "each epoch's end in the run's own arithmetic (bf16 autocast or fp32, as each model card says), so its "
               "last point can differ from the test error here by a few test images. The references' errors were "
               f"never measured here. A run shorter than the paper's {PAPER_ITERATIONS:,} iterations gets no "
               "difference ('short run'), since every reference trained for at least that long. Report 003 trained "
               f"for longer still (200 epochs, about 78,000 iterations), so its differences at {PAPER_ITERATIONS:,} "
               "iterations also count that extra training against ours.")
wrapped_table(table)
st.caption(zoo.sources_note([c for c in zoo.REFERENCES if finals[c].notna().any()]))
st.download_button("Download this table (CSV)", finals.to_csv(index=False).encode(), "final_errors.csv", "text/csv",
                   key="csv-final-errors", on_click="ignore", icon=":material/download:")

st.subheader("The paper's claims, checked on these runs")
st.caption("Each claim of the paper's CIFAR-10 experiment against the final numbers of all our checkpoints, of "
           "every training length and depth, whatever the sidebar draws above (the final "
           "weights after the last iteration, not the best epoch's: the test set chose nothing). Each net is one run, "
           "so a difference within run-to-run noise counts neither for a claim nor against it.")
with st.expander("How the verdicts are reached"):
    st.caption(f"Runs shorter than the paper's {PAPER_ITERATIONS:,} iterations say so, and are not held to Table 6's "
               "own errors ('short run'). " + zoo.noise_rule() + " 'yes': some differences are for the claim and none "
               "against it; 'partly': some each way (at some depths, or steps in depth, and not at others). "
               + zoo.COVERAGE_NOTE)
checks = frame(zoo.paper_checks)
wrapped_table(checks, verdicts="holds")
st.download_button("Download this table (CSV)", checks.to_csv(index=False).encode(), "paper_claims.csv", "text/csv",
                   key="csv-paper-claims", on_click="ignore", icon=":material/download:")

st.subheader("Seed report 000, point by point")
seed = frame(zoo.seed_report_frame)
have = {c.config["model"] for c in infos}
measured = bool(have & {"resnet18", "plain18", "resnet34", "plain34"})
# Until ours are measured the section is the report's claims alone: folded, so that the page ends on our results
with st.container() if measured else st.expander("No 18- or 34-layer checkpoints yet: the report's claims, and how "
                                                 "to measure ours"):
    st.caption("A reproduction report we started from claims these numbers for a CIFAR ResNet-18 and Plain-18 (200 "
               "epochs, lr 0.1 decayed at epochs 60, 120 and 160 by a factor it does not state: we divide by 10). "
               "Next to them: what our runs of that recipe measured, "
               "and ResNet-34 / Plain-34 as an extension. Where we disagree, the verdict says so.")
    if not measured:
        st.info("No 18- or 34-layer checkpoints yet, so only the report's side is filled in. Train them with\n\n"
                "```\npython train.py --depth 18 34 --both --recipe seed --no-weights\n```\n\non a GPU (200 epochs "
                "of ResNet-18 would take roughly two days on 2 CPU cores: an estimate, resnet56's measured speed there "
                "scaled by ResNet-18's multiply-adds). `--no-weights` publishes the curves and metrics "
                "without the weights, which are too large to bundle (43 MB for ResNet-34 at fp16); leave it out to "
                "keep them.")
    # Only the columns that hold something: the report's side always, ours once measured, the verdict with both 18s.
    shown = seed[[c for c in seed.columns if not c.startswith("ours:") or seed[c].astype(bool).any()]]
    if (shown["verdict (18 layers)"] == "not measured yet").all():
        shown = shown.drop(columns="verdict (18 layers)")
    wrapped_table(shown)
    if note := zoo.seed_runs_note(infos):
        st.caption(note)
    st.download_button("Download this table (CSV)", seed.to_csv(index=False).encode(), "seed_report_000.csv",
                       "text/csv", key="csv-seed-report", on_click="ignore", icon=":material/download:")
