"""Tidy pandas frames of checkpoints and probes, ready for the app's tables and Altair charts (no Streamlit here)."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from .checkpoint import CheckpointInfo
from .data import CLASSES
from .flops import count_macs, count_params, layer_table
from .models import build_model, model_info
from .paper import SEED_REPORT_2_TEST_ERROR, SEED_REPORT_CLAIMS, TABLE1_GFLOPS, TABLE6_PARAMS_M, TABLE6_TEST_ERROR
from .probes import gradient_norms, per_class_accuracy

# (record key, split, metric) for every curve history.json holds; the training split has no top-5.
CURVES = (("train_error", "train", "top-1 error"), ("test_error", "test", "top-1 error"),
          ("test_top5_error", "test", "top-5 error"), ("train_loss", "train", "loss"), ("test_loss", "test", "loss"))
REFERENCES = {"paper (Table 6)": TABLE6_TEST_ERROR, "seed report 003": SEED_REPORT_2_TEST_ERROR,
              "seed report 000": {m: c["test_error"] for m, c in SEED_REPORT_CLAIMS.items()}}
# What the headline's errors measure, by metrics.json key. Its train error is the final model's on the clean
# training set, or, in checkpoints that predate that, the running error on the last epoch's augmented batches.
MEASURES = {"train_error_clean": "train error (final model, clean training set)",
            "train_error": "train error (last epoch, augmented batches)", "test_error": "test error"}
# What a landscape.json records about how it was measured, besides its points.
LANDSCAPE_SETTINGS = ("points", "grid", "span", "seed", "direction", "bn", "augmentation", "precision", "device",
                      "wall_time_s", "center_loss", "center_error")


def net_kind(residual: bool) -> str:
    return "residual" if residual else "plain"


def identity(info: CheckpointInfo) -> dict:
    """The columns every frame starts with: which checkpoint, which model, its depth and kind."""
    spec = model_info(info.config["model"])
    return dict(checkpoint=info.name, model=info.config["model"], depth=spec["depth"], net=net_kind(spec["residual"]))


@lru_cache(maxsize=64)
def model_size(name: str, arch: tuple = ()) -> tuple[int, int]:
    """(parameters, multiply-adds per 32x32 image) of a registered model."""
    model = build_model(name, **dict(arch))
    return count_params(model), count_macs(model)


def shortcuts(info: CheckpointInfo) -> str:
    spec = model_info(info.config["model"])
    if not spec["residual"]:
        return "none"
    kind = info.config.get("arch", {}).get("shortcut", spec["default_shortcut"])
    return {"A": "A: identity, zero-padded", "B": "B: projection at stage changes"}.get(kind, kind)


def zoo_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """One row per checkpoint: size, final errors (%), the paper's Table 6 error, training time and device.
    Two training errors: `train_error` is the running error on the last epoch's augmented batches (the dashed
    curves of Fig. 6), `train_error_clean` the final model's on the whole un-augmented training set (None in
    checkpoints that predate it)."""
    rows = []
    for info in infos:
        c, m = info.config, info.metrics
        params, macs = model_size(c["model"], tuple(sorted(c.get("arch", {}).items())))
        rows.append(dict(identity(info), shortcuts=shortcuts(info), params=params, flops=macs,
                         train_error=m.get("train_error"), train_error_clean=m.get("train_error_clean"),
                         test_error=m["test_error"], paper_test_error=TABLE6_TEST_ERROR.get(c["model"]),
                         iterations=c["recipe"].get("iterations"), train_minutes=c.get("wall_time_s", math.nan) / 60,
                         device=c.get("device"), weights=info.has_weights))
    return pd.DataFrame(rows).sort_values(["net", "depth", "checkpoint"], ignore_index=True) if rows else pd.DataFrame()


def history_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Long frame of every curve: checkpoint, model, depth, net, epoch, iteration, split, metric, value."""
    rows = []
    for info in infos:
        ident = identity(info)
        for r in info.history["records"]:
            for key, split, metric in CURVES:
                if r.get(key) is not None:
                    rows.append(dict(ident, epoch=r["epoch"], iteration=r.get("iteration"), split=split,
                                     metric=metric, value=r[key]))
    return pd.DataFrame(rows)


def final_errors_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Our final test error next to each reference that quotes one for the same model, with the difference."""
    rows = []
    for info in infos:
        model = info.config["model"]
        row = dict(identity(info), train_error=info.metrics.get("train_error"), test_error=info.metrics["test_error"])
        for source, table in REFERENCES.items():
            ref = table.get(model)
            row[source] = ref
            row[f"ours minus {source}"] = None if ref is None else info.metrics["test_error"] - ref
        rows.append(row)
    return pd.DataFrame(rows)


def headline_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Final train and test error (%) against depth: ours per checkpoint, and the references' test errors
    for the 6n+2 family and for any other model we have a checkpoint of; `measure` says which error (MEASURES)."""
    rows, ours = [], {info.config["model"] for info in infos}
    for info in infos:
        for split, keys in (("train", ("train_error_clean", "train_error")), ("test", ("test_error",))):
            key = next((k for k in keys if info.metrics.get(k) is not None), None)
            if key:
                rows.append(dict(identity(info), split=split, source="ours", measure=MEASURES[key],
                                 error=info.metrics[key]))
    for source, table in REFERENCES.items():
        for model, error in table.items():
            spec = model_info(model)
            if spec["family"] != "cifar" and model not in ours:
                continue
            rows.append(dict(checkpoint="", model=model, depth=spec["depth"], net=net_kind(spec["residual"]),
                             split="test", source=source, measure=MEASURES["test_error"], error=error))
    return pd.DataFrame(rows)


