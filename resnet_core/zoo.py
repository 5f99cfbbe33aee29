"""Tidy pandas frames of checkpoints and probes, ready for the app's tables and Altair charts (no Streamlit here)."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from .checkpoint import CheckpointInfo, wall_time_counts
from .data import CLASSES
from .flops import count_macs, count_params, layer_table
from .models import PLAIN_VS_RESIDUAL_DEPTHS, build_model, model_info
from .paper import (PAPER_ITERATIONS, RUN_TO_RUN_NOISE, SEED_REPORT_2_TEST_ERROR, SEED_REPORT_CLAIMS,
                    SEED_REPORT_CLASS_GAINS, SEED_REPORT_GRAD_NORMS, TABLE1_GFLOPS, TABLE6_PARAMS_M,
                    TABLE6_RESNET110_MEAN_STD, TABLE6_TEST_ERROR)
from .probes import gradient_norms, per_class_accuracy

# (record key, split, metric) for every curve history.json holds; the training split has no top-5.
CURVES = (("train_error", "train", "top-1 error"), ("test_error", "test", "top-1 error"),
          ("test_top5_error", "test", "top-5 error"), ("train_loss", "train", "loss"), ("test_loss", "test", "loss"))
# Table 6 gives ResNet-110 as the best of 5 runs (6.43) and their mean (6.61): one run of ours is compared with
# the mean, as the claim checks hold it to, and wherever the 6.43 or a difference from Table 6 is shown, it says so.
TABLE6_BEST_OF_5, BEST_OF_5 = "resnet110", "the best of 5 runs"
TABLE6_SOURCE = "paper (Table 6)"  # its key in REFERENCES
# Reference test errors by source, named for what each is (the reports are ../shared/seeds/000_* and 003_*).
REFERENCES = {TABLE6_SOURCE: TABLE6_TEST_ERROR, "200-epoch reproduction (report 003)": SEED_REPORT_2_TEST_ERROR,
              "ResNet-18 reproduction (report 000)": {m: c["test_error"] for m, c in SEED_REPORT_CLAIMS.items()}}
# Where each reference comes from, for a reader who wants to look it up.
REFERENCE_SOURCES = {
    TABLE6_SOURCE: "He et al., CVPR 2016, Table 6: the residual nets' CIFAR-10 test error (ResNet-110's the best of "
                   "5 runs, whose mean, {:.2f} ± {:.2f} %, a run of ours is compared with; the paper gives the plain "
                   "nets as curves only, in Fig. 6)".format(*TABLE6_RESNET110_MEAN_STD),
    "200-epoch reproduction (report 003)": "a public reproduction's README, one of the documents this project started "
                                           "from (../shared/seeds/003_*.txt): plain and residual 20- and 56-layer nets, "
                                           "200 epochs, lr divided by 10 at epochs 80 and 120",
    "ResNet-18 reproduction (report 000)": "a reproduction report this project started from (../shared/seeds/000_*.txt):"
                                           " CIFAR ResNet-18 against Plain-18, 200 epochs; the Degradation curves page "
                                           "checks its claims point by point",
}
# What the headline's errors measure, by metrics.json key. Its train error is the final model's on the clean
# training set, or, in checkpoints that predate that, the running error on the last epoch's augmented batches.
MEASURES = {"train_error_clean": "train error (final model, clean training set)",
            "train_error": "train error (last epoch, augmented batches)", "test_error": "test error"}
TRAIN_ERROR_KEYS = ("train_error_clean", "train_error")  # in order of preference
# What a landscape.json records about how it was measured, besides its points.
LANDSCAPE_SETTINGS = ("points", "grid", "span", "seed", "direction", "bn", "augmentation", "precision", "device",
                      "wall_time_s", "center_loss", "center_error")


def table6_figure(model: str) -> str:
    """Table 6's test error for `model` as printed, labelled where it is not one run: '8.75'; '6.43, the best of 5
    runs' for ResNet-110; '' for a model Table 6 lacks."""
    figure = TABLE6_TEST_ERROR.get(model)
    if figure is None:
        return ""
    return f"{figure:.2f}" + (f", {BEST_OF_5}" if model == TABLE6_BEST_OF_5 else "")


def table6_baseline(model: str) -> tuple[float | None, str]:
    """(the Table 6 figure one run of `model` is compared with, and what it is where that is not the figure Table 6
    prints): (6.61, 'their mean of 5 runs, 6.61') for ResNet-110, (8.75, '') for ResNet-20, (None, '') for a model
    Table 6 lacks."""
    if model == TABLE6_BEST_OF_5:
        mean = TABLE6_RESNET110_MEAN_STD[0]
        return mean, f"their mean of 5 runs, {mean:.2f}"
    return TABLE6_TEST_ERROR.get(model), ""


def net_kind(residual: bool) -> str:
    return "residual" if residual else "plain"


def identity(info: CheckpointInfo) -> dict:
    """The columns every frame starts with: which checkpoint, which model, its depth and kind, and how many
    iterations it trained for (two runs of one model may differ in that alone)."""
    spec = model_info(info.config["model"])
    return dict(checkpoint=info.name, model=info.config["model"], depth=spec["depth"], net=net_kind(spec["residual"]),
                iterations=iterations(info))


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


def time_counts(info: CheckpointInfo) -> str:
    """What the checkpoint's wall_time_s counts (checkpoint.wall_time_counts): 'whole run, evaluation included',
    'training steps only' (older checkpoints), or '' where it cannot be told."""
    return wall_time_counts(info.config, info.history)


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
                         train_minutes=(c.get("wall_time_s") or math.nan) / 60,
                         time_counts=time_counts(info), device=c.get("device"), weights=info.has_weights))
    return pd.DataFrame(rows).sort_values(["net", "depth", "checkpoint"], ignore_index=True) if rows else pd.DataFrame()


def record_iterations(info: CheckpointInfo) -> list[int | None]:
    """The iteration at the end of each history record: as recorded, else (older or hand-made histories) epoch x
    the recipe's iterations / its epochs where that divides exactly, so that every epoch had as many steps; None
    where neither says (a 64,000-iteration run's last epoch is shorter: 164 x 390 + 40)."""
    records = info.history["records"]
    total, epochs = info.config.get("recipe", {}).get("iterations"), max((r["epoch"] for r in records), default=0)
    per_epoch = total // epochs if total and epochs and total % epochs == 0 else None
    return [r.get("iteration") if r.get("iteration") is not None else
            r["epoch"] * per_epoch if per_epoch else None for r in records]


def without_iterations(infos: list[CheckpointInfo]) -> str:
    """'resnet20 (history.json records no iteration at some epochs, and its recipe's 64,000 iterations do not divide
    evenly into its 165 epochs)' for each checkpoint with a record that record_iterations cannot place, joined by '; '."""
    said = []
    for info in infos:
        if None in record_iterations(info):
            total = info.config.get("recipe", {}).get("iterations")
            epochs = max(r["epoch"] for r in info.history["records"])
            why = (f"its recipe's {total:,} iterations do not divide evenly into its {epochs} epochs" if total else
                   "its recipe records no iterations to share out over its epochs")
            said.append(f"{info.name} (history.json records no iteration at some epochs, and {why})")
    return "; ".join(said)


def history_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Long frame of every curve: checkpoint, model, depth, net, epoch, iteration (record_iterations; None where
    unknown), split, metric, value."""
    rows = []
    for info in infos:
        ident = identity(info)
        for r, iteration in zip(info.history["records"], record_iterations(info)):
            for key, split, metric in CURVES:
                if r.get(key) is not None:
                    rows.append(dict(ident, epoch=r["epoch"], iteration=iteration, split=split,
                                     metric=metric, value=r[key]))
    return pd.DataFrame(rows)


def final_errors_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Our final train error (the final model on the clean set, where recorded) and test error, next to each
    reference that quotes one for the same model, with the difference: none for a run shorter than the paper's,
    which no reference trained for as few iterations (the claim checks call it 'short run' too), nor for one of
    unknown length. ResNet-110's difference from Table 6 is from the mean of the paper's 5 runs (table6_baseline),
    and 'ours minus paper (Table 6): from' says so ('' where it is from the figure shown)."""
    rows = []
    for info in infos:
        model = info.config["model"]
        row = dict(identity(info), train_error=final_train_error(info), test_error=info.metrics["test_error"])
        short = is_short(info) or iterations(info) is None  # nor for a run of unknown length
        for source, table in REFERENCES.items():
            ref = table.get(model)
            base, against = table6_baseline(model) if source == TABLE6_SOURCE else (ref, "")
            row[source] = ref
            row[f"ours minus {source}"] = None if ref is None or short else info.metrics["test_error"] - base
            if source == TABLE6_SOURCE:
                row[f"ours minus {source}: from"] = against
        rows.append(row)
    return pd.DataFrame(rows)


