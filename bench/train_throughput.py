"""Training images/s of our trainer against a textbook baseline, same model, same device, same run.

Baseline: torchvision Dataset + DataLoader with per-image PIL transforms (4-pixel pad + random crop,
flip, ToTensor, Normalize), fp32, eager, torch.optim.SGD. Ours: the trainer's own step (data on the
device, batch augmentation, bf16 autocast, channels_last, CUDA graphs, lanes side by side on CUDA).
With --compile, ours is timed a second time with train.py --compile (each block through torch.compile), in a
column of its own, after its warm-up (printed as "warm-up s", not timed), which holds the compiling: the compiled
graphs are shared by every block of a shape, so the first model of a kind compiles them and the next ones (deeper
nets of the same kind) find most of them done, as the lanes of one training run do.
With --fuse, each residual 6n+2 net is also timed beside its plain twin as train.py trains the pair: first as two
lanes on two streams ("pair"), then fused into one network of grouped convolutions, one graph ("pair fused"), as
train.py --fuse trains it; their ratio, printed last ("fused/lanes"), is what --fuse gains.
Each timing of ours is followed by its ratio to the baseline's images/s: "speed-up" for one net; "all/base" for
several nets side by side (x N lanes, the pair), whose images are counted together: how much faster they all train
than the baseline would, one after another (for the pair, the residual net's baseline stands in for its twin's).

    python bench/train_throughput.py                        # resnet20/56/110 on the best device
    python bench/train_throughput.py --models resnet56 --steps 50 --lanes 10
    python bench/train_throughput.py --models resnet56 --compile
    python bench/train_throughput.py --models resnet56 --fuse
    python bench/train_throughput.py --json bench.json      # the table as JSON too, for a script to read
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

from resnet_core.checkpoint import atomic_write_bytes
from resnet_core.cli import COUNT, NONNEGATIVE, unwritable  # a bad count or --json: refused before any timing
from resnet_core.data import (CIFAR10_MEAN, CIFAR10_STD, SPLIT_SIZES, DatasetError, augmentation_plan,
                               load_cifar10, resolve_data_dir)
from resnet_core.models import build_model, list_models, model_info
from resnet_core.trainer import (GRAPH_WARMUP_STEPS, Data, Recipe, RunConfig, compile_failure, error_line, fill_batch,
                                  fuse_lanes, make_lane, pick_device, step_lanes)

DEFAULT_MODELS = ["resnet20", "resnet56", "resnet110"]


class PILDataset(torch.utils.data.Dataset):
    """The textbook input pipeline: one PIL image at a time through torchvision transforms."""

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images_u8.numpy(), labels.numpy()
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def baseline_images_per_s(name, images, labels, device, batch, steps, warmup, workers) -> float:
    model = build_model(name).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(PILDataset(images, labels), batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0)
    done, t0 = 0, None
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                sync(device)
                t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            done += 1
            if done == warmup + steps:
                break
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def ours_images_per_s(names, images, labels, device, batch, steps, warmup, util=None, min_seconds=0.0,
                      cpu_bf16=False, compile=False, untimed=None, fuse=False) -> float:
    """Aggregate images/s of the models `names` trained side by side (one name: a single model; a name twice: two
    copies), or `fuse`d as train.py --fuse trains them, timed over at least `steps` iterations and `min_seconds`;
    `util` samples the GPU over exactly that window. `untimed`, a list, gets the seconds of the warm-up iterations
    before the window (compile time, with --compile)."""
    data = Data(images.to(device), labels.to(device), images[:0].to(device), labels[:0].to(device),
                torch.tensor(CIFAR10_MEAN, device=device), torch.tensor(CIFAR10_STD, device=device))
    group = [make_lane(RunConfig(model=name, recipe=Recipe(batch_size=batch), cpu_bf16=cpu_bf16, compile=compile),
                       device) for name in names]
    lanes = len(group)
    if device.type == "cuda":
        for lane in group:
            lane.stream = torch.cuda.Stream(device)
    for fused in fuse_lanes(group) if fuse else []:
        fused.stream = fused.lanes[0].stream
    x = torch.zeros(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    perm, offsets, flips = augmentation_plan(len(labels), 0, 0, device)
    per_epoch = len(labels) // batch
    it, t0, t_warm = 0, None, time.perf_counter()
    while t0 is None or it < warmup + steps or time.perf_counter() - t0 < min_seconds:
        if it == warmup:
            sync(device)
            if untimed is not None:
                untimed.append(time.perf_counter() - t_warm)
            if util is not None:
                util.start()
            t0 = time.perf_counter()
        s = it % per_epoch
        fill_batch(data, perm[s * batch:(s + 1) * batch], offsets, flips, x, y)
        step_lanes(group, x, y, it, capture=device.type == "cuda" and it >= GRAPH_WARMUP_STEPS)
        it += 1
    sync(device)
    seconds = time.perf_counter() - t0
    if util is not None:
        util.stop()
    return (it - warmup) * batch * lanes / seconds


class GPUUtilization:
    """nvidia-smi's utilization.gpu (%), sampled every 0.2 s in the background between start() and stop(): the
    share of time in which any kernel was running (not how many SMs were busy). Each sample averages over the
    driver's last sample period (1/6 to 1 s), so the first one, reaching back before start(), is dropped."""

    def __init__(self):
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split()
                self.samples.append(float(out[0]))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                return
            self._stop.wait(0.2)

    def start(self):
        self._thread.start()

    def stop(self):
        """Stop sampling (also when it never started: a timing that failed in its warm-up)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def mean(self) -> float:
        """NaN with fewer than 3 samples left (no nvidia-smi, or too short a window to say)."""
        samples = self.samples[1:]
        return sum(samples) / len(samples) if len(samples) >= 3 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                   help=f"registry names, timed in turn (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--data-dir", help="CIFAR-10 (default: as train.py)")
    p.add_argument("--images", type=COUNT, help="training images to load (default: 50000 on CUDA, 2048 on CPU)")
    p.add_argument("--steps", type=COUNT, help="timed iterations (default: 200 on CUDA, 5 on CPU)")
    p.add_argument("--warmup", type=NONNEGATIVE, help="untimed iterations first (default: 20 on CUDA, 2 on CPU)")
    p.add_argument("--batch-size", type=COUNT, default=128, help="images per step, both pipelines (default %(default)s)")
    p.add_argument("--workers", type=NONNEGATIVE, default=4, help="baseline DataLoader workers (default %(default)s)")
    p.add_argument("--lanes", type=COUNT, default=1,
                   help="also time this many copies side by side (ours only; default %(default)s: no such column)")
    p.add_argument("--cpu-bf16", action="store_true", help="ours in bf16 autocast on the CPU too (train.py --cpu-bf16)")
    p.add_argument("--compile", action="store_true", help="also time ours with train.py --compile, alone and with --lanes")
    p.add_argument("--fuse", action="store_true",
                   help="also time each residual 6n+2 net beside its plain twin, as two lanes and fused (train.py --fuse)")
    p.add_argument("--json", type=Path, help="also write the table here, rewritten after each row: {model: {column "
                                             "heading: images/s, null where it failed}}")
    args = p.parse_args()
    # Every mistake in the arguments is found here, before the data loads and the first model is timed.
    if unknown := [m for m in args.models if m not in list_models()]:
        p.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(list_models())}")
    if args.fuse and (unpaired := [m for m in args.models if plain_twin(m) is None]):
        p.error(f"--fuse pairs each residual 6n+2 net with its plain twin: {', '.join(unpaired)} "
                f"{'has' if len(unpaired) == 1 else 'have'} none")
    try:
        device = pick_device(args.device)
    except ValueError as e:
        p.error(str(e))
    if args.json and (why := unwritable(args.json)):
        p.error(f"--json {args.json}: cannot write there ({why}); name a file in a folder that exists and can be "
                f"written")
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    steps = args.steps if args.steps is not None else (200 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (20 if cuda else 2)
    limit = args.images if args.images is not None else (None if cuda else 2048)
    images_loaded = min(limit or SPLIT_SIZES["train"], SPLIT_SIZES["train"])
    if images_loaded < args.batch_size:  # not one whole batch: the baseline's loader would yield nothing, for ever
        p.error(f"--batch-size {args.batch_size} is more than the {images_loaded} training images loaded; lower it "
                f"or raise --images")
    min_seconds = 3.0 if cuda else 0.0  # ours is fast: time it long enough for several nvidia-smi samples
    try:
        images, labels = load_cifar10(resolve_data_dir(args.data_dir), "train", limit=limit)
    except DatasetError as e:  # says where it looked and what to do
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch_size}; {steps} timed iterations "
          f"after {warmup} warm-up; baseline DataLoader workers: {args.workers}; ours in "
          f"{'bf16 autocast' if cuda or args.cpu_bf16 else 'fp32'}")
    runs = [(compiled, lanes) for compiled in sorted({False, args.compile}) for lanes in sorted({1, args.lanes})]
    runs += [(False, "pair"), (False, "pair fused")] if args.fuse else []
    print(f"{'model':<10} {'baseline img/s':>15}"
          + "".join(f" {heading(r):>{width(r)}} {'speed-up' if r[1] == 1 else 'all/base':>9} {'GPU util %':>11}"
                    for r in runs)
          + (f" {'warm-up s':>10}" if args.compile else "") + (f" {'fused/lanes':>11}" if args.fuse else ""))
    table = {}  # {model: {heading: images/s or None}}, for --json
    for model in args.models:
        base = baseline_images_per_s(model, images, labels, device, args.batch_size, steps, warmup, args.workers)
        line, warm_s = f"{model:<10} {base:15,.0f}", []
        table[model] = {"baseline img/s": base}
        for compiled, lanes in runs:
            util = GPUUtilization() if cuda else None
            names = [plain_twin(model), model] if isinstance(lanes, str) else [model] * lanes
            try:
                ours = ours_images_per_s(names, images, labels, device, args.batch_size, steps, warmup, util,
                                         min_seconds, args.cpu_bf16, compiled, warm_s if compiled and lanes == 1 else None,
                                         lanes == "pair fused")
            except Exception as e:  # --compile that cannot run here: say why, and keep the eager columns
                if not (compiled and compile_failure(e)):
                    raise
                if util is not None:
                    util.stop()
                print(f"{model}: --compile failed: {error_line(e)}", file=sys.stderr)
                line += f" {'failed':>{width((compiled, lanes))}} {'':>9} {'':>11}"
                table[model][heading((compiled, lanes))] = None
                continue
            busy = util.mean if util is not None else float("nan")
            line += f" {ours:{width((compiled, lanes))},.0f} {ours / base:8.1f}x {busy:11.0f}"
            table[model][heading((compiled, lanes))] = ours
        if args.compile:  # blank where the compiling failed, so that the next column stays under its heading
            line += f" {warm_s[0]:10.1f}" if warm_s else f" {'':>10}"
        if args.fuse:  # what --fuse gains: the pair fused against the pair as two lanes, timed in this run
            row = table[model]
            line += f" {row[heading((False, 'pair fused'))] / row[heading((False, 'pair'))]:10.2f}x"
        print(line, flush=True)
        if args.json:  # after every row, whole (temp file + rename): a run stopped at a time limit keeps the rows done
            atomic_write_bytes(args.json, json.dumps(table, indent=2).encode())  # rows in the order timed, not sorted


def plain_twin(name: str) -> str | None:
    """plainN for a residual 6n+2 net resnetN (the pair train.py --fuse trains as one network), else None."""
    info = model_info(name) if name in list_models() else {}
    return f"plain{info['depth']}" if info.get("family") == "cifar" and info.get("residual") else None


def heading(run: tuple[bool, int | str]) -> str:
    """The column heading of a timing of ours: (compiled, lanes), lanes a count of copies or "pair" or
    "pair fused" (the net and its plain twin)."""
    compiled, lanes = run
    copies = f" {lanes}" if isinstance(lanes, str) else f" x{lanes} lanes" if lanes > 1 else ""
    return f"{'compiled' if compiled else 'ours'}{copies} img/s"


def width(run: tuple[bool, int | str]) -> int:
    """The column width of a timing of ours: (compiled, lanes)."""
    return {(False, 1): 12, (True, 1): 16}.get(run, 30 if isinstance(run[1], int) else 21)


if __name__ == "__main__":
    main()