def grad_norm_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Per-layer gradient norms recorded during training: checkpoint, ..., epoch, index, layer, grad_norm."""
    rows = []
    for info in infos:
        ident, layers = identity(info), info.history.get("layers", [])
        for r in info.history["records"]:
            for i, (layer, norm) in enumerate(zip(layers, r.get("grad_norms") or [])):
                rows.append(dict(ident, epoch=r["epoch"], index=i + 1, layer=layer, grad_norm=norm))
    return pd.DataFrame(rows)


def with_ranks(records: list[dict], value: str) -> pd.DataFrame:
    """Records in layer order plus `rank`: 1 for the largest value (paper Fig. 7, bottom)."""
    frame = pd.DataFrame(records)
    frame["rank"] = frame[value].rank(ascending=False, method="first").astype(int)
    return frame


def response_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Recorded std of each 3x3 layer's BN output (metrics.json), with ranks by magnitude."""
    frames = [with_ranks(info.metrics["response_std"], "std").assign(**identity(info))
              for info in infos if info.metrics.get("response_std")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def class_accuracy_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Per-class test accuracy (%) of each checkpoint, from its confusion matrix."""
    rows = [dict(identity(info), **{"class": name, "accuracy": acc})
            for info in infos for name, acc in zip(CLASSES, per_class_accuracy(info.metrics["confusion_matrix"]))]
    return pd.DataFrame(rows)


def confusion_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Confusion matrices, long: true class, predicted class, count and % of the true class's images."""
    rows = []
    for info in infos:
        ident = identity(info)
        for t, row in enumerate(info.metrics["confusion_matrix"]):
            total = max(1, sum(row))
            for p, count in enumerate(row):
                rows.append(dict(ident, true=CLASSES[t], predicted=CLASSES[p], count=count, percent=100 * count / total))
    return pd.DataFrame(rows)


def gradient_norms_at_init(name: str, images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> pd.DataFrame:
    """A freshly initialised `name` (seeded), one backward pass on the batch: gradient norm per layer."""
    torch.manual_seed(seed)
    model = build_model(name)
    spec = model_info(name)
    frame = pd.DataFrame(gradient_norms(model, images, labels))
    return frame.assign(model=name, depth=spec["depth"], net=net_kind(spec["residual"]))


def architecture_frame(name: str) -> pd.DataFrame:
    """Layer table of a registered model at its family's input size: layer, type, output shape, params, FLOPs."""
    size = (224, 224) if model_info(name)["family"] == "imagenet" else (32, 32)
    frame = pd.DataFrame(layer_table(build_model(name), size))
    frame["output_shape"] = frame["output_shape"].map(lambda s: " x ".join(map(str, s)))
    frame.insert(0, "index", range(1, len(frame) + 1))
    return frame


def paper_totals(name: str) -> dict:
    """The paper's size numbers for `name`, where it gives them: Table 1 GFLOPs, Table 6 parameters (millions)."""
    return {k: v for k, v in (("Table 1: GFLOPs", TABLE1_GFLOPS.get(name)),
                              ("Table 6: parameters (M)", TABLE6_PARAMS_M.get(name))) if v is not None}


def _cell_edges(surface: pd.DataFrame) -> pd.DataFrame:
    """The rectangle each grid point stands for: a0..a1 x b0..b1, half a grid step either side."""
    edges = {}
    for axis, low, high in (("alpha", "a0", "a1"), ("beta", "b0", "b1")):
        steps = np.diff(np.unique(surface[axis]))
        half = steps.min() / 2 if len(steps) else 0.5
        edges[low], edges[high] = surface[axis] - half, surface[axis] + half
    return surface.assign(**edges)


def landscape_frames(landscapes: list[tuple[CheckpointInfo, dict]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """From (checkpoint, its landscape.json) pairs: the 1-D slices (alpha, loss, error %), the 2-D surfaces
    (alpha, beta, loss, error %, and each point's cell a0..a1 x b0..b1 for a heatmap) and one row of
    settings per checkpoint (LANDSCAPE_SETTINGS and which parts it holds). A loss that overflowed is NaN."""
    slices, surfaces, settings = [], [], []
    for info, data in landscapes:
        ident = identity(info)
        if data.get("slice_1d"):
            slices.append(pd.DataFrame(data["slice_1d"]).assign(**ident))
        if data.get("surface_2d"):
            surfaces.append(_cell_edges(pd.DataFrame(data["surface_2d"])).assign(**ident))
        parts = [name for key, name in (("slice_1d", "1-D slice"), ("surface_2d", "2-D surface")) if data.get(key)]
        settings.append(dict(ident, parts=", ".join(parts), **{k: data.get(k) for k in LANDSCAPE_SETTINGS}))

    def tidy(frames: list[pd.DataFrame], axes: list[str]) -> pd.DataFrame:
        columns = ["checkpoint", "model", "depth", "net", *axes, "loss", "error"]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
        return frame.astype({"loss": float, "error": float})  # null (an overflow in the JSON) -> NaN

    return tidy(slices, ["alpha"]), tidy(surfaces, ["alpha", "beta"]), pd.DataFrame(settings)


def prediction_frame(predictions: dict[str, list[tuple[str, float]]]) -> pd.DataFrame:
    """{model: [(class, probability), ...]} -> model, rank, class, probability (%)."""
    return pd.DataFrame([dict(model=model, rank=k + 1, **{"class": cls}, probability=100 * p)
                         for model, top in predictions.items() for k, (cls, p) in enumerate(top)])
