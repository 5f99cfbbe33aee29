"""Home: the degradation problem, final error against depth, what holds of the paper's claims, where to look, the model zoo."""
import re

import altair as alt
import pandas as pd
import streamlit as st

from pages.common import (MENU, NET_COLORS, dashes_of, frame, header, length_ui, log_axis, relabelled, show_chart,
                          usable_checkpoints)
from resnet_core import zoo
from resnet_core.paper import (PAPER_ITERATIONS, TABLE6_RESNET110_MEAN_STD as TABLE6_RESNET110,
                               TABLE6_TEST_ERROR as TABLE6)

MEASURE_SHAPES = dict(zip(zoo.MEASURES.values(), ["triangle-up", "cross", "circle"]))
MEASURE_GLYPHS = dict(zip(zoo.MEASURES.values(), "▲✚●"))  # the markers, in the words of the legend
SLOT_BAND = 0.45  # of the step from one depth to the next, the references and ours share beside the depth's tick
REFERENCE_SHAPES = dict(zip(zoo.REFERENCES, ["diamond", "square", "triangle-down"]))
# The claim checks (zoo.paper_checks) behind the chart's title: Fig. 6's, by the kind of net they are about.
FIG6_WORDS = {"plain": "deeper plain nets train worse", "residual": "deeper residual nets train better"}


def checks_summary() -> None:
    """One line on what these checkpoints show of the paper's claims, from the same checks the curves page lists."""
    checks = frame(zoo.paper_checks)
    if checks.empty:
        return
    counts = checks["holds"].value_counts()
    words = {"yes": ("holds", "hold"), "partly": ("holds in part", "hold in part"),
             "within noise": ("is too close to call (within run-to-run noise)",
                              "are too close to call (within run-to-run noise)"),
             "no": ("does not", "do not"),
             "short run": ("cannot be judged yet (a Table 6 error, and that depth has only a short run)",
                           "cannot be judged yet (Table 6 errors, and those depths have only short runs)"),
             "not comparable": ("cannot be judged yet, its nets having trained for different lengths",
                                "cannot be judged yet, their nets having trained for different lengths"),
             "not measured": ("is not measured yet", "are not measured yet")}
    # a verdict that rests on part of its claim says how much: short runs only, or 2 of the 5 depths it names
    qualified = ("yes", "partly", "no")
    parts = [f"{counts[v]} {words[v][int(counts[v] > 1)]}"
             + (zoo.coverage_counts(checks.loc[checks["holds"] == v, "coverage"]) if v in qualified else "")
             for v in zoo.VERDICTS if counts.get(v)]
    short = checks["holds"].isin(qualified) & checks["coverage"].str.contains("short runs")
    listed = "".join(f"\n\n{title}" + "".join(f"\n- {claim}" for claim in checks.loc[checks["holds"] == v, "claim"])
                     for v, title in (("no", "Not holding:"), ("partly", "Holding in part (at some depths, or some steps in depth):"),
                                      ("within noise", "Too close to call:"))
                     if counts.get(v))
    st.markdown(f"**On these checkpoints**, of the paper's {len(checks)} CIFAR-10 claims: {'; '.join(parts)}. "
                + (f"{zoo.SHORT_RUNS_CAVEAT} " if short.any() else "")
                + "The *Degradation curves* page gives the evidence for each." + listed)


# What to look for on each page (by its URL path), in the order a lecture would take them.
TOUR = {
    "curves": "Fig. 6 for our runs: does a deeper plain net end with a higher training error (dashed)? "
              "Does a deeper residual net?",
    "gradients": "Do vanishing gradients explain it? Every layer's gradient norm, every epoch.",
    "responses": "Fig. 7: are the residual layers' responses smaller than the plain ones', as the paper finds?",
    "landscape": "The training loss around the trained weights, plain beside residual.",
    "predict": "Upload a photo: both nets' top-5, and where each one looks.",
    "classes": "Which classes the shortcuts help, and each net's most confident mistakes.",
    "architecture": "Every layer with its parameters and FLOPs, next to the paper's counts.",
}


def tour() -> None:
    st.subheader("Where to look")
    for page in st.session_state[MENU]:  # app.py's pages, in menu order
        if page.url_path in TOUR:
            # a link of fixed width, not a share of the row: a 1024 px window cut "Degradation curves" short
            with st.container(horizontal=True, vertical_alignment="center", wrap=False):
                st.page_link(page, width=190)
                st.markdown(TOUR[page.url_path], width="stretch")


