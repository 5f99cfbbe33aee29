"""Checkpoint folders (config.json, model.safetensors, history.json, metrics.json, README.md) and resumable run states: atomic writes, strict loads, no pickle."""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .data import CLASSES, SPLIT_SIZES
from .models import ResNet, build_model, list_models, model_info
from .paper import PAPER_ITERATIONS, TABLE6_TEST_ERROR

REPO_ROOT = Path(__file__).resolve().parents[1]
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint folder or file that is missing, truncated or does not match its config."""


def default_checkpoints_dir() -> Path:
    """$RESNET_CHECKPOINTS if set (the tests and the app use it), else the repo's checkpoints/."""
    return Path(os.environ.get("RESNET_CHECKPOINTS", REPO_ROOT / "checkpoints"))


# -- atomic writes ----------------------------------------------------------------------------------
def _atomic_replace(path: Path, write, mode: int = 0o644) -> None:
    """Call write(tmp) on a temp file in the same folder, fsync it, give it `mode`, then rename it over `path`:
    a crash leaves the old file or the new one, and readers never see the file with another mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on the disk before the rename: a crash of the machine must not leave the
            os.fsync(f.fileno())     # name pointing at a file whose data never got there
        os.chmod(tmp, mode)  # mkstemp makes 0600; a published file is for everyone to read (0644 by default)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file or the new one."""
    _atomic_replace(path, lambda tmp: Path(tmp).write_bytes(data), mode)


