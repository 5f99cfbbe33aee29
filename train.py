"""Train plain and residual CIFAR-10 nets with the paper's recipe and publish them to checkpoints/.

    python train.py --depth 56 --plain          # plain56
    python train.py --depth 56                  # resnet56
    python train.py --all                       # the ten 6n+2 nets, 20-110, plain and residual, side by side
    python train.py --depth 18 --recipe seed    # CIFAR ResNet-18, the seed report's 200-epoch recipe
    torchrun --nproc_per_node=2 train.py --depth 20   # one model over several GPUs (or CPU processes, gloo)

Exit status: 0 trained and published, or stopped by --time-budget/--stop-after with its state saved; 2 refused,
with a one-line error; 3 a net's loss became NaN/inf (the others trained on, are published, and pushed with
--push-to-hub); 4 a --push-to-hub upload failed (the checkpoints are published); 5 a state or checkpoint could
not be written (disk full, a folder taken away): the states saved before are intact, and once that is fixed
--resume continues from them; 130 interrupted by Ctrl-C or SIGTERM, state saved (0 when --time-budget or
--stop-after was given, as at their own stops): continue with --resume; also 130, without saving, at a second
Ctrl-C or one before training starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import tarfile
from http.client import HTTPException
from pathlib import Path

from resnet_core.checkpoint import REPO_ROOT, push_to_hub, recipe_words
from resnet_core.cli import COUNT, FRACTION, NONNEGATIVE, POSITIVE, RATE, number
from resnet_core.data import SEED_LIMIT, SPLIT_SIZES, DatasetError, download_cifar10
from resnet_core.models import PLAIN_VS_RESIDUAL_DEPTHS, list_models, model_info
from resnet_core.trainer import (ConfigError, Recipe, RunConfig, TrainingDiverged, WriteFailed, arch_options,
                                  error_line, paper_recipe, pick_device, published_folder, seed_recipe, train)


# Options that contradict each other: train.py used to pick one silently (--model over --depth, --iterations over
# --epochs, --restart over --resume, which threw the saved state away) and start hours of training.
CONFLICTS = {
    ("--model", "--depth"): "--model names the nets itself",
    ("--model", "--plain"): "--model names the nets itself",
    ("--model", "--both"): "--model names the nets itself",
    ("--model", "--all"): "--model names the nets itself",
    ("--all", "--depth"): "--all is the ten 6n+2 nets of depths 20 to 110",
    ("--all", "--plain"): "--all trains the plain and the residual nets",
    ("--plain", "--both"): "--both trains the plain net too",
    ("--epochs", "--iterations"): "each sets the run's length: give one",
    ("--resume", "--restart"): "--restart throws away the saved state that --resume continues",
}


def parse_args(argv=None) -> argparse.Namespace:
    # no abbreviations: the command recorded in each checkpoint is read back by option name (regenerate_command)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    which = p.add_argument_group("which models")
    which.add_argument("--depth", type=int, nargs="+", help="20 32 44 56 110 1202 (6n+2 nets) or 18 34 (CIFAR ResNet-18/34)")
    which.add_argument("--plain", action="store_true", help="the plain net (no shortcuts) of that depth")
    which.add_argument("--both", action="store_true", help="train the plain and the residual net of each depth")
    which.add_argument("--all", action="store_true", help="the ten 6n+2 nets: 20/32/44/56/110, plain and residual")
    which.add_argument("--model", nargs="+", help="explicit registry names, e.g. resnet56 plain56")
    which.add_argument("--shortcut", choices=["A", "B"], help="residual nets: A zero-padding identity (paper's CIFAR "
                       "default), B projection at stage changes; plain nets have none")
    rec = p.add_argument_group("recipe (defaults: the paper's, Sec. 4.2)")
    rec.add_argument("--recipe", choices=["paper", "seed"], default="paper",
                     help="paper: 64k iterations, lr /10 at 32k and 48k; seed: the seed report's 200 epochs, /10 at 60/120/160")
    rec.add_argument("--iterations", type=COUNT, help="total SGD iterations (paper: 64000)")
    rec.add_argument("--epochs", type=POSITIVE, help="length in epochs, instead of --iterations (tiny runs)")
    rec.add_argument("--batch-size", type=COUNT, help="paper: 128")
    rec.add_argument("--lr", type=POSITIVE, help="paper: 0.1")
    rec.add_argument("--momentum", type=FRACTION, help="paper: 0.9")
    rec.add_argument("--weight-decay", type=RATE, help="paper: 1e-4")
    rec.add_argument("--milestones", type=NONNEGATIVE, nargs="*", help="iterations where lr is divided by 10 "
                     "(default: the recipe's, scaled with --iterations/--epochs)")
    rec.add_argument("--warmup-iters", type=NONNEGATIVE,
                     help="iterations at --warmup-lr first (paper: 400 for 110 layers)")
    rec.add_argument("--warmup-lr", type=POSITIVE, help="paper: 0.01")
    rec.add_argument("--seed", type=number(int, 0, below=SEED_LIMIT), default=0,
                     help=f"init and data order, 0 to {SEED_LIMIT - 1:,}; same seed + device + "
                     "software = same run (default: 0)")
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", help="CIFAR-10: the shared zips, their unpacked folder, or torchvision's "
                      "cifar-10-batches-py (default: $CIFAR10_DIR, else the first of ./data, the repository's "
                      "data/ and shared/datasets/cifar10 beside the repository that holds both splits)")
    data.add_argument("--download", action="store_true", help="on a connected machine: fetch CIFAR-10 with torchvision "
                      "into --data-dir (default ./data) first, MD5-checked; nothing is fetched if it is there")
    data.add_argument("--limit-train", type=COUNT, help="use only the first N training images (tiny runs, tests)")
    data.add_argument("--limit-test", type=COUNT, help="use only the first N test images")
    run = p.add_argument_group("run")
    run.add_argument("--out", type=Path, default=REPO_ROOT / "checkpoints",
                     help="where finished checkpoints go (default: checkpoints/, where the bundled ones are: a model "
                          "published there already is refused unless --overwrite; --out DIR publishes beside them)")
    run.add_argument("--state-dir", type=Path, default=REPO_ROOT / "runs",
                     help="resumable state of unfinished runs (default: runs/)")
    run.add_argument("--resume", action="store_true", help="continue the runs saved in --state-dir")
    run.add_argument("--restart", action="store_true", help="discard saved unfinished runs and start over")
    run.add_argument("--overwrite", action="store_true",
                     help="replace checkpoints already published in --out by the models this run trains; without it "
                          "the trainer refuses to start when one is there (publish elsewhere with --out DIR)")
    run.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    run.add_argument("--no-amp", action="store_true", help="fp32 on the GPU instead of bf16 autocast")
    run.add_argument("--cpu-bf16", action="store_true",
                     help="bf16 autocast on the CPU too: 1.6-1.75x faster where the CPU has AVX-512 BF16 or AMX, "
                          "slower elsewhere")
    run.add_argument("--no-cuda-graphs", action="store_true", help="eager steps on the GPU")
    run.add_argument("--no-channels-last", action="store_true",
                     help="NCHW tensors instead of channels-last (NHWC), which is faster on GPUs and most CPUs")
    run.add_argument("--compile", action="store_true",
                     help="run each block through torch.compile (fuses BN, ReLU and the addition; costs compile "
                          "time at the start; not under torchrun). bench/train_throughput.py --compile measures it")
    run.add_argument("--fuse", action="store_true",
                     help="train the plain and residual net of each 6n+2 depth as one network of grouped convolutions "
                          "(fewer, wider kernels on a GPU; the same arithmetic). bench/train_throughput.py --fuse "
                          "measures it")
    run.add_argument("--time-budget", type=POSITIVE,
                     help="minutes from when training's set-up starts, data loading included; then save state and "
                          "exit (continue with --resume)")
    run.add_argument("--stop-after", type=COUNT, help="iterations, counted from where this run starts (or resumes); "
                     "then save state and exit 0, not an interruption's 130 (continue with --resume)")
    run.add_argument("--no-weights", action="store_true", help="publish curves and metrics without model.safetensors")
    run.add_argument("--push-to-hub", metavar="REPO", help="upload each finished checkpoint to REPO-<model> on the Hub")
    args = p.parse_args(argv)
    given = {f"--{k.replace('_', '-')}" for k, v in vars(args).items() if v not in (None, False, p.get_default(k))}
    for (a, b), why in CONFLICTS.items():
        if a in given and b in given:
            p.error(f"{a} and {b} do not go together: {why}")
    return args


def model_names(args) -> list[str]:
    if args.model:
        cifar = [m for m in list_models() if model_info(m)["family"] != "imagenet"]  # it trains on CIFAR-10 only
        bad = [m for m in args.model if m not in cifar]
        if bad:
            raise SystemExit(f"error: unknown model(s) {', '.join(bad)}; valid: {', '.join(cifar)}"
                             + ("; the imagenet-* nets are for the Architecture page, not for CIFAR-10 training"
                                if any(m in list_models() for m in bad) else ""))
        return list(dict.fromkeys(args.model))  # each once: a model named twice is still one run
    depths = PLAIN_VS_RESIDUAL_DEPTHS if args.all else args.depth
    if not depths:
        raise SystemExit("error: say which models: --depth 56 [--plain], --all, or --model NAME")
    known = [(model_info(n)["depth"], model_info(n)["family"]) for n in list_models("resnet*")]
    bad = sorted(set(depths) - {depth for depth, _ in known})
    if bad:
        six_n_plus_2, wide = (" ".join(str(d) for d, f in known if f == family) for family in ("cifar", "cifar-wide"))
        raise SystemExit(f"error: no CIFAR model of depth {', '.join(map(str, bad))}; "
                         f"depths: {six_n_plus_2} (6n+2) and {wide}")
    kinds = ("resnet", "plain") if (args.all or args.both) else (("plain",) if args.plain else ("resnet",))
    return [f"{k}{d}" for d in dict.fromkeys(depths) for k in kinds]


def batch_size(args) -> int:
    """--batch-size, else the recipe's (the paper's 128)."""
    return args.batch_size if args.batch_size is not None else Recipe().batch_size


def make_config(name: str, args, n_train: int) -> RunConfig:
    batch = batch_size(args)
    steps_per_epoch = max(1, n_train // batch)
    base = seed_recipe(steps_per_epoch) if args.recipe == "seed" else paper_recipe(model_info(name)["depth"])
    iterations = args.iterations if args.iterations is not None else \
        round(args.epochs * steps_per_epoch) if args.epochs is not None else base.iterations
    if iterations < 1:
        raise SystemExit(f"error: --epochs {args.epochs:g} makes 0 iterations ({steps_per_epoch} an epoch: "
                         f"{n_train:,} training images, batch {batch}); ask for --epochs {1 / steps_per_epoch:.3g} "
                         f"or more")
    milestones = tuple(args.milestones) if args.milestones is not None else \
        tuple(round(m * iterations / base.iterations) for m in base.milestones)
    recipe = dataclasses.replace(
        base, iterations=iterations, batch_size=batch, milestones=milestones,
        **{k: v for k, v in dict(lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                                 warmup_iters=args.warmup_iters, warmup_lr=args.warmup_lr).items() if v is not None})
    arch = arch_options(name, {"shortcut": args.shortcut} if args.shortcut and model_info(name)["residual"] else {})
    return RunConfig(model=name, recipe=recipe, arch=arch, seed=args.seed, limit_train=args.limit_train,
                     limit_test=args.limit_test, amp=not args.no_amp, cpu_bf16=args.cpu_bf16,
                     channels_last=not args.no_channels_last, cuda_graphs=not args.no_cuda_graphs,
                     compile=args.compile, publish_weights=not args.no_weights)


def init_distributed():
    """Under torchrun: one process per GPU (NCCL), or per CPU process (gloo). Returns the local device."""
    if "RANK" not in os.environ:
        return None
    import torch
    import torch.distributed as dist
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}"
    dist.init_process_group("gloo")
    return "cpu"


def close_distributed(wait: bool) -> None:
    """Close the process group; first, if `wait`, wait for every rank (rank 0 publishes last): a rank that exits
    while another still talks to it makes gloo abort the other. A rank stopping on an error of its own (another run
    holds rank 0's state lock, a failed save) must not wait: the others are in a collective it never joins, and
    would hang there with its message unprinted; it exits, and torchrun stops the others."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def recipe_notes(configs: list[RunConfig], args) -> list[str]:
    """What an explicit --milestones or --warmup-iters means for runs too short for them, said once each."""
    notes = []
    for c in configs:
        r = c.recipe
        late = [m for m in r.milestones if m >= r.iterations]
        if args.milestones and late:
            notes.append(f"note: --milestones {' '.join(map(str, late))} at or past the run's {r.iterations:,} "
                         "iterations: the lr is never divided there")
        if args.warmup_iters is not None and r.warmup_iters >= r.iterations:
            notes.append(f"note: --warmup-iters {r.warmup_iters:,} lasts the whole run of {r.iterations:,} iterations "
                         "(at --warmup-lr throughout)")
    return list(dict.fromkeys(notes))


def describe(configs: list[RunConfig]) -> list[str]:
    """The runs in words, one line for the nets that share every setting (config.json records each in full)."""
    alike: dict[str, list[RunConfig]] = {}
    for c in configs:
        alike.setdefault(repr({k: v for k, v in c.to_dict().items() if k != "model"}), []).append(c)
    lines = []
    for group in alike.values():
        c, r = group[0], group[0].to_dict()["recipe"]
        parts = [f"{r['iterations']:,} iterations of batch {r['batch_size']}", recipe_words(r), f"seed {c.seed}"]
        parts += [f"the first {n:,} {split} images" for n, split in ((c.limit_train, "training"), (c.limit_test, "test"))
                  if n]
        parts += [f"shortcut {c.arch['shortcut']}"] if c.arch.get("shortcut") else []
        parts += ["published without weights"] if not c.publish_weights else []
        flags = [name for name, on in (("bf16 autocast", c.amp), ("on the CPU too", c.amp and c.cpu_bf16),
                                       ("channels-last", c.channels_last), ("CUDA graphs", c.cuda_graphs),
                                       ("compiled", c.compile)) if on]
        lines.append(f"  {', '.join(g.model for g in group)}: {'; '.join(parts)}"
                     + (f" ({', '.join(flags)} where they apply)" if flags else ""))
    return lines


def main(argv=None) -> int:
    """The command; returns its exit status (see the module's docstring)."""
    try:
        return train_command(argv)
    except KeyboardInterrupt:  # a Ctrl-C before training's own handler is set (data decoding), or a second one
        print("interrupted: stopped at once, without saving; the state saved last, if any, is kept, and the same "
              "command with --resume continues from it", file=sys.stderr)
        return 130


def train_command(argv=None) -> int:
    args = parse_args(argv)
    names = model_names(args)
    if args.device and "RANK" not in os.environ:  # under torchrun each rank's device is its own (init_distributed)
        try:
            pick_device(args.device)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    if args.shortcut and not any(model_info(n)["residual"] for n in names):  # a note: commands the project prints
        # keep a recorded --shortcut when they train one net of a pair (regenerate_command, session.sh's resume)
        print(f"note: --shortcut {args.shortcut} does nothing for {', '.join(names)}: plain nets have no shortcuts",
              file=sys.stderr)
    whole = SPLIT_SIZES["train"]  # CIFAR-10's training set: a larger limit takes it all
    n_train = min(args.limit_train or whole, whole)
    batch = batch_size(args)
    if batch > n_train:  # found before the data is decoded, naming what to change
        raise SystemExit(f"error: --batch-size {batch} is more than the {n_train:,} training images"
                         + (" (--limit-train)" if args.limit_train and args.limit_train < whole else "")
                         + f": ask for a batch of {n_train:,} or fewer")
    configs = [make_config(n, args, n_train) for n in names]
    for note in recipe_notes(configs, args):
        print(note, file=sys.stderr)
    if args.download:
        if "RANK" in os.environ:  # every rank would fetch into the same folder at once
            print("error: --download under torchrun: fetch CIFAR-10 first, in one process: python -c "
                  "'from resnet_core.data import download_cifar10; download_cifar10(\"data\")'", file=sys.stderr)
            return 2
        try:
            args.data_dir = str(download_cifar10(args.data_dir or os.environ.get("CIFAR10_DIR") or "data"))
        except (OSError, RuntimeError, HTTPException, tarfile.TarError) as e:  # URLError is an OSError; bad MD5: Runtime
            print(f"error: could not download CIFAR-10 ({e}); offline? Pass --data-dir to a local copy.", file=sys.stderr)
            return 2
    device = init_distributed() or args.device
    print("configuration:", *describe(configs), sep="\n", file=sys.stderr)
    command = "python train.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    agreed = False  # every rank ends here together: trained to the end, or stopped by a divergence all agreed on
    try:
        status = train(configs, data_dir=args.data_dir, out_dir=args.out, state_dir=args.state_dir, device=device,
                       resume=args.resume, restart=args.restart, overwrite=args.overwrite,
                       stop_after=args.stop_after, command=command, fuse=args.fuse,
                       time_budget_s=args.time_budget * 60 if args.time_budget is not None else None,
                       log=lambda *a, **k: print(*a, file=sys.stderr, **k))
        agreed = True
    except (DatasetError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WriteFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 5
    except TrainingDiverged as e:  # the nets that finished beside it are published: they are pushed all the same
        agreed, status = True, e.status
        print(f"error: {e}", file=sys.stderr)
    finally:
        close_distributed(wait=agreed)
    pushed = push_finished(status, args.out, args.state_dir, args.push_to_hub) if args.push_to_hub else 0
    if "diverged" in status.values():
        return 3
    return 130 if "stopped" in status.values() and args.time_budget is None and args.stop_after is None else pushed


def push_finished(status: dict[str, str], out: Path, state_dir: Path, repo: str) -> int:
    """Upload each model this run finished to the Hub as REPO-<model>, from where it was published (rank 0 only).
    Returns 0, or 4 when an upload failed: the run is over and its checkpoints are published either way, so a
    failed upload (offline, no token, no huggingface_hub) is one line that says how to retry, not a traceback."""
    if os.environ.get("RANK", "0") != "0":
        return 0
    failed = 0
    for name in (n for n, s in status.items() if s == "finished"):
        folder, repo_id = published_folder(out, state_dir, name), f"{repo}-{name}"
        try:
            print(f"pushed {name}: {push_to_hub(folder, repo_id)}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - whatever the Hub client raises, the checkpoint is safe on disk
            print(f"error: could not push {folder} to the Hub as {repo_id} ({error_line(e)}); it stays "
                  f"published there; retry with: python -c 'from resnet_core.checkpoint import push_to_hub; "
                  f"print(push_to_hub(\"{folder}\", \"{repo_id}\"))'", file=sys.stderr)
            failed = 4
    return failed


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit as stop:
        if isinstance(stop.code, str):  # a one-line refusal ("error: ..."): the status argparse gives its own, not 1
            print(stop.code, file=sys.stderr)
            sys.exit(2)
        raise
