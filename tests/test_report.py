"""resnet_core.report and the claim checks in resnet_core.zoo: tables from real tiny checkpoints, the checks'
logic on hand-made metrics, the README block, and the re-evaluation of published weights."""
from __future__ import annotations

import errno
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from resnet_core import report, zoo
from resnet_core.checkpoint import CheckpointInfo, list_checkpoints, read_checkpoint
from resnet_core.cli import DATA_DIR_HELP
from resnet_core.data import CIFAR10_MEAN, CIFAR10_STD, CLASSES

# the claims' labels as the app shows them
RESIDUAL_TEST_TREND = "Residual nets, 20 to 110 layers: test error falls with depth"
RESIDUAL_TRAIN_TREND = "Residual nets, 20 to 110 layers: final training error falls with depth (Fig. 6, middle)"
SHORTCUTS_HELP = "Shortcuts help at every depth: residual test error below plain (read off Fig. 6, left vs middle)"


def fake(model: str, test_error: float, train_error: float | None = None, iterations: int = 64_000,
         per_class: list[float] | None = None, grad_norm: float = 0.5, epochs_to_90: int | None = None) -> CheckpointInfo:
    """An in-memory checkpoint with chosen numbers (never written, never shown: for the checks' logic only).
    `per_class` accuracies (%) become a diagonal confusion matrix of 100 images per class."""
    per_class = per_class or [100 - test_error] * 10
    cm = [[0] * 10 for _ in range(10)]
    for i, acc in enumerate(per_class):
        cm[i][i], cm[i][(i + 1) % 10] = round(acc), 100 - round(acc)
    metrics = dict(test_error=test_error, test_top5_error=test_error / 5, test_loss=test_error / 30,
                   train_error_clean=train_error, confusion_matrix=cm, epochs_to_90=epochs_to_90)
    history = dict(layers=["a", "b"], records=[dict(epoch=1, test_error=test_error, grad_norms=[grad_norm, grad_norm])])
    return CheckpointInfo(model, Path("/nonexistent") / model, dict(model=model, recipe=dict(iterations=iterations)),
                          history, metrics)


def holds(frame, start: str) -> str:
    rows = frame[frame["claim"].str.startswith(start)]
    assert len(rows) >= 1, start
    return rows.iloc[0]["holds"]


def test_paper_checks_pass_on_a_faithful_reproduction():
    infos = [fake("resnet20", 8.5), fake("resnet56", 6.9), fake("resnet110", 6.3),
             fake("plain20", 9.0, 1.0), fake("plain56", 12.0, 5.0), fake("plain110", 70.0, 68.0)]
    checks = zoo.paper_checks(infos)
    assert holds(checks, "ResNet-20:") == holds(checks, "ResNet-56:") == holds(checks, "ResNet-110:") == "yes"
    assert holds(checks, "ResNet-32:") == "not measured"
    assert holds(checks, RESIDUAL_TEST_TREND) == "yes"
    assert holds(checks, "Plain nets: final training error rises") == "yes"  # 1.0 < 5.0 < 68.0
    assert (checks[checks["claim"].str.startswith("Degradation")]["holds"] == "yes").all()
    assert holds(checks, "Shortcuts help") == "yes"
    assert holds(checks, "Layer responses") == "not measured"  # these fakes recorded none
    assert not checks["evidence"].str.contains("short run").any()


def test_degradation_evidence_has_the_residual_control_and_residual_training_error_its_own_trend():
    """On short runs a deeper plain net may only be slower: each degradation row gives the residual nets of the same
    depths and length beside it, and the residual nets' training error across depth is a claim of its own."""
    short = dict(iterations=5_850)
    infos = [fake("resnet20", 14.6, 11.6, **short), fake("resnet56", 17.8, 15.3, **short), fake("resnet110", 13.9, 10.5, **short),
             fake("plain20", 16.3, 13.4, **short), fake("plain56", 52.8, 52.6, **short), fake("plain110", 89.4, 89.3, **short)]
    checks = zoo.paper_checks(infos).set_index("claim")
    trend = checks.loc[RESIDUAL_TRAIN_TREND]
    assert trend["holds"] == "partly" and trend["evidence"].startswith(
        "on 3 of the claim's 5 depths, at 1 of 2 steps (1 against): 20 layers: 11.60 %")
    row = checks.loc["Degradation: plain-56 has a higher final training error than plain-20"]
    assert row["holds"] == "yes" and row["evidence"] == (
        "plain56 52.60 % vs plain20 13.40 % (short run: 5,850 of the paper's 64,000 iterations); "
        "residual nets of these depths: resnet56 15.30 % vs resnet20 11.60 %")
    infos[1] = fake("resnet56", 17.8, 15.3)  # trained for the paper's 64k: no control for 5,850-iteration plain nets
    row = zoo.paper_checks(infos).set_index("claim").loc["Degradation: plain-56 has a higher final test error than plain-20"]
    assert row["evidence"] == "plain56 52.80 % vs plain20 16.30 % (short run: 5,850 of the paper's 64,000 iterations)"


def test_the_responses_page_counts_overflowed_layers_as_the_claims_do(tiny_checkpoints):
    """A plain net's response that overflowed (null in metrics.json): infinite, larger than the residual net's, in
    the page's pairs as in the claim check, so the two never give different counts."""
    plain20, resnet20 = (read_checkpoint(tiny_checkpoints / n) for n in ("plain20", "resnet20"))
    for r in plain20.metrics["response_std"][:10]:
        r["std"] = r["channel_std"] = None  # an overflow overflows both
    ((depth, _), (plain, residual)), = zoo.response_pairs(zoo.response_frame([plain20, resnet20])).items()
    assert depth == 20
    assert plain[:10] == [float("inf")] * 10
    row = zoo.paper_checks([plain20, resnet20]).set_index("claim").filter(like="Layer", axis=0).iloc[0]
    assert f"20 layers: residual smaller at {zoo.responses_below(plain, residual)[0]} of 19" in row["evidence"]


def test_a_degradation_row_takes_the_longest_pair_that_recorded_its_error():
    """The 64k plain pair without a training error (as checkpoints older than the probe would be): the training row
    falls back to the 15-epoch pair that has one, the test row keeps the 64k pair; with no other pair, it says why."""
    short = dict(iterations=5_850)
    infos = [fake("plain20", 9.9), fake("plain56", 12.0),
             replace(fake("plain20", 16.3, 13.4, **short), name="plain20-15ep"),
             replace(fake("plain56", 52.8, 52.6, **short), name="plain56-15ep")]
    checks = zoo.paper_checks(infos).set_index("claim")
    train = checks.loc["Degradation: plain-56 has a higher final training error than plain-20"]
    assert train["holds"] == "yes" and train["evidence"].startswith("plain56-15ep 52.60 % vs plain20-15ep 13.40 % (short run")
    test = checks.loc["Degradation: plain-56 has a higher final test error than plain-20"]
    assert test["holds"] == "yes" and test["evidence"] == "plain56 12.00 % vs plain20 9.90 %"
    train = zoo.paper_checks(infos[:2]).set_index("claim").loc[
        "Degradation: plain-56 has a higher final training error than plain-20"]
    assert train["holds"] == "not measured"
    assert train["evidence"] == "needs both nets' final training error: plain20 and plain56 recorded none"


def test_response_pairs_pair_only_nets_trained_as_long():
    """The Layer responses page's sentence: plain20 (64k iterations) is paired with resnet20, never with
    resnet20-15ep; with both 20-layer pairs chosen, each says its length."""
    def run(model, name, std, iterations):
        info = replace(fake(model, 9.0, iterations=iterations), name=name)
        info.metrics["response_std"] = [dict(index=i, layer=f"l{i}", std=s) for i, s in enumerate(std)]
        return info

    plain, resnet = run("plain20", "plain20", [2.0, 2.0], 64_000), run("resnet20", "resnet20", [1.0, 3.0], 64_000)
    short = run("resnet20", "resnet20-15ep", [1.0, 1.0], 5_850)
    assert zoo.response_pairs(zoo.response_frame([plain, short])) == {}
    pairs = zoo.response_pairs(zoo.response_frame([plain, resnet, short]))
    assert pairs == {(20, 64_000): ([2.0, 2.0], [1.0, 3.0])} and zoo.run_label((20, 64_000), pairs) == "20 layers"
    pairs = zoo.response_pairs(zoo.response_frame([plain, resnet, short, run("plain20", "plain20-15ep", [2.0, 2.0], 5_850)]))
    assert list(pairs) == [(20, 64_000), (20, 5_850)] and pairs[(20, 5_850)] == ([2.0, 2.0], [1.0, 1.0])
    assert zoo.run_label((20, 5_850), pairs) == "20 layers (5,850 iterations)"


def test_response_check_counts_layers_and_needs_most_of_them():
    plain20, resnet20 = fake("plain20", 9.0, 1.0), fake("resnet20", 8.0)
    plain56, resnet56 = fake("plain56", 12.0, 5.0), fake("resnet56", 7.0)
    for info, std in ((plain20, [2.0, 1.0, 1.0]), (resnet20, [1.0, 0.5, 3.0]), (plain56, [1.0, 1.0]), (resnet56, [0.5, 2.0])):
        info.metrics["response_std"] = [dict(layer=f"l{i}", std=s) for i, s in enumerate(std)]
    assert zoo.response_comparison([2.0, 1.0, 1.0], [1.0, 0.5, 3.0]) == \
        "residual smaller at 2 of 3 layers (median std 1.00 vs plain 1.00)"
    row = zoo.paper_checks([plain20, resnet20, plain56, resnet56]).set_index("claim").filter(like="Layer", axis=0).iloc[0]
    assert row["holds"] == "partly"  # 2 of 3 at 20 layers, but only 1 of 2 at 56: most at one depth of two
    assert row["evidence"].startswith("at 1 of 2 depths: 20 layers: residual smaller at 2 of 3 layers")
    assert "56 layers: residual smaller at 1 of 2 layers (median std 1.25 vs plain 1.00)" in row["evidence"]
    resnet56.metrics["response_std"][1]["std"] = 0.9
    assert holds(zoo.paper_checks([plain20, resnet20, plain56, resnet56]), "Layer responses") == "yes"
    resnet56.metrics["response_std"][1]["std"] = 3.0
    resnet20.metrics["response_std"][1]["std"] = 1.5  # now 1 of 3 at 20 layers, 1 of 2 at 56: most at none
    assert holds(zoo.paper_checks([plain20, resnet20, plain56, resnet56]), "Layer responses") == "no"


