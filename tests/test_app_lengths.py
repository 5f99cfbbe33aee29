"""AppTest on checkpoint folders of two training lengths: Gradient flow and Loss landscape compare only runs of one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pages.common import default_pair
from resnet_core import zoo
from resnet_core.checkpoint import list_checkpoints
from tests.test_app import open_app, plotted, short_runs, specs, with_a_long_copy


@pytest.fixture(scope="module")
def two_lengths(tiny_landscapes, tmp_path_factory) -> Path:
    """The tiny pair twice over (plain20, resnet20 and their -again copies) beside a 64k-iteration copy of it
    (plain20-64k, resnet20-64k), each with its landscape: the short length has the most runs, the long one holds the
    pair every page opens on (default_pair: the longest pair trained equally), so the two starts differ."""
    root = with_a_long_copy(tiny_landscapes, tmp_path_factory.mktemp("lengths") / "checkpoints")
    for name in ("resnet20", "plain20"):
        shutil.copytree(root / name, root / f"{name}-again")
    return root


@pytest.fixture(scope="module")
def lengths(two_lengths) -> dict[int, list]:
    """{iterations: the checkpoints trained that long}, longest first."""
    infos, bad = list_checkpoints(two_lengths)
    assert not bad, bad
    runs = {zoo.iterations(group[0]): group for group in zoo.schedules(infos)}
    assert [len(group) for group in runs.values()] == [2, 4] and max(runs) == 64_000
    assert set(default_pair(infos)) == {"plain20-64k", "resnet20-64k"}  # on the length with the fewer runs
    return runs


def widget(widgets, label: str):
    found = [w for w in widgets if w.label == label]
    assert found, f"no {label!r} among {[w.label for w in widgets]}"
    return found[0]


def options(group) -> dict[str, set[str]]:
    """{'plain': options, 'residual': options} a picker offers for a group of checkpoints: each name with its
    training length, 'plain20-64k (64,000 it.)'."""
    kinds = {"plain": set(), "residual": set()}
    for info in group:
        kinds[zoo.identity(info)["net"]].add(zoo.with_length(info))
    return kinds


def notes_short_runs_only_where_drawn(at, n: int, drawn: set[str]) -> None:
    """At 64k iterations no note on short runs; at the short length one, naming the runs drawn and no other."""
    notes = short_runs(at)
    if n == 64_000:
        assert not notes, notes
    else:
        assert len(notes) == 1 and set(notes[0].split("schedule: ")[1].split(" (")[0].split(", ")) == drawn, notes


def opens_on_the_default_pairs_length(at, lengths):
    """The 'Training length' radio: one option per length, on the default pair's (not the one with the most runs)."""
    length = widget(at.sidebar.radio, "Training length")
    assert length.options == [f"{n:,} iterations ({len(group)} runs)" for n, group in lengths.items()]
    assert length.value == 64_000
    return length


def test_gradient_flow_pairs_only_runs_of_one_length(monkeypatch, two_lengths, lengths):
    """Opens on the default pair's length, offers only its runs, and the radio switches to the other length's:
    never a 64k run on one epoch axis with a short one."""
    at = open_app(monkeypatch, two_lengths, "pages/gradients.py")
    length = opens_on_the_default_pairs_length(at, lengths)
    for n, group in lengths.items():
        length.set_value(n).run()
        assert not at.exception, [e.value for e in at.exception]
        plain, residual = (widget(at.sidebar.selectbox, f"{k} checkpoint") for k in ("Plain", "Residual"))
        assert set(plain.options) == options(group)["plain"] and set(residual.options) == options(group)["residual"]
        assert (plain.value, residual.value) == default_pair(group)
        heatmap, profile = plotted(at)
        assert set(heatmap["checkpoint"]) == set(profile["checkpoint"]) == {plain.value, residual.value}
        notes_short_runs_only_where_drawn(at, n, {plain.value, residual.value})
        # the profile's legend names the checkpoints the sidebar names: plain20-64k, not plain20
        assert specs(at)[-1]["encoding"]["color"]["field"] == ("checkpoint" if n == 64_000 else "model")
        last = max(r["epoch"] for info in group for r in info.history["records"])
        assert heatmap["last_epoch"].max() == last and profile["epoch"].unique().tolist() == [last]
        measured = next(m.value for m in at.markdown if m.value.startswith("**Measured here**"))
        assert f"{plain.value}: " in measured and f"{residual.value}: " in measured
    plain.set_value("plain20-again").run()  # the other run of the same length: the charts follow the choice
    assert set(plotted(at)[0]["checkpoint"]) == {"plain20-again", "resnet20"}