def sources_note(sources) -> str:
    """'Sources: paper (Table 6): He et al. ...; ...' for the references among `sources`, in REFERENCES order."""
    shown = [s for s in REFERENCES if s in set(sources)]
    return "Sources: " + "; ".join(f"*{s}*: {REFERENCE_SOURCES[s]}" for s in shown) + "." if shown else ""


def final_errors_table(finals: pd.DataFrame) -> pd.DataFrame:
    """final_errors_frame for reading: each reference that quotes any of these models as one column, '8.75
    (+5.85)' (theirs, and ours minus theirs in points), '8.75 (short run)' where ours trained for fewer
    iterations than the paper's, blank where it quotes none; our errors to 2 decimals. ResNet-110's Table 6 figure
    says it is the best of 5 runs, and its difference that it is from their mean: '6.43, the best of 5 runs (+0.12
    from their mean of 5 runs, 6.61)'."""
    table = finals[[c for c in finals.columns if c not in REFERENCES and not c.startswith("ours minus ")]].copy()
    for column in ("train_error", "test_error"):
        table[column] = [("" if v is None or pd.isna(v) else f"{v:.2f}") for v in finals[column]]
    known = finals["iterations"].notna() if "iterations" in finals else [True] * len(finals)
    if "iterations" in table:  # how long each trained: two runs of one model may differ in that alone
        table["iterations"] = [f"{int(n):,}" if ok else "unknown" for n, ok in zip(finals["iterations"], known)]
    for source in REFERENCES:
        if finals[source].notna().any():
            against = finals.get(f"ours minus {source}: from", pd.Series([""] * len(finals), index=finals.index))
            table[f"{source} % (ours − theirs)"] = [
                "" if pd.isna(ref) else
                f"{ref:.2f}" + (f", {BEST_OF_5}" if base else "")  # from their mean: Table 6's figure is their best
                + (f" ({'short run' if ok else 'length unknown'})" if pd.isna(diff) else
                   f" ({diff:+.2f} from {base})" if base else f" ({diff:+.2f})")
                for ref, diff, ok, base in zip(finals[source], finals[f"ours minus {source}"], known,
                                               against.fillna(""))]
    return table.rename(columns={"train_error": "train error % (final model)", "test_error": "test error %"})


def headline_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Final train and test error (%) against depth: ours per checkpoint (with the iterations it trained for), and
    the references' test errors for the 6n+2 family and for any other model we have a checkpoint of; `measure` says
    which error (MEASURES)."""
    rows, ours = [], {info.config["model"] for info in infos}
    for info in infos:
        for split, keys in (("train", TRAIN_ERROR_KEYS), ("test", ("test_error",))):
            key = first_recorded(info, keys)
            if key:
                rows.append(dict(identity(info), split=split, source="ours", measure=MEASURES[key],
                                 error=info.metrics[key]))
    for source, table in REFERENCES.items():
        for model, error in table.items():
            spec = model_info(model)
            if spec["family"] != "cifar" and model not in ours:
                continue
            best_of_5 = source == TABLE6_SOURCE and model == TABLE6_BEST_OF_5
            measure = MEASURES["test_error"] + (", {} (their mean {:.2f} ± {:.2f} %)".format(
                BEST_OF_5, *TABLE6_RESNET110_MEAN_STD) if best_of_5 else "")
            rows.append(dict(checkpoint="", model=model, depth=spec["depth"], net=net_kind(spec["residual"]),
                             split="test", source=source, measure=measure, error=error))
    return pd.DataFrame(rows)


def is_shortcut_layer(name: str) -> bool:
    """A conv on a shortcut (option B's 1x1 projections), not on the main path that plain nets share."""
    return ".shortcut." in f".{name}."


def path_index(layers: list[str]) -> dict[str, int]:
    """Position of each main-path weight layer (1 = first conv, last = fc): layer k is the same place in a plain
    net and in its residual twin, projection shortcuts or not (those are left out)."""
    on_path = [name for name in layers if not is_shortcut_layer(name)]
    return {name: i + 1 for i, name in enumerate(on_path)}


def grad_norm_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Per-layer gradient norms recorded during training: checkpoint, ..., epoch, index, layer, grad_norm, for
    the main-path layers (path_index)."""
    rows = []
    for info in infos:
        ident, layers = identity(info), info.history.get("layers", [])
        index = path_index(layers)
        for r in info.history["records"]:
            for layer, norm in zip(layers, r.get("grad_norms") or []):
                if layer in index:
                    rows.append(dict(ident, epoch=r["epoch"], index=index[layer], layer=layer, grad_norm=norm))
    return pd.DataFrame(rows)


def figures(v: float) -> str:
    """Three significant figures, as a reader says them: 0.419, 61.6, 53,800, 2.24 × 10^15 (a tiny 2.5e-05 stays);
    a loss that overflowed (NaN or infinite) says so."""
    if not math.isfinite(v):
        return "overflowed"
    v = float(f"{v:.3g}") + 0.0  # rounded first, so 999.96 reads 1,000 and 999,600 reads 1 × 10^6; -0.0 reads 0
    if abs(v) < 1000:
        return f"{v:.3g}"
    if abs(v) < 1e6:
        return f"{v:,.0f}"
    exponent = math.floor(math.log10(abs(v)))
    return f"{float(f'{v / 10 ** exponent:.3g}'):.3g} × 10^{exponent}"


def norm_span_frame(profile: pd.DataFrame, by: str = "checkpoint") -> pd.DataFrame:
    """How far each net's per-layer gradient norms spread: one row per `by` with its smallest and largest norm, the
    layers they are at, and their ratio, from a frame with `by`, index and grad_norm (finite, positive values only),
    in the frame's order of nets; the norms in figures() (three significant figures)."""
    rows = []
    for name, group in profile[np.isfinite(profile["grad_norm"]) & (profile["grad_norm"] > 0)].groupby(by, sort=False):
        low, high = group.loc[group["grad_norm"].idxmin()], group.loc[group["grad_norm"].idxmax()]
        rows.append({by: name, "smallest": figures(low["grad_norm"]), "at layer": int(low["index"]),
                     "largest": figures(high["grad_norm"]), "at layer ": int(high["index"]),
                     "largest / smallest": f"{figures(high['grad_norm'] / low['grad_norm'])}x"})
    return pd.DataFrame(rows, columns=[by, "smallest", "at layer", "largest", "at layer ", "largest / smallest"])


def norm_spans(profile: pd.DataFrame) -> str:
    """norm_span_frame in words, per checkpoint: 'plain56: 0.014 (layer 1) to 0.24 (layer 22), 17x; ...'."""
    return "; ".join(f"{r['checkpoint']}: {r['smallest']} (layer {r['at layer']}) to {r['largest']} (layer "
                     f"{r['at layer ']}), {r['largest / smallest']}" for _, r in norm_span_frame(profile).iterrows())


def with_ranks(records: list[dict] | pd.DataFrame, value: str, by: str | None = None) -> pd.DataFrame:
    """Records in layer order plus `rank` by `value`: 1 for the largest (paper Fig. 7, bottom), within each `by`
    (say "checkpoint") where given; a missing value (null: it overflowed) ranks first."""
    frame = pd.DataFrame(records)
    values = frame.groupby(by)[value] if by else frame[value]
    frame["rank"] = values.rank(ascending=False, method="first", na_option="top").astype(int)
    return frame


# A layer's response std, read both ways Fig. 7 can be read (probes.response_std): the name each goes by in words.
RESPONSE_MEASURES = {"std": "std", "channel_std": "per-channel std"}


def has_responses(info: CheckpointInfo, value: str = "std") -> bool:
    """Whether metrics.json records `value` (RESPONSE_MEASURES) for every 3x3 layer: channel_std is absent from
    metrics recorded before it was (`python -m resnet_core.report --responses` records it)."""
    records = info.metrics.get("response_std") or []
    return bool(records) and all(value in r for r in records)


def response_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Recorded std of each 3x3 layer's BN output (metrics.json), pooled (`std`) and, where recorded, per channel
    (`channel_std`; NaN where not), with ranks by the pooled std."""
    frames = [with_ranks(info.metrics["response_std"], "std").assign(**identity(info))
              for info in infos if info.metrics.get("response_std")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def response_runs(data: pd.DataFrame) -> dict[tuple[str, int, int], list[str]]:
    """{(net, depth, iterations): the checkpoints in `data` of that kind, depth and length}, of known length, in the
    order response_pairs takes them: the one named after its model first (as by_model picks; where `data` has a
    model column), then by name. Two chosen checkpoints of one model and length (resnet56 and resnet56-run2) share a
    key: the first is compared."""
    runs: dict[tuple[str, int, int], list[str]] = {}
    named = data.drop_duplicates("checkpoint")
    for row in sorted(named.itertuples(), key=lambda r: (r.checkpoint != getattr(r, "model", None), r.checkpoint)):
        if pd.notna(row.iterations):
            runs.setdefault((row.net, int(row.depth), int(row.iterations)), []).append(row.checkpoint)
    return runs


def response_pairs(data: pd.DataFrame, value: str = "std") -> dict[tuple[int, int], tuple[list[float], list[float]]]:
    """{(depth, iterations): (plain `value` per 3x3 layer, residual `value` per 3x3 layer)}, in layer order, for each
    depth and training length with a plain and a residual net in `data` (a response_frame, or live responses with
    identity columns): nets trained for different lengths, or for unknown ones, are never paired, and of two
    checkpoints of one kind, depth and length the first of response_runs is (responses_left_out says which). A
    response that overflowed (null, NaN here) is infinite, as paper_checks counts it."""
    ordered = data.sort_values("index")
    std = {key: ordered.loc[ordered["checkpoint"] == names[0], value].fillna(math.inf).tolist()
           for key, names in response_runs(data).items()}
    runs = sorted({(d, n) for _, d, n in std}, key=lambda run: (run[0], -run[1]))
    return {run: (std[("plain", *run)], std[("residual", *run)])
            for run in runs if ("plain", *run) in std and ("residual", *run) in std}


def responses_left_out(data: pd.DataFrame, shown=str) -> str:
    """'resnet56-run2 is left out of the comparison: resnet56 is compared in its place (residual, 56 layers, 64,000
    iterations: one net of each kind per depth and length).', for each checkpoint in `data` that response_pairs
    passes over for another of the same kind, depth and length, where that one has a twin to pair with; '' if none.
    `shown` writes a checkpoint's name (a page escapes it for Markdown)."""
    pairs, runs, said = response_pairs(data), response_runs(data), []
    for (net, depth, length), names in runs.items():
        if len(names) > 1 and (depth, length) in pairs:
            rest = ", ".join(map(shown, names[1:]))
            said.append(f"{rest} {'is' if len(names) == 2 else 'are'} left out of the comparison: {shown(names[0])} is "
                        f"compared in {'its' if len(names) == 2 else 'their'} place ({net}, {depth} layers, "
                        f"{length:,} iterations: one net of each kind per depth and length).")
    return " ".join(said)


