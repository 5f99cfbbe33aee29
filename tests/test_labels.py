"""Numbers that mean more than one thing say which: what a wall time counts, how much of a claim a verdict rests on,
which Table 6 figure a difference is from, which checkpoint a comparison used; estimates read as estimates."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from resnet_core import checkpoint, report, zoo
from tests.test_app import open_app, specs
from tests.test_report import fake

REPO = Path(__file__).resolve().parents[1]


def timed(info, wall_time_s: float, epoch_times=(60.0, 60.0)):
    """`info` with two epochs timed at `epoch_times` and a wall time of `wall_time_s` on a 2-core CPU."""
    info.history["records"] = [dict(epoch=k + 1, test_error=9.0, epoch_time_s=t) for k, t in enumerate(epoch_times)]
    info.config.update(wall_time_s=wall_time_s, device="cpu (2 cores)")
    return info


# -- 1. a wall time says whether it counts the whole run or the training steps only ---------------------
def test_readme_table_and_model_card_say_what_the_wall_time_counts():
    steps, whole = timed(fake("resnet20", 9.0), 120.0), timed(fake("plain20", 10.0), 150.0)
    rows = report.reproduction_frame([steps, whole]).set_index("model")["wall time (min)"]
    assert rows.to_dict() == {"resnet20": "2.0 (training steps only)",
                              "plain20": "2.5 (whole run, evaluation included)"}
    card = checkpoint.model_card(steps.config, steps.metrics, "fp16", "resnet20", steps.history)
    assert "| wall time | 2.0 min (training steps only), on cpu (2 cores) |" in card
    card = checkpoint.model_card(whole.config, whole.metrics, "fp16", "plain20", whole.history)
    assert "| wall time | 2.5 min (whole run, evaluation included), on cpu (2 cores) |" in card
    unknown = checkpoint.model_card(whole.config, whole.metrics, "fp16", "plain20")  # no history to tell by
    assert "| wall time | 2.5 min (what it counts is not recorded), on cpu (2 cores) |" in unknown
    untimed = dict(whole.config, wall_time_s=None)
    assert "| wall time | not recorded, on cpu (2 cores) |" in checkpoint.model_card(untimed, {}, "fp16")


def test_published_cards_and_home_say_what_the_wall_time_counts(monkeypatch, tiny_checkpoints):
    for name in ("resnet20", "plain20"):  # the trainer times the whole run now, and its card says so
        assert "min (whole run, evaluation included), on cpu" in (tiny_checkpoints / name / "README.md").read_text()
    at = open_app(monkeypatch, tiny_checkpoints)
    config = json.loads(at.dataframe[0].proto.columns)
    help_text = config["train_minutes"]["help"]
    assert "Wall-clock time of the run" not in help_text
    assert "the whole run" in help_text and "the sum of the training steps alone" in help_text
    assert set(at.dataframe[0].value["time_counts"]) == {"whole run, evaluation included"}


def test_bundled_model_cards_say_what_the_wall_time_counts():
    infos, _ = checkpoint.list_checkpoints(REPO / "checkpoints")
    for info in infos:  # each card as the project writes it, and what it counts
        card = (info.path / "README.md").read_text()
        assert card == checkpoint.model_card(info.config, info.metrics, checkpoint.stored_precision(info.path),
                                             info.name, info.history), f"{info.name}: card out of date"
        assert f"min ({zoo.time_counts(info)})" in card


# -- 2. a verdict says how much of its claim it rests on --------------------------------------------------
def test_paper_checks_say_how_much_of_each_claim_the_evidence_covers():
    long = [fake("plain20", 9.0, 1.0), fake("plain56", 12.0, 5.0), fake("resnet20", 8.5, 0.3),
            fake("resnet56", 6.9, 0.04)]
    short = [fake("plain56", 52.8, 52.5, iterations=5_850), fake("plain110", 89.4, 89.3, iterations=5_850),
             fake("resnet56", 17.8, 15.3, iterations=5_850), fake("resnet110", 13.9, 10.5, iterations=5_850)]
    checks = zoo.paper_checks(long + short).set_index("claim")
    assert list(checks.columns) == ["holds", "coverage", "evidence"]
    assert (checks.loc[list(zoo.FIG6_CLAIMS.values()), "coverage"] == "at 2 of 5 depths").all()
    assert (checks.loc[list(zoo.FIG6_CLAIMS.values()), "holds"] == "yes").all()  # the verdicts keep their meaning
    assert checks.loc["Degradation: plain-56 has a higher final training error than plain-20", "coverage"] == ""
    degradation = checks.loc["Degradation: plain-110 has a higher final training error than plain-56"]
    assert degradation["holds"] == "yes" and degradation["coverage"] == "on short runs only"
    shortcuts = checks.filter(like="Shortcuts help", axis=0).iloc[0]
    assert shortcuts["holds"] == "yes" and shortcuts["coverage"] == "at 3 of 5 depths, on short runs only at 1 of them"
    assert checks.loc["ResNet-20: test error at or below the paper's 8.75 %", "coverage"] == ""
    assert zoo.coverage([True, True], 5) == "at 2 of 5 depths, on short runs only"
    assert zoo.coverage([False] * 5, 5) == "" and zoo.coverage([True, False, True, False, True], 5) == \
        "on short runs only at 3 of 5 depths"
    assert zoo.coverage_counts(["", "at 2 of 5 depths", "on short runs only", "at 2 of 5 depths"]) == \
        " (2 of them at 2 of 5 depths; 1 on short runs only)"
    assert zoo.coverage_counts(["at 2 of 5 depths"]) == " (at 2 of 5 depths)" and zoo.coverage_counts(["", ""]) == ""
    assert "'coverage'" in report.results_markdown(long)  # the README says what the column means


def two_depths(tiny_checkpoints: Path, root: Path) -> Path:
    """The tiny pair (8 iterations each) and copies of it as 56-layer nets, with errors and responses set so that
    every comparison between them holds: deeper plain nets train worse, deeper residual nets better, shortcuts
    help, residual nets respond less. Weights left out: they are 20-layer ones."""
    errors = {"plain20": (10.0, 1.0), "plain56": (15.0, 5.0), "resnet20": (9.0, 3.0), "resnet56": (7.0, 1.0)}
    root.mkdir()
    for name, (test_error, train_error) in errors.items():
        folder = shutil.copytree(tiny_checkpoints / (name[:-2] + "20"), root / name)
        (folder / "model.safetensors").unlink()
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(dict(config, model=name, depth=int(name[-2:]))))
        metrics = json.loads((folder / "metrics.json").read_text())
        std = 1.0 if name.startswith("resnet") else 2.0
        metrics.update(test_error=test_error, train_error_clean=train_error,
                       response_std=[dict(r, std=std, channel_std=std) for r in metrics["response_std"]])
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_home_says_which_verdicts_rest_on_part_of_their_claim(monkeypatch, tiny_checkpoints, tmp_path):
    at = open_app(monkeypatch, two_depths(tiny_checkpoints, tmp_path / "two-depths"))
    summary = next(m.value for m in at.markdown if m.value.startswith("**On these checkpoints**"))
    assert "claims: 7 hold (5 of them at 2 of 5 depths, on short runs only; 2 on short runs only); " in summary, summary
    assert zoo.SHORT_RUNS_CAVEAT in summary
    title = specs(at)[0]["title"]["text"]
    assert title == ("Deeper plain nets train worse; deeper residual nets train better (both at 2 of 5 depths, "
                     "on short runs only)")


# -- 3. the noise band's example reads as an illustration ---------------------------------------------------
def test_noise_rule_gives_its_example_as_an_illustration_not_a_measurement():
    rule = zoo.noise_rule()
    assert "0.28" not in rule  # resnet20's measured training error, once quoted as if a constant
    assert "for example, 0.18 points at a training error of 1 %." in rule
    assert zoo.training_noise(0.28) == pytest.approx(0.45 * (0.28 / 6.61) ** 0.5)  # the rule itself unchanged


# -- 4. estimates say they are estimates, and what they rest on ---------------------------------------------
def test_time_and_memory_estimates_say_what_they_rest_on(monkeypatch, tiny_checkpoints):
    at = open_app(monkeypatch, tiny_checkpoints, "pages/gradients.py")
    deep = next(c for c in at.sidebar.checkbox if c.label == "Also 1202 layers")
    assert not deep.help.startswith("About 20 s") and "timed on a 2-core CPU" in deep.help
    at = open_app(monkeypatch, tiny_checkpoints, "pages/curves.py")
    hint = next(i.value for i in at.info if "ResNet-18" in i.value)
    assert "would take roughly two days on 2 CPU cores: an estimate, resnet56's measured speed there" in hint
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "ResNet-18 would take roughly two days on 2 CPU cores (an estimate: resnet56's measured speed" in readme


# -- 5. ResNet-110's Table 6 figure is the best of 5 runs, and a difference says what it is from -------------
def test_resnet110_differences_are_from_the_mean_of_the_papers_runs_and_say_so():
    infos = [fake("resnet110", 6.55), fake("resnet20", 8.5)]
    frame = zoo.final_errors_frame(infos).set_index("model")
    assert frame.loc["resnet110", "paper (Table 6)"] == 6.43  # the figure Table 6 prints
    assert frame.loc["resnet110", "ours minus paper (Table 6)"] == pytest.approx(6.55 - 6.61)
    assert frame.loc["resnet110", "ours minus paper (Table 6): from"] == "their mean of 5 runs, 6.61"
    assert frame.loc["resnet20", "ours minus paper (Table 6)"] == pytest.approx(-0.25)
    table = zoo.final_errors_table(zoo.final_errors_frame(infos)).set_index("checkpoint")
    column = "paper (Table 6) % (ours − theirs)"
    assert table.loc["resnet110", column] == "6.43, the best of 5 runs (-0.06 from their mean of 5 runs, 6.61)"
    assert table.loc["resnet20", column] == "8.75 (-0.25)"
    short = zoo.final_errors_table(zoo.final_errors_frame([fake("resnet110", 13.9, iterations=5_850)]))
    assert short.loc[0, column] == "6.43, the best of 5 runs (short run)"
    rows = report.reproduction_frame(infos).set_index("model")
    assert rows.loc["resnet110", "paper, Table 6"] == "6.43, the best of 5 runs"
    assert rows.loc["resnet110", "ours minus paper (points)"] == "-0.06 (from their mean of 5 runs, 6.61)"
    assert rows.loc["resnet20", "paper, Table 6"] == "8.75"
    assert rows.loc["resnet20", "ours minus paper (points)"] == "-0.25"
    points = zoo.headline_frame(infos)
    paper = points[points["source"] == "paper (Table 6)"].set_index("model")["measure"]
    assert paper["resnet110"] == "test error, the best of 5 runs (their mean 6.61 ± 0.16 %)"
    assert paper["resnet20"] == "test error"
    assert "ResNet-110's the best of 5 runs" in zoo.sources_note(["paper (Table 6)"])


def test_home_says_resnet110s_table_6_figure_is_the_best_of_5_runs(monkeypatch, tiny_checkpoints):
    at = open_app(monkeypatch, tiny_checkpoints)
    config = json.loads(at.dataframe[0].proto.columns)
    assert "ResNet-110's 6.43 is the best of 5 runs (their mean: 6.61 ± 0.16 %" in config["paper_test_error"]["help"]


# -- 6. two checkpoints of one net and length: one is compared, and the page says which ------------------------
def with_std(info, name: str, std: list[float]):
    info = replace(info, name=name, metrics=dict(info.metrics))
    info.metrics["response_std"] = [dict(index=i, layer=f"l{i}", std=s) for i, s in enumerate(std)]
    return info


def test_response_pairs_compare_one_checkpoint_of_a_net_and_say_which_was_left_out():
    plain = with_std(fake("plain20", 9.0), "plain20", [2.0, 2.0])
    resnet, again = (with_std(fake("resnet20", 8.0), name, std)
                     for name, std in (("resnet20", [1.0, 1.0]), ("resnet20-run2", [3.0, 3.0])))
    for order in ([plain, resnet, again], [again, plain, resnet]):  # the one named after its model, either way
        data = zoo.response_frame(order)
        assert zoo.response_pairs(data) == {(20, 64_000): ([2.0, 2.0], [1.0, 1.0])}
        assert zoo.responses_left_out(data) == (
            "resnet20-run2 is left out of the comparison: resnet20 is compared in its place (residual, 20 layers, "
            "64,000 iterations: one net of each kind per depth and length).")
    assert zoo.responses_left_out(zoo.response_frame([plain, resnet])) == ""
    assert zoo.responses_left_out(zoo.response_frame([resnet, again])) == ""  # no plain net: nothing compared


def test_layer_responses_page_warns_which_checkpoint_it_left_out(monkeypatch, tiny_checkpoints, tmp_path):
    root = shutil.copytree(tiny_checkpoints, tmp_path / "twice")
    shutil.copytree(root / "resnet20", root / "resnet20-run2")
    at = open_app(monkeypatch, root, "pages/responses.py")
    at.sidebar.multiselect[0].set_value(["plain20", "resnet20", "resnet20-run2"]).run()
    assert any(w.value.startswith("resnet20-run2 is left out of the comparison: resnet20 is compared in its place")
               for w in at.warning), [w.value for w in at.warning]
