"""AppTest on the bundled checkpoints: Gradient flow and Loss landscape compare only runs of one training length."""
from __future__ import annotations

from pathlib import Path

import pytest

from pages.common import default_pair
from resnet_core import zoo
from resnet_core.checkpoint import list_checkpoints
from tests.test_app import open_app, plotted

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.fixture(scope="module")
def lengths() -> dict[int, list]:
    """{iterations: the bundled checkpoints trained that long}, longest first: full-recipe runs beside 15-epoch ones."""
    infos, _ = list_checkpoints(BUNDLED)
    runs = {zoo.iterations(group[0]): group for group in zoo.schedules(infos)}
    assert len(runs) >= 2, "the bundle holds runs of two lengths"
    return runs


def widget(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def names(group) -> dict[str, set[str]]:
    """{'plain': names, 'residual': names} of a group of checkpoints."""
    kinds = {"plain": set(), "residual": set()}
    for info in group:
        kinds[zoo.identity(info)["net"]].add(info.name)
    return kinds


def test_gradient_flow_pairs_only_runs_of_one_length(monkeypatch, lengths):
    """Opens on the pair every page opens on (plain56 and resnet56, 64k iterations), offers only its length's runs,
    and the radio switches to the 15-epoch ones: never a 64k run on one epoch axis with a 15-epoch one."""
    at = open_app(monkeypatch, BUNDLED, "pages/gradients.py")
    length = widget(at.sidebar.radio, "Training length")
    assert length.value == max(lengths) and set(length.options) == {f"{n:,} iterations ({len(g)} runs)"
                                                                   for n, g in lengths.items()}
    for n, group in lengths.items():
        length.set_value(n).run()
        assert not at.exception, [e.value for e in at.exception]
        plain, residual = (widget(at.sidebar.selectbox, f"{k} checkpoint") for k in ("Plain", "Residual"))
        assert set(plain.options) == names(group)["plain"] and set(residual.options) == names(group)["residual"]
        assert (plain.value, residual.value) == default_pair(group)
        heatmap, profile = plotted(at)
        assert set(heatmap["checkpoint"]) == set(profile["checkpoint"]) == {plain.value, residual.value}
        last = max(r["epoch"] for info in group for r in info.history["records"])
        assert heatmap["last_epoch"].max() == last and profile["epoch"].unique().tolist() == [last]
        measured = next(m.value for m in at.markdown if m.value.startswith("**Measured here**"))
        assert f"{plain.value}: " in measured and f"{residual.value}: " in measured


def test_landscape_offers_one_length_and_slices_the_two_surfaces(monkeypatch, lengths):
    """Surfaces and slices of the chosen length only; the slices open on the two surfaces drawn, not on all 14 (a
    log axis from 0.0025 to 6 x 10^9 in seven oranges and seven blues); the default pairs were measured alike."""
    at = open_app(monkeypatch, BUNDLED, "pages/landscape.py")
    length = widget(at.sidebar.radio, "Training length")
    assert length.value == max(lengths)
    for n, group in lengths.items():
        length.set_value(n).run()
        assert not at.exception and not at.warning, [w.value for w in at.warning]
        plain, residual = (widget(at.sidebar.selectbox, f"{k} checkpoint (surface)") for k in ("Plain", "Residual"))
        assert set(plain.options) == names(group)["plain"] and set(residual.options) == names(group)["residual"]
        assert (plain.value, residual.value) == default_pair(group)
        slices = widget(at.sidebar.multiselect, "1-D slices")
        assert set(slices.options) == {info.name for info in group} and slices.value == [plain.value, residual.value]
        surface, sliced = plotted(at)
        assert set(surface["checkpoint"]) == set(sliced["checkpoint"]) == {plain.value, residual.value}
        assert "the same colour is the same loss" in " ".join(c.value for c in at.caption)
    slices.set_value(sorted(slices.options)).run()  # the user may add every other run of this length
    assert set(plotted(at)[1]["checkpoint"]) == {info.name for info in group}


def test_landscape_warns_where_the_surfaces_were_measured_differently(monkeypatch, lengths):
    """plain20 (500 training images, fp32 on a CPU) beside resnet56 (2,000 images, bf16 on an H200): both 64k
    iterations, but the shared colour scale no longer means the same loss, and the page says why."""
    at = open_app(monkeypatch, BUNDLED, "pages/landscape.py")
    widget(at.sidebar.selectbox, "Plain checkpoint (surface)").set_value("plain20").run()
    assert not at.exception
    warned = [w.value for w in at.warning]
    assert len(warned) == 2  # the surfaces, and the slices that follow them
    assert "The surfaces of plain20 and resnet56 were measured differently" in warned[0]
    assert "training images: plain20 500, resnet56 2,000" in warned[0]
    assert "precision: plain20 fp32, resnet56 bf16 autocast" in warned[0]
    captions = " ".join(c.value for c in at.caption)
    assert "the same colour is the same loss" not in captions and "measured differently" in captions