def run_label(run: tuple[int, int], runs) -> str:
    """'20 layers', or '20 layers (64,000 iterations)' where `runs` (response_pairs' keys) differ in length."""
    depth, length = run
    return f"{depth} layers" + (f" ({length:,} iterations)" if len({n for _, n in runs}) > 1 else "")


def responses_measured(data: pd.DataFrame, value: str = "std") -> str:
    """'Measured here: ...' (by `value`, RESPONSE_MEASURES) for each depth and training length with a plain and a
    residual net among `data`, and 'not compared' for a depth whose plain and residual nets trained for different
    lengths; '' without either."""
    pairs = response_pairs(data, value)
    lines = [f"{run_label(run, pairs)}: " + response_comparison(plain, residual, value)
             for run, (plain, residual) in pairs.items()]
    paired = {depth for depth, _ in pairs}
    for depth, group in data.groupby("depth"):
        if depth not in paired and group["net"].nunique() == 2:
            lines.append(f"{depth} layers: {' and '.join(sorted(set(group['checkpoint'])))} trained for different "
                         "lengths, so they are not compared")
    return "Measured here: " + "; ".join(lines) + "." if lines else ""


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
    """A freshly initialised `name` (seeded), one backward pass on the batch: gradient norm per main-path layer
    (path_index)."""
    torch.manual_seed(seed)
    model = build_model(name)
    spec = model_info(name)
    records = gradient_norms(model, images, labels)
    index = path_index([r["layer"] for r in records])
    frame = pd.DataFrame([dict(r, index=index[r["layer"]]) for r in records if r["layer"] in index])
    return frame.assign(model=name, depth=spec["depth"], net=net_kind(spec["residual"]))


def architecture_frame(name: str) -> pd.DataFrame:
    """Layer table of a registered model at its family's input size: layer, type, output shape, params, FLOPs."""
    size = (224, 224) if model_info(name)["family"] == "imagenet" else (32, 32)
    frame = pd.DataFrame(layer_table(build_model(name), size))
    frame["output_shape"] = frame["output_shape"].map(lambda s: " x ".join(map(str, s)))
    frame.insert(0, "index", range(1, len(frame) + 1))
    return frame


def compute_summary(table: pd.DataFrame) -> str:
    """What the Architecture page's compute chart shows, in a sentence, from an architecture_frame: where most weight
    layers do the same number of multiply-adds (the 6n+2 nets: each stage halves the feature map as it doubles the
    filters), how many and their share of the total; else the costliest layer's share. Then the fc layer's."""
    layers = table[table["macs"] > 0]
    total = int(layers["macs"].sum())
    usual = int(layers["macs"].mode().max())  # the most frequent cost (the larger of a tie)
    count = int((layers["macs"] == usual).sum())
    if 2 * count > len(layers):
        said = (f"{count} of the {len(layers)} weight layers do the same work, {figures(usual / 1e6)} million "
                f"multiply-adds each, {100 * count * usual / total:.1f} % of the {figures(total / 1e6)} million in "
                "all: each stage halves the feature map as it doubles the filters")
    else:
        costliest = layers.loc[layers["macs"].idxmax()]
        said = (f"the costliest of the {len(layers)} weight layers, {costliest['layer']}, does "
                f"{figures(costliest['macs'] / 1e6)} million multiply-adds, "
                f"{100 * costliest['macs'] / total:.1f} % of the {figures(total / 1e6)} million in all")
    fc = int(layers.loc[layers["type"] == "Linear", "macs"].sum())
    unseen = " (too few to see)" if fc < 0.01 * layers["macs"].max() else ""
    return said[0].upper() + said[1:] + (f"; the fc layer does {fc:,}{unseen}." if fc else ".")