def short_run_notice(infos) -> None:
    """Say plainly which checkpoints trained for less than the paper's 64k iterations: their errors are not Table 6's;
    and which trained for an unknown number, judged neither short nor long."""
    table = frame(zoo.zoo_frame)
    if table.empty:
        return
    if unknown := zoo.length_unknown(infos):
        st.info(unknown, icon=":material/info:")
    short = table[table["iterations"] < PAPER_ITERATIONS]
    if len(short):
        # One entry per schedule and machine: eight interim runs of one kind read as one list, not eight repeats.
        runs = "; ".join(f"{', '.join(group['checkpoint'])}: {int(iterations):,} iterations each, on {device}"
                         for (iterations, device), group in short.groupby(["iterations", "device"], sort=False))
        full = set(table.loc[table["iterations"] >= PAPER_ITERATIONS, "depth"])
        waiting = [str(d) for d in sorted(set(short["depth"]) - full)]  # depths with short runs only
        waiting = ", ".join(waiting[:-1]) + " and " + waiting[-1] if len(waiting) > 1 else "".join(waiting)
        st.info(f"Short runs: {runs}. The paper trains for {PAPER_ITERATIONS:,} iterations, so these errors are "
                f"higher than Table 6's: compare them with runs as short (the chart above and the pages' charts show "
                f"one length at a time; Predict says when two nets' lengths differ)." + (f" No run of the paper's length yet at {waiting} layers."
                             if waiting else ""), icon=":material/info:")


def finding(runs) -> str:
    """The chart's title: what these runs (of one length) show of Fig. 6's claims, said only where the claim checks
    find that it holds ('yes'), with how much of the claim that rests on ('at 2 of 5 depths', 'on short runs
    only'), else what the chart draws."""
    checks = zoo.paper_checks(runs).set_index("claim")
    held = [(FIG6_WORDS[net], checks.loc[claim, "coverage"]) for net, claim in zoo.FIG6_CLAIMS.items()
            if claim in checks.index and checks.loc[claim, "holds"] == "yes"]
    if not held:
        return "Final error against depth"
    covers = {c for _, c in held}
    if len(covers) == 1:  # said once for both: "...; deeper residual nets train better (both at 2 of 5 depths)"
        (cover,) = covers
        said = "; ".join(w for w, _ in held) + (f" ({'both ' if len(held) > 1 else ''}{cover})" if cover else "")
    else:
        said = "; ".join(w + (f" ({c})" if c else "") for w, c in held)
    return said[0].upper() + said[1:]


