"""AppTest of the Loss landscape page on landscape files gone wrong: retrained weights, a mistyped setting, a surface
that overflowed everywhere."""
from __future__ import annotations

import json
import shutil

import pytest

from pages.common import markdown_text
from resnet_core import build_model
from resnet_core.checkpoint import atomic_save_tensors
from tests.test_app import open_app, plotted, specs


def left_out(at) -> str:
    return " ".join(w.value for w in at.warning if "landscape file(s) left out" in w.value)


def test_a_landscape_is_refused_once_its_checkpoint_is_retrained(monkeypatch, tiny_landscapes, tmp_path):
    """New weights under an old landscape.json, while the page is open: the next run leaves the file out (it was
    measured on the old weights) instead of drawing it from the cache, keyed on landscape.json alone."""
    root = shutil.copytree(tiny_landscapes, tmp_path / "checkpoints")
    at = open_app(monkeypatch, root, "pages/landscape.py")
    assert not at.warning and set(plotted(at)[0]["checkpoint"]) == {"plain20", "resnet20"}
    retrained = build_model("resnet20").state_dict()
    atomic_save_tensors(root / "resnet20" / "model.safetensors", retrained, metadata={"format": "pt", "model": "resnet20"})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "resnet20" in left_out(at) and "measured on other weights" in left_out(at), [w.value for w in at.warning]
    assert set(plotted(at)[0]["checkpoint"]) == {"plain20"}


@pytest.mark.parametrize("setting, value", [("span", [1]), ("points", {"n": 2000})])
def test_a_landscape_with_a_mistyped_setting_is_left_out(monkeypatch, tiny_landscapes, tmp_path, setting, value):
    """A hand-edited setting of the wrong type (once a TypeError in the warning's words): the file is listed as left
    out, naming the setting, and the other net is drawn."""
    root = shutil.copytree(tiny_landscapes, tmp_path / "checkpoints")
    path = root / "resnet20" / "landscape.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **{setting: value})))
    at = open_app(monkeypatch, root, "pages/landscape.py")
    said = markdown_text(f"{path}: {setting} is {value!r}, not a")  # as shown: escaped for markdown
    assert f"resnet20**: {said}" in left_out(at), [w.value for w in at.warning]
    assert set(plotted(at)[0]["checkpoint"]) == {"plain20"}


def test_a_surface_that_overflowed_everywhere_keeps_its_panel(monkeypatch, tiny_landscapes, tmp_path):
    """Every point of plain20's surface null: its panel stays, empty, saying so, and the caption says its panel is
    blank instead of claiming that both panels share a colour scale."""
    root = shutil.copytree(tiny_landscapes, tmp_path / "checkpoints")
    path = root / "plain20" / "landscape.json"
    data = json.loads(path.read_text())
    data["surface_2d"] = [dict(point, loss=None, error=None) for point in data["surface_2d"]]
    path.write_text(json.dumps(data))
    at = open_app(monkeypatch, root, "pages/landscape.py")
    plain, residual = specs(at)[:2]
    assert plain["title"]["text"] == "plain20" and residual["title"]["text"] == "resnet20"
    assert [layer["encoding"].get("text") for layer in plain["layer"]][-1] == {"value": "every point overflowed"}
    assert not any("text" in layer["encoding"] for layer in residual["layer"])
    caption = " ".join(c.value for c in at.caption)
    assert "Every point of plain20's surface overflowed" in caption and "its panel is left blank" in caption
    assert "Both panels share" not in caption and "points overflowed and are left blank" not in caption
    drawn = plotted(at)[0]
    assert drawn["loss"].notna().sum() == 25 and set(drawn.dropna(subset="loss")["checkpoint"]) == {"resnet20"}