def paper_totals(name: str) -> dict:
    """The paper's size numbers for `name`, where it gives them, keyed "params" (Table 6, millions) and "gflops"
    (Table 1): (the number with its unit, where the paper gives it). Table 1 lists the residual nets only; a plain
    ImageNet net has its residual twin's FLOPs (Sec. 3.3), and the source says whose figure it is."""
    spec, totals = model_info(name), {}
    if name in TABLE6_PARAMS_M:
        totals["params"] = (f"{TABLE6_PARAMS_M[name]} M", "Table 6")
    if name in TABLE1_GFLOPS:
        twin = "" if spec["residual"] else f", ResNet-{spec['depth']}'s figure: a plain net has its residual twin's FLOPs"
        totals["gflops"] = (f"{TABLE1_GFLOPS[name]} G", "Table 1" + twin)
    return totals


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
        columns = ["checkpoint", "model", "depth", "net", "iterations", *axes, "loss", "error"]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
        return frame.astype({"loss": float, "error": float})  # null (an overflow in the JSON) -> NaN

    return tidy(slices, ["alpha"]), tidy(surfaces, ["alpha", "beta"]), pd.DataFrame(settings)


def surface_summary(surface: pd.DataFrame) -> str:
    """Each checkpoint's 2-D surface in numbers: the loss at the trained weights, the median and the largest over
    the grid (and how many points overflowed), from landscape_frames' surface frame."""
    parts = []
    for name, rows in surface.groupby("checkpoint", sort=False):
        centre = rows.loc[(rows["alpha"] == 0) & (rows["beta"] == 0), "loss"]
        finite = rows["loss"][np.isfinite(rows["loss"])]
        overflowed = len(rows) - len(finite)
        if finite.empty:
            parts.append(f"{name}: every point overflowed")
            continue
        said = [f"{figures(centre.iloc[0])} at the trained weights"] if len(centre) else []  # an even grid has none
        said += [f"median {figures(finite.median())}", f"largest {figures(finite.max())}"]
        parts.append(f"{name}: {', '.join(said)}"
                     + (f" ({overflowed} point{'s' if overflowed > 1 else ''} overflowed)" if overflowed else ""))
    return "; ".join(parts)


def prediction_frame(predictions: dict[str, list[tuple[str, float]]]) -> pd.DataFrame:
    """{model: [(class, probability), ...]} -> model, rank, class, probability (%)."""
    return pd.DataFrame([dict(model=model, rank=k + 1, **{"class": cls}, probability=100 * p)
                         for model, top in predictions.items() for k, (cls, p) in enumerate(top)])


# -- the papers' claims, checked on our checkpoints ---------------------------------------------------
def by_model(infos: list[CheckpointInfo]) -> dict[str, CheckpointInfo]:
    """{model: checkpoint}; where two folders hold the same model, the one named after it wins, else the first."""
    found: dict[str, CheckpointInfo] = {}
    for info in sorted(infos, key=lambda i: (i.name != i.config["model"], i.name)):
        found.setdefault(info.config["model"], info)
    return found


def longest(infos: list[CheckpointInfo]) -> dict[str, CheckpointInfo]:
    """{model: its longest-trained checkpoint}; between folders of one model trained as long, as by_model picks; a run
    of unknown length only for a model that has no other."""
    found: dict[str, CheckpointInfo] = {}
    for group in [*schedules(infos), [i for i in infos if iterations(i) is None]]:
        for model, info in by_model(group).items():
            found.setdefault(model, info)
    return found


def equally_trained(infos: list[CheckpointInfo], *models: str, usable=None) -> list[CheckpointInfo] | None:
    """A checkpoint of each of `models`, all trained for the same number of iterations: from the longest schedule
    that has every one of them (within it, as by_model picks) among the checkpoints `usable` accepts (all by
    default: a claim may need a number that older checkpoints did not record); None where none has them all. So a
    short run kept beside a long run of the same model is still the equal of the other short runs."""
    for group in schedules([i for i in infos if usable is None or usable(i)]):
        have = by_model(group)
        if all(m in have for m in models):
            return [have[m] for m in models]
    return None