def depth_chart(runs) -> None:
    """Final errors against depth: ours (the checkpoints `runs`) filled, joined by a line per net and error, the
    references' hollow beside them."""
    data = frame(zoo.headline_frame)
    data = data[(data["source"] != "ours") | data["checkpoint"].isin({info.name for info in runs})]
    # Log by default: on a linear axis a short run's or plain-110's large error (up to 89 %) squashes the paper-length
    # runs' training errors, the degradation itself (plain 0.6 -> 6.5 %, residual 0.3 -> 0.04 %), into its bottom. In
    # the sidebar, under the training length, as on Degradation curves: above the chart it pushed the legends below
    # the fold.
    log = st.sidebar.toggle("Log scale", value=True, help="Spreads out the small errors: 0.1 %, 1 %, 10 % and 100 % "
                            "are evenly spaced. Off: a linear axis.")
    zero = data[data["error"] <= 0] if log else data.iloc[:0]  # a log axis has no room for an error of exactly 0
    data = data.drop(zero.index)
    ours, refs = data[data["source"] == "ours"], data[data["source"] != "ours"]
    # References sit close beside our points of the same depth (xOffset within a narrow band: spread over the whole
    # band, they stood a quarter of the way to the next depth), plain nets' to the left, residual nets' to the right,
    # ours in the middle, on the depth's tick: a plain and a residual reference of one depth and source (9.2 and
    # 8.1 % at 20 layers) drawn in one place covered each other. Empty slots even the sides.
    sides = {net: [f"{s}/{net}" for s in zoo.REFERENCES if ((refs["source"] == s) & (refs["net"] == net)).any()]
             for net in ("plain", "residual")}
    half = max(map(len, sides.values()))
    slots = [*[""] * (half - len(sides["plain"])), *sides["plain"], "ours", *sides["residual"],
             *[" "] * (half - len(sides["residual"]))]
    refs = refs.assign(slot=refs["source"] + "/" + refs["net"])
    ours = ours.assign(slot="ours")
    x = alt.X("depth:O", title="depth (weight layers)", axis=alt.Axis(labelAngle=0),
              scale=alt.Scale(paddingInner=1 - SLOT_BAND, paddingOuter=0.3))
    offset = alt.XOffset("slot:N", scale=alt.Scale(domain=slots))
    y = alt.Y("error:Q", title="final error (%)" + (", log scale" if log else ""),
              **(log_axis(data, "error") if log else {}))  # ticks 0.01, 0.1, 1, 10, 100, each labelled
    # Legends in a row each, their titles to the left: four stacked took 300 px under the plot, below the fold.
    row = dict(direction="horizontal", titleOrient="left", titleBaseline="middle", offset=6, padding=2)
    color = alt.Color("net:N", scale=NET_COLORS, title="network", legend=alt.Legend(**row))
    ours = ours.assign(length=[f"{int(n):,} iterations" if pd.notna(n) else "unknown length" for n in ours["iterations"]])
    tooltip = ["source", "model", "checkpoint", "measure", alt.Tooltip("error:Q", format=".2f", title="error (%)")]
    # Our errors' legend: a line for each split, dashed or solid as drawn, named with the marker its points have
    # ("▲ train error (final model)"): a legend of the markers alone showed no dashes.
    # ("▲ train error (final model)": the rest, "clean training set", in the tooltip; a row that fits 1024 px)
    named = {split: ", ".join(f"{MEASURE_GLYPHS[m]} {re.sub(', [^)]*', '', m)}" for m in MEASURE_SHAPES
                              if m in set(rows["measure"])) for split, rows in ours.groupby("split")}
    # one line per net and schedule (the runs of unknown length of a net, if drawn, share one)
    lines = alt.Chart(ours).mark_line().encode(
        x, offset, y, color, strokeDash=alt.StrokeDash(
            "split:N", scale=dashes_of(ours["split"]), title="ours (train dashed, test solid)", legend=alt.Legend(
                labelExpr=relabelled(named), symbolType="stroke", symbolSize=500, symbolStrokeWidth=2, **row)),
        detail=["net:N", "iterations:O"])
    measures = [m for m in MEASURE_SHAPES if m in set(ours["measure"])]
    points = alt.Chart(ours).mark_point(filled=True, size=80).encode(
        x, offset, y, color, tooltip=[*tooltip, alt.Tooltip("length:N", title="trained for")], shape=alt.Shape(
            "measure:N", legend=None, scale=alt.Scale(domain=measures, range=[MEASURE_SHAPES[m] for m in measures])))
    sources = [s for s in REFERENCE_SHAPES if s in set(refs["source"])]
    references = alt.Chart(refs).mark_point(filled=False, size=90, strokeWidth=2).encode(
        x, offset, y, color, tooltip=tooltip, shape=alt.Shape(
            "source:N", title="references (test error)", legend=alt.Legend(columns=2, **row),
            scale=alt.Scale(domain=sources, range=[REFERENCE_SHAPES[s] for s in sources])))
    known = sorted(set(ours["iterations"].dropna()), reverse=True)  # one length, and any of unknown length
    lengths = [f"{int(n):,} iterations" + (" (the paper's schedule)" if n >= PAPER_ITERATIONS else
                                           f" (the paper trains for {PAPER_ITERATIONS:,})") for n in known]
    lengths += ["an unknown number of iterations"] if ours["iterations"].isna().any() else []
    title = alt.Title(finding(runs), subtitle=f"Final error against depth, of our runs of {' or '.join(lengths)}",
                      anchor="start")
    chart = alt.layer(lines, points, references).resolve_scale(shape="independent").properties(height=300, title=title)
    # legends below: beside the plot their long labels squeezed it to 230 px in a 1024 px window
    show_chart(chart, data, "final_error_vs_depth", legends_below=True)
    left_out = "; ".join(f"{r.checkpoint or r.source} ({r.split} error)" for r in zero.itertuples()
                         ) if len(zero) else ""
    # An ordinal axis: a line from 20 to 56 layers crosses the 32 and 44 columns, where only references may sit
    st.caption(zoo.sources_note(sources) + (f" Not on the log axis, at an error of exactly 0: {left_out}."
                                            if left_out else "")
               + " Depths are evenly spaced, not to scale; a line joins only the depths we have filled points for. "
               "The references of a depth sit just beside ours: plain nets' to the left, residual nets' to the right.")


