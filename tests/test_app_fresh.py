"""AppTest while runs publish beside the app: the picks stay, and nothing is filed under another run's weights."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from resnet_core.data import CLASSES
from tests.test_app import open_app, overlays, plotted, with_a_long_copy

PICKER_PAGES = ["pages/curves.py", "pages/gradients.py", "pages/responses.py", "pages/landscape.py", "pages/predict.py",
                "pages/classes.py"]


def publish_beside(root: Path, length: int) -> None:
    """What train.py finishing in another terminal does to the folder the app reads: new runs appear, copies of the
    tiny pair as if trained for `length` iterations (beside the pickers' own runs) and for 640 (a length of its
    own). Both change the pickers' labels: another "(N runs)", more options."""
    for name in ("resnet20", "plain20"):
        for iterations in (length, 640):
            new = shutil.copytree(root / name, root / f"{name}-{iterations}-again")
            config = json.loads((new / "config.json").read_text())
            recipe = dict(config["recipe"], iterations=iterations)
            (new / "config.json").write_text(json.dumps(dict(config, recipe=recipe)))


def picks(at) -> dict[str, object]:
    return {w.label: w.value for w in [*at.sidebar.radio, *at.sidebar.selectbox, *at.sidebar.multiselect]}


@pytest.mark.parametrize("page", PICKER_PAGES)
def test_a_run_published_beside_the_app_leaves_every_pick_as_it_was(monkeypatch, tiny_landscapes, tmp_path, page):
    """Unkeyed, a widget is known by its labels: a publish that changes one (an iteration count, a number of runs)
    made a new widget, back on its default, at the next click: another pair, mid-lecture, without a word."""
    root = with_a_long_copy(tiny_landscapes, tmp_path / "checkpoints")
    at = open_app(monkeypatch, root, page)
    length = 64_000
    for radio in at.sidebar.radio:  # the other training length, where the page has one: its pickers are its own
        if radio.label == "Training length":
            length = next(n for n in (64_000, 8) if n != radio.value)  # 8: TINY_RUN's iterations
            radio.set_value(length).run()
    for radio in at.sidebar.radio:  # away from where each other one opens (elements of this run, not the last)
        if radio.label != "Training length":
            radio.set_value(radio.options[(radio.index + 1) % len(radio.options)]).run()
    for box in at.sidebar.selectbox:  # away from where each opens
        box.select_index((box.index + 1) % len(box.options))
    for chosen in at.sidebar.multiselect:  # one fewer than it opens with
        if len(chosen.value) > 1:
            chosen.unselect(chosen.value[0])
    at.run()
    chosen = picks(at)
    assert chosen and not at.exception
    publish_beside(root, length)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert picks(at) == chosen


def top_class(at, model: str) -> tuple[str, str]:
    """(the class `model`'s bars rank first, the class its Grad-CAM map is captioned with) on the Predict page."""
    bars = plotted(at)[0]
    ranked = bars[bars["model"] == model].sort_values("rank")["class"].iloc[0]
    mapped = next(c for c in overlays(at) if c.startswith(f"{model}: Grad-CAM")).rsplit(" (", 1)[1][:-1]
    return ranked, mapped


def test_maps_computed_as_a_run_publishes_are_never_shown_for_the_new_weights(monkeypatch, tiny_checkpoints,
                                                                               tmp_path):
    """The weights' mtime was read once to load the model and again, later in the run, to key what it computed: a
    publish in between filed the old model's Grad-CAM under the new weights, where it stayed, captioned with a class
    the new bars beside it did not rank first. The maps are keyed by the stamp the model was loaded under."""
    import importlib

    from resnet_core.checkpoint import load_pretrained, read_checkpoint, save_checkpoint

    root = shutil.copytree(tiny_checkpoints, tmp_path / "checkpoints")
    at = open_app(monkeypatch, root, "pages/predict.py")
    at.button(key="gallery-0").click().run()
    before, mapped = top_class(at, "resnet20")
    assert mapped == before

    def publish() -> None:  # train.py finishing another resnet20 in another terminal: it ranks another class first
        old = read_checkpoint(root / "resnet20")
        model = load_pretrained(old.path)
        with torch.no_grad():
            model.fc.bias[(CLASSES.index(before) + 1) % len(CLASSES)] += 100.0
        save_checkpoint(root, "resnet20", model, old.config, old.history, old.metrics)

    module = importlib.import_module("resnet_core.predict")  # resnet_core.predict is also the function's name
    predict, armed = module.predict, [True]

    def predict_then_publish(model, image):
        found = predict(model, image)
        if armed:
            armed.clear()
            publish()
        return found

    at.button(key="gallery-1").click().run()
    monkeypatch.setattr(module, "predict", predict_then_publish)  # the page imports it at each run
    at.button(key="gallery-0").click().run()  # the publish lands while this run predicts
    assert not armed and not at.exception
    at.button(key="gallery-0").click().run()
    after, mapped = top_class(at, "resnet20")
    assert after != before and mapped == after