def first_recorded(info: CheckpointInfo, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` that the checkpoint's metrics.json holds a value for."""
    return next((k for k in keys if info.metrics.get(k) is not None), None)


def final_train_error(info: CheckpointInfo) -> float | None:
    """The final model's error on the clean training set, or the last epoch's running error in older checkpoints."""
    key = first_recorded(info, TRAIN_ERROR_KEYS)
    return info.metrics[key] if key else None


def iterations(info: CheckpointInfo) -> int | None:
    """SGD steps it trained for: as its recipe records, else as its last history record does; None (unknown) where
    neither does. A run of unknown length is judged neither short nor long, and compared with no other."""
    n = info.config.get("recipe", {}).get("iterations")
    if n is None and info.history.get("records"):
        n = info.history["records"][-1].get("iteration")
    return n


def with_length(info: CheckpointInfo) -> str:
    """'resnet110 (5,850 it.)' for a list of checkpoints to pick from: a bare name hides that one net trained for a
    tenth of another's iterations ('length unknown' where neither the recipe nor the history says)."""
    n = iterations(info)
    return f"{info.name} ({'length unknown' if n is None else f'{n:,} it.'})"


def is_short(info: CheckpointInfo) -> bool:
    """Trained for fewer iterations than the paper's 64k: its numbers are not Table 6's (False where unknown)."""
    n = iterations(info)
    return n is not None and n < PAPER_ITERATIONS


def length_unknown(infos: list[CheckpointInfo]) -> str:
    """'resnet20, plain20: their training length is unknown (...)', for the runs of unknown length ('' if none)."""
    names = [i.name for i in infos if iterations(i) is None]
    if not names:
        return ""
    return (f"{', '.join(names)}: {'its' if len(names) == 1 else 'their'} training length is unknown (config.json's "
            "recipe and history.json record no iterations), so not judged short or long, and compared with no other run.")


def short_run_length(*infos: CheckpointInfo) -> str:
    """'5,850 of the paper's 64,000 iterations' for the short ones among them ('' if none is short)."""
    iters = sorted({iterations(i) for i in infos if is_short(i)})
    return f"{', '.join(f'{n:,}' for n in iters)} of the paper's {PAPER_ITERATIONS:,} iterations" if iters else ""


def short_run_note(*infos: CheckpointInfo) -> str:
    """' (short run: 5,850 of the paper's 64,000 iterations)' when any of them trained less than the paper."""
    length = short_run_length(*infos)
    return f" (short run: {length})" if length else ""


def schedules(infos: list[CheckpointInfo]) -> list[list[CheckpointInfo]]:
    """The checkpoints grouped by how long they trained, longest first (each group in the order given); runs of
    unknown length are in none, since none can be said to have trained as long as another."""
    groups: dict[int, list[CheckpointInfo]] = {}
    for info in infos:
        if iterations(info) is not None:
            groups.setdefault(iterations(info), []).append(info)
    return [groups[n] for n in sorted(groups, reverse=True)]


def lengths(*runs: CheckpointInfo) -> str:
    """'plain20 64,000, plain56 5,850 iterations' ('unknown' for a run of unknown length)."""
    said = {i.name: "unknown" if iterations(i) is None else f"{iterations(i):,}" for i in runs}
    return ", ".join(f"{name} {n}" for name, n in said.items()) + " iterations"


def different_lengths(*runs: CheckpointInfo) -> str:
    """'' if they trained for equally long, else the evidence that they cannot be compared."""
    known = {iterations(i) for i in runs}
    if None in known:
        return f"training length unknown ({lengths(*runs)}): not comparable"
    return f"trained for different lengths ({lengths(*runs)}): not comparable" if len(known) > 1 else ""


# The verdicts paper_checks gives, in the order a summary lists them.
VERDICTS = ("yes", "partly", "within noise", "no", "short run", "not comparable", "not measured")
# Fig. 6's two training-error claims, by kind of net: Home titles its chart with those that hold (paper_checks' rows)
FIG6_CLAIMS = {"plain": "Plain nets: final training error rises with depth (Fig. 6, left)",
               "residual": "Residual nets, 20 to 110 layers: final training error falls with depth (Fig. 6, middle)"}


def training_noise(*errors: float) -> float:
    """The run-to-run noise band (points) for training errors (%) at these errors' level. RUN_TO_RUN_NOISE is the
    paper's spread at ResNet-110's 6.61 % test error; the spread of an error rate grows as its square root (as a
    binomial count's does), so a 0.28 % training error moves by 0.09 points between runs, not 0.45."""
    return RUN_TO_RUN_NOISE * math.sqrt(max(errors) / TABLE6_RESNET110_MEAN_STD[0])


def noise_rule() -> str:
    """The rule side() applies, in words, for the README and the Degradation curves page."""
    mean, spread = TABLE6_RESNET110_MEAN_STD
    return (f"Each net is one run, so a difference counts, for a claim or against it, only beyond a band: in test error "
            f"{RUN_TO_RUN_NOISE:.2f} points, twice the spread between two runs of one net that Table 6's five "
            f"ResNet-110 runs show (± {spread:.2f}, at a mean error of {mean:.2f} %; short runs likely vary more); in "
            f"training error that band scaled to the error's level, {RUN_TO_RUN_NOISE:.2f} x √(error / {mean:.2f}), "
            "as the spread of an error rate grows as its square root (a binomial count's does): for example, "
            f"{training_noise(1.0):.2f} points at a training error of 1 %. 'within noise': every difference a claim "
            "rests on is inside its band.")


def coverage_counts(covers) -> str:
    """How much of their claims a set of verdicts rests on, from their paper_checks coverage: ' (3 of them at 2 of
    5 depths; 2 on short runs only)', ' (all on short runs only)', ' (at 2 of 5 depths)' for one verdict; '' where
    every one covers its whole claim. Most common first."""
    covers = list(covers)
    counts = pd.Series([c for c in covers if c]).value_counts(sort=True)
    if counts.empty:
        return ""
    if len(covers) == 1:
        return f" ({counts.index[0]})"
    said = [f"{'all' if n == len(covers) else f'{n} of them' if k == 0 else n} {c}" for k, (c, n) in
            enumerate(counts.items())]
    return f" ({'; '.join(said)})"  # '; ': a coverage may hold a comma


# What paper_checks' coverage column means, for a table of the checks.
COVERAGE_NOTE = ("'coverage': how much of the claim the verdict rests on, blank where all of it: 'at 2 of 5 depths' "
                 "for a claim about 20 to 110 layers judged at two of them, 'on short runs only' where the runs it "
                 "compares trained for fewer than the paper's iterations.")
# Why a verdict on short runs alone says less (Home, after a summary with some).
SHORT_RUNS_CAVEAT = ("A short run shows which net trains faster, not where it ends: there a deeper net may be only "
                     "slower to train, not worse.")


def within_noise(difference: float, band: float | None = None) -> str:
    """Words for a difference between two single runs too small to count: RUN_TO_RUN_NOISE or less, or `band` or
    less where a training error's is given (training_noise)."""
    if side(difference, RUN_TO_RUN_NOISE if band is None else band) != 0:
        return ""
    return (f" (within run-to-run noise, {RUN_TO_RUN_NOISE:.2f} points)" if band is None
            else f" (within run-to-run noise, {band:.2f} points at this error level)")


def table6_evidence(ours: float, paper: float) -> str:
    """Our test error beside the paper's, in words: how far below or above, and whether that is within the noise
    (below by the noise or less is a match, not a win; above by it, a tie)."""
    gap = exact(ours - paper)
    where = "the same as" if gap == 0 else f"{abs(gap):.2f} points {'below' if gap < 0 else 'above'}"
    noise = side(gap) == 0 and gap != 0
    match = " (a match: within run-to-run noise" if gap < 0 else " (within run-to-run noise"
    return f"ours {ours:.2f} %, {where} the paper's" + (f"{match}, {RUN_TO_RUN_NOISE:.2f} points)" if noise else "")


def exact(difference: float) -> float:
    """A difference of two recorded errors without the float noise of their storing: 8.75 - 8.75 recorded as
    8.750000000000002 is 0, and 0.45 above the paper's is 0.45, within the band and not a hair beyond it."""
    return round(difference, 9) + 0.0


def side(difference: float, band: float = RUN_TO_RUN_NOISE) -> int:
    """A difference between two single runs, positive the way a claim says: 1 where it is beyond `band` (for the
    claim), -1 beyond it the other way (against), 0 within it (neither)."""
    difference, band = exact(difference), exact(band)
    return 0 if abs(difference) <= band else (1 if difference > 0 else -1)


def tally(sides: list[int]) -> str:
    """The verdict of comparisons (side()'s): 'yes' where some are for the claim and none against, 'partly' where
    some are each, 'no' where none is for it and some against, 'within noise' where every one is noise."""
    held, against = sides.count(1), sides.count(-1)
    return ("partly" if against else "yes") if held else ("no" if against else "within noise")


def counted(sides: list[int], unit: str) -> str:
    """'at 2 of 4 steps (1 within noise, 1 against): ' for a mixed tally; '' where every one is on the same side
    (the verdict says which)."""
    held, against, noise = sides.count(1), sides.count(-1), sides.count(0)
    if len(set(sides)) < 2:
        return ""
    rest = ", ".join(f"{n} {what}" for n, what in ((noise, "within noise"), (against, "against")) if n)
    return f"at {held} of {len(sides)} {unit}" + (f" ({rest})" if rest else "") + ": "


def _check(claim: str, holds: bool | str | None, evidence: str, covers: str = "") -> dict:
    """A row of paper_checks: holds is True / False / None (not measured), or a verdict of VERDICTS; `covers`,
    how much of the claim the evidence covers (coverage(); '' where all of it, or where there is no verdict)."""
    verdict = holds if isinstance(holds, str) else {True: "yes", False: "no", None: "not measured"}[holds]
    return dict(claim=claim, holds=verdict, coverage=covers, evidence=evidence)


def coverage(short: list[bool], claimed: int | None = None) -> str:
    """How much of a claim a verdict rests on, from whether each depth it was judged at (or the one comparison it
    makes) ran short of the paper's iterations, and how many depths the claim names (`claimed`, for a claim about
    20 to 110 layers): '' where all of it; 'at 2 of 5 depths'; 'on short runs only', where a deeper net may be
    only slower to train, not worse; 'on short runs only at 3 of 5 depths'; or both: 'at 2 of 5 depths, on short
    runs only'."""
    depths, shorts = len(short), sum(short)
    said = [f"at {depths} of {claimed} depths"] if claimed and depths < claimed else []
    if shorts == depths:
        said.append("on short runs only")
    elif shorts:
        said.append(f"on short runs only at {shorts} of {'them' if said else f'{depths} depths'}")
    return ", ".join(said)


def judged_on(group: list[CheckpointInfo]) -> str:
    """'on 2 of the claim's 5 depths' where a depth trend is judged on fewer depths than its claim names (20 to
    110 layers), '' where on all of them: a 'yes' from 20 and 56 layers alone says less than one from all five."""
    have = {model_info(i.config["model"])["depth"] for i in group}
    claimed = len(PLAIN_VS_RESIDUAL_DEPTHS)
    return f"on {len(have)} of the claim's {claimed} depths" if len(have) < claimed else ""


def _depth_trend(claim: str, infos: list[CheckpointInfo], kind: str, error, falls: bool, training: bool = False) -> dict:
    """Does `error` fall (or rise) at every step in depth over the `kind` nets ("resnet" / "plain") we have? Judged
    on the longest schedule that two or more of them share ('partly' where it holds at some steps only, as Fig. 7's
    check is 'partly' at some depths); any other schedule's nets are reported beside it, never mixed in. A step
    counts for the claim, or against it, only where the error moves by more than RUN_TO_RUN_NOISE (for `training`
    errors, training_noise at the step's level); smaller ones are neither, and named as noise (tally() gives the
    verdict)."""
    nets, groups = ("residual" if kind == "resnet" else "plain"), []
    for schedule in schedules(infos):  # within each, one checkpoint per depth
        have = by_model(schedule)
        group = [have[f"{kind}{d}"] for d in PLAIN_VS_RESIDUAL_DEPTHS
                 if f"{kind}{d}" in have and error(have[f"{kind}{d}"]) is not None]
        groups += [group] if group else []
    measured = sorted((i for g in groups for i in g), key=lambda i: model_info(i.config["model"])["depth"])
    unknown = [i for i in infos if iterations(i) is None and error(i) is not None
               and i.config["model"] in {f"{kind}{d}" for d in PLAIN_VS_RESIDUAL_DEPTHS}]
    unknown_note = f" (left out, training length unknown: {', '.join(i.name for i in unknown)})" if unknown else ""
    judged = [g for g in groups if len(g) >= 2]
    if not judged:
        if len({i.config["model"] for i in measured}) >= 2:
            return _check(claim, "not comparable", f"no two {nets} depths trained equally long ({lengths(*measured)})"
                          + unknown_note)
        if len({i.config["model"] for i in measured + unknown}) >= 2:
            return _check(claim, "not comparable", f"fewer than two {nets} depths of known training length{unknown_note}")
        return _check(claim, None, f"fewer than two {nets} depths{unknown_note}")

    def trend(group):
        """(verdict, each step's side(), the errors in words, with the steps within noise named)."""
        errors = [error(i) for i in group]
        depths = [model_info(i.config["model"])["depth"] for i in group]
        bands = [training_noise(a, b) if training else RUN_TO_RUN_NOISE for a, b in zip(errors, errors[1:])]
        sides = [side((b - a) * (-1 if falls else 1), band) for a, b, band in zip(errors, errors[1:], bands)]
        noise = [f"{d0} to {d1} layers, {b - a:+.2f}" + (f" of {band:.2f} points" if training else "")
                 for d0, d1, a, b, band, s in zip(depths, depths[1:], errors, errors[1:], bands, sides) if s == 0]
        said = " at this error level" if training else f", {RUN_TO_RUN_NOISE:.2f} points"
        words = ", ".join(f"{d} layers: {e:.2f} %" for d, e in zip(depths, errors)) + (
            f" (within run-to-run noise{said}: {'; '.join(noise)})" if noise else "")
        return tally(sides), sides, words

    holds, sides, points = trend(judged[0])
    steps = counted(sides, "steps")
    depths = judged_on(judged[0])
    evidence = (f"{depths}, {steps}" if depths and steps else f"{depths}: " if depths else steps) \
        + points + short_run_note(*judged[0])
    for group in judged[1:]:
        also, also_sides, also_points = trend(group)
        said = {"yes": "holds", "partly": "holds in part", "no": "does not hold"}.get(also, also)
        steps = counted(also_sides, "steps")
        said += f", {steps[:-2]}" if steps else ""
        evidence += f". Not counted in the verdict, the runs of {iterations(group[0]):,} iterations: {also_points}: {said}"
    alone = [i for g in groups if len(g) < 2 for i in g]
    if alone:
        evidence += f" (left out, no other {nets} depth trained as long: {lengths(*alone)})"
    return _check(claim, holds, evidence + unknown_note,
                  coverage([is_short(i) for i in judged[0]], len(PLAIN_VS_RESIDUAL_DEPTHS)))


def responses_below(plain: list[float], resnet: list[float]) -> tuple[int, int]:
    """Paper Fig. 7 for a plain and a residual net of one depth, from each one's std per 3x3 layer (in layer
    order): (layers where the residual net responds less, layers compared)."""
    return sum(r < p for p, r in zip(plain, resnet)), min(len(plain), len(resnet))


def response_comparison(plain: list[float], resnet: list[float], value: str = "std") -> str:
    """responses_below in words, with both medians of `value` (RESPONSE_MEASURES)."""
    below, layers = responses_below(plain, resnet)
    return f"residual smaller at {below} of {layers} layers {_medians(plain, resnet, value)}"


def _medians(plain: list[float], resnet: list[float], value: str) -> str:
    return f"(median {RESPONSE_MEASURES[value]} {float(np.median(resnet)):.2f} vs plain {float(np.median(plain)):.2f})"


def _responses(info: CheckpointInfo, value: str = "std") -> list[float]:
    """Each 3x3 layer's response `value` (RESPONSE_MEASURES); null (JSON's inf or NaN) is a response that
    overflowed: infinite."""
    return [math.inf if r[value] is None else r[value] for r in info.metrics.get("response_std") or []]


def _most_below(plain: list[float], resnet: list[float]) -> bool:
    below, layers = responses_below(plain, resnet)
    return 2 * below > layers


def _response_evidence(plain: CheckpointInfo, resnet: CheckpointInfo) -> tuple[bool | None, str]:
    """Fig. 7 at one depth: (the residual net responds less at most layers, the counts in words). Where both nets
    recorded the per-channel std too, both readings of the paper's std are counted: the paper does not say which it
    took, and where they disagree the depth is undecided (None), neither for the claim nor against it."""
    pooled = _responses(plain), _responses(resnet)
    if not (has_responses(plain, "channel_std") and has_responses(resnet, "channel_std")):
        return _most_below(*pooled), response_comparison(*pooled)
    channel = _responses(plain, "channel_std"), _responses(resnet, "channel_std")
    most = _most_below(*pooled), _most_below(*channel)
    below, layers = responses_below(*channel)
    return (most[0] if most[0] == most[1] else None), (f"{response_comparison(*pooled)} pooled over channels {'and' if most[0] == most[1] else 'but'} "
                       f"at {below} of {layers} per channel {_medians(*channel, 'channel_std')}"
                       + ("" if most[0] == most[1] else ": the two definitions disagree"))


def paper_checks(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """The paper's CIFAR-10 claims, each checked on the checkpoints we have: claim, holds (one of VERDICTS: 'partly'
    where it holds at some depths or depth steps only, 'short run' for an absolute Table 6 number that a run
    shorter than the paper's cannot test, 'not comparable' where the nets it needs trained for different lengths)
    and the evidence (our numbers; short runs are labelled as such). A Table 6 row takes the model's longest run;
    a comparison takes nets trained equally long, from the longest schedule that has them all (equally_trained)."""
    have, rows = longest(infos), []
    for depth in PLAIN_VS_RESIDUAL_DEPTHS:
        name, ref = f"resnet{depth}", TABLE6_TEST_ERROR[f"resnet{depth}"]
        claim = f"ResNet-{depth}: test error at or below the paper's {ref:.2f} %"
        if name == TABLE6_BEST_OF_5:  # Table 6's 6.43 is the best of 5 runs; one run of ours is held to their mean
            ref, spread = TABLE6_RESNET110_MEAN_STD
            claim = (f"ResNet-110: test error at or below the mean of the paper's 5 runs, {ref:.2f} ± {spread:.2f} % "
                     f"(Table 6's {TABLE6_TEST_ERROR[name]:.2f} % is their best)")
        info = have.get(name)
        if info is None:
            rows.append(_check(claim, None, "no checkpoint"))
        elif iterations(info) is None:
            rows.append(_check(claim, "not comparable", f"ours {info.metrics['test_error']:.2f} % after an unknown "
                               "number of iterations (neither config.json nor history.json records it)"))
        elif is_short(info):  # a number after a tenth of the schedule is no test of the number after all of it
            rows.append(_check(claim, "short run", f"ours {info.metrics['test_error']:.2f} % after "
                               f"{short_run_length(info)}: not comparable until trained for all of them"))
        else:
            ours = info.metrics["test_error"]  # at or below it holds; above it by the noise or less is a tie
            rows.append(_check(claim, "yes" if exact(ours - ref) <= 0 else tally([side(ref - ours)]),
                               table6_evidence(ours, ref)))
    rows.append(_depth_trend("Residual nets, 20 to 110 layers: test error falls with depth", infos, "resnet",
                             lambda i: i.metrics["test_error"], falls=True))
    rows.append(_depth_trend(FIG6_CLAIMS["residual"], infos, "resnet", final_train_error, falls=True, training=True))
    rows.append(_depth_trend(FIG6_CLAIMS["plain"], infos, "plain", final_train_error, falls=False, training=True))
    def control(shallow, deep, error, plain) -> str:
        """The residual nets of the same two depths, trained as long: a short run's deeper plain net may only be
        slower, and the residual pair, as deep and as short, tells slowness from degradation."""
        r = equally_trained([i for i in infos if iterations(i) == iterations(plain)], f"resnet{shallow}", f"resnet{deep}",
                            usable=lambda i: error(i) is not None)
        if r is None:
            return ""
        return f"; residual nets of these depths: {r[1].name} {error(r[1]):.2f} % vs {r[0].name} {error(r[0]):.2f} %"

    for shallow, deep in ((20, 56), (56, 110)):
        for split, error in (("training", final_train_error), ("test", lambda i: i.metrics["test_error"])):
            a, b = (equally_trained(infos, f"plain{shallow}", f"plain{deep}", usable=lambda i: error(i) is not None)
                    or equally_trained(infos, f"plain{shallow}", f"plain{deep}")  # then it says which number is missing
                    or (have.get(f"plain{shallow}"), have.get(f"plain{deep}")))
            claim = f"Degradation: plain-{deep} has a higher final {split} error than plain-{shallow}"
            if a is None or b is None:
                rows.append(_check(claim, None, "needs both checkpoints"))
            elif error(a) is None or error(b) is None:
                missing = " and ".join(i.name for i in (a, b) if error(i) is None)
                rows.append(_check(claim, None, f"needs both nets' final {split} error: {missing} recorded none"))
            elif different_lengths(a, b):
                rows.append(_check(claim, "not comparable", different_lengths(a, b)))
            else:  # a training error's noise scales with it (training_noise), a test error's is the paper's
                band = training_noise(error(a), error(b)) if split == "training" else None
                rows.append(_check(claim, tally([side(error(b) - error(a), RUN_TO_RUN_NOISE if band is None else band)]),
                                   f"{b.name} {error(b):.2f} % vs {a.name} {error(a):.2f} %"
                                   + within_noise(error(b) - error(a), band)
                                   + short_run_note(a, b) + control(shallow, deep, error, a), coverage([is_short(a)])))
    pairs, unequal = [], []  # a pair compares nets trained equally long
    for d in PLAIN_VS_RESIDUAL_DEPTHS:
        pair = equally_trained(infos, f"plain{d}", f"resnet{d}")
        if pair:
            pairs.append(tuple(pair))
        elif f"plain{d}" in have and f"resnet{d}" in have:
            unequal.append((have[f"plain{d}"], have[f"resnet{d}"]))
    unknown = any(iterations(i) is None for pair in unequal for i in pair)
    unequal_note = (f" (left out, trained for different{' or unknown' if unknown else ''} lengths: "
                    + "; ".join(lengths(p, r) for p, r in unequal) + ")" if unequal else "")

    def mixed(pairs) -> bool:  # the pairs differ in length: then each depth says its own
        return len({iterations(p) for p, *_ in pairs}) > 1

    def at(r, pairs):
        return f"{model_info(r.config['model'])['depth']} layers" + (f" ({iterations(r):,} iterations)" if mixed(pairs) else "")

    def runs_note(pairs):
        return ("" if mixed(pairs) else short_run_note(*[i for p, r, *_ in pairs for i in (p, r)])) + unequal_note

    def covered(pairs):  # one pair per depth, each pair trained equally long
        return coverage([is_short(p) for p, *_ in pairs], len(PLAIN_VS_RESIDUAL_DEPTHS))

    claim = "Shortcuts help at every depth: residual test error below plain (read off Fig. 6, left vs middle)"
    if pairs:
        gaps = [p.metrics["test_error"] - r.metrics["test_error"] for p, r in pairs]
        sides = [side(gap) for gap in gaps]
        rows.append(_check(claim, tally(sides), counted(sides, "depths") + "; ".join(
            f"{at(r, pairs)}: residual {r.metrics['test_error']:.2f} % vs plain {p.metrics['test_error']:.2f} %"
            + within_noise(gap) for (p, r), gap in zip(pairs, gaps)) + runs_note(pairs), covered(pairs)))
    else:
        rows.append(_check(claim, "not comparable" if unequal else None,
                           "needs a plain and a residual net of the same depth, trained equally long" + unequal_note))
    claim = "Layer responses: residual nets' are smaller than plain nets' at most layers (Fig. 7)"
    pairs = [equally_trained(infos, f"plain{d}", f"resnet{d}", usable=has_responses) for d in PLAIN_VS_RESIDUAL_DEPTHS]
    pairs = [(p, r, *_response_evidence(p, r)) for p, r in filter(None, pairs)]
    if pairs:
        most = [holds for _, _, holds, _ in pairs]  # per depth: True, False, or None where the two readings disagree
        # at every depth, at none, or in part: at some, or where a depth is undecided
        holds = True if all(most) else False if not any(m is not False for m in most) else "partly"
        undecided = most.count(None)
        both = any(has_responses(p, "channel_std") and has_responses(r, "channel_std") for p, r, *_ in pairs)
        rows.append(_check(claim, holds, (f"at {most.count(True)} of {len(most)} depths"
                                          + (f" ({undecided} undecided: the two readings of the std disagree)"
                                             if undecided else "") + ": " if holds == "partly" else "")
                           + "; ".join(f"{at(r, pairs)}: {said}" for _, r, _, said in pairs) + runs_note(pairs)
                           + (" (the paper does not say how it took the std: pooled over a layer's channels, it also "
                              "counts how far apart BN puts the channels' means, which the mean of each channel's std "
                              "does not; a depth holds where the residual net is smaller at most layers both ways)"
                              if both else ""), covered(pairs)))
    else:
        rows.append(_check(claim, "not comparable" if unequal else None, "needs recorded responses of a plain and a "
                           "residual net of the same depth, trained equally long" + unequal_note))
    return pd.DataFrame(rows)


SEED_PAIRS = ((18, "ResNet-18", "Plain-18"), (34, "ResNet-34", "Plain-34"))


def grad_norm_spread(info: CheckpointInfo) -> tuple[float, float, float] | None:
    """5th percentile, median and 95th percentile of the recorded gradient norms of every main-path layer over all
    epochs: ResNet-18/34's projection shortcuts are left out, as Plain-18/34 has none to compare them with."""
    shortcut = {i for i, name in enumerate(info.history.get("layers") or []) if is_shortcut_layer(name)}
    norms = [n for r in info.history["records"] for i, n in enumerate(r.get("grad_norms") or [])
             if n is not None and i not in shortcut]
    return tuple(float(q) for q in np.percentile(norms, [5, 50, 95])) if norms else None


def class_gains(resnet: CheckpointInfo, plain: CheckpointInfo) -> list[tuple[str, float]]:
    """(class, residual minus plain test accuracy in points), largest gain first."""
    gains = zip(CLASSES, per_class_accuracy(resnet.metrics["confusion_matrix"]),
                per_class_accuracy(plain.metrics["confusion_matrix"]))
    return sorted(((c, r - p) for c, r, p in gains), key=lambda cg: -cg[1])


def _seed_measures(resnet: CheckpointInfo | None, plain: CheckpointInfo | None) -> dict[str, tuple[str, str]]:
    """Our value of each claimed quantity, formatted, for one residual/plain pair ('' where not measured)."""
    def each(fn):
        return tuple("" if i is None else fn(i) for i in (resnet, plain))

    def reached(i):
        epoch = i.metrics.get("epochs_to_90")
        if epoch is not None:
            return f"epoch {epoch}"
        best = 100 - min((r["test_error"] for r in i.history["records"] if r.get("test_error") is not None), default=100)
        return f"never (best {best:.1f} %)"

    def spread(i):
        if (percentiles := grad_norm_spread(i)) is None:
            return ""
        low, median, high = percentiles
        return f"{low:.3g}-{high:.3g} (median {median:.3g})"

    out = dict(top1=each(lambda i: f"{100 - i.metrics['test_error']:.2f}"),
               top5=each(lambda i: f"{100 - i.metrics['test_top5_error']:.2f}" if "test_top5_error" in i.metrics else ""),
               loss=each(lambda i: f"{i.metrics['test_loss']:.3f}" if "test_loss" in i.metrics else ""),
               epochs=each(reached), norms=each(spread), best=("", ""), worst=("", ""))
    if resnet is not None and plain is not None:
        gains = class_gains(resnet, plain)
        out["best"] = (f"{gains[0][0]} {gains[0][1]:+.1f}", "")
        out["worst"] = (f"{gains[-1][0]} {gains[-1][1]:+.1f}", "")
    return out


def _seed_verdicts(resnet: CheckpointInfo | None, plain: CheckpointInfo | None) -> dict[str, str]:
    """One plain sentence per claim comparing our ResNet-18/Plain-18 with the report."""
    if resnet is None or plain is None:
        return {}
    claims = SEED_REPORT_CLAIMS

    def compare(key, value, fmt, unit):
        """The residual-minus-plain gap, ours against the claim's, and each model against its claim."""
        if not all(key in i.metrics for i in (resnet, plain)):
            return "not recorded"
        ours = (value(resnet.metrics[key]), value(plain.metrics[key]))
        said = (value(claims["resnet18"][key]), value(claims["plain18"][key]))
        return (f"gap (residual minus plain): ours {ours[0] - ours[1]:+{fmt}}{unit}, claimed {said[0] - said[1]:+{fmt}}"
                f"{unit}; ours minus claim: ResNet-18 {ours[0] - said[0]:+{fmt}}, Plain-18 {ours[1] - said[1]:+{fmt}}")

    accuracy = lambda error: 100 - error  # noqa: E731
    gains = class_gains(resnet, plain)
    said_epochs = (claims["resnet18"]["epochs_to_90"], claims["plain18"]["epochs_to_90"])
    claimed_epochs = f"claimed {said_epochs[0]} vs {said_epochs[1]}"
    said_gain = SEED_REPORT_CLASS_GAINS
    # The claimed ranges' geometric midpoints: 0.1-1.0 against 0.01-0.1 puts plain's norms about 10x lower.
    said_ratio = math.sqrt(math.prod(SEED_REPORT_GRAD_NORMS["resnet18"]) / math.prod(SEED_REPORT_GRAD_NORMS["plain18"]))
    rank, gain = {c: k + 1 for k, (c, _) in enumerate(gains)}, dict(gains)
    resnet_epoch, plain_epoch = resnet.metrics.get("epochs_to_90"), plain.metrics.get("epochs_to_90")
    if resnet_epoch is None or plain_epoch is None:
        said = ", ".join(f"{net} {'never' if epoch is None else f'epoch {epoch}'}"
                         for net, epoch in (("ResNet-18", resnet_epoch), ("Plain-18", plain_epoch)))
        epochs = (f"{'neither' if resnet_epoch is None and plain_epoch is None else 'only one'} reached 90 % "
                  f"({said}; {claimed_epochs})")
    else:
        epochs = (f"ResNet-18 {'first' if resnet_epoch < plain_epoch else 'not first'}: epoch {resnet_epoch} vs "
                  f"{plain_epoch} ({plain_epoch - resnet_epoch:+d} epochs; {claimed_epochs}, "
                  f"{said_epochs[1] - said_epochs[0]:+d})")
    spreads = grad_norm_spread(resnet), grad_norm_spread(plain)
    if all(spreads):
        ratio = spreads[0][1] / max(spreads[1][1], 1e-12)
        norms = (f"median norm, residual / plain: {ratio:.2f}x; the claim puts plain about {said_ratio:.0f}x lower"
                 + ("" if ratio > math.sqrt(said_ratio) else ": we do not see that"))
    else:
        norms = "not recorded"
    return dict(top1=compare("test_error", accuracy, ".2f", " points"),
                top5=compare("test_top5_error", accuracy, ".2f", " points"),
                loss=compare("test_loss", float, ".3f", ""), epochs=epochs,
                best=f"bird is our #{rank['bird']} of 10 ({gain['bird']:+.1f}); claimed #1 ({said_gain['bird']:+.1f})",
                worst=f"truck is our #{rank['truck']} of 10 ({gain['truck']:+.1f}); claimed #10 ({said_gain['truck']:+.1f})",
                norms=norms)


def seed_runs(depth: int, infos: list[CheckpointInfo]) -> tuple[CheckpointInfo | None, CheckpointInfo | None, bool]:
    """(residual, plain, equally trained) for one of the seed report's depths: the longest pair trained as long
    where there is one (its gaps mean something), else each model's own longest run, to be shown side by side but
    never set against the other."""
    pair = equally_trained(infos, f"resnet{depth}", f"plain{depth}")
    if pair is not None:
        return pair[0], pair[1], True
    have = longest(infos)
    return have.get(f"resnet{depth}"), have.get(f"plain{depth}"), False


def seed_runs_note(infos: list[CheckpointInfo]) -> str:
    """'Runs shown: resnet18 and plain18, 78,000 iterations each; resnet34 78,000, plain34 3,900 iterations (not
    set against each other: not trained as long).', or '' without any of the seed report's models."""
    said = []
    for depth, _, _ in SEED_PAIRS:
        resnet, plain, equal = seed_runs(depth, infos)
        if equal:
            said.append(f"{resnet.name} and {plain.name}, {iterations(resnet):,} iterations each")
        elif resnet is not None or plain is not None:
            runs = [i for i in (resnet, plain) if i is not None]
            said.append(lengths(*runs) + (" (not set against each other: not trained as long)" if len(runs) == 2 else ""))
    return f"Runs shown: {'; '.join(said)}." if said else ""


def seed_report_frame(infos: list[CheckpointInfo]) -> pd.DataFrame:
    """Seed report 000 point by point: each claim, what it states for ResNet-18 and Plain-18, what we measured
    for the 18- and 34-layer pairs (strings, since the rows mix units), and a verdict on the 18-layer pair."""
    claims, grads = SEED_REPORT_CLAIMS, SEED_REPORT_GRAD_NORMS
    rows = [("top1", "top-1 test accuracy (%)", 100 - claims["resnet18"]["test_error"], 100 - claims["plain18"]["test_error"]),
            ("top5", "top-5 test accuracy (%)", 100 - claims["resnet18"]["test_top5_error"],
             100 - claims["plain18"]["test_top5_error"]),
            ("loss", "test loss (cross-entropy)", claims["resnet18"]["test_loss"], claims["plain18"]["test_loss"]),
            ("epochs", "first epoch at 90 % test accuracy", claims["resnet18"]["epochs_to_90"], claims["plain18"]["epochs_to_90"]),
            ("best", "class gaining most from shortcuts (points, residual minus plain)",
             f"bird {SEED_REPORT_CLASS_GAINS['bird']:+.1f}", ""),
            ("worst", "class gaining least from shortcuts (points)", f"truck {SEED_REPORT_CLASS_GAINS['truck']:+.1f}", ""),
            ("norms", "per-layer gradient norms (ours: 5th-95th percentile over main-path layers and epochs)",
             f"{grads['resnet18'][0]}-{grads['resnet18'][1]}", f"{grads['plain18'][0]}-{grads['plain18'][1]}")]
    measured, verdicts = {}, {}
    for depth, _, _ in SEED_PAIRS:
        resnet, plain, equal = seed_runs(depth, infos)
        if equal:  # trained as long: the pair's gaps (per class, the verdicts) mean something
            measured[depth] = _seed_measures(resnet, plain)
            verdicts = _seed_verdicts(resnet, plain) if depth == 18 else verdicts
            continue
        alone = _seed_measures(resnet, None), _seed_measures(None, plain)
        measured[depth] = {key: (alone[0][key][0], alone[1][key][1]) for key in alone[0]}
        if depth == 18 and resnet is not None and plain is not None:
            verdicts = dict.fromkeys(alone[0], different_lengths(resnet, plain))
    table = []
    for key, what, claim_r, claim_p in rows:
        row = {"claim": what, "report: ResNet-18": str(claim_r), "report: Plain-18": str(claim_p)}
        for depth, r_label, p_label in SEED_PAIRS:
            row[f"ours: {r_label}"], row[f"ours: {p_label}"] = measured[depth][key]
        row["verdict (18 layers)"] = verdicts.get(key, "not measured yet")
        table.append(row)
    return pd.DataFrame(table)