def zoo_table() -> None:
    st.subheader("Model zoo")
    st.caption("One row per checkpoint in the checkpoints folder. Two training errors: *last epoch* is the running "
               "error on the augmented batches of the last epoch (comparable to the dashed curves of Fig. 6), "
               "*final* is the trained net's error on the whole training set without augmentation (None for "
               "checkpoints that did not record it). FLOPs are multiply-adds per 32x32 image; *Table 6* is the "
               "paper's test error (residual nets only: the paper gives the plain nets as curves).")
    table = frame(zoo.zoo_frame)
    # Table 6 has no plain nets: a blank there, not the grey "None" a number column shows for a missing value
    table = table.assign(paper_test_error=[f"{v:.2f}" if pd.notna(v) else "" for v in table["paper_test_error"]],
                         time_counts=[c or ("not recorded" if pd.notna(t) else "")  # a time, but not what it counts
                                      for c, t in zip(table["time_counts"], table["train_minutes"])])
    # How long it trained and its errors first, ours beside the paper's, in sight at 1024 px without scrolling
    # sideways (narrow columns, short labels with the long ones as help): a 5,850-iteration run's 13 % is not a failed
    # Table 6; then size, recipe and provenance.
    first = ["checkpoint", "iterations", "depth", "net", "test_error", "paper_test_error", "train_error_clean",
             "train_error"]
    order = first + [c for c in table.columns if c not in first and c != "model"]
    number, text = st.column_config.NumberColumn, st.column_config.TextColumn
    st.dataframe(table, hide_index=True, column_order=order, column_config={
        "checkpoint": text("checkpoint", width=120), "depth": number("depth", width=55), "net": text("network", width=75),
        "test_error": number("test error %", format="%.2f", width=90,
                             help="Test error, %, of the final weights on the 10,000 test images."),
        "paper_test_error": text("Table 6 %", width=80, help="The paper's test error, Table 6 (residual nets only). "
                                 "Each is one run, but ResNet-110's 6.43 is the best of 5 runs (their mean: {:.2f} ± "
                                 "{:.2f} %, the figure one run of ours is compared with).".format(*TABLE6_RESNET110)),
        "train_error_clean": number("train error % (final)", format="%.2f", width=140,
                                    help="Training error, %, of the final model on the clean training set."),
        "train_error": number("train error % (last epoch)", format="%.2f", width=175,
                              help="Running error on the augmented batches of the last recorded epoch: in a "
                                   "64,000-iteration run, its last 40 iterations (64,000 = 164 x 390 + 40), so a "
                                   "noisier figure than the final one."),
        "params": number("parameters", format="compact"), "flops": number("FLOPs (mult-adds)", format="compact"),
        "iterations": number("iterations", format="localized", width=80,
                             help=f"SGD steps of batch 128; the paper trains for {PAPER_ITERATIONS:,}."),
        "train_minutes": st.column_config.NumberColumn(
            "training time (min)", format="%.1f", help="Minutes recorded in config.json, of one of two kinds, as "
            "'time counts' says beside it: the whole run that trained it, evaluation included, until it was "
            "published, or, in checkpoints published before the trainer timed that, the sum of the training steps "
            "alone. Models trained side by side share one clock, so each shows nearly the whole run's time (the one "
            "published last a little more)."),
        "time_counts": text("time counts", help="What the training time counts: the whole run, evaluation "
                            "included, or the training steps only."),
        "weights": st.column_config.CheckboxColumn("weights bundled")})


header("ResNet Explorer", "In the paper, deeper plain nets train *worse*, deeper residual nets better: our runs "
       "are the filled points, reference numbers (the paper's, and reproductions') hollow.")
infos = usable_checkpoints(short_runs=False)  # Home says it in a box of its own, under the chart
# One length at a time, as on every page with charts: a 15-epoch plain net's large error beside a 64k run's drew the eye away
# from the paper-length runs, and their two lines per net read alike.
runs = length_ui(infos, "Our runs of one length at a time: a 15-epoch run beside a 64,000-iteration one "
                 "compares training lengths, not depths. Opens on the length of the 56-layer pair, as every page does.")
# in the first screenful of a 1024 x 768 projector, from its title down to its legends: the finding before the
# fine print, which follows it
depth_chart(runs)
st.markdown(
    "Adding layers to a plain convolutional network should never raise its *training* error, since the extra "
    "layers could learn the identity, yet the paper's 32-, 44- and 56-layer plain nets reach a *higher training "
    "error* than its 20-layer one (Fig. 6, left). "
    "This **degradation problem** is a failure of optimisation, not overfitting. "
    "Residual networks (He et al., 2016) let each block learn a correction F(x) that a shortcut adds to its "
    f"input x; with them the test error falls from {TABLE6['resnet20']} % at 20 layers to {TABLE6['resnet110']} % "
    f"at 110 (Table 6; that one the best of five runs). At 1202 layers it rises again, to {TABLE6['resnet1202']} %, "
    "which the paper puts down to overfitting.")
short_run_notice(infos)
checks_summary()
tour()
zoo_table()