def to_json(obj) -> str:
    """Sorted keys, indent 2 (the hub convention); NaN/inf become null so every reader can parse it."""
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o
    return json.dumps(clean(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, to_json(obj).encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_replace(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def sync_folder(folder: Path) -> None:
    """Put a folder's renames on the disk, so that a resumable state's new files are known there before its older
    ones are deleted. A filesystem that cannot sync a folder (some network ones) is left to its own guarantees."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- writing a checkpoint folder --------------------------------------------------------------------
def without_options(command: str, names: set[str]) -> list[str]:
    """The words of a train.py command line without the named options and their values (the words up to the
    next option, or `--name=value`)."""
    kept, skip = [], False
    for word in shlex.split(command):
        if word.startswith("--"):
            skip = word.split("=", 1)[0] in names
        if not skip:
            kept.append(word)
    return kept


# train.py options of one machine or one sitting (paths, stops, resuming, leaving the weights out)
SITTING_OPTIONS = {"--out", "--state-dir", "--data-dir", "--time-budget", "--stop-after", "--push-to-hub", "--resume",
                   "--restart", "--no-weights", "--overwrite"}  # --overwrite: a copied command asks before replacing


REGENERATED = "regenerated"  # where a renamed checkpoint's command publishes: not over the run that took its name
MODEL_OPTIONS = {"--depth", "--plain", "--both", "--all", "--model"}  # train.py's choice of models


def regenerate_command(config: dict, folder: str | None = None) -> str:
    """The train.py command that trains this checkpoint again on a fresh machine: the recorded one (config.json's
    "command") without where it wrote, how long that sitting ran, --resume, --overwrite or --no-weights. A
    checkpoint with its weights gets `--out regenerated`: published into checkpoints/, the new run would replace
    the one it is checked against (the trainer refuses to, unless told). So does one kept under another name than
    its model's (`folder`, say resnet56-15ep beside a longer resnet56): into checkpoints/ it would publish over the
    run that has its model's name. One without weights under its model's name gets `--overwrite`: this folder holds
    only the curves that the new run, weights included, replaces. The command for a checkpoint without weights
    trains its model alone (`--model NAME`): --overwrite replaces nothing else, and no time goes to the nets it was
    trained beside (alone or side by side, a net sees the same batches)."""
    recorded = config.get("command")  # a hand edit may leave a number or a list: read as no command recorded
    command = recorded if isinstance(recorded, str) and recorded else "python train.py"
    model, renamed = config.get("model"), bool(folder and folder != config.get("model"))
    if config.get("has_weights") is False and model:  # for its weights: this net alone
        leave_out = SITTING_OPTIONS | MODEL_OPTIONS
        extra = ["--model", model] + (["--out", REGENERATED] if renamed else ["--overwrite"])
    else:  # as it ran, published beside this checkpoint to compare, not over it
        leave_out, extra = SITTING_OPTIONS, ["--out", REGENERATED]
    try:
        return shlex.join(without_options(command, leave_out) + extra)
    except ValueError:  # quoting damaged by hand: show it as recorded
        return command


def wall_time_counts(config: dict, history: dict | None) -> str:
    """What config.json's wall_time_s counts. The trainer now times the whole run until publishing; older
    checkpoints recorded the sum of their epochs' training steps, exactly, and are told apart by that. '' where
    it cannot be told: no time recorded, or an epoch without its own (or no history given)."""
    wall, steps = config.get("wall_time_s"), [r.get("epoch_time_s") for r in (history or {}).get("records", [])]
    if wall is None or not steps or any(t is None for t in steps):
        return ""
    return "training steps only" if math.isclose(wall, sum(steps), rel_tol=1e-9) else "whole run, evaluation included"


def wall_time_words(config: dict, history: dict | None, unit: str = " min") -> str:
    """The recorded wall time in minutes, saying what it counts: '432.5 min (whole run, evaluation included)',
    '49.3 min (training steps only)'; '' where none is recorded. The two kinds are not one quantity: the
    training steps alone leave out every epoch's evaluation."""
    wall = config.get("wall_time_s")
    if wall is None:
        return ""
    return f"{wall / 60:.1f}{unit} ({wall_time_counts(config, history) or 'what it counts is not recorded'})"


def model_card(config: dict, metrics: dict, precision: str, folder: str | None = None,
               history: dict | None = None) -> str:
    """The folder's README.md: the numbers, how the weights are stored (`precision`, as stored_precision reads
    them; '' when not bundled), the recipe and a command that trains the net again (`folder`: the checkpoint's
    folder name, when it may differ from its model's). `history` (history.json) tells what the wall time counts."""
    recipe, again = config.get("recipe", {}), regenerate_command(config, folder)
    lines = [
        "---", "library_name: pytorch", "tags: [resnet, cifar10, image-classification, resnet-explorer]", "---",
        f"# {config['model']} on CIFAR-10",
        "",
        f"{'Residual' if config.get('residual') else 'Plain'} network, depth {config.get('depth')}, "
        f"trained by `train.py` of ResNet Explorer (a reproduction of He et al., 2016).",
        "",
        "| metric | value |", "| --- | --- |",
        f"| test top-1 error | {_pct(metrics.get('test_error'))} |",
        f"| test top-5 error | {_pct(metrics.get('test_top5_error'))} |",
        f"| training error, final model on the clean training set | {_pct(metrics.get('train_error_clean'))} |",
        f"| training error, last epoch's augmented batches | {_pct(metrics.get('train_error'))} |",
        f"| iterations | {_count(recipe.get('iterations'))} (batch {recipe.get('batch_size')}){_short(config)} |",
        f"| wall time | {wall_time_words(config, history) or 'not recorded'}, on {config.get('device')}"
        + (f", side by side with {', '.join(config['trained_alongside'])}" if config.get("trained_alongside") else "")
        + " |",
        *([f"| arithmetic in training | {config['precision']} |"] if config.get("precision") else []),
        "",
        "Final iterate, no test-set model selection. "
        + (f"The test and clean-training figures above are of {metrics['final_evaluation']}. "
           if metrics.get("final_evaluation") else "")
        + "Weights: "
        + (f"`model.safetensors` ({precision})." if precision else
           f"not bundled ({config.get('weights_not_bundled') or 'too large'}); regenerate them with the command "
           "below."),
        "",
        f"Recipe: {recipe_words(recipe)}. Train it again with:",
        "",
        f"    {again}",
        "",
        *([f"It publishes into `{REGENERATED}/{config.get('model')}`, not over this folder.", ""]
          if again.endswith(f" --out {REGENERATED}") else []),
        *(["`--cpu-bf16` is faster only on a CPU with AVX-512 BF16 or AMX; on others, leave it out (fp32).", ""]
          if "--cpu-bf16" in again.split() else []),
    ]
    if precision:
        lines += ["Load with `resnet_core.load_pretrained(\"<this folder>\")`.", ""]
    return "\n".join(lines)


def _short(config: dict) -> str:
    """'; a short run, 9 % of the paper's 64,000' for a run shorter than the paper's, and for a net of Table 6
    ': its errors are not Table 6's'."""
    n = config.get("recipe", {}).get("iterations")
    if not isinstance(n, int) or n >= PAPER_ITERATIONS:
        return ""
    share = 100 * n / PAPER_ITERATIONS
    said = f"; a short run, {f'{share:.0f} %' if share >= 1 else 'under 1 %'} of the paper's {PAPER_ITERATIONS:,}"
    return said + (": its errors are not Table 6's" if config.get("model") in TABLE6_TEST_ERROR else "")


def recipe_words(recipe: dict) -> str:
    """'SGD with momentum 0.9 and weight decay 0.0001; lr 0.1, multiplied by 0.1 at iterations 32,000 and
    48,000; warm-up at lr 0.01 for 400 iterations', from what the recipe records (nothing it lacks is said)."""
    said = []
    if "momentum" in recipe and "weight_decay" in recipe:
        said.append(f"SGD with momentum {recipe['momentum']} and weight decay {recipe['weight_decay']}")
    steps = [_count(m) for m in recipe.get("milestones") or []]
    if "lr" in recipe and steps:
        at = " and ".join([", ".join(steps[:-1]), steps[-1]] if len(steps) > 1 else steps)
        said.append(f"lr {recipe['lr']}, multiplied by {recipe.get('gamma', 0.1)} at iterations {at}")
    elif "lr" in recipe:
        said.append(f"lr {recipe['lr']}, constant")
    if recipe.get("warmup_iters") and "warmup_lr" in recipe:
        said.append(f"warm-up at lr {recipe['warmup_lr']} for {_count(recipe['warmup_iters'])} iterations")
    return "; ".join(said) or "not recorded"


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "unknown" if n is None else str(n)


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.2f} %"


def storage_state(model: torch.nn.Module, weights_dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The state dict as published: parameters in `weights_dtype` (fp16 halves the repository), buffers
    (BatchNorm running statistics) in fp32, and any parameter that the cast would turn into inf in fp32 too.
    A deep plain net's early BN running variances reach millions, far beyond fp16's 65,504: cast, they
    become inf and the loaded model predicts garbage."""
    params = {name for name, _ in model.named_parameters()}
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach()
        if v.is_floating_point():
            small = v.to(weights_dtype)
            keep = k in params and bool(torch.isfinite(small).all())
            v = small if keep else v.float()
        state[k] = v
    return state


def stored_precision(folder) -> str:
    """How the folder's model.safetensors stores the net, read from the file's header: 'fp16, BN statistics fp32'
    (what save_checkpoint writes), or the dtypes found ('fp16' throughout in checkpoints published before the
    BatchNorm statistics were kept in fp32); '' without weights. An unreadable file raises CheckpointError."""
    weights = Path(folder) / "model.safetensors"
    if not weights.is_file():
        return ""
    dtypes = {"weights": set(), "BN statistics": set()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                kind = "BN statistics" if key.endswith(("running_mean", "running_var")) else "weights"
                dtype = f.get_slice(key).get_dtype()
                if dtype.startswith("F") or dtype.startswith("BF"):
                    dtypes[kind].add(dtype.replace("BF16", "bf16").replace("F", "fp"))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
    weights_dtype, stats_dtype = (", ".join(sorted(d)) for d in dtypes.values())
    return weights_dtype if stats_dtype in ("", weights_dtype) else f"{weights_dtype}, BN statistics {stats_dtype}"


def unbundle_weights(folder: Path, reason: str) -> Path:
    """Take model.safetensors out of a published checkpoint and keep all the rest (history, metrics, landscape):
    config.json says the weights are not bundled and why, and the model card how to train them again. For runs
    kept for their curves once a longer run of the same net takes their room in checkpoints/."""
    info = read_checkpoint(folder)
    if not info.has_weights:
        raise CheckpointError(f"{info.path}: no model.safetensors to take out")
    config = dict(info.config, has_weights=False, weights_not_bundled=reason)
    atomic_write_json(info.path / "config.json", config)
    atomic_write_bytes(info.path / "README.md",
                       model_card(config, info.metrics, "", info.path.name, info.history).encode())
    (info.path / "model.safetensors").unlink()  # last: until here the folder loads as before
    return info.path


# A temp file or folder untouched this long is left by a write that was killed, not one under way: writes touch
# theirs every few seconds at most, and another run may be publishing into the same --out right now.
STALE_TEMP_S = 600.0


def recover_checkpoint(root: Path, name: str) -> str | None:
    """Undo what a publish of `root/name` killed halfway left behind: the previous checkpoint, moved aside as
    `.name.old` with nothing yet in its place, goes back (returned: what was done, in words, for the log); temp
    folders and files of writes that ended long ago go. save_checkpoint calls it first, since it would otherwise
    delete that `.name.old`, the only whole checkpoint left."""
    root = Path(root)
    final, old = root / name, root / f".{name}.old"
    restored = None
    if old.is_dir() and not (final.exists() or final.is_symlink()):
        try:
            old.rename(final)
            restored = f"{final}: restored the checkpoint that a publish killed halfway had moved aside to {old.name}"
        except FileNotFoundError:  # restored meanwhile by another process (a torchrun rank) that saw it too
            pass
    remove_stale_temps([*root.glob(f".{name}.tmp-*"), *final.glob(".*.tmp")])
    return restored


def remove_stale_temps(paths, min_age_s: float = STALE_TEMP_S) -> None:
    """Remove the temp files and folders among `paths` untouched for min_age_s (0: all of them)."""
    now = time.time()
    for path in paths:
        try:
            if now - path.lstat().st_mtime < min_age_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except FileNotFoundError:  # its own writer finished, or removed it, meanwhile
            continue


def save_checkpoint(root: Path, name: str, model: ResNet | None, config: dict, history: dict, metrics: dict) -> Path:
    """Write checkpoint folder `root/name` as a whole: everything goes into a hidden temp folder that
    then replaces the old one, so a crash never leaves a half-written checkpoint where the app loads.
    `model=None` publishes curves and metrics without weights (models too large for the repo)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    recover_checkpoint(root, name)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.tmp-"))
    try:
        tmp.chmod(0o755)
        config = dict(config, format_version=FORMAT_VERSION, has_weights=model is not None)
        if model is not None:
            state = storage_state(model)
            atomic_save_tensors(tmp / "model.safetensors", state, metadata={"format": "pt", "model": config["model"]})
        atomic_write_json(tmp / "config.json", config)
        atomic_write_json(tmp / "history.json", history)
        atomic_write_json(tmp / "metrics.json", metrics)
        card = model_card(config, metrics, stored_precision(tmp), name, history)
        atomic_write_bytes(tmp / "README.md", card.encode())
        final, old = root / name, root / f".{name}.old"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- resumable run state (safetensors + JSON, nothing pickled) --------------------------------------
# A run's state folder, state_dir/<model>: state.json, and the tensors file it names, state-<iteration>.safetensors.
STATE_JSON = "state.json"
LEGACY_STATE_TENSORS = "state.safetensors"  # the tensors file as named before state.json named it
# --resume and --restart refuse to go together: a saved state that cannot be resumed is started over with --restart
START_OVER = "use --restart (in place of --resume) to start over"


def write_run_state(folder: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Save a run's state in `folder`: the tensors go to a new file named by meta's iteration, then state.json
    (`meta`, plus the name of that file) points to it, then the older files go: a save killed halfway leaves the
    previous pair whole, never new weights under an old state.json (and a copy of the folder taken meanwhile holds
    a consistent pair)."""
    meta_path = folder / STATE_JSON
    tensors_path = folder / f"state-{meta['iteration']:08d}.safetensors"
    atomic_save_tensors(tensors_path, tensors)
    atomic_write_json(meta_path, dict(meta, tensors=tensors_path.name))
    for old in [folder / LEGACY_STATE_TENSORS, *folder.glob("state-*.safetensors")]:
        if old != tensors_path:
            old.unlink(missing_ok=True)
    # The temp files of saves killed halfway (atomic writes, `.state-*.safetensors.*.tmp`): the trainer holds the
    # folder's lock, so no other writer's are among them.
    remove_stale_temps(folder.glob(".state*.tmp"), min_age_s=0)


# What the trainer reads of state.json, and the type of each: any other file there is damaged, not "no run".
STATE_KEYS = dict(config=dict, iteration=int, wall_time_s=(int, float), history=list, finished=bool)


def read_run_state_meta(folder: Path) -> dict | None:
    """The state.json of the run state folder state_dir/<model>, or None when there is none. One that is there but
    not a saved run's (`{}`, cut short, not UTF-8, a key missing) stops the run, naming the file: taken for no run,
    a --resume would start from iteration 0 and its first save would delete the saved tensors."""
    meta_path = folder / STATE_JSON
    if not (meta_path.exists() or meta_path.is_symlink()):
        return None
    try:
        meta = json.loads(meta_path.read_bytes().decode())
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, not JSON
        problem = f"unreadable: {e}"
    else:
        if not isinstance(meta, dict):
            problem = f"a JSON {type(meta).__name__}, not an object"
        elif wrong := [k for k, kind in STATE_KEYS.items() if not isinstance(meta.get(k), kind)]:
            problem = f"{', '.join(wrong)} missing or of the wrong type"
        elif meta["iteration"] < 0:
            problem = "a negative iteration"
        else:
            return meta
    raise SystemExit(f"error: the saved run state {meta_path} is damaged ({problem}); pass --restart (in place of "
                     f"--resume) to start {folder.name} over (it is then replaced), or move {meta_path.parent} away")


def run_state_tensors_path(folder: Path, meta: dict) -> Path:
    """The tensors file that state.json (`meta`) names, in `folder`; one named otherwise (a path elsewhere) stops
    the run."""
    named = meta.get("tensors", LEGACY_STATE_TENSORS)
    if not re.fullmatch(r"state(-\d+)?\.safetensors", str(named)):
        raise SystemExit(f"error: {folder / STATE_JSON} names {named!r} as its tensors file; {START_OVER}")
    return folder / named


def read_run_state_tensors(tensors_path: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a run state folder's tensors file (run_state_tensors_path), checked against `expected`, the
    tensors the run holds by the names they are saved under (model.*, momentum.<i>, stats.*); anything else stops
    the run."""
    try:
        tensors = load_file(tensors_path)
    except Exception as e:  # a truncated file raises several kinds of error; all mean the same here
        raise SystemExit(f"error: {tensors_path} is unreadable ({e}); {START_OVER}") from None
    # One missing, of another shape (copy_ would broadcast it), or a weight or momentum left over means the file is
    # not this net's saved state.
    wrong = [f"no tensor {k}" for k in expected if k not in tensors]
    wrong += [f"{k} of shape {list(tensors[k].shape)}, not {list(v.shape)}" for k, v in expected.items()
              if k in tensors and tensors[k].shape != v.shape]
    wrong += [f"a tensor {k} it does not have" for k in tensors if k not in expected and not k.startswith("stats.")]
    if wrong:
        raise SystemExit(f"error: {tensors_path} is not a whole saved state of {tensors_path.parent.name} "
                         f"({'; '.join(wrong[:3])}{f'; {len(wrong) - 3} more' if len(wrong) > 3 else ''}); "
                         f"{START_OVER}")
    return tensors


# -- reading ----------------------------------------------------------------------------------------
@dataclass
class CheckpointInfo:
    name: str
    path: Path
    config: dict
    history: dict
    metrics: dict

    @property
    def has_weights(self) -> bool:
        return (self.path / "model.safetensors").is_file()

    def regenerate_command(self) -> str:
        """regenerate_command for the folder as it is now: with its weights or without (published so, or lost)."""
        return regenerate_command(dict(self.config, has_weights=self.has_weights), self.name)

    def regenerate_note(self) -> str:
        """Where that command publishes, when it is not this folder (a renamed one); else ''."""
        model = self.config.get("model")
        if model == self.name:
            return ""
        return (f"It publishes into `{REGENERATED}/{model}`: move that folder into this checkpoints folder as "
                f"`{self.name}`, in place of this one.")


# A checkpoint's JSON files: a 164-epoch history of a 110-layer net is under 1 MiB, of a 1202-layer net about 6 MiB,
# a landscape on the default 21 x 21 grid 100 kB. A file much larger is no file of ours, and reading it whole would
# hold the app (seconds, gigabytes) for every visitor.
MAX_JSON_BYTES = 16 * 2**20


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: file is missing")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path}: {size / 2**20:,.0f} MiB, larger than any checkpoint file "
                              f"({MAX_JSON_BYTES // 2**20} MiB at most)")
    try:
        # Infinity and NaN (Python's json.dump writes them; JSON has no such values) read as null, as our own
        # writer stores them: "overflowed, not recorded", which every reader handles, never a number to plot
        obj = json.loads(path.read_text(), parse_constant=lambda name: None)
    except (OSError, ValueError, RecursionError) as e:
        # ValueError: not UTF-8, not JSON, or an integer of thousands of digits; RecursionError: nested too deep
        raise CheckpointError(f"{path}: not readable JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """The folder a name or path means: the path itself, else that name in the checkpoints folder. None there: a
    CheckpointError naming the folder searched and what to do (train it, if it is a model this project knows;
    else the checkpoints that are there)."""
    given = Path(name_or_path)
    tried = (given, default_checkpoints_dir() / given)  # an absolute path joins to itself
    for path in tried:
        if path.is_dir():
            return path
    # a bare name is looked for in the checkpoints folder; a path in its own folder (and, if relative, under that)
    searched = list(dict.fromkeys(p.parent for p in (tried[1:] if len(given.parts) == 1 else tried)))
    if given.name in list_models():
        out = "" if searched[0] == REPO_ROOT / "checkpoints" else f" --out {shlex.quote(str(searched[0]))}"
        hint = f"train one with `python train.py --model {given.name}{out}`"
    else:
        there = sorted(p.name for folder in searched if folder.is_dir() for p in folder.iterdir()
                       if p.is_dir() and not p.name.startswith("."))
        hint = (f"{given.name} is no model this project knows; "
                + (f"checkpoints there: {', '.join(there)}" if there else "there are no checkpoints there"))
    raise CheckpointError(f"no checkpoint folder {given} (looked in {', '.join(map(str, searched))}); {hint}")


def read_checkpoint(name_or_path: str | os.PathLike) -> CheckpointInfo:
    """Config, history and metrics of a checkpoint folder, checked for the keys the app reads and their types;
    no weights loaded. A damaged folder raises CheckpointError naming the file and the problem."""
    path = resolve_checkpoint(name_or_path)
    config = read_json(path / "config.json")
    history = read_json(path / "history.json")
    metrics = read_json(path / "metrics.json")
    for file, problem in problems(config, history, metrics):
        raise CheckpointError(f"{path / file}: {problem}")
    return CheckpointInfo(path.name, path, config, history, metrics)


# Values the app computes with: each must be a number where present (None allowed, for "not recorded").
METRIC_NUMBERS = ("test_error", "test_top5_error", "test_loss", "train_error", "train_loss", "train_error_clean",
                  "train_loss_clean")
RECORD_NUMBERS = ("iteration", "lr", "train_error", "train_loss", "test_error", "test_top5_error", "test_loss",
                  "epoch_time_s", "images_per_s", "wall_time_s")


def is_number(x) -> bool:
    """A number a float can hold: not 1e999 (read as an infinite float; our writer stores those as null) nor a
    400-digit integer (which JSON allows, and float() would overflow on). Compared exactly, never converted."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) <= sys.float_info.max


def is_number_or_null(x) -> bool:
    """A number, or null: what JSON makes of an inf or NaN (a deep plain net's responses can overflow)."""
    return x is None or is_number(x)


def problems(config: dict, history: dict, metrics: dict):
    """(file, what is wrong) for each missing key or wrongly typed value among those the app reads, config.json's
    first: a hand-edited or damaged file is refused with a reason instead of failing inside a chart."""
    for key in ("model", "recipe"):
        if key not in config:
            yield "config.json", f"missing key {key!r}"
            return
    if problem := not_cifar10(config):
        yield "config.json", problem
        return
    recipe = config["recipe"]
    if not isinstance(recipe, dict) or not isinstance(recipe.get("iterations", 0), (int, type(None))):
        yield "config.json", "recipe is not an object with a whole number of iterations"
    if not is_normalization(config.get("normalization")):
        yield "config.json", NOT_NORMALIZATION
    arch, residual = config.get("arch", {}), model_info(str(config["model"]))["residual"]
    if not (isinstance(arch, dict) and set(arch) <= {"shortcut", "num_classes"}  # the class count: not_cifar10's
            and arch.get("shortcut", "none") in (("A", "B", "none") if residual else ("none",))):
        yield "config.json", f"arch {arch!r} is not a shortcut option (A or B, residual nets only) and a class count"
    if config.get("wall_time_s") is not None and not is_number(config["wall_time_s"]):
        yield "config.json", "wall_time_s is not a number of seconds"

    records, layers = history.get("records"), history.get("layers", [])
    if not isinstance(records, list) or not records:
        yield "history.json", "no per-epoch records"
        return
    if not (isinstance(layers, list) and all(isinstance(name, str) for name in layers)):
        yield "history.json", "layers is not a list of layer names"
        return
    for r in records:
        if not isinstance(r, dict) or not isinstance(r.get("epoch"), int):
            yield "history.json", "a record without an epoch"
            return
        wrong = [k for k in RECORD_NUMBERS if r.get(k) is not None and not is_number(r[k])]
        if wrong:
            yield "history.json", f"epoch {r['epoch']}: {', '.join(wrong)} not a number"
        norms = r.get("grad_norms")
        if norms is not None and not (isinstance(norms, list) and all(map(is_number_or_null, norms))):
            yield "history.json", f"epoch {r['epoch']}: grad_norms is not a list of numbers"
        elif norms is not None and len(norms) != len(layers):
            yield "history.json", f"epoch {r['epoch']} has {len(norms)} gradient norms for {len(layers)} layers"

    for key in ("test_error", "confusion_matrix"):
        if key not in metrics:
            yield "metrics.json", f"missing key {key!r}"
            return
    wrong = [k for k in METRIC_NUMBERS if metrics.get(k) is not None and not is_number(metrics[k])]
    if wrong or metrics["test_error"] is None:
        yield "metrics.json", f"{', '.join(wrong) or 'test_error'} not a number"
    cm, n = metrics["confusion_matrix"], len(CLASSES)
    if not (isinstance(cm, list) and len(cm) == n and all(
            isinstance(row, list) and len(row) == n and all(isinstance(c, int) and c >= 0 for c in row) for row in cm)):
        yield "metrics.json", f"confusion_matrix is not {n}x{n} counts"
    responses = metrics.get("response_std")
    if responses is not None and not (isinstance(responses, list) and all(
            isinstance(r, dict) and isinstance(r.get("layer"), str) and isinstance(r.get("index"), int)
            and "std" in r and is_number_or_null(r["std"]) and is_number_or_null(r.get("channel_std"))
            for r in responses)):  # channel_std: absent in metrics recorded before it was
        yield "metrics.json", ("response_std is not a list of records with a layer name, index and std (and a "
                               "channel_std, if any, a number)")
    if not isinstance(metrics.get("epochs_to_90"), (int, type(None))):
        yield "metrics.json", "epochs_to_90 is not a whole number of epochs"
    for key, split in (("test_images", "test"), ("train_images", "train")):
        n = metrics.get(key)  # how many images of the split, the first N, it was scored on
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= SPLIT_SIZES[split]):
            yield "metrics.json", f"{key} is {n!r}, not a count of {split} images from 1 to {SPLIT_SIZES[split]:,}"
    mistakes = metrics.get("confident_mistakes", [])
    if not (isinstance(mistakes, list) and all(is_mistake(m) for m in mistakes)):
        yield "metrics.json", ("confident_mistakes is not a list of records with a test image index, true and "
                               "predicted class names and two probabilities")


NOT_NORMALIZATION = ("normalization is not a mean and a std of three numbers each, finite in float32 and the std "
                     "above 0 there")


def is_normalization(norm) -> bool:
    """config.json's normalization: absent (null), or {"mean": [3 numbers], "std": [3 numbers above 0]}, in float32."""
    if norm is None:
        return True
    if not (isinstance(norm, dict) and all(isinstance(norm.get(k), list) and len(norm[k]) == 3
                                           and all(map(is_number, norm[k])) for k in ("mean", "std"))):
        return False
    # Checked as image_tensor computes with them, in float32: there a std of 1e-50 is 0 and a mean of 1e300 is inf,
    # and every prediction NaN
    mean, std = (torch.tensor([float(v) for v in norm[k]], dtype=torch.float32) for k in ("mean", "std"))
    return bool(torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all())


def not_cifar10(config: dict) -> str | None:
    """What makes config.json's model no CIFAR-10 net of this project (unknown, an ImageNet net, another class
    count), checked before a model is built: a class count of 10^13 must not allocate first. None if it is one."""
    try:
        info = model_info(str(config.get("model")))
    except ValueError as e:
        return str(e)
    if info["family"] == "imagenet":
        return f"{config['model']} is an ImageNet net; the explorer reads CIFAR-10 checkpoints"
    arch = config.get("arch", {})
    if isinstance(arch, dict) and "num_classes" in arch and (type(arch["num_classes"]) is not int
                                                             or arch["num_classes"] != len(CLASSES)):
        return f"arch gives {arch['num_classes']!r} classes, not CIFAR-10's {len(CLASSES)}"
    return None


def is_mistake(record) -> bool:
    """A well-formed entry of metrics.json's confident_mistakes (as explain.confident_mistakes writes them)."""
    def probability(x) -> bool:
        return is_number(x) and 0.0 <= x <= 1.0

    return (isinstance(record, dict) and isinstance(record.get("index"), int) and record["index"] >= 0
            and record.get("true") in CLASSES and record.get("predicted") in CLASSES
            and probability(record.get("probability")) and probability(record.get("true_probability")))


FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")  # a checkpoint folder's name the app lists


def list_checkpoints(root: Path | None = None) -> tuple[list[CheckpointInfo], dict[str, str]]:
    """All readable checkpoints under root, residual nets first, each kind by depth (resnet20 ... resnet110, then
    plain20 ...; not plain110 before plain20, as names sort), and {folder: reason} for every unreadable one."""
    root = Path(root) if root is not None else default_checkpoints_dir()
    good, bad = [], {}
    for path in sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []:
        if not FOLDER_NAME.fullmatch(path.name):
            bad[path.name] = (f"its name is not only letters, digits and . _ + - (the pages write checkpoint names "
                              f"into their text, where other characters could style it): rename the folder")
            continue
        try:
            good.append(read_checkpoint(path))
        except CheckpointError as e:
            bad[path.name] = str(e)
    return sorted(good, key=checkpoint_order), bad


def checkpoint_order(info: CheckpointInfo) -> tuple:
    """Sort key: residual nets first, each kind by depth, then by folder name."""
    known = model_info(str(info.config["model"]))  # read_checkpoint refuses any model the registry lacks
    return not known["residual"], known["depth"], info.name


STORED_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # a weight's; float8 has no isfinite


def load_pretrained(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> ResNet:
    """The model rebuilt from its config.json, weights loaded strictly from model.safetensors, in eval mode.
    A missing, truncated or mismatched file raises CheckpointError naming the file and the problem."""
    path = resolve_checkpoint(name_or_path)
    config = read_json(path / "config.json")
    if problem := not_cifar10(config):
        raise CheckpointError(f"{path / 'config.json'}: {problem}")
    try:
        model = build_model(config["model"], **config.get("arch", {}))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path / 'config.json'}: cannot rebuild the model ({e})") from None
    if not is_normalization(config.get("normalization")):
        raise CheckpointError(f"{path / 'config.json'}: {NOT_NORMALIZATION}")
    weights = path / "model.safetensors"
    if not weights.is_file():
        # whatever config.json says of its weights (a file lost in a copy too): the command that brings them back
        again = regenerate_command(dict(config, has_weights=False), path.name)
        why = ("this checkpoint ships curves and metrics only" if config.get("has_weights") is False else
               "config.json says it was published with its weights: copied only in part?")
        raise CheckpointError(f"{weights}: file is missing ({why}; regenerate the weights with `{again}`)")
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored_model = (f.metadata() or {}).get("model")
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({e})") from None
    # A plain net and the residual net of its depth (option A) have the same tensors: only the file tells them apart
    if stored_model is not None and stored_model != config["model"]:
        raise CheckpointError(f"{weights}: does not match {config['model']}: the file holds {stored_model}'s weights "
                              f"(its metadata says), config.json names {config['model']}; put {config['model']}'s "
                              f"model.safetensors in its place, or correct config.json")
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{weights}: does not match {config['model']}: "
                              f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
    loaded = {}
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{weights}: tensor {k} has shape {tuple(v.shape)}, "
                                  f"{config['model']} expects {tuple(expected[k].shape)}")
        if (v.dtype not in STORED_FLOATS) if expected[k].is_floating_point() else (
                v.is_floating_point() or v.is_complex() or v.dtype == torch.bool):
            raise CheckpointError(f"{weights}: tensor {k} is {str(v.dtype).removeprefix('torch.')}, not "
                                  f"{'16-, 32- or 64-bit floating point' if expected[k].is_floating_point() else 'whole numbers'}")
        v = loaded[k] = v.to(expected[k].dtype)  # checked as the net holds it: a float64 1e300 is inf in float32
        if v.is_floating_point() and not torch.isfinite(v).all():  # a net that diverged: its outputs are NaN
            raise CheckpointError(f"{weights}: tensor {k} holds NaN or infinite values (in "
                                  f"{str(v.dtype).removeprefix('torch.')}, as the net computes); these weights "
                                  f"predict nothing")
        if k.endswith("running_var") and (v < 0).any():  # BatchNorm divides by its square root: NaN
            raise CheckpointError(f"{weights}: tensor {k} holds a negative variance; these weights predict nothing")
    model.load_state_dict(loaded, strict=True)
    model.normalization = config.get("normalization")
    return model.to(device).eval()


def push_to_hub(folder: Path, repo_id: str) -> str:
    """Upload a checkpoint folder to the Hugging Face Hub (needs a network and a token)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    return str(api.upload_folder(folder_path=str(folder), repo_id=repo_id))