def with_responses(info: CheckpointInfo, std: list[float], channel_std: list[float] | None = None) -> CheckpointInfo:
    """`info` with hand-made responses: the pooled std per 3x3 layer and, if given, the per-channel one."""
    info.metrics["response_std"] = [dict(layer=f"l{i}", index=i + 1, std=s, **({} if channel_std is None else
                                                                             dict(channel_std=channel_std[i])))
                                    for i, s in enumerate(std)]
    return info


FIG7 = "Layer responses: residual nets' are smaller than plain nets' at most layers (Fig. 7)"


def test_response_check_gives_both_readings_of_the_std_and_counts_a_depth_where_they_agree():
    """The paper does not say how Fig. 7's std is taken: with the per-channel std recorded too, each depth gives
    both counts, and holds only where the residual net is smaller at most layers both ways."""
    plain = with_responses(fake("plain20", 9.0, 1.0), [2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    resnet = with_responses(fake("resnet20", 8.0), [1.0, 1.5, 3.0], [0.5, 0.8, 2.0])  # 2 of 3 both ways
    row = zoo.paper_checks([plain, resnet]).set_index("claim").loc[FIG7]
    assert row["holds"] == "yes"
    assert row["evidence"].startswith(
        "20 layers: residual smaller at 2 of 3 layers (median std 1.50 vs plain 2.00) pooled over channels and at 2 "
        "of 3 per channel (median per-channel std 0.80 vs plain 1.00) (the paper does not say how it took the std")
    assert "disagree" not in row["evidence"]


def test_response_check_leaves_a_depth_where_the_two_readings_disagree_undecided():
    """Pooled, the residual net is smaller at 2 of 3 layers; per channel at 1 of 3: the depth is undecided, neither
    for the claim nor against it (a claim with only that depth holds in part, not "no"), and the evidence says the
    two disagree; beside a depth where both agree, the claim holds in part, at 1 of 2 depths, 1 undecided."""
    plain20 = with_responses(fake("plain20", 9.0, 1.0), [2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    resnet20 = with_responses(fake("resnet20", 8.0), [1.0, 1.5, 3.0], [0.5, 1.2, 2.0])
    row = zoo.paper_checks([plain20, resnet20]).set_index("claim").loc[FIG7]
    assert row["holds"] == "partly"
    assert row["evidence"].startswith(
        "at 0 of 1 depths (1 undecided: the two readings of the std disagree): 20 layers: residual smaller at 2 of 3 "
        "layers (median std 1.50 vs plain 2.00) pooled over channels but at 1 of 3 per channel (median per-channel "
        "std 1.20 vs plain 1.00): the two definitions disagree")
    plain56 = with_responses(fake("plain56", 12.0, 5.0), [2.0, 2.0], [2.0, 2.0])
    resnet56 = with_responses(fake("resnet56", 7.0), [1.0, 1.0], [1.0, 1.0])
    row = zoo.paper_checks([plain20, resnet20, plain56, resnet56]).set_index("claim").loc[FIG7]
    assert row["holds"] == "partly" and row["evidence"].startswith(
        "at 1 of 2 depths (1 undecided: the two readings of the std disagree): 20 layers: ")
    resnet56 = with_responses(fake("resnet56", 7.0), [3.0, 3.0], [3.0, 3.0])  # larger both ways: against it
    assert zoo.paper_checks([plain56, resnet56]).set_index("claim").loc[FIG7, "holds"] == "no"
    assert "56 layers: residual smaller at 2 of 2 layers (median std 1.00 vs plain 2.00) pooled over channels and " \
           "at 2 of 2 per channel" in row["evidence"]


def test_response_check_without_the_per_channel_std_is_as_before():
    """Checkpoints recorded before the per-channel std (or one net of a pair): the pooled count alone, worded and
    judged as it always was."""
    plain = with_responses(fake("plain20", 9.0, 1.0), [2.0, 2.0, 2.0])
    resnet = with_responses(fake("resnet20", 8.0), [1.0, 1.5, 3.0], [3.0, 3.0, 3.0])  # per channel: larger everywhere
    for infos in ([plain, resnet], [resnet, with_responses(fake("plain20", 9.0, 1.0), [2.0, 2.0, 2.0])]):
        row = zoo.paper_checks(infos).set_index("claim").loc[FIG7]
        assert row["holds"] == "yes"
        assert row["evidence"] == "20 layers: residual smaller at 2 of 3 layers (median std 1.50 vs plain 2.00)"


def test_response_frames_rank_and_pair_by_either_std():
    """The page's sentence and ranks by the std it draws: pooled by default, per channel when asked."""
    plain = with_responses(fake("plain20", 9.0, 1.0), [2.0, 2.0, 1.0], [1.0, 3.0, 2.0])
    resnet = with_responses(fake("resnet20", 8.0), [1.0, 1.0, 1.5], [2.0, 2.5, 3.0])
    data = zoo.response_frame([plain, resnet])
    assert list(data.loc[data["checkpoint"] == "plain20", "rank"]) == [1, 2, 3]  # by the pooled std, ties in order
    ranked = zoo.with_ranks(data, "channel_std", by="checkpoint")
    assert list(ranked.loc[ranked["checkpoint"] == "plain20", "rank"]) == [3, 1, 2]
    assert list(ranked.loc[ranked["checkpoint"] == "resnet20", "rank"]) == [3, 2, 1]
    assert zoo.response_pairs(data) == {(20, 64_000): ([2.0, 2.0, 1.0], [1.0, 1.0, 1.5])}
    assert zoo.response_pairs(data, "channel_std") == {(20, 64_000): ([1.0, 3.0, 2.0], [2.0, 2.5, 3.0])}
    assert zoo.responses_measured(data) == \
        "Measured here: 20 layers: residual smaller at 2 of 3 layers (median std 1.00 vs plain 2.00)."
    assert zoo.responses_measured(data, "channel_std") == \
        "Measured here: 20 layers: residual smaller at 1 of 3 layers (median per-channel std 2.50 vs plain 2.00)."
    assert zoo.has_responses(plain, "channel_std") and not zoo.has_responses(with_responses(plain, [1.0]), "channel_std")


def test_paper_checks_say_no_where_the_numbers_disagree_and_label_short_runs():
    infos = [fake("resnet20", 9.0, iterations=5_850), fake("resnet56", 9.5),
             fake("plain20", 9.0, 3.0), fake("plain56", 8.0, 2.0)]
    checks = zoo.paper_checks(infos)
    assert holds(checks, "ResNet-20:") == "short run"  # 9.0 % after 5,850 iterations tests nothing of Table 6's 8.75
    assert checks[checks["claim"].str.startswith("ResNet-20:")].iloc[0]["evidence"] == \
        "ours 9.00 % after 5,850 of the paper's 64,000 iterations: not comparable until trained for all of them"
    assert holds(checks, "ResNet-56:") == "no"  # a full-length run is held to it: 9.5 % > 6.97 %
    trend = checks.set_index("claim").loc[RESIDUAL_TEST_TREND]
    assert trend["holds"] == "not comparable"  # 20 layers for 5,850 iterations, 56 for 64,000
    assert trend["evidence"] == ("no two residual depths trained equally long (resnet20 5,850, resnet56 64,000 "
                                 "iterations)")
    assert holds(checks, "Degradation: plain-56 has a higher final training") == "no"
    assert holds(checks, "Degradation: plain-56 has a higher final test") == "no"
    assert holds(checks, "Degradation: plain-110") == "not measured"
    assert holds(checks, "Plain nets: final training error rises") == "no"  # plain56 2.0 < plain20 3.0
    infos += [fake("resnet32", 8.0), fake("resnet44", 10.5)]  # 8.0, 10.5, 9.5 at 64k: falls at 1 of 2 steps
    trend = zoo.paper_checks(infos).set_index("claim").loc[RESIDUAL_TEST_TREND]
    assert trend["holds"] == "partly"
    assert trend["evidence"] == ("on 3 of the claim's 5 depths, at 1 of 2 steps (1 against): 32 layers: 8.00 %, 44 layers: 10.50 %, 56 layers: 9.50 % (left out, "
                                 "no other residual depth trained as long: resnet20 5,850 iterations)")
    assert holds(checks, "Shortcuts help") == "no"  # resnet56 9.5 is not below plain56 8.0
    assert checks[checks["claim"].str.startswith("Shortcuts")].iloc[0]["evidence"] == (
        "56 layers: residual 9.50 % vs plain 8.00 % (left out, trained for different lengths: plain20 64,000, resnet20 "
        "5,850 iterations)")
    assert checks[checks["claim"].str.startswith("ResNet-110")].iloc[0]["claim"] == (
        "ResNet-110: test error at or below the mean of the paper's 5 runs, 6.61 ± 0.16 % (Table 6's 6.43 % is their best)")


def test_one_resnet110_run_is_held_to_the_mean_of_the_papers_five_not_their_best():
    checks = zoo.paper_checks([fake("resnet110", 6.55)])
    row = checks[checks["claim"].str.startswith("ResNet-110")].iloc[0]
    assert row["holds"] == "yes"  # below 6.61, though above the best, 6.43
    assert row["evidence"] == "ours 6.55 %, 0.06 points below the paper's (a match: within run-to-run noise, 0.45 points)"
    assert holds(zoo.paper_checks([fake("resnet110", 6.62)]), "ResNet-110") != "yes"


def test_differences_within_run_to_run_noise_count_for_neither_side():
    """One run per net: a difference of 0.45 points or less (twice the spread between two runs of one net, from
    Table 6's ResNet-110 runs, +-0.16) is neither for a claim nor against it, and named as noise; the paper's own
    steps from 32 to 56 layers (7.51, 7.17, 6.97) are inside it, and its trend still holds."""
    assert zoo.RUN_TO_RUN_NOISE == 0.45
    paper = [fake(f"resnet{d}", e) for d, e in ((20, 8.75), (32, 7.51), (44, 7.17), (56, 6.97), (110, 6.43))]
    checks = zoo.paper_checks(paper).set_index("claim")
    trend = checks.loc[RESIDUAL_TEST_TREND]
    assert trend["holds"] == "yes" and trend["evidence"] == (
        "at 2 of 4 steps (2 within noise): 20 layers: 8.75 %, 32 layers: 7.51 %, 44 layers: 7.17 %, 56 layers: "
        "6.97 %, 110 layers: 6.43 % (within run-to-run noise, 0.45 points: 32 to 44 layers, -0.34; 44 to 56 layers, -0.20)")
    assert (checks.filter(like="ResNet-", axis=0)["holds"] == "yes").all()  # each at its own Table 6 figure

    bundled = [fake(f"resnet{d}", e) for d, e in ((20, 14.60), (32, 13.43), (44, 18.03), (56, 17.80), (110, 13.90))]
    trend = zoo.paper_checks(bundled).set_index("claim").loc[RESIDUAL_TEST_TREND]
    assert trend["holds"] == "partly" and trend["evidence"].startswith("at 2 of 4 steps (1 within noise, 1 against): ")
    assert trend["evidence"].endswith("(within run-to-run noise, 0.45 points: 44 to 56 layers, -0.23)")

    rising = [fake("resnet20", 8.0), fake("resnet56", 8.3)]  # the wrong way, but by less than the noise
    trend = zoo.paper_checks(rising).set_index("claim").loc[RESIDUAL_TEST_TREND]
    assert trend["holds"] == "within noise"
    assert trend["evidence"] == ("on 2 of the claim's 5 depths: 20 layers: 8.00 %, 56 layers: 8.30 % "
                                 "(within run-to-run noise, 0.45 points: 20 to 56 layers, +0.30)")
    rising[1] = fake("resnet56", 8.5)  # 0.5 points the wrong way: against
    assert holds(zoo.paper_checks(rising), RESIDUAL_TEST_TREND) == "no"

    close = [fake("plain20", 9.0, 3.0), fake("plain56", 9.4, 3.5), fake("resnet20", 8.7), fake("resnet56", 6.0)]
    checks = zoo.paper_checks(close).set_index("claim")
    row = checks.loc["Degradation: plain-56 has a higher final test error than plain-20"]
    assert row["holds"] == "within noise"
    assert row["evidence"].startswith("plain56 9.40 % vs plain20 9.00 % (within run-to-run noise, 0.45 points);")
    assert checks.loc["Degradation: plain-56 has a higher final training error than plain-20", "holds"] == "yes"  # 0.5
    shortcuts = checks.loc[SHORTCUTS_HELP]
    assert shortcuts["holds"] == "yes"  # 8.7 vs 9.0 at 20 layers is noise, 6.0 vs 9.4 at 56 is not: none against
    assert shortcuts["evidence"] == ("at 1 of 2 depths (1 within noise): 20 layers: residual 8.70 % vs plain 9.00 % "
                                     "(within run-to-run noise, 0.45 points); 56 layers: residual 6.00 % vs plain 9.40 %")
    close[2:] = fake("resnet20", 8.0), fake("resnet56", 10.0)  # better by 1.0 at 20, worse by 0.6 at 56: each way
    assert holds(zoo.paper_checks(close), "Shortcuts help") == "partly"

    mixed = [fake("resnet20", 8.5), fake("resnet32", 7.4), fake("resnet44", 7.2),
             fake("resnet56", 17.8, iterations=5_850), fake("resnet110", 17.6, iterations=5_850)]
    trend = zoo.paper_checks(mixed).set_index("claim").loc[RESIDUAL_TEST_TREND]
    assert trend["holds"] == "yes" and trend["evidence"].startswith(
        "on 3 of the claim's 5 depths, at 1 of 2 steps (1 within noise): 20 layers")
    assert trend["evidence"].endswith(". Not counted in the verdict, the runs of 5,850 iterations: 56 layers: 17.80 %, "
                                      "110 layers: 17.60 % (within run-to-run noise, 0.45 points: 56 to 110 layers, "
                                      "-0.20): within noise")
    mixed[3] = fake("resnet56", 16.0, iterations=5_850)  # the short pair: 110 layers worse by 1.6 points, against
    trend = zoo.paper_checks(mixed).set_index("claim").loc[RESIDUAL_TEST_TREND]
    assert trend["evidence"].endswith(". Not counted in the verdict, the runs of 5,850 iterations: 56 layers: 16.00 %, "
                                      "110 layers: 17.60 %: does not hold")

    near = [fake("resnet20", 9.15), fake("resnet32", 7.2), fake("resnet44", 7.7)]  # Table 6: 8.75, 7.51, 7.17
    checks = zoo.paper_checks(near).set_index("claim")
    row = checks.filter(like="ResNet-20:", axis=0).iloc[0]
    assert row["holds"] == "within noise" and row["evidence"] == ("ours 9.15 %, 0.40 points above the paper's (within "
                                                                  "run-to-run noise, 0.45 points)")
    assert checks.filter(like="ResNet-44:", axis=0).iloc[0]["evidence"] == "ours 7.70 %, 0.53 points above the paper's"
    assert checks.filter(like="ResNet-32:", axis=0).iloc[0]["holds"] == "yes"  # 7.20 <= 7.51
    assert checks.filter(like="ResNet-44:", axis=0).iloc[0]["holds"] == "no"  # 7.70 > 7.17 + 0.45


def test_table6_ties_and_the_band_edge_are_judged_on_the_recorded_figures():
    """Test errors are stored as the trainer computes them, with float noise (100 x (1 - 9,125/10,000) is
    8.750000000000002): a tie with the paper's is a 'yes' said as 'the same as', and a gap of exactly the band
    (0.45 points) is within it, above as below."""
    def table6(model: str, wrong: int) -> tuple[str, str]:
        error = 100.0 * (1 - (10_000 - wrong) / 10_000)  # as probes.evaluate records it
        row = zoo.paper_checks([fake(model, error)]).set_index("claim").filter(like=f"ResNet-{model[6:]}:", axis=0)
        return tuple(row.iloc[0][["holds", "evidence"]])

    assert table6("resnet20", 875) == ("yes", "ours 8.75 %, the same as the paper's")
    assert table6("resnet56", 742) == ("within noise", "ours 7.42 %, 0.45 points above the paper's (within "
                                                       "run-to-run noise, 0.45 points)")  # 6.97 + 0.45
    assert table6("resnet56", 743)[0] == "no"  # a hundredth beyond the band
    assert table6("resnet32", 706) == ("yes", "ours 7.06 %, 0.45 points below the paper's (a match: within "
                                              "run-to-run noise, 0.45 points)")  # 7.51 - 0.45
    assert table6("resnet32", 705)[1] == "ours 7.05 %, 0.46 points below the paper's"
    assert zoo.side(7.42 - 6.97) == 0 and zoo.side(6.97 - 7.43) == -1  # the edge, and just past it, in depth trends too


def test_training_errors_are_judged_on_a_band_scaled_to_their_level():
    """The 0.45-point band is the paper's test-error spread at 6.61 %; an error rate's spread grows as its square
    root, so a training error's band is 0.45 x sqrt(error / 6.61): 0.28 % to 0.04 % (a sevenfold drop) counts, and
    its band is said. Test errors keep the flat 0.45."""
    falls = [fake("resnet20", 8.4, 0.28), fake("resnet56", 8.2, 0.036)]
    checks = zoo.paper_checks(falls).set_index("claim")
    row = checks.loc[RESIDUAL_TRAIN_TREND]
    assert (row["holds"], row["evidence"]) == ("yes", "on 2 of the claim's 5 depths: 20 layers: 0.28 %, 56 layers: 0.04 %")
    assert zoo.training_noise(6.61) == pytest.approx(0.45) and zoo.training_noise(0.28, 0.036) == pytest.approx(0.0926, abs=1e-4)
    assert checks.loc[RESIDUAL_TEST_TREND, "holds"] == "within noise"  # 0.2 of a flat 0.45

    close = [fake("resnet20", 8.4, 0.30), fake("resnet56", 8.2, 0.25)]  # 0.05 points, inside 0.10
    row = zoo.paper_checks(close).set_index("claim").loc[RESIDUAL_TRAIN_TREND]
    assert row["holds"] == "within noise"
    assert row["evidence"] == ("on 2 of the claim's 5 depths: 20 layers: 0.30 %, 56 layers: 0.25 % "
                               "(within run-to-run noise at this error level: 20 to 56 layers, -0.05 of 0.10 points)")

    plain = [fake("plain20", 9.0, 0.20), fake("plain56", 9.4, 0.40)]  # training: 0.2 beyond 0.11; test: 0.4 inside 0.45
    checks = zoo.paper_checks(plain).set_index("claim")
    assert checks.loc["Plain nets: final training error rises with depth (Fig. 6, left)", "holds"] == "yes"
    row = checks.loc["Degradation: plain-56 has a higher final training error than plain-20"]
    assert (row["holds"], row["evidence"]) == ("yes", "plain56 0.40 % vs plain20 0.20 %")
    assert checks.loc["Degradation: plain-56 has a higher final test error than plain-20", "holds"] == "within noise"
    plain[1] = fake("plain56", 9.4, 0.28)  # 0.08 points, inside 0.09
    row = zoo.paper_checks(plain).set_index("claim").loc["Degradation: plain-56 has a higher final training error than plain-20"]
    assert (row["holds"], row["evidence"]) == (
        "within noise", "plain56 0.28 % vs plain20 0.20 % (within run-to-run noise, 0.09 points at this error level)")


def test_paper_checks_compare_like_with_like_when_schedules_are_mixed():
    """After a GPU session that published the 20-44 layer pairs (64k iterations) beside the short CPU runs of
    56 and 110 layers: trends across depth use the long runs, a pair of different lengths is not compared."""
    infos = [fake(f"resnet{d}", e) for d, e in ((20, 8.5), (32, 7.4), (44, 6.8))] + \
            [fake(f"plain{d}", e, t) for d, e, t in ((20, 9.0, 1.0), (32, 10.0, 2.0), (44, 11.0, 3.0))] + \
            [fake("resnet56", 17.8, iterations=5_850), fake("plain56", 52.8, 52.6, iterations=5_850),
             fake("resnet110", 13.9, iterations=5_850), fake("plain110", 89.4, 89.3, iterations=5_850)]
    checks = zoo.paper_checks(infos).set_index("claim")
    trend = checks.loc[RESIDUAL_TEST_TREND]
    assert trend["holds"] == "yes" and trend["evidence"] == (  # judged on the long runs; the short ones said apart
        "on 3 of the claim's 5 depths: 20 layers: 8.50 %, 32 layers: 7.40 %, 44 layers: 6.80 %. Not counted in the verdict, the runs of 5,850 "
        "iterations: 56 layers: 17.80 %, 110 layers: 13.90 %: holds")
    deg = checks.loc["Degradation: plain-56 has a higher final test error than plain-20"]
    assert deg["holds"] == "not comparable" and deg["evidence"] == \
        "trained for different lengths (plain20 64,000, plain56 5,850 iterations): not comparable"
    assert checks.loc["Degradation: plain-110 has a higher final test error than plain-56", "holds"] == "yes"
    shortcuts = checks.loc[SHORTCUTS_HELP]
    assert shortcuts["holds"] == "yes" and shortcuts["evidence"].startswith(  # each depth says its length
        "20 layers (64,000 iterations): residual 8.50 % vs plain 9.00 %; ")
    assert "56 layers (5,850 iterations): residual 17.80 % vs plain 52.80 %" in shortcuts["evidence"]
    assert "short run:" not in shortcuts["evidence"]

    # the reverse: the deep pairs long, the shallow ones short; and one long run among short ones
    flipped = [fake(i.name, i.metrics["test_error"], i.metrics["train_error_clean"],
                    iterations=5_850 if iterations(i) == 64_000 else 64_000) for i in infos]
    trend = zoo.paper_checks(flipped).set_index("claim").loc[RESIDUAL_TEST_TREND]
    assert trend["evidence"].startswith("on 2 of the claim's 5 depths: 56 layers: 17.80 %, 110 layers: 13.90 %. Not "
                                        "counted in the verdict, the runs "
                                        "of 5,850 iterations: 20 layers: 8.50 %, 32 layers: 7.40 %, 44 layers: 6.80 %: "
                                        "holds")
    one_long = [fake("resnet20", 8.5), fake("resnet32", 13.4, iterations=5_850), fake("resnet44", 18.0, iterations=5_850)]
    trend = zoo.paper_checks(one_long).set_index("claim").loc[RESIDUAL_TEST_TREND]
    assert trend["holds"] == "no" and trend["evidence"].endswith(
        "(left out, no other residual depth trained as long: resnet20 64,000 iterations)")


def test_a_short_run_kept_beside_a_long_run_of_its_model_is_compared_with_its_equals():
    """The 20-layer pair trained for the paper's 64k iterations, its 15-epoch pair kept (as resnet20-15ep and
    plain20-15ep) beside the 15-epoch runs of 32 to 110 layers: Table 6 gets the long run, every comparison across
    depth the short runs, trained as long as each other."""
    short = dict(iterations=5_850)
    infos = [fake("resnet20", 8.6, 1.5), fake("plain20", 9.9, 2.9),
             replace(fake("resnet20", 14.6, 11.6, **short), name="resnet20-15ep"),
             replace(fake("plain20", 16.3, 13.4, **short), name="plain20-15ep"),
             fake("resnet56", 17.8, 15.3, **short), fake("plain56", 52.8, 52.6, **short),
             fake("resnet110", 13.9, 10.5, **short), fake("plain110", 89.4, 89.3, **short)]
    checks = zoo.paper_checks(infos).set_index("claim")
    # at or below holds; below by no more than one run's noise is said to be a match, not a win
    assert checks.loc["ResNet-20: test error at or below the paper's 8.75 %", "evidence"] == \
        "ours 8.60 %, 0.15 points below the paper's (a match: within run-to-run noise, 0.45 points)"
    trend = checks.loc["Plain nets: final training error rises with depth (Fig. 6, left)"]
    assert trend["holds"] == "yes" and trend["evidence"] == (
        "on 3 of the claim's 5 depths: 20 layers: 13.40 %, 56 layers: 52.60 %, 110 layers: 89.30 % (short run: 5,850 of the paper's 64,000 iterations)"
        " (left out, no other plain depth trained as long: plain20 64,000 iterations)")
    row = checks.loc["Degradation: plain-56 has a higher final training error than plain-20"]
    assert row["holds"] == "yes" and row["evidence"] == (  # the checkpoints compared, by folder
        "plain56 52.60 % vs plain20-15ep 13.40 % (short run: 5,850 of the paper's 64,000 iterations); "
        "residual nets of these depths: resnet56 15.30 % vs resnet20-15ep 11.60 %")
    shortcuts = checks.loc[SHORTCUTS_HELP]
    assert shortcuts["holds"] == "yes" and shortcuts["evidence"].startswith(  # the longest equal pair at each depth
        "20 layers (64,000 iterations): residual 8.60 % vs plain 9.90 %; 56 layers (5,850 iterations): ")
    assert "left out" not in shortcuts["evidence"]
    # the 64k pair recorded no layer responses (as checkpoints before Fig. 7's probe): the short pair speaks for 20 layers
    for info, std in ((infos[2], [1.0, 1.0, 3.0]), (infos[3], [2.0, 2.0, 2.0])):
        info.metrics["response_std"] = [dict(index=i, layer=f"l{i}", std=v) for i, v in enumerate(std)]
    fig7 = zoo.paper_checks(infos).set_index("claim").loc[
        "Layer responses: residual nets' are smaller than plain nets' at most layers (Fig. 7)"]
    assert fig7["holds"] == "yes" and fig7["evidence"].startswith("20 layers: residual smaller at 2 of 3 layers")
    assert "(short run: 5,850 of the paper's 64,000 iterations)" in fig7["evidence"]
    # without the short 20-layer pair the 20-to-56 comparison has no equal: said, not made
    alone = [i for i in infos if not i.name.endswith("-15ep")]
    row = zoo.paper_checks(alone).set_index("claim").loc["Degradation: plain-56 has a higher final test error than plain-20"]
    assert row["holds"] == "not comparable"


def iterations(info) -> int:
    return info.config["recipe"]["iterations"]


def test_seed_report_frame_compares_point_by_point():
    gains = [2.0, 1.0, 9.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 0.0]  # bird gains most, truck least
    plain = [80.0] * 10
    infos = [fake("resnet18", 8.0, per_class=[p + g for p, g in zip(plain, gains)], grad_norm=0.5, epochs_to_90=40),
             fake("plain18", 20.0, per_class=plain, grad_norm=0.05, epochs_to_90=None)]
    frame = zoo.seed_report_frame(infos).set_index("claim")
    top1 = frame.loc["top-1 test accuracy (%)"]
    assert (top1["report: ResNet-18"], top1["ours: ResNet-18"], top1["ours: Plain-18"]) == ("92.3", "92.00", "80.00")
    assert "ours +12.00 points, claimed +5.20 points" in top1["verdict (18 layers)"]
    assert top1["ours: ResNet-34"] == ""  # not trained
    top5, loss = frame.loc["top-5 test accuracy (%)"], frame.loc["test loss (cross-entropy)"]  # fake: error / 5, / 30
    assert (top5["report: ResNet-18"], top5["report: Plain-18"], top5["ours: ResNet-18"], top5["ours: Plain-18"]) == (
        "99.1", "97.8", "98.40", "96.00")
    assert (loss["report: ResNet-18"], loss["report: Plain-18"], loss["ours: ResNet-18"], loss["ours: Plain-18"]) == (
        "0.285", "0.421", "0.267", "0.667")
    assert "ours +2.40 points, claimed +1.30 points" in top5["verdict (18 layers)"]
    assert "ours -0.400, claimed -0.136" in loss["verdict (18 layers)"]
    best = frame.loc[[c for c in frame.index if c.startswith("class gaining most")][0]]
    assert best["ours: ResNet-18"] == "bird +9.0" and "bird is our #1 of 10" in best["verdict (18 layers)"]
    worst = frame.loc[[c for c in frame.index if c.startswith("class gaining least")][0]]
    assert worst["ours: ResNet-18"] == "truck +0.0" and "truck is our #10 of 10" in worst["verdict (18 layers)"]
    epochs = frame.loc["first epoch at 90 % test accuracy"]
    assert epochs["ours: ResNet-18"] == "epoch 40" and epochs["ours: Plain-18"].startswith("never (best 80.0 %)")
    assert "only one reached 90 %" in epochs["verdict (18 layers)"] and "claimed 45 vs 78" in epochs["verdict (18 layers)"]
    assert "claimed #1 (+8.2)" in best["verdict (18 layers)"] and "claimed #10 (+2.1)" in worst["verdict (18 layers)"]
    norms = frame.loc[[c for c in frame.index if c.startswith("per-layer gradient norms")][0]]
    assert "median 0.5" in norms["ours: ResNet-18"] and "10.00x" in norms["verdict (18 layers)"]
    assert "plain about 10x lower" in norms["verdict (18 layers)"]
    assert "we do not see that" not in norms["verdict (18 layers)"]


def test_seed_report_frame_compares_only_an_equally_trained_pair():
    """A long ResNet-18 beside a short Plain-18: each shows its own numbers, no gap or class gain is drawn between
    them and every verdict says why; a short ResNet-18 beside the short Plain-18 is compared with it."""
    long_resnet = fake("resnet18", 6.0, iterations=78_000)
    infos = [long_resnet, fake("plain18", 20.0, iterations=3_900)]
    frame = zoo.seed_report_frame(infos).set_index("claim")
    top1 = frame.loc["top-1 test accuracy (%)"]
    assert (top1["ours: ResNet-18"], top1["ours: Plain-18"]) == ("94.00", "80.00")
    best = frame.loc[[c for c in frame.index if c.startswith("class gaining most")][0]]
    assert best["ours: ResNet-18"] == ""  # a class gain needs both nets trained as long
    assert (frame["verdict (18 layers)"] == "trained for different lengths (resnet18 78,000, plain18 3,900 "
                                            "iterations): not comparable").all()
    assert zoo.seed_runs_note(infos) == ("Runs shown: resnet18 78,000, plain18 3,900 iterations (not set against "
                                         "each other: not trained as long).")
    short_resnet = replace(fake("resnet18", 12.0, iterations=3_900), name="resnet18-short")
    frame = zoo.seed_report_frame(infos + [short_resnet]).set_index("claim")
    top1 = frame.loc["top-1 test accuracy (%)"]
    assert (top1["ours: ResNet-18"], top1["ours: Plain-18"]) == ("88.00", "80.00")
    assert "ours +8.00 points" in top1["verdict (18 layers)"]
    assert zoo.seed_runs_note(infos + [short_resnet]) == "Runs shown: resnet18-short and plain18, 3,900 iterations each."
    assert zoo.seed_runs_note([fake("resnet20", 8.0)]) == ""


def test_seed_report_frame_without_checkpoints_says_not_measured():
    frame = zoo.seed_report_frame([fake("resnet20", 8.0)])
    assert (frame["verdict (18 layers)"] == "not measured yet").all()
    assert (frame["ours: ResNet-18"] == "").all()


def test_tables_say_unknown_for_iterations_not_recorded():
    """read_checkpoint allows a null recipe.iterations (and none at all): the table says unknown, not 0."""
    nulled, missing = fake("resnet20", 8.0, iterations=None), fake("plain20", 9.0)
    del missing.config["recipe"]["iterations"]
    text = report.results_markdown([nulled, missing])
    assert "| resnet20 | unknown |" in text and "| plain20 | unknown |" in text


def test_iterations_come_from_the_history_where_the_recipe_lacks_them_and_else_are_unknown():
    """A recipe without iterations: the last history record's iteration says how long it trained. Neither: the
    length is unknown, never 0, so the run is judged neither short nor long and compared with no other."""
    from_history = fake("resnet20", 8.0)
    del from_history.config["recipe"]["iterations"]
    from_history.history["records"][-1]["iteration"] = 64_000
    assert zoo.iterations(from_history) == 64_000 and not zoo.is_short(from_history)

    resnet, plain = fake("resnet20", 8.0, iterations=None), fake("plain20", 9.0, iterations=None)
    assert zoo.iterations(resnet) is None and not zoo.is_short(resnet)
    assert zoo.schedules([resnet, plain]) == [] and zoo.longest([resnet]) == {"resnet20": resnet}
    assert zoo.different_lengths(resnet, plain) == "training length unknown (resnet20 unknown, plain20 unknown " \
                                                   "iterations): not comparable"
    assert zoo.length_unknown([resnet, plain, from_history]) == (
        "resnet20, plain20: their training length is unknown (config.json's recipe and history.json record no "
        "iterations), so not judged short or long, and compared with no other run.")
    checks = zoo.paper_checks([resnet, plain]).set_index("claim")
    row = checks.loc["ResNet-20: test error at or below the paper's 8.75 %"]
    assert (row["holds"], row["evidence"]) == ("not comparable", "ours 8.00 % after an unknown number of iterations "
                                               "(neither config.json nor history.json records it)")
    assert "trained for different or unknown lengths: plain20 unknown, resnet20 unknown iterations" in \
        checks.loc[SHORTCUTS_HELP, "evidence"]
    table = zoo.final_errors_table(zoo.final_errors_frame([resnet])).iloc[0]
    assert table["iterations"] == "unknown" and table["paper (Table 6) % (ours − theirs)"] == "8.75 (length unknown)"
    row = report.reproduction_frame([resnet, from_history]).set_index("model")
    assert row["ours minus paper (points)"].tolist() == ["length unknown", "-0.75"]


def test_the_final_errors_table_keeps_two_decimals_as_table_6_does():
    """6.97 % is shown as 6.97, not 7.0: the paper's figures differ from each other by tenths."""
    row = zoo.final_errors_table(zoo.final_errors_frame([fake("resnet56", 6.97, train_error=0.04)])).iloc[0]
    assert (row["test error %"], row["train error % (final model)"]) == ("6.97", "0.04")
    assert row["paper (Table 6) % (ours − theirs)"] == "6.97 (+0.00)"


def test_record_iterations_share_out_the_recipe_only_where_it_divides_exactly():
    """A history without iterations: epoch x (recipe iterations / epochs) where every epoch had as many steps,
    else unplaced, and named with the reason (a 64,000-iteration run's last epoch has 40 steps, not 390)."""
    info = fake("resnet20", 8.0, iterations=30)
    info.history["records"] = [dict(epoch=e, test_error=10.0 - e) for e in (1, 2, 3)]
    assert zoo.history_frame([info])["iteration"].tolist() == [10, 20, 30]
    assert zoo.record_iterations(info) == [10, 20, 30] and zoo.without_iterations([info]) == ""
    info.history["records"][0]["iteration"] = 9  # a recorded iteration stands
    assert zoo.record_iterations(info) == [9, 20, 30]
    uneven = fake("plain20", 9.0, iterations=31)
    uneven.history["records"] = [dict(epoch=e, test_error=10.0) for e in (1, 2, 3)]
    assert zoo.record_iterations(uneven) == [None] * 3
    assert zoo.without_iterations([info, uneven]) == ("plain20 (history.json records no iteration at some epochs, and "
                                                      "its recipe's 31 iterations do not divide evenly into its 3 epochs)")


def test_results_markdown_from_real_checkpoints(tiny_checkpoints, tiny_seed_checkpoints, tmp_path):
    root = tmp_path / "all"
    for src in (tiny_checkpoints, tiny_seed_checkpoints):
        shutil.copytree(src, root, dirs_exist_ok=True)
    infos, bad = list_checkpoints(root)
    assert not bad and {i.name for i in infos} == {"resnet20", "plain20", "resnet18", "plain18"}
    text = report.results_markdown(infos)
    for info in infos:
        row = next(line for line in text.splitlines() if line.startswith(f"| {info.name} |"))
        assert f"| {info.metrics['test_error']:.2f} |" in row
        assert ("not bundled" in row) == info.name.endswith("18")
    assert "| ResNet-20: test error at or below the paper's 8.75 % | short run |" in text  # two epochs on 64 images
    assert "short run" in text
    assert "#### Seed report 000" in text and "ours: ResNet-18" in text and "ours: ResNet-34" not in text


def test_update_readme_rewrites_only_the_generated_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{report.BEGIN}\nold table\n{report.END}\nafter\n")
    assert report.update_readme(readme, "new table\n")
    assert readme.read_text() == f"# Title\n\nbefore\n{report.BEGIN}\nnew table\n{report.END}\nafter\n"
    assert not report.update_readme(readme, "new table\n")  # idempotent
    (tmp_path / "plain.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="no generated block"):
        report.update_readme(tmp_path / "plain.md", "x\n")


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def readme_copy(tmp_path) -> Path:
    """The project's README, copied: what a --readme run may change in a test (the real one never)."""
    return Path(shutil.copy(REPO / "README.md", tmp_path / "README.md"))


@pytest.fixture
def no_work(monkeypatch):
    """Every slow or writing step of report.main made to fail the test: the checks must come before them all."""
    def refuse(*args, **kwargs):
        raise AssertionError("report.main started work before it had checked its command line")

    for step in ("verify", "rescore", "remeasure_responses", "unbundle_weights", "load_cifar10", "list_checkpoints"):
        monkeypatch.setattr(report, step, refuse)


def refused(argv: list[str], capsys) -> str:
    """report.main's stderr for a command line it must refuse: exit status 2, one line, nothing on stdout."""
    capsys.readouterr()
    assert report.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    return err


def test_a_checkpoints_folder_that_does_not_exist_is_refused(tmp_path, readme_copy, monkeypatch, capsys):
    """Not an empty table written over the README's: that would say there are no checkpoints, when the folder
    was mistyped. An existing empty folder still does write it."""
    before = readme_copy.read_bytes()
    missing = tmp_path / "nonexistent"
    argv = ["--readme", str(readme_copy)]
    with monkeypatch.context() as patched:
        patched.setattr(report, "list_checkpoints", lambda *a: pytest.fail("listed a folder that is not there"))
        assert refused(["--checkpoints", str(missing), *argv], capsys) == (
            f"error: checkpoints folder {missing} (--checkpoints) does not exist\n")
        patched.setenv("RESNET_CHECKPOINTS", str(missing))
        assert refused(argv, capsys) == f"error: checkpoints folder {missing} ($RESNET_CHECKPOINTS) does not exist\n"
        assert refused(["--checkpoints", str(readme_copy), "--verify", *argv], capsys) == (
            f"error: checkpoints folder {readme_copy} (--checkpoints) is not a folder\n")
    assert readme_copy.read_bytes() == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main(["--checkpoints", str(empty), *argv]) == 0
    assert f"{report.BEGIN}\nNo checkpoints yet: train them with `python train.py --all`.\n{report.END}" in (
        readme_copy.read_text())


def test_the_readme_is_checked_before_any_work(tmp_path, readme_copy, no_work, capsys):
    """A README that is missing, unreadable or without the generated block's two lines is one line at the start,
    not a traceback after a --verify of ten minutes; the file is left as it was."""
    empty = tmp_path / "checkpoints"
    empty.mkdir()
    work = ["--checkpoints", str(empty), "--verify", "--rescore", "resnet20", "--responses", "resnet20", "--unbundle",
            "plain20"]
    missing = tmp_path / "missing.md"
    assert refused([*work, "--readme", str(missing)], capsys) == f"error: {missing}: no such file\n"
    assert not missing.exists()
    assert refused([*work, "--readme", str(tmp_path)], capsys) == f"error: {tmp_path}: not readable (Is a directory)\n"
    text = readme_copy.read_text()
    for broken in (text.replace(report.END, ""), text.replace(report.BEGIN, ""),
                   text.replace(report.BEGIN, "\0").replace(report.END, report.BEGIN).replace("\0", report.END)):
        readme_copy.write_text(broken)
        assert refused([*work, "--readme", str(readme_copy)], capsys) == (
            f"error: {readme_copy}: no generated block; add the line {report.BEGIN} and below it the line "
            f"{report.END} where the tables belong\n")
        assert readme_copy.read_text() == broken


def read_only(monkeypatch, folder: Path) -> None:
    """`folder` as `chmod a-w` makes it for every user but root (whom it does not stop, and the tests may run as
    root): creating or writing a file in it raises PermissionError."""
    def refuse(file):
        if isinstance(file, (str, os.PathLike)) and Path(file).parent == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))

    real_io_open, real_os_open = io.open, os.open

    def io_open(file, mode="r", *args, **kwargs):  # Path.write_text, Path.open
        if set(mode) & set("wax+"):
            refuse(file)
        return real_io_open(file, mode, *args, **kwargs)

    def os_open(file, flags, *args, **kwargs):  # tempfile
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(file)
        return real_os_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(io, "open", io_open)
    monkeypatch.setattr(os, "open", os_open)


def test_a_readme_that_cannot_be_written_is_refused_before_any_work(tmp_path, readme_copy, no_work, monkeypatch,
                                                                     capsys):
    """Readable but in a folder that cannot be written: one line at the start, not a traceback after a --verify of
    ten minutes."""
    empty = tmp_path / "checkpoints"
    empty.mkdir()
    before = readme_copy.read_bytes()
    read_only(monkeypatch, tmp_path)
    assert refused(["--checkpoints", str(empty), "--verify", "--readme", str(readme_copy)], capsys) == (
        f"error: {readme_copy}: cannot be written (Permission denied)\n")
    monkeypatch.undo()
    assert readme_copy.read_bytes() == before and set(tmp_path.iterdir()) == {empty, readme_copy}


def test_a_readme_write_cut_short_leaves_the_readme_whole(readme_copy):
    """A rewrite stopped part way (here by a limit on file size, as a full disk would stop it) leaves the README as
    it was, not cut short: the new text is written beside it and renamed over it only once whole."""
    before = readme_copy.read_bytes()

    def limit_file_size():  # in the child only: writes past 16 KiB fail (EFBIG), rather than kill it (SIGXFSZ)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    code = "import sys; from pathlib import Path; from resnet_core import report; " \
           "report.update_readme(Path(sys.argv[1]), 'a table\\n' * 10_000)"
    done = subprocess.run([sys.executable, "-c", code, str(readme_copy)], cwd=REPO, capture_output=True, text=True,
                          preexec_fn=limit_file_size)
    assert done.returncode == 1 and "File too large" in done.stderr
    assert readme_copy.read_bytes() == before
    assert sorted(readme_copy.parent.iterdir()) == [readme_copy]  # the temp file gone too


def test_update_readme_keeps_the_readme_mode(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.BEGIN}\nold table\n{report.END}\n")
    readme.chmod(0o444)  # made read-only by its owner: it stays so
    assert report.update_readme(readme, "new table\n")
    assert readme.read_text() == f"{report.BEGIN}\nnew table\n{report.END}\n" and readme.stat().st_mode & 0o777 == 0o444


def test_device_is_checked_before_any_work(tmp_path, readme_copy, no_work, monkeypatch, capsys):
    """On a machine without a GPU: a device torch does not know, and cuda, are one line each before any data is
    loaded (not torch's RuntimeError from deep in the evaluation)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = readme_copy.read_bytes()
    empty = tmp_path / "checkpoints"
    empty.mkdir()
    for work in (["--verify", "--readme", str(readme_copy)], ["--rescore", "resnet20"], ["--responses", "resnet20"]):
        argv = ["--checkpoints", str(empty), *work, "--device"]
        assert refused([*argv, "gpu"], capsys) == "error: --device gpu: not a device; use cpu, cuda or cuda:N\n"
        assert refused([*argv, "cuda"], capsys) == (
            "error: --device cuda: no CUDA GPU on this machine; use --device cpu\n")
    assert readme_copy.read_bytes() == before
    with pytest.raises(SystemExit) as done:
        report.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "where --verify, --rescore and --responses evaluate: cpu, cuda or cuda:N (default: cpu)" in text
    assert " ".join(f"{DATA_DIR_HELP}; read by --verify, --rescore and --responses".split()) in text


def test_rescore_and_unbundle_name_the_folder_they_searched(tmp_path, no_work, capsys):
    root = tmp_path / "ck"
    for name in ("resnet20", "plain20-15ep"):
        (root / name).mkdir(parents=True)
    argv = ["--checkpoints", str(root)]
    assert refused([*argv, "--rescore", "nosuch"], capsys) == (
        f"cannot re-score: no checkpoint folder {root / 'nosuch'} (looked in {root}); nosuch is no model this "
        "project knows; checkpoints there: plain20-15ep, resnet20\n")
    assert refused([*argv, "--responses", "nosuch"], capsys) == (
        f"cannot re-measure the responses: no checkpoint folder {root / 'nosuch'} (looked in {root}); nosuch is no "
        "model this project knows; checkpoints there: plain20-15ep, resnet20\n")
    assert refused([*argv, "--unbundle", "resnet56"], capsys) == (
        f"cannot unbundle: no checkpoint folder {root / 'resnet56'} (looked in {root}); train one with "
        f"`python train.py --model resnet56 --out {root}`\n")


def test_verify_reevaluates_the_published_weights(tiny_checkpoints, tiny_seed_checkpoints, shared_cifar, tmp_path, capsys):
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    shutil.copytree(tiny_seed_checkpoints / "resnet18", root / "resnet18")
    table = report.verify(list_checkpoints(root)[0], str(shared_cifar)).set_index("model")
    assert (table.loc[["resnet20", "plain20"], "within 0.1"] == "yes").all()
    assert table.loc["resnet20", "test images"] == "50"
    assert table.loc["resnet20", "stored as"] == "fp16, BN statistics fp32"  # what save_checkpoint writes
    assert table.loc["resnet18", "stored as"] == ""  # no weights
    assert table.loc["resnet18", "within 0.1"] == "weights not bundled"
    capsys.readouterr()
    assert report.main(["--checkpoints", str(root), "--verify", "--data-dir", str(shared_cifar)]) == 0
    err = capsys.readouterr().err  # the re-evaluation shows its progress, with a rate
    assert "re-evaluating: 100%" in err and "img/s" in err

    metrics = root / "plain20" / "metrics.json"  # a recorded number that the weights do not give
    m = json.loads(metrics.read_text())
    m["test_error"] += 1.0
    metrics.write_text(json.dumps(m))
    capsys.readouterr()
    assert report.main(["--checkpoints", str(root), "--verify", "--data-dir", str(shared_cifar)]) == 1
    assert "| NO |" in capsys.readouterr().out


def test_verify_and_rescore_feed_each_net_the_normalisation_it_records(tiny_checkpoints, shared_cifar, tmp_path):
    """A checkpoint trained on other input statistics (config.json's normalization) is scored on them, as the app,
    the landscape and the trainer feed it: not on CIFAR-10's constants."""
    from resnet_core.checkpoint import load_pretrained
    from resnet_core.data import load_cifar10
    from resnet_core.probes import evaluate

    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    config = root / "resnet20" / "config.json"
    norm = dict(mean=[0.9, 0.1, 0.5], std=[0.05, 0.4, 0.02])  # far from CIFAR-10's: another error on these images
    config.write_text(json.dumps(dict(json.loads(config.read_text()), normalization=norm)))
    model = load_pretrained(root / "resnet20")
    x, y = load_cifar10(shared_cifar, "test", limit=50)
    own, cifar = (evaluate(model, x, y, torch.tensor(n["mean"]), torch.tensor(n["std"]))
                  for n in (norm, dict(mean=CIFAR10_MEAN, std=CIFAR10_STD)))
    # the loss tells the two apart whatever the tiny net predicts (its errors may coincide: 90 % for one class)
    assert abs(own["test_loss"] - cifar["test_loss"]) > 1e-3
    info = next(i for i in list_checkpoints(root)[0] if i.name == "resnet20")
    table = report.verify([info], str(shared_cifar))
    assert table.loc[0, "re-evaluated here %"] == report._num(own["test_error"])
    report.rescore([info], str(shared_cifar))
    rescored = json.loads((root / "resnet20" / "metrics.json").read_text())
    assert rescored["test_error"] == pytest.approx(own["test_error"])
    assert rescored["test_loss"] == pytest.approx(own["test_loss"], rel=1e-5)


def test_rescore_records_what_the_published_weights_score(tiny_checkpoints, shared_cifar, tmp_path, capsys):
    """A checkpoint whose metrics.json records figures its weights do not give (as one published with the trainer's
    last bf16-autocast evaluation did): --rescore records the fp32 evaluation of the weights as stored, says so
    and what was recorded before, keeps the training history, and --verify then agrees exactly."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    path = root / "plain20"
    m = json.loads((path / "metrics.json").read_text())
    wrong = dict(m, test_error=m["test_error"] + 1.5, test_loss=m["test_loss"] + 0.25, train_error_clean=77.0)
    del wrong["final_evaluation"]  # as published before the trainer scored the stored weights itself
    (path / "metrics.json").write_text(json.dumps(wrong))
    history = (path / "history.json").read_text()
    argv = ["--checkpoints", str(root), "--data-dir", str(shared_cifar)]
    assert report.main(argv + ["--rescore", "plain20"]) == 0
    err = capsys.readouterr().err
    assert f"plain20: test error {wrong['test_error']:.2f} % -> {m['test_error']:.2f} %" in err
    again = json.loads((path / "metrics.json").read_text())
    for key in ("test_error", "test_loss", "train_error_clean", "test_images", "train_images"):
        assert again[key] == pytest.approx(m[key]), key  # the fp32 figures publish() recorded for these weights
    assert again["confusion_matrix"] == m["confusion_matrix"]
    assert again["test_error_before_rescore"] == wrong["test_error"]
    assert "re-scored on" in again["final_evaluation"] and again["final_evaluation"].endswith(
        f"it recorded {wrong['test_error']:.2f} %, the trainer's last end-of-epoch evaluation (fp32)")
    assert (path / "history.json").read_text() == history
    assert "re-scored on" in (path / "README.md").read_text()  # the model card says it too
    # the responses measured again with the rest, and said so (not an earlier --responses' provenance)
    assert again["response_std_from"].startswith("its published weights as stored in model.safetensors")
    assert "re-scored on" in again["response_std_from"] and again["response_std_from"].endswith("first 50 test images")
    table = report.verify(list_checkpoints(root)[0], str(shared_cifar)).set_index("model")
    assert table.loc["plain20", "difference (points)"] == "+0.00"
    # Again: the figure first recorded at publication is kept, not the re-scored one.
    assert report.main(argv + ["--rescore", "plain20"]) == 0
    twice = json.loads((path / "metrics.json").read_text())
    assert twice["test_error_before_rescore"] == wrong["test_error"]
    assert twice["final_evaluation"].endswith("the trainer's last end-of-epoch evaluation (fp32)")
    (path / "model.safetensors").unlink()
    capsys.readouterr()
    assert report.main(argv + ["--rescore", "plain20"]) == 2
    assert "plain20: no model.safetensors" in capsys.readouterr().err


def test_responses_records_both_stds_from_the_published_weights(tiny_checkpoints, shared_cifar, tmp_path, capsys):
    """Checkpoints recorded before the per-channel std: --responses measures both from the weights as final_metrics
    did (the first 1,000 test images, here the 50 these were scored on), the pooled std as it was recorded, and says
    where they came from; nothing else in metrics.json changes. A net scored on more test images beside them is
    measured on as many of them."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    more = shutil.copytree(root / "plain20", root / "plain20-100") / "metrics.json"
    more.write_text(json.dumps(dict(json.loads(more.read_text()), test_images=100)))
    recorded = {}
    for name in ("plain20", "resnet20"):
        path = root / name / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["response_std"] = [dict(layer=r["layer"], index=r["index"], std=r["std"]) for r in metrics["response_std"]]
        path.write_text(json.dumps(metrics))
        recorded[name] = metrics
    history = (root / "plain20" / "history.json").read_text()
    assert report.main(["--checkpoints", str(root), "--data-dir", str(shared_cifar), "--responses", "plain20",
                        "resnet20", "plain20-100"]) == 0
    err = capsys.readouterr().err
    for name, before in recorded.items():
        after = json.loads((root / name / "metrics.json").read_text())
        assert [r["std"] for r in after["response_std"]] == pytest.approx([r["std"] for r in before["response_std"]],
                                                                          rel=1e-5)
        assert [(r["layer"], r["index"]) for r in after["response_std"]] == \
            [(r["layer"], r["index"]) for r in before["response_std"]]
        assert all(0 < r["channel_std"] for r in after["response_std"])
        assert after["response_batch"] == "first 50 test images"
        said = after.pop("response_std_from")
        assert said.startswith("its published weights as stored (fp16, BN statistics fp32) in fp32 on cpu (")
        assert "re-measured on " in said and said.endswith(
            "by `python -m resnet_core.report --responses plain20 resnet20 plain20-100`, on the first 50 test images")
        assert {k: v for k, v in after.items() if k != "response_std"} == \
            {k: v for k, v in before.items() if k != "response_std"}
        assert f"{name}: 19 layers on 50 test images; the pooled std differs from the one recorded by " in err
    assert zoo.has_responses(read_checkpoint(root / "plain20"), "channel_std")
    hundred = json.loads(more.read_text())
    assert hundred["response_batch"] == "first 100 test images" and hundred["response_std_from"].endswith(
        "on the first 100 test images")
    assert [r["std"] for r in hundred["response_std"]] != pytest.approx(
        [r["std"] for r in recorded["plain20"]["response_std"]], rel=1e-3)
    assert (root / "plain20" / "history.json").read_text() == history


def test_responses_need_every_nets_weights_before_they_rewrite_one(tiny_checkpoints, shared_cifar, tmp_path, capsys):
    """A checkpoint without weights (or with weights that do not load) named last: refused, and no metrics.json
    is rewritten, the first net's included."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    before = {name: (root / name / "metrics.json").read_bytes() for name in ("resnet20", "plain20")}
    argv = ["--checkpoints", str(root), "--data-dir", str(shared_cifar), "--responses", "resnet20", "plain20"]
    weights = root / "plain20" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert report.main(argv) == 2
    assert "cannot re-measure the responses:" in capsys.readouterr().err
    weights.unlink()
    assert report.main(argv) == 2
    assert "cannot re-measure the responses: plain20: no model.safetensors, so nothing to measure again" in \
        capsys.readouterr().err
    assert {name: (root / name / "metrics.json").read_bytes() for name in before} == before


def test_rescore_reads_every_nets_weights_before_it_rewrites_one(tiny_checkpoints, shared_cifar, tmp_path, capsys):
    """resnet20 first, then plain20 whose weights are truncated: nothing is re-scored, resnet20's files stay."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    weights = root / "plain20" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    before = {f: (root / "resnet20" / f).read_bytes() for f in ("metrics.json", "README.md")}
    assert report.main(["--checkpoints", str(root), "--data-dir", str(shared_cifar),
                        "--rescore", "resnet20", "plain20"]) == 2
    err = capsys.readouterr().err
    assert "cannot re-score:" in err and "plain20/model.safetensors" in err
    assert {f: (root / "resnet20" / f).read_bytes() for f in before} == before


def test_rescore_tells_two_folders_of_one_name_apart(tiny_checkpoints, shared_cifar, tmp_path, capsys):
    """checkpoints/resnet20 and runs/resnet20: each folder's metrics.json gets its own re-scoring; one folder named
    twice is refused before anything is scored."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    other = shutil.copytree(tiny_checkpoints / "resnet20", tmp_path / "runs" / "resnet20")
    published = json.loads((root / "resnet20" / "metrics.json").read_text())["test_error"]
    metrics = other / "metrics.json"
    metrics.write_text(json.dumps(dict(json.loads(metrics.read_text()), test_error=published + 1.5)))
    argv = ["--checkpoints", str(root), "--data-dir", str(shared_cifar), "--rescore"]
    assert report.main([*argv, "resnet20", str(other)]) == 0
    for folder, before in ((root / "resnet20", published), (other, published + 1.5)):
        again = json.loads((folder / "metrics.json").read_text())
        assert again["test_error_before_rescore"] == pytest.approx(before), folder
        assert again["test_error"] == pytest.approx(published), folder  # the same weights: the same score
    before = (root / "resnet20" / "metrics.json").read_bytes()
    assert refused([*argv, "resnet20", str(root / "resnet20")], capsys) == (
        f"cannot re-score: {(root / 'resnet20').resolve()} named more than once; name each checkpoint once\n")
    assert (root / "resnet20" / "metrics.json").read_bytes() == before


def test_the_readme_keeps_a_re_evaluation_only_of_the_same_weights(tiny_checkpoints, shared_cifar, tmp_path, capsys):
    """--verify --readme writes the re-evaluation with a digest of the weights and metrics it evaluated; --readme
    alone (the tables again, in seconds) keeps that section while the checkpoints are those, and leaves it out,
    saying so, once a weights file or metrics.json changed: never a stale table."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\n{report.END}\nafter\n")
    args = ["--checkpoints", str(root), "--readme", str(readme)]
    assert report.main(args + ["--verify", "--data-dir", str(shared_cifar)]) == 0
    verified = readme.read_text()
    assert "#### Re-evaluated from the published weights" in verified
    assert report.VERIFIED.format(report.verified_digest(list_checkpoints(root)[0])) in verified
    assert report.main(args) == 0 and readme.read_text() == verified  # kept, as it was

    metrics = root / "plain20" / "metrics.json"
    metrics.write_text(json.dumps(dict(json.loads(metrics.read_text()), test_error=1.0)))
    capsys.readouterr()
    assert report.main(args) == 0
    text = readme.read_text()
    assert "Re-evaluated from the published weights" not in text and text.endswith(f"{report.END}\nafter\n")
    assert "no re-evaluation of these checkpoints' weights to keep; run with --verify" in capsys.readouterr().err


def test_verify_says_which_weights_do_not_load(tiny_checkpoints, shared_cifar, tmp_path, capsys):
    """Truncated weights, another net's weights (plain20's folder holding resnet20's: the same tensors) and a
    metrics.json that read_checkpoint refuses: each is a row or a line saying so, the exit status 1, no traceback."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    weights = root / "resnet20" / "model.safetensors"
    shutil.copy(weights, root / "plain20" / "model.safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    shutil.copytree(tiny_checkpoints / "resnet20", root / "resnet20-copy")
    metrics = root / "resnet20-copy" / "metrics.json"
    metrics.write_text(json.dumps(dict(json.loads(metrics.read_text()), test_images="50")))
    capsys.readouterr()
    assert report.main(["--checkpoints", str(root), "--verify", "--data-dir", str(shared_cifar)]) == 1
    out, err = capsys.readouterr()
    assert f"cannot verify resnet20: {weights}: not a readable safetensors file" in err
    assert "cannot verify plain20: " in err and "the file holds resnet20's weights" in err
    assert err.rstrip().endswith("not verified: resnet20 (weights do not load), plain20 (weights do not load), "
                                 "resnet20-copy (unreadable, skipped)")
    row = next(line for line in out.splitlines() if line.startswith("| resnet20 | unreadable | 50 |"))
    assert "| NO: weights do not load (model.safetensors: not a readable safetensors file (" in row
    assert str(root) not in out  # the file's name, not where it lay
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main(["--checkpoints", str(empty), "--verify", "--data-dir", str(shared_cifar)]) == 0


def test_verify_without_data_says_so(tiny_checkpoints, tmp_path, capsys):
    code = report.main(["--checkpoints", str(tiny_checkpoints), "--verify", "--data-dir", str(tmp_path / "nothing")])
    assert code == 2 and "cannot verify" in capsys.readouterr().err


def test_the_readme_shows_the_bundled_checkpoints_numbers():
    """The README's generated tables are those of the checkpoints in the repository, not stale copies."""
    repo = Path(__file__).resolve().parents[1]
    block = report.results_markdown(list_checkpoints(repo / "checkpoints")[0])
    readme = (repo / "README.md").read_text()
    assert report.BEGIN + "\n" + block in readme, "run `python -m resnet_core.report --verify --readme README.md`"
    # and its re-evaluation table was made on these very weights and metrics.json files (their digest)
    assert report.kept_verification(repo / "README.md", list_checkpoints(repo / "checkpoints")[0]), \
        "a bundled model.safetensors or metrics.json changed since the README's re-evaluation: run " \
        "`python -m resnet_core.report --verify --readme README.md`"


def test_a_checkpoint_to_pick_is_named_with_its_training_length():
    short, unknown = fake("resnet110", 13.9, iterations=5_850), fake("plain56", 9.0)
    unknown.config["recipe"].pop("iterations")
    unknown.history["records"][-1].pop("iteration", None)
    assert zoo.with_length(short) == "resnet110 (5,850 it.)"
    assert zoo.with_length(unknown) == "plain56 (length unknown)"


def test_norm_spans_name_the_smallest_and_largest_layer_of_each_net():
    profile = pd.DataFrame(dict(checkpoint=["plain56"] * 3 + ["resnet56"] * 3, index=[1, 2, 3] * 2,
                                grad_norm=[0.01, 0.5, float("nan"), 0.2, 0.0, 0.4]))
    assert zoo.norm_spans(profile) == ("plain56: 0.01 (layer 1) to 0.5 (layer 2), 50x; "
                                       "resnet56: 0.2 (layer 1) to 0.4 (layer 3), 2x")  # NaN and 0 left out


def test_gradient_layers_line_up_on_the_main_path_with_projection_shortcuts():
    """ResNet-18's three 1x1 projection shortcuts (option B) are not on Plain-18's path: left out of the gradient
    profile, layer k is the same conv in both nets, from the recorded history and live at initialisation alike."""
    from resnet_core.models import build_model

    images, labels = torch.zeros(4, 3, 32, 32).normal_(generator=torch.Generator().manual_seed(0)), torch.arange(4)
    live = {name: zoo.gradient_norms_at_init(name, images, labels) for name in ("resnet18", "plain18")}
    assert len(build_model("resnet18").weight_layers()) == 21 and len(live["resnet18"]) == len(live["plain18"]) == 18
    for frame in live.values():
        assert frame["index"].tolist() == list(range(1, 19)) and not frame["layer"].str.contains("shortcut").any()
    assert (live["resnet18"]["layer"] == live["plain18"]["layer"]).all()  # position k: the same conv, by name

    layers = [name for name, _ in build_model("resnet18").weight_layers()]
    info = fake("resnet18", 9.0)
    info.history.update(layers=layers, records=[dict(info.history["records"][0], grad_norms=list(range(1, 22)))])
    recorded = zoo.grad_norm_frame([info])
    assert recorded["layer"].tolist() == live["plain18"]["layer"].tolist()
    assert recorded["index"].tolist() == list(range(1, 19))
    skipped = [i + 1 for i, name in enumerate(layers) if "shortcut" in name]
    assert recorded["grad_norm"].tolist() == [v for v in range(1, 22) if v not in skipped]
    kept = [v for v in range(1, 22) if v not in skipped]  # the seed-report row's spread: main-path layers alone
    assert zoo.grad_norm_spread(info) == pytest.approx(tuple(np.percentile(kept, [5, 50, 95])))


def test_time_counts_tells_old_step_only_times_from_whole_run_times():
    info = fake("resnet20", 9.0)
    assert zoo.time_counts(info) == ""  # no time recorded
    info.history["records"][0]["epoch_time_s"] = 120.0
    info.config["wall_time_s"] = 120.0  # what the trainer recorded before it timed the whole run
    assert zoo.time_counts(info) == "training steps only"
    info.config["wall_time_s"] = 151.5
    assert zoo.time_counts(info) == "whole run, evaluation included"
    assert zoo.zoo_frame([info]).loc[0, "time_counts"] == "whole run, evaluation included"


def test_surface_summary_gives_centre_median_and_largest_loss():
    grid = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]
    surface = pd.DataFrame([dict(checkpoint="plain56", alpha=a, beta=b, loss=1.38 if (a, b) == (0, 0) else 53_812.0 * (a == 1)
                                 + 2.0) for a, b in grid]
                           + [dict(checkpoint="resnet56", alpha=a, beta=b, loss=float("nan") if a == -1 else 0.419)
                              for a, b in grid])
    assert zoo.surface_summary(surface) == ("plain56: 1.38 at the trained weights, median 2, largest 53,800; "
                                            "resnet56: 0.419 at the trained weights, median 0.419, largest 0.419 "
                                            "(3 points overflowed)")
    even = pd.DataFrame([dict(checkpoint="resnet20", alpha=a, beta=b, loss=1.0 + a * a + b * b)
                         for a in (-1.5, -0.5, 0.5, 1.5) for b in (-1.5, -0.5, 0.5, 1.5)])
    assert zoo.surface_summary(even) == "resnet20: median 3.5, largest 5.5"  # no point at the trained weights
    even.loc[0, "loss"] = float("inf")
    assert zoo.surface_summary(even).endswith("largest 5.5 (1 point overflowed)")
    assert zoo.surface_summary(even.assign(loss=float("nan"))) == "resnet20: every point overflowed"


@pytest.mark.parametrize("value, text", [(0.419, "0.419"), (2.5e-05, "2.5e-05"), (61.63, "61.6"), (53_812.0, "53,800"),
                                         (999_999.0, "1 × 10^6"), (4_030_123.0, "4.03 × 10^6"),
                                         (2_237_062_784_460_259.25, "2.24 × 10^15"), (9.996e7, "1 × 10^8"),
                                         (999.95, "1,000"), (999.4, "999"), (-0.0, "0"), (-1234.0, "-1,230"),
                                         (float("nan"), "overflowed"), (float("inf"), "overflowed")])
def test_figures_reads_aloud(value, text):
    assert zoo.figures(value) == text


def test_unbundle_takes_the_weights_out_and_keeps_the_rest(tiny_checkpoints, shared_cifar, tmp_path, capsys):
    """A short run that a longer one replaces in the bundle keeps its curves, metrics and landscape; its weights go,
    config.json and the model card say why, the tables still list it, and --verify says it has no weights to check."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    path = root / "plain20"
    (path / "landscape.json").write_text('{"kept": true}')
    kept = {f: (path / f).read_bytes() for f in ("history.json", "metrics.json", "landscape.json")}
    assert report.main(["--checkpoints", str(root), "--unbundle", "plain20"]) == 0
    assert f"{path}: weights taken out ({report.UNBUNDLED})" in capsys.readouterr().err
    info = read_checkpoint(path)
    assert not (path / "model.safetensors").exists() and not info.has_weights
    assert info.config["has_weights"] is False and info.config["weights_not_bundled"] == report.UNBUNDLED
    assert {f: (path / f).read_bytes() for f in kept} == kept
    card = (path / "README.md").read_text()
    assert f"not bundled ({report.UNBUNDLED}); regenerate them with the command below." in card
    assert "load_pretrained" not in card
    assert "plain20" in {i.name for i in list_checkpoints(root)[0]}
    table = report.verify(list_checkpoints(root)[0], str(shared_cifar)).set_index("model")
    assert table.loc["plain20", "within 0.1"] == "weights not bundled" and table.loc["resnet20", "within 0.1"] == "yes"
    # Again, with a misspelt name after it: nothing is touched, then the corrected rerun finishes the rest.
    assert report.main(["--checkpoints", str(root), "--unbundle", "plain20", "resnet2O"]) == 2
    assert "cannot unbundle" in capsys.readouterr().err and (root / "resnet20" / "model.safetensors").is_file()
    assert report.main(["--checkpoints", str(root), "--unbundle", "plain20", "resnet20"]) == 0
    err = capsys.readouterr().err
    assert f"{path}: no weights to take out (already: {report.UNBUNDLED})" in err
    assert not (root / "resnet20" / "model.safetensors").exists()


def test_unbundle_checks_every_checkpoint_before_it_changes_one(tiny_checkpoints, tmp_path, capsys):
    """plain20 published without weights (train.py --no-weights: no file, no weights_not_bundled) after resnet20:
    the command stops before it takes resnet20's weights out."""
    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    (root / "plain20" / "model.safetensors").unlink()
    config = root / "plain20" / "config.json"
    config.write_text(json.dumps(dict(json.loads(config.read_text()), has_weights=False)))
    before = {f: (root / "resnet20" / f).read_bytes() for f in ("config.json", "README.md", "model.safetensors")}
    assert report.main(["--checkpoints", str(root), "--unbundle", "resnet20", "plain20"]) == 2
    assert f"cannot unbundle: {root / 'plain20'}: no model.safetensors to take out" in capsys.readouterr().err
    assert {f: (root / "resnet20" / f).read_bytes() for f in before} == before