def test_landscape_offers_one_length_and_slices_the_two_surfaces(monkeypatch, two_lengths, lengths):
    """Surfaces and slices of the chosen length only; the slices open on the two surfaces drawn, not on every one
    (14 in the bundle: a log axis from 0.0025 to 6 x 10^9 in seven oranges and seven blues); the pairs were measured
    alike, so nothing is warned and the shared colour scale means the same loss."""
    at = open_app(monkeypatch, two_lengths, "pages/landscape.py")
    length = opens_on_the_default_pairs_length(at, lengths)
    for n, group in lengths.items():
        length.set_value(n).run()
        assert not at.exception and not at.warning, [w.value for w in at.warning]
        plain, residual = (widget(at.sidebar.selectbox, f"{k} checkpoint (surface)") for k in ("Plain", "Residual"))
        assert set(plain.options) == options(group)["plain"] and set(residual.options) == options(group)["residual"]
        assert (plain.value, residual.value) == default_pair(group)
        slices = widget(at.sidebar.multiselect, "1-D slices")
        assert set(slices.options) == {zoo.with_length(info) for info in group}
        assert slices.value == [plain.value, residual.value]
        surface, sliced = plotted(at)
        assert set(surface["checkpoint"]) == set(sliced["checkpoint"]) == {plain.value, residual.value}
        notes_short_runs_only_where_drawn(at, n, {plain.value, residual.value})
        assert "the same colour is the same loss" in " ".join(c.value for c in at.caption)
    slices.set_value(sorted(info.name for info in group)).run()  # the reader may add every other run of this length
    assert set(plotted(at)[1]["checkpoint"]) == {info.name for info in group}


def test_classes_compares_only_runs_of_one_length(monkeypatch, two_lengths, lengths):
    """A against B of one training length (plain56-15ep against resnet56 compared 5,850 iterations with 64,000, not
    the shortcuts), and the seed report's 18-layer claim only beside a plain net and a residual one as deep."""
    at = open_app(monkeypatch, two_lengths, "pages/classes.py")
    length = opens_on_the_default_pairs_length(at, lengths)
    for n, group in lengths.items():
        length.set_value(n).run()
        assert not at.exception, [e.value for e in at.exception]
        a, b, wrong = (widget(at.sidebar.selectbox, label) for label in (
            "Checkpoint A (usually plain)", "Checkpoint B (usually residual)", "Most confident mistakes of"))
        assert set(a.options) == set(b.options) == set(wrong.options) == {zoo.with_length(info) for info in group}
        assert (a.value, b.value) == default_pair(group)
        confusion, accuracy, gains = plotted(at)
        assert set(confusion["checkpoint"]) == set(accuracy["checkpoint"]) == {a.value, b.value}
        assert any(s.startswith("seed report 000's claim at 18 layers") for s in gains["source"])
        notes_short_runs_only_where_drawn(at, n, {a.value, b.value})
    a.set_value("resnet20")  # two residual nets: the claim about shortcuts is not theirs to meet
    b.set_value("resnet20-again").run()
    sources = set(plotted(at)[2]["source"])
    assert sources == {"resnet20-again minus resnet20 (ours)"}, sources
    assert "resnet20 and resnet20-again are not such a pair" in " ".join(c.value for c in at.caption)


ABSENT = "absent"  # the setting left out of the file, as in one written before it was recorded


@pytest.mark.parametrize("setting, value, named", [
    ("points", 2000, "training images: plain20-remeasured 2,000, resnet20 32"),
    ("precision", "bf16 autocast", "precision: plain20-remeasured bf16 autocast, resnet20 fp32"),
    ("points", ABSENT, "training images: plain20-remeasured not recorded, resnet20 32"),
    ("precision", None, "precision: plain20-remeasured not recorded, resnet20 fp32")])
def test_landscape_warns_where_the_surfaces_were_measured_differently(monkeypatch, tiny_landscapes, tmp_path,
                                                                      setting, value, named):
    """A second plain20 whose landscape says it was measured on 2,000 images (or in bf16), or does not say (the
    setting absent or null), where resnet20's was on 32 in fp32: the same length, but the shared colour scale no
    longer means the same loss, and the page says why. Beside the plain20 measured alike, it says nothing."""
    root = shutil.copytree(tiny_landscapes, tmp_path / "checkpoints")
    remeasured = shutil.copytree(root / "plain20", root / "plain20-remeasured") / "landscape.json"
    data = json.loads(remeasured.read_text())
    assert data["points"] == 32 and data["precision"] == "fp32" and data[setting] != value
    changed = dict(data, **{setting: value})
    if value == ABSENT:
        del changed[setting]
    remeasured.write_text(json.dumps(changed))
    at = open_app(monkeypatch, root, "pages/landscape.py")
    plain = widget(at.sidebar.selectbox, "Plain checkpoint (surface)")
    assert plain.value == "plain20" and not at.warning, [w.value for w in at.warning]
    assert "the same colour is the same loss" in " ".join(c.value for c in at.caption)
    plain.set_value("plain20-remeasured").run()
    assert not at.exception, [e.value for e in at.exception]
    assert set(plotted(at)[0]["checkpoint"]) == {"plain20-remeasured", "resnet20"}
    warned = [w.value for w in at.warning]
    assert len(warned) == 2, warned  # the surfaces, and the slices that follow them
    assert "The surfaces of plain20-remeasured and resnet20 were measured differently" in warned[0]
    assert "These slices were measured differently" in warned[1]
    assert all(named in w for w in warned), warned
    assert sum(label in warned[0] for label in ("training images:", "precision:", "grid:", "seed:")) == 1  # only it
    captions = " ".join(c.value for c in at.caption)
    assert "the same colour is the same loss" not in captions and "measured differently" in captions
