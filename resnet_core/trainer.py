"""The training loop: several models side by side ("lanes") on one device, resumable, NaN-guarded, CUDA-graph fast."""
from __future__ import annotations

import copy
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from tqdm import tqdm

from .checkpoint import (REPO_ROOT, START_OVER, STATE_JSON, CheckpointError, read_json, read_run_state_meta,
                         read_run_state_tensors, recover_checkpoint, run_state_tensors_path, save_checkpoint,
                         storage_state, write_run_state)
from .data import (CIFAR10_MEAN, CIFAR10_STD, CLASSES, SEED_LIMIT, augment_batch, augmentation_plan, load_cifar10,
                   normalize, plan_fingerprint, resolve_data_dir)
from .explain import RECORDED_MISTAKES, confident_mistakes
from .fused import FusedNet, fusable, shape_key
from .models import build_model, model_info
from .paper import PAPER_ITERATIONS
from .probes import autocast_for, evaluate, first_epoch_reaching, per_class_accuracy, response_std

# Lanes run on up to ten CUDA streams; CUDA maps streams onto 8 hardware queues by default, so some lanes
# would wait on others for no reason. Read when CUDA starts, so it is set here, before any CUDA call.
os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "32")
# Resumable state is written at an epoch's end once this long has passed since the last write (and always at a
# model's end, on a signal, at --time-budget and --stop-after): a hard kill loses at most this much training,
# and a GPU whose epochs take seconds does not stop for ten lanes' worth of device-to-host copies every epoch.
SAVE_EVERY_S = 60.0
CPU_HINT_ITERATIONS = 10_000  # longer runs on the CPU get a note on what they cost and the alternatives
EVAL_BATCH = 2500  # test images per forward pass at each epoch's end
FINAL_BATCH = 1000  # per forward pass in the final fp32 scoring, as in report --verify: the same shapes, the same kernels
SYNC_EVERY = 50  # iterations between NaN/inf checks and torchrun's stop votes, both device syncs: ~8 an epoch, not 390
GRAPH_WARMUP_STEPS = 3  # eager steps before CUDA-graph capture: cuDNN/cuBLAS first-call set-up must happen outside it
RESPONSE_IMAGES = 1000  # Fig. 7's response std on the first 1,000 test images: on 100, plain-110's moves with the batch
BLOCK_RECOMPILE_LIMIT = 64  # dynamo's default 8 < the block shapes (10 for the 6n+2 nets); past it, blocks run eager


# -- configuration ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """SGD schedule, counted in iterations (one iteration = one batch)."""
    iterations: int = PAPER_ITERATIONS  # paper: stop at 64k
    batch_size: int = 128             # 1 to the training set's size; paper: 128, which lr 0.1 is tuned for
    lr: float = 0.1                   # > 0; paper: 0.1 (too large to start 110 layers, hence the warm-up)
    momentum: float = 0.9             # 0 to below 1 (at 1 the velocity never decays); paper: 0.9
    weight_decay: float = 1e-4        # on every parameter (the paper does not say which; reference code decays all)
    milestones: tuple[int, ...] = (32_000, 48_000)  # lr is multiplied by `gamma` at each
    gamma: float = 0.1                # 0 to 1, the lr's factor at each milestone; paper: 0.1 (lr /10)
    warmup_iters: int = 0             # paper: ResNet-110 uses lr 0.01 for ~400 iterations, then 0.1
    warmup_lr: float = 0.01           # > 0, below lr; paper: 0.01, until the training error is under 80 %


def paper_recipe(depth: int) -> Recipe:
    """He et al. (2016), Sec. 4.2; the nets of 110 layers and more (plain and residual alike) get the warm-up, which
    the paper gives ResNet-110 (README: Training)."""
    return Recipe(warmup_iters=400 if depth >= 110 else 0)


def seed_recipe(steps_per_epoch: int) -> Recipe:
    """The seed report's recipe: 200 epochs, lr /10 at epochs 60, 120 and 160."""
    return Recipe(iterations=200 * steps_per_epoch, milestones=tuple(e * steps_per_epoch for e in (60, 120, 160)))


def lr_at(it: int, recipe: Recipe) -> float:
    if it < recipe.warmup_iters:
        return recipe.warmup_lr
    return recipe.lr * recipe.gamma ** sum(it >= m for m in recipe.milestones)


@dataclass(frozen=True)
class RunConfig:
    model: str
    recipe: Recipe
    arch: dict = field(default_factory=dict)     # build_model overrides, e.g. {"shortcut": "B"}
    seed: int = 0
    limit_train: int | None = None               # first N training images (tiny runs)
    limit_test: int | None = None
    amp: bool = True                             # bf16 autocast on CUDA (on the CPU only with cpu_bf16)
    cpu_bf16: bool = False                       # bf16 autocast on the CPU too: pays only with AVX-512 BF16 or AMX
    channels_last: bool = True
    cuda_graphs: bool = True                     # capture each training step as one CUDA graph
    compile: bool = False                        # blocks through torch.compile (inductor): see compiled_forward
    publish_weights: bool = True                 # False: publish curves and metrics only (too-large models)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- one model in training ----------------------------------------------------------------------------
@dataclass(eq=False)  # a lane is itself: compared by identity, never field by field (tensors)
class Lane:
    """A model, its SGD state and its running statistics, all as device tensors so that a step needs
    no CPU sync and can be captured in a CUDA graph."""
    cfg: RunConfig
    model: torch.nn.Module
    params: list[torch.Tensor]
    momentum: list[torch.Tensor]
    layer_names: list[str]
    layer_weights: list[torch.Tensor]
    lr: torch.Tensor                     # 0-dim, so the schedule can change it under a captured graph
    stats: dict[str, torch.Tensor]       # running sums over the current epoch
    history: list[dict] = field(default_factory=list)
    iteration: int = 0
    wall_time_s: float = 0.0                 # training so far, as of the last stamp_wall_time() (saved in state.json)
    clock_zero: float = 0.0                  # the perf_counter() reading at which this lane's wall_time_s was 0
    forward: object = None                   # the DDP wrapper, compiled_forward(model), or the model itself
    graph: object = None
    stream: object = None
    eager_steps: int = 0                     # steps run eagerly on `stream` in this process: the warm-up before capture
    finished: bool = False
    lr_value: float | None = None            # the Python-side copy of `lr`, to skip needless fills
    sittings: list = field(default_factory=list)  # {start (iteration), device, precision, compile} of each sitting
    saved_at: float = -math.inf              # perf_counter() of the last save_state in this process (none yet)
    saved_iteration: int | None = None       # where the state on disk is (None: none saved), what a stop keeps
    data_sha256: str | None = None           # of the images and labels it trains and is tested on (Data.sha256)
    plan_sha256: str | None = None           # data.plan_fingerprint of the torch that saved/trains it (None: not known)
    saved_torch: str | None = None           # torch.__version__ of the sitting that saved the state it resumed
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # one run, whatever its sittings: state and checkpoint
    group: "FusedGroup | None" = None        # trained fused with other lanes of its depth (--fuse), while all go on

    @property
    def name(self) -> str:
        return self.cfg.model

    def stamp_wall_time(self) -> None:
        """Wall time up to now: every second of the run(s) that trained this lane, evaluation and saving included.
        Lanes side by side share one clock, so each one's time is the whole run's, not its share of it."""
        self.wall_time_s = time.perf_counter() - self.clock_zero


@dataclass(eq=False)
class FusedGroup:
    """Lanes of one depth trained as one FusedNet (--fuse): one forward and backward pass, one graph, one stream;
    then each lane's own statistics and SGD update on its slices. The lanes' models alias the fused weights, so
    everything else (evaluation, saving, publishing) goes on per lane as before. Dissolved, for good, when a lane
    leaves the run before the others (it diverged): the rest then train as lanes of their own."""
    lanes: list[Lane]
    net: FusedNet
    layer_index: list[list[int]]             # per lane: where its layer weights are in its params
    graph: object = None
    stream: object = None
    eager_steps: int = 0


def lane_cost(lane: Lane) -> int:
    """Weight layers: how long the lane's step takes, near enough to pick the slowest."""
    return len(lane.layer_weights)


def fuse_key(lane: Lane) -> tuple | None:
    """Lanes with one key (not None) can train fused: one layer shape, one recipe, the same flags, at one iteration.
    None: this lane cannot (not a CIFAR 6n+2 net with option A or no shortcuts, or compiled)."""
    if lane.cfg.compile or lane.finished or fusable(lane.model) is not None:
        return None
    c = lane.cfg
    return (shape_key(lane.model), c.recipe, c.amp, c.cpu_bf16, c.channels_last, c.cuda_graphs, lane.iteration,
            str(lane.params[0].device))


def fuse_lanes(lanes: list[Lane]) -> list[FusedGroup]:
    """Group the lanes that can train fused (fuse_key): each group of two or more becomes one FusedNet, which its
    lanes' models then alias. Lanes of no group are left as they are."""
    by_key: dict[tuple, list[Lane]] = {}
    for lane in lanes:
        if (key := fuse_key(lane)) is not None:
            by_key.setdefault(key, []).append(lane)
    groups = []
    for members in by_key.values():
        if len(members) < 2:
            continue
        net = FusedNet([lane.model for lane in members]).train()
        index = [[next(i for i, p in enumerate(lane.params) if p is w) for w in lane.layer_weights] for lane in members]
        group = FusedGroup(lanes=members, net=net, layer_index=index)
        for lane in members:
            lane.group = group
        groups.append(group)
    return groups


def dissolve(group: FusedGroup) -> None:
    """Each lane of the group trains on its own from now on (its model still holds the fused weights, as views);
    this sitting's record says up to which iteration it was fused."""
    for lane in group.lanes:
        lane.group, lane.graph, lane.eager_steps = None, None, 0
        if lane.sittings and "fused_with" in lane.sittings[-1]:
            lane.sittings[-1]["fused_until"] = lane.iteration
    group.graph = None


def new_stats(n_layers: int, device) -> dict[str, torch.Tensor]:
    return dict(loss_sum=torch.zeros((), device=device, dtype=torch.float64),
                correct=torch.zeros((), device=device, dtype=torch.long),
                steps=torch.zeros((), device=device, dtype=torch.long),
                grad_norm_sum=torch.zeros(n_layers, device=device, dtype=torch.float64),
                first_bad=torch.full((), -1, device=device, dtype=torch.long),
                iteration=torch.zeros((), device=device, dtype=torch.long))


def make_lane(cfg: RunConfig, device: torch.device) -> Lane:
    torch.manual_seed(cfg.seed)  # the same init for a given (model, seed), whichever lanes run beside it
    model = build_model(cfg.model, **cfg.arch).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = list(model.parameters())
    names, weights = zip(*model.weight_layers())
    return Lane(cfg=cfg, model=model, params=params, momentum=[torch.zeros_like(p) for p in params],
                layer_names=list(names), layer_weights=list(weights),
                lr=torch.tensor(lr_at(0, cfg.recipe), device=device), stats=new_stats(len(names), device),
                forward=compiled_forward(model) if cfg.compile else model)


def compiled_forward(model: torch.nn.Module):
    """model's forward with every block called through one torch.compile'd function: inductor fuses each block's
    BN, ReLU and addition, which eager runs as separate kernels. The function is shared, so blocks of one shape
    share one compiled graph whichever lane or depth they belong to (ten shapes for the ten 6n+2 nets, plain and
    residual), and inductor's cache on disk serves a later run. The stem and head stay eager. The model itself is
    left as it was: evaluation, probes and publishing call it uncompiled. Training only: the step's forward."""
    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), BLOCK_RECOMPILE_LIMIT))
    blocks = model.blocks()

    def forward(x):
        x = model.stem(x)
        for block in blocks:
            x = block_compiler()(block, x)
        return model.forward_head(x)
    return forward


def compile_failure(error: BaseException) -> bool:
    """Whether `error` is torch.compile's own (tracing, or inductor's code generation: no C++ compiler, no Triton,
    an unsupported op): --compile cannot run on this machine, which a training run then says in one line."""
    import torch._dynamo.exc  # loaded by any torch.compile call; here for the isinstance
    return isinstance(error, torch._dynamo.exc.TorchDynamoException) or \
        type(error).__module__.startswith("torch._inductor")


def error_line(error: BaseException) -> str:
    """'TorchDynamoException: backend failed ...': the error's type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _call_block(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return block(x)


@functools.cache
def block_compiler():
    """The one compiled block function of this process (torch.compile compiles on first call, per block shape)."""
    return torch.compile(_call_block, dynamic=False)


def sgd_step(params, grads, momentum, lr: torch.Tensor, mu: float, weight_decay: float) -> None:
    """torch.optim.SGD's update (dampening 0, no Nesterov), with lr kept in a device tensor: the
    stock optimizer turns a tensor lr into a Python float, which is a sync that breaks graph capture."""
    torch._foreach_add_(grads, params, alpha=weight_decay)
    torch._foreach_mul_(momentum, mu)
    torch._foreach_add_(momentum, grads)
    torch._foreach_add_(params, torch._foreach_mul(momentum, lr), alpha=-1.0)


def train_step(lane: Lane, x: torch.Tensor, y: torch.Tensor) -> None:
    """One SGD iteration on a batch. Device work only: no .item(), no Python branch on data."""
    r = lane.cfg.recipe
    for p in lane.params:
        p.grad = None
    with autocast_for(x.device, uses_bf16(lane.cfg, x.device)):
        logits = lane.forward(x)
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    with torch.no_grad():
        record_step(lane, loss, logits, y, [w.grad for w in lane.layer_weights])
        sgd_step(lane.params, [p.grad for p in lane.params], lane.momentum, lane.lr, r.momentum, r.weight_decay)


def fused_train_step(group: FusedGroup, x: torch.Tensor, y: torch.Tensor) -> None:
    """One SGD iteration of every lane of the group, through one pass of the fused net: the summed losses give each
    lane exactly its own gradients (nothing in the net mixes them), then each lane records and updates as alone."""
    net = group.net
    for p in net.parameters():
        p.grad = None
    cfg = group.lanes[0].cfg
    with autocast_for(x.device, uses_bf16(cfg, x.device)):
        logits = net(x)  # (batch, lanes, classes)
    losses = [F.cross_entropy(logits[:, k].float(), y) for k in range(len(group.lanes))]
    torch.stack(losses).sum().backward()
    with torch.no_grad():
        for k, lane in enumerate(group.lanes):
            grads = net.member_grads(k)
            record_step(lane, losses[k], logits[:, k], y, [grads[i] for i in group.layer_index[k]])
            r = lane.cfg.recipe
            sgd_step(lane.params, grads, lane.momentum, lane.lr, r.momentum, r.weight_decay)


def record_step(lane: Lane, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, layer_grads) -> None:
    """Add one step to the lane's running sums: loss, correct, the weight layers' gradient norms, and the first
    iteration whose loss was not finite."""
    s = lane.stats
    s["grad_norm_sum"] += torch.stack(torch._foreach_norm(layer_grads)).double()
    s["loss_sum"] += loss.detach().double()
    s["correct"] += (logits.argmax(1) == y).sum()
    s["steps"] += 1
    bad = ~torch.isfinite(loss.detach())
    s["first_bad"].copy_(torch.where(bad & (s["first_bad"] < 0), s["iteration"], s["first_bad"]))
    s["iteration"] += 1


def unit_step(unit: Lane | FusedGroup, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step of a lane, or of a fused group of lanes."""
    if isinstance(unit, FusedGroup):
        fused_train_step(unit, x, y)
    else:
        train_step(unit, x, y)


def capture_step(unit: Lane | FusedGroup, x: torch.Tensor, y: torch.Tensor) -> None:
    """Record one training step as a CUDA graph on the lane's (or group's) stream, after eager warm-up steps there.
    Capture records kernels without running them; every later step is one replay, no Python."""
    unit.graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(unit.graph, stream=unit.stream):
        unit_step(unit, x, y)
    for lane in unit.lanes if isinstance(unit, FusedGroup) else [unit]:
        if lane.sittings:  # kept with the state: a later sitting that only publishes captures nothing
            lane.sittings[-1]["cuda_graphs"] = True


def run_step(unit: Lane | FusedGroup, x: torch.Tensor, y: torch.Tensor) -> None:
    """The step on the lane's (or group's) own CUDA stream, so that lanes overlap on the GPU, as a graph replay once
    captured."""
    if unit.stream is None:
        unit_step(unit, x, y)
        return
    with torch.cuda.stream(unit.stream):
        if unit.graph is not None:
            unit.graph.replay()
        else:
            unit_step(unit, x, y)
            unit.eager_steps += 1


def step_units(lanes: list[Lane]) -> list[Lane | FusedGroup]:
    """What steps this iteration: each fused group whose lanes all do, as one, and every other lane alone. A group
    missing a lane (it left the run: diverged) is dissolved first."""
    units, taken = [], set()
    for lane in lanes:
        group = lane.group
        if group is None:
            units.append(lane)
        elif id(group) not in taken:
            if all(member in lanes for member in group.lanes):
                units.append(group)
                taken.add(id(group))
            else:
                dissolve(group)
                units.append(lane)
    return units


def uses_bf16(cfg: RunConfig, device: torch.device) -> bool:
    """Whether the run computes in bf16 autocast on `device`: on CUDA unless --no-amp; on the CPU only when
    asked (--cpu-bf16), since it is 1.6-1.75x faster with AVX-512 BF16 (bench/train_throughput.py on the
    development machine's 2 cores: resnet20 902 against 568 images/s) and far slower without."""
    return cfg.amp and (device.type == "cuda" or (device.type == "cpu" and cfg.cpu_bf16))


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 in hardware (AVX-512 BF16 or AMX), as oneDNN reports it."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True  # unknown: say nothing
    except RuntimeError:
        return True


def precision(cfg: RunConfig, device: torch.device) -> str:
    """uses_bf16 in words, as config.json and the model card say it."""
    return "bf16 autocast" if uses_bf16(cfg, device) else "fp32"


def rank_rows(perm: torch.Tensor, step: int, batch: int, rank: int, world: int) -> torch.Tensor:
    """This process's share of the epoch's step-th batch of `perm` (the epoch's order): under torchrun each of the
    `world` ranks takes its own consecutive batch // world of the batch, so together they train on the whole batch
    one process would, each image once."""
    local = batch // world
    return perm[step * batch + rank * local: step * batch + (rank + 1) * local]


@torch.no_grad()
def fill_batch(data: "Data", idx: torch.Tensor, offsets, flips, x: torch.Tensor, y: torch.Tensor) -> None:
    """Augment the images `idx` on the device and write them into the static batch buffers x, y."""
    x.copy_(normalize(augment_batch(data.train_x, idx, offsets, flips), data.mean, data.std))
    y.copy_(data.train_y[idx])


def step_lanes(lanes: list[Lane], x: torch.Tensor, y: torch.Tensor, it: int, capture: bool) -> None:
    """Iteration `it` for every lane on the batch in (x, y). On CUDA each lane runs on its own stream,
    so the small kernels of several models overlap; `capture` turns each lane's step into a graph once
    the lane has run GRAPH_WARMUP_STEPS eager steps on its stream (cuDNN autotuning, cuBLAS workspaces and other
    first-call set-up must not happen inside a capture), also when a lane joins late (resumed ahead)."""
    for lane in lanes:
        new_lr = lr_at(it, lane.cfg.recipe)
        if new_lr != lane.lr_value:
            lane.lr.fill_(new_lr)
            lane.lr_value = new_lr
    units = step_units(lanes)
    ready = [unit for unit in units if capture and unit.graph is None and unit.stream is not None
             and unit.eager_steps >= GRAPH_WARMUP_STEPS]
    if ready:
        torch.cuda.synchronize()  # capture the ready lanes at once, with nothing else in flight
        for unit in ready:
            capture_step(unit, x, y)
    for unit in units:
        if unit.stream is not None:  # start once this batch (and the lr) is written
            unit.stream.wait_stream(torch.cuda.current_stream())
        run_step(unit, x, y)
    for lane in lanes:
        lane.iteration += 1
    for unit in units:  # the next batch overwrites x: wait until every lane has read it
        if unit.stream is not None:
            torch.cuda.current_stream().wait_stream(unit.stream)


# -- resumable state (safetensors + JSON, nothing pickled) ------------------------------------------
def state_tensors(lane: Lane) -> dict[str, torch.Tensor]:
    """The lane's weights, momentum and BN statistics by the names a state file holds them under (model.*,
    momentum.<i>, stats.*): the tensors themselves, so that load_state copies into them."""
    tensors = {f"model.{k}": v for k, v in lane.model.state_dict().items()}
    tensors.update({f"momentum.{i}": m for i, m in enumerate(lane.momentum)})
    tensors.update({f"stats.{k}": v for k, v in lane.stats.items()})
    return tensors


def save_state(lane: Lane, state_dir: Path, command: str | None = None) -> None:
    """The lane's weights, momentum and BN statistics, and a state.json with where it is and the command that
    started it (so that whoever resumes it, on another machine, can repeat that command's options), written as
    write_run_state does: a save killed halfway leaves the previous state whole."""
    write_run_state(Path(state_dir) / lane.name, state_tensors(lane),
                    dict(config=lane.cfg.to_dict(), iteration=lane.iteration, wall_time_s=lane.wall_time_s,
                         history=lane.history, finished=lane.finished, layers=lane.layer_names, command=command,
                         sittings=lane.sittings, run_id=lane.run_id, data_sha256=lane.data_sha256,
                         plan_sha256=lane.plan_sha256, torch=torch.__version__))


def arch_options(model: str, arch: dict) -> dict:
    """`arch` without the options that are `model`'s defaults (shortcut A of resnet20, B of resnet18, its class
    count): the same net, however a run named it, has one config, and a resume that names it otherwise is no
    change of net."""
    info = model_info(model)
    defaults = dict(shortcut=info["default_shortcut"] if info["residual"] else "none", num_classes=info["num_classes"])
    return {k: v for k, v in arch.items() if k not in defaults or defaults[k] != v}


def resume_changes(saved: dict, current: dict) -> list[str]:
    """'lr 0.1 -> 0.02' for each option that a resume must keep and that differs between the saved run's config
    and this one's: the model, seed and data (limit_train, limit_test), the recipe and the net, field by field."""
    def said(value) -> str:
        return "not set" if value is None else str(value)

    changes = [f"{k} {said(saved.get(k))} -> {said(current[k])}" for k in ("model", "seed", "limit_train", "limit_test")
               if saved.get(k) != current[k]]
    fields = [(saved.get("recipe"), current["recipe"])]
    if saved.get("model") == current["model"] and isinstance(saved.get("arch", {}), dict):
        fields.append((arch_options(current["model"], saved.get("arch", {})),
                       arch_options(current["model"], current["arch"])))
    for old, new in fields:
        old = old if isinstance(old, dict) else {}
        changes += [f"{k} {said(old.get(k))} -> {said(new.get(k))}" for k in [*new, *(k for k in old if k not in new)]
                    if old.get(k) != new.get(k)]
    return changes


def load_state(lane: Lane, state_dir: Path, meta: dict) -> None:
    """Put the saved run (meta: its state.json, from read_run_state_meta) into the lane."""
    folder = Path(state_dir) / lane.name
    tensors_path = run_state_tensors_path(folder, meta)
    saved, current = meta["config"], json.loads(json.dumps(lane.cfg.to_dict()))
    changes = resume_changes(saved, current)
    if changes:
        raise SystemExit(f"error: {folder / STATE_JSON} was made with other options ({'; '.join(changes)}); resume "
                         f"with the ones it was made with, or {START_OVER}")
    targets = state_tensors(lane)
    tensors = read_run_state_tensors(tensors_path, targets)
    with torch.no_grad():
        for k, v in targets.items():
            v.copy_(tensors[k])
    lane.iteration, lane.wall_time_s = meta["iteration"], meta["wall_time_s"]
    lane.history, lane.finished = meta["history"], meta["finished"]
    lane.sittings = meta.get("sittings") or [legacy_sitting(saved)]
    lane.run_id = meta.get("run_id") or lane.run_id  # a state saved before runs had an id gets one now
    lane.saved_iteration, lane.data_sha256 = lane.iteration, meta.get("data_sha256")
    lane.plan_sha256, lane.saved_torch = meta.get("plan_sha256"), meta.get("torch")


def legacy_sitting(config: dict) -> dict:
    """The first sitting of a state saved before sittings were recorded: its device is unknown, and so is its
    arithmetic, unless its flags give the same on any device."""
    amp, cpu_bf16 = config.get("amp", True), config.get("cpu_bf16", False)
    return dict(start=0, device=None, precision="fp32" if not amp else ("bf16 autocast" if cpu_bf16 else None))


def run_compiled(sittings: list[dict]) -> bool | str:
    """Whether the run's step went through compiled_forward: True or False when every sitting agrees, else 'partly'
    (each sitting's `compile` says when). A sitting that did not record it counts as eager: sittings record it since
    --compile came, and no state of a compiled run saved before that exists."""
    used = {bool(sitting.get("compile")) for sitting in sittings}
    return used.pop() if len(used) == 1 else "partly"


def run_precision(sittings: list[dict]) -> str:
    """The arithmetic of a run over all its sittings: 'bf16 autocast', or 'mixed: fp32 for iterations 0 to 7, then
    bf16 autocast' where a resume changed it (an unknown one reads 'unrecorded')."""
    spans = []  # [precision, first iteration], a resume that kept the arithmetic continuing the span before it
    for sitting in sittings:
        said = sitting.get("precision") or "unrecorded"
        if not spans or spans[-1][0] != said:
            spans.append([said, sitting["start"]])
    if len(spans) == 1:
        return spans[0][0]
    return "mixed: " + ", then ".join(f"{said} for iterations {start:,} to {end:,}" for (said, start), (_, end)
                                      in zip(spans, spans[1:])) + f", then {spans[-1][0]}"


# -- data ---------------------------------------------------------------------------------------------
@dataclass
class Data:
    train_x: torch.Tensor   # (N, 32, 32, 3) uint8 on the device
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    sha256: str | None = None  # of the four tensors' bytes: the same data in any layout, on any machine


def load_data(data_dir: str | None, limit_train: int | None, limit_test: int | None, device) -> Data:
    root = resolve_data_dir(data_dir)
    train_x, train_y = load_cifar10(root, "train", limit=limit_train)
    test_x, test_y = load_cifar10(root, "test", limit=limit_test)
    digest = hashlib.sha256()  # the content, not the files' names or dates: a copy on a GPU machine is the same data
    for t in (train_x, train_y, test_x, test_y):
        digest.update(t.contiguous().numpy())
    return Data(train_x.to(device), train_y.to(device), test_x.to(device), test_y.to(device),
                torch.tensor(CIFAR10_MEAN, device=device), torch.tensor(CIFAR10_STD, device=device), digest.hexdigest())


# -- the loop ---------------------------------------------------------------------------------------
class Stop:
    """Set by SIGINT/SIGTERM; the loop saves state at the next iteration and exits."""
    requested: str | None = None


def _on_signal(signum, _frame):
    if Stop.requested is not None:  # a second Ctrl-C: the user really wants out (train.py: one line, exit 130)
        raise KeyboardInterrupt
    Stop.requested = signal.Signals(signum).name
    if os.environ.get("RANK", "0") == "0":  # said at once (a deep net's step takes seconds on a CPU), by one rank
        tqdm.write(f"{Stop.requested}: stopping at the next step, after saving the state; Ctrl-C again stops at "
                   "once, without saving", file=sys.stderr)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def pick_device(name: str | None) -> torch.device:
    """A --device option as a torch.device: cpu, cuda or cuda:N; none given, cuda where there is one, else cpu. A
    name torch does not know, another kind of device, or a GPU this machine lacks raises ValueError, whose text is
    the one line a command prints (no traceback from deep inside torch after the data has loaded)."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name}: not a device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: this project runs on cpu or cuda (cuda:N) only")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ValueError(f"--device {name}: no CUDA GPU on this machine; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: this machine has {count} GPU{'s' if count > 1 else ''} "
                             f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's core count, model and widest vector instructions torch uses on it: two 2-core
    machines differ twofold in speed (AVX-512 BF16 against AVX2), so times recorded on "a CPU" need the model."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({', '.join(cpu_description())})"


@functools.cache
def cpu_description() -> tuple[str, ...]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:  # not Linux
        pass
    if not model and sys.platform == "darwin":  # macOS names its chip here ("Apple M2")
        try:
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    model = model or platform.machine()  # Arm Linux lists no "model name": at least "aarch64"
    capability = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", "DEFAULT", ...
    return tuple(x for x in (f"{os.cpu_count()} cores", model, capability) if x and x != "DEFAULT")


class TrainingDiverged(RuntimeError):
    """Raised at the end of a run in which some nets went NaN/inf; `status` is train()'s return for every net (the
    others finished and are published, or stopped), so that train.py still pushes those that finished."""

    def __init__(self, message: str, status: dict[str, str]):
        super().__init__(message)
        self.status = status


class WriteFailed(RuntimeError):
    """A state or a checkpoint could not be written (disk full, a folder taken away): the run stops there, the
    states saved before it whole (atomic writes); train.py says it in one line and exits 5."""


class ConfigError(ValueError):
    """Options that make no run (a batch larger than the training set, ...): train.py says it in one line."""


def writable_folder(path: Path, option: str) -> None:
    """Make `path` a folder if it is none yet and check that files can be written in it, or stop, naming `option`:
    found at the start, not when the first save or the publish fails after hours of training."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        why = "a file, not a folder" if path.exists() and not path.is_dir() else (e.strerror or str(e))
        raise SystemExit(f"error: {option} {path} is not a folder this run can write in ({why}); "
                         f"pass {option} with one that is") from None


def lock_state(folder: Path, locks: ExitStack) -> None:
    """Lock a model's state folder until `locks` closes, or stop: two runs of one model sharing --state-dir (two
    shells, a queue started twice) would each save over the other's state and publish over its checkpoint. An
    flock on `.lock` in the folder: it goes with the process however that ends, and the file stays (removing it
    would let a third run lock a new file while the second holds the old one)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)  # writable: NFS emulates flock by fcntl locks
    except OSError as e:
        raise SystemExit(f"error: cannot lock {folder} ({e.strerror or e}); pass --state-dir with a folder this run "
                         f"can write in") from None
    locks.callback(os.close, fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"error: another run is training {folder.name} with its state in {folder}; wait for it "
                         f"to end, or give this run its own --state-dir and --out") from None
    except OSError as e:  # a file system without locks (ENOLCK, EOPNOTSUPP)
        raise SystemExit(f"error: cannot lock {folder} ({e.strerror or e}); pass --state-dir with a folder on a "
                         f"local disk") from None


def published_by(folder: Path) -> str | None:
    """The run_id of the run that published the checkpoint in `folder` (None: none there, or one published
    before runs had an id)."""
    try:
        run_id = read_json(folder / "config.json").get("run_id")
    except CheckpointError:
        return None
    return run_id if isinstance(run_id, str) else None


def published_folder(out_dir: Path, state_dir: Path, model: str) -> Path:
    """Where the run saved in state_dir published `model`: out_dir/<model>, or out_dir/<model>-run<id> when another
    run's checkpoint held that folder when it published (see publish)."""
    meta = read_run_state_meta(Path(state_dir) / model)
    run_id = meta.get("run_id") if meta else None
    ours = published_by_run(out_dir, model, run_id) if isinstance(run_id, str) else None
    return ours or Path(out_dir) / model


def published_by_run(out_dir: Path, model: str, run_id: str) -> Path | None:
    """Where the run `run_id` published `model` (out_dir/<model> or its diverted_name), or None: not (yet)."""
    return next((folder for folder in (Path(out_dir) / model, Path(out_dir) / diverted_name(model, run_id))
                 if published_by(folder) == run_id), None)


def diverted_name(model: str, run_id: str) -> str:
    """The folder a finished run publishes into when another run published `model` while it trained."""
    return f"{model}-run{run_id[:8]}"


def published_checkpoint(folder: Path) -> str | None:
    """What the checkpoint folder a model publishes into holds, in words ("a published checkpoint of resnet56
    (64,000 iterations on NVIDIA H200)", as far as its config.json says), or None when it holds none (no
    config.json: nothing published there)."""
    path = folder / "config.json"
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        config = read_json(path)
    except CheckpointError:  # unreadable, not JSON, not an object: still a checkpoint's place
        return "a published checkpoint"
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else {}
    iterations, device, model = recipe.get("iterations"), config.get("device"), config.get("model")
    said = " ".join(w for w in (
        f"{iterations:,} iterations" if isinstance(iterations, int) and not isinstance(iterations, bool) else "",
        f"on {device}" if isinstance(device, str) and device else "") if w)
    return (f"a published checkpoint{f' of {model}' if isinstance(model, str) and model else ''}"
            f"{f' ({said})' if said else ''}")


def check_configs(configs: list[RunConfig], out_dir: Path, state_dir: Path) -> None:
    """Refuse options that make no run before anything is locked, read or loaded: a refusal costs a second."""
    first = configs[0]
    if len({c.model for c in configs}) < len(configs):
        raise ConfigError(f"a model named twice: {', '.join(c.model for c in configs)}")
    for c in configs:
        if (c.recipe.batch_size, c.seed, c.limit_train) != (first.recipe.batch_size, first.seed, first.limit_train):
            raise ConfigError("models trained side by side must share batch size, seed and training set")
        if not 0 <= c.seed < SEED_LIMIT:
            raise ConfigError(f"seed {c.seed} is not in 0 to {SEED_LIMIT - 1}")
        # Publishing replaces out_dir/<model> whole: a state folder that is it, or inside it, would go with it
        # (its .lock too), and the final state would then be written into the published checkpoint.
        published, kept = (Path(out_dir) / c.model).resolve(), (Path(state_dir) / c.model).resolve()
        if kept == published or published in kept.parents:
            raise SystemExit(f"error: --out {out_dir} and --state-dir {state_dir} overlap: publishing {c.model} "
                             f"would replace {published} whole, and with it its resumable state in {kept}; "
                             f"give them separate folders (the defaults are checkpoints/ and runs/)")


def training_device(device: str | torch.device | None) -> torch.device:
    """The device to train on (cuda where there is one, none named), made current, with cuDNN's autotuner on."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if device.index is not None:  # step_lanes' current_stream() and synchronize() act on the current device
            torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    return device


def refuse_replacing_published(lanes: list[Lane], out_dir: Path) -> None:
    """Refuse at the start a run whose publish would replace a published checkpoint: never lose one by accident."""
    # Each lane still to train (a resumed one too; not one skipped as finished) publishes into out_dir/<model> at its
    # end, and that replaces the folder whole. A pure file check, before any collective: under DDP every rank reads
    # the same files and decides alike. One at its last iteration (its publish failed) only publishes, and publish()
    # goes beside a checkpoint another run put there meanwhile.
    in_the_way = [(lane, held) for lane in lanes if lane.iteration < lane.cfg.recipe.iterations
                  and (held := published_checkpoint(Path(out_dir) / lane.name)) is not None]
    if in_the_way:
        folders = "; ".join(f"{Path(out_dir) / lane.name} holds {held}, which this run "
                            f"({lane.cfg.recipe.iterations:,} iterations) would replace when it finishes"
                            for lane, held in in_the_way)
        raise SystemExit(f"error: {folders}; pass --out DIR to publish elsewhere, or --overwrite to replace "
                         f"{'it' if len(in_the_way) == 1 else 'them'}")


def match_saved_data(lanes: list[Lane], data: Data, state_dir: Path, data_dir: str | None) -> None:
    """Refuse to resume a lane on other images than its state's (it would go on with other data); record them."""
    for lane in lanes:
        if lane.data_sha256 not in (None, data.sha256):  # a state saved before the data were recorded: None
            raise SystemExit(f"error: {Path(state_dir) / lane.name / STATE_JSON} was made with other training or "
                             f"test images than {data_dir or 'the data folder'} holds (their SHA-256 differs); "
                             f"resume with the data it was made with, or {START_OVER}")
        lane.data_sha256 = data.sha256


def match_saved_plan(lanes: list[Lane], plan: str, say) -> None:
    """Say when a resumed lane gets another augmentation plan (another torch): no exact continuation; record it."""
    for lane in lanes:
        if lane.plan_sha256 not in (None, plan):  # another torch's generator: the plans are no longer the same
            say(f"note: {lane.name}: this torch ({torch.__version__}) draws other data orders, crops and flips "
                f"than the one that saved its state ({lane.saved_torch or 'another version'}); the rest of the "
                f"run trains on the same images, augmented alike, but is not the exact continuation")
        lane.plan_sha256 = plan


def epoch_steps(n_train: int, batch: int, world: int) -> int:
    """Iterations per epoch, less the last partial batch (every step one shape); a batch that makes none is refused."""
    if batch % world:
        raise ConfigError(f"batch size {batch} does not split over {world} processes")
    if n_train // batch == 0:
        raise ConfigError(f"{n_train} training images is less than one batch of {batch}")
    return n_train // batch


def prepare_lanes(lanes: list[Lane], device: torch.device, ddp: bool, use_graphs: bool) -> None:
    """DDP wrappers under torchrun, and a CUDA stream for each graphed lane, so that the lanes' kernels overlap."""
    slowest = max(map(lane_cost, lanes))
    for lane in lanes:
        if ddp:  # DDP calls the model's own forward: compile is not used under torchrun (config.json says so)
            lane.forward = torch.nn.parallel.DistributedDataParallel(
                lane.model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        if use_graphs and lane.cfg.cuda_graphs:  # the deepest lanes set the pace of the lockstep: first on the SMs
            lane.stream = torch.cuda.Stream(device, priority=-1 if lane_cost(lane) == slowest else 0)


def fuse_for_run(lanes: list[Lane], ddp: bool, say) -> None:
    """--fuse: fuse the lanes that can (fuse_lanes), record it in their sittings, and say what was fused, or why not."""
    groups = fuse_lanes(lanes) if not ddp else []
    for group in groups:
        group.stream = group.lanes[0].stream  # its lanes' own streams wait in case the group is dissolved
        for lane in group.lanes:
            if lane.sittings and lane.sittings[-1]["start"] == lane.iteration:
                lane.sittings[-1]["fused_with"] = [m.name for m in group.lanes if m is not lane]
        say(f"fused: {', '.join(m.name for m in group.lanes)} train as one network (--fuse)")
    if not groups:
        why = " (not under torchrun)" if ddp else \
            " (compiled nets are not fused: --compile)" if any(lane.cfg.compile for lane in lanes) else ""
        say(f"note: --fuse found nothing to fuse{why}: it joins a plain and a residual 6n+2 net of one depth "
            "(option A) at one iteration, not compiled, and not under torchrun; each model trains as its own lane")


def cpu_notes(cfg: RunConfig, device: torch.device, iterations: int) -> list[str]:
    """What a run on the CPU is told before it takes hours: that bf16 is in software here, and the faster ways."""
    notes = []
    if device.type == "cpu" and uses_bf16(cfg, device) and not cpu_has_bf16():
        notes.append("note: this CPU computes bf16 in software (no AVX-512 BF16 or AMX), which makes --cpu-bf16 about "
                     "ten times slower than fp32 here (AVX2, 2026-12-01: 14 s against 1 s an iteration for two "
                     "32-layer nets); leave it out on this machine")
    if device.type == "cpu" and iterations > CPU_HINT_ITERATIONS:
        notes.append(f"note: {iterations:,} iterations on the CPU take hours (the bar's ETA says how many); "
                     "`--epochs 15` gives the short runs bundled in checkpoints/, and one GPU runs the paper's "
                     "schedule in minutes. Ctrl-C saves the run; `--resume` continues it.")
    return notes


def train(configs: list[RunConfig], *, data_dir: str | None = None, out_dir: Path = REPO_ROOT / "checkpoints",
          state_dir: Path = REPO_ROOT / "runs", device: str | torch.device | None = None, resume: bool = False,
          restart: bool = False, time_budget_s: float | None = None, stop_after: int | None = None,
          command: str | None = None, overwrite: bool = False, fuse: bool = False,
          log=print) -> dict[str, str]:
    """Train `configs` side by side, in lockstep on one shared, identically augmented batch stream.
    Returns {model: "finished" | "stopped" | "skipped"}. A lane whose loss, test loss, weights or BN statistics go
    NaN/inf stops there (its last good state kept) while the others go on; then TrainingDiverged is raised at the
    end, naming each one. A model that would publish into a folder of out_dir that holds a published checkpoint
    already is refused at the start (SystemExit), before any data is loaded, unless overwrite=True; so is one whose
    state folder another run holds locked (lock_state: held until this call returns), one whose state folder its
    publish would replace, and an out_dir or state_dir that cannot be written in. Options that make no run raise
    ConfigError; a state or checkpoint that cannot be written (disk full) stops the run with WriteFailed.
    time_budget_s counts from this call, the data's loading and the models' set-up included, so that a run given
    the minutes a device session has left stops inside them.
    fuse=True trains the lanes of one CIFAR depth (plainN beside resnetN) as one FusedNet: fewer, wider kernels
    on a GPU, the same arithmetic (fuse_lanes; not under DDP, nor with compile)."""
    with ExitStack() as locks:
        t_called = time.perf_counter()
        first = configs[0]
        check_configs(configs, out_dir, state_dir)
        ddp = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
        device = training_device(device)
        is_main = rank == 0
        say = log if is_main else (lambda *a, **k: None)
        locked: set[str] = set()

        def lock(name: str) -> None:  # rank 0 alone writes state and checkpoints, so it alone locks
            if is_main and name not in locked:
                lock_state(Path(state_dir) / name, locks)
                locked.add(name)

        # Never overwrite an unfinished run by accident: no silent loss of a training run.
        lanes, status = [], {}
        for cfg in configs:
            if (Path(state_dir) / cfg.model).is_dir():  # another run training it now: say that, not what its state says
                lock(cfg.model)
            # A publish killed halfway: first, its checkpoint back. After the lock: a second start of the same command
            # must not move things while the first run publishes.
            if said := recover_checkpoint(out_dir, cfg.model):
                say(said)
            meta = None if restart else read_run_state_meta(Path(state_dir) / cfg.model)
            if meta and not meta["finished"] and meta.get("run_id") and (
                    ours := published_by_run(out_dir, cfg.model, meta["run_id"])):
                # killed after publishing and before saving its final state: done, with or without --resume
                status[cfg.model] = "skipped"
                say(f"{cfg.model}: already published by this run in {ours} (it stopped before saving its final "
                    f"state, at iteration {meta['iteration']:,}); skipping. To train it again: --restart --overwrite")
                continue
            elif meta is None and resume and not restart:  # carried state missing: starting afresh would waste the run
                raise SystemExit(f"error: --resume, but {state_dir} holds no saved run of {cfg.model}; bring its state "
                                 f"folder there, or leave {cfg.model} out (or drop --resume to start it from scratch)")
            elif meta and not resume and not meta["finished"]:
                raise SystemExit(f"error: {Path(state_dir) / cfg.model} holds an unfinished run of "
                                 f"{cfg.model} (iteration {meta['iteration']:,}); pass --resume to continue it "
                                 f"or --restart to start over")
            lane = make_lane(cfg, device)
            if meta and resume:
                load_state(lane, state_dir, meta)
                if lane.finished:
                    status[cfg.model] = "skipped"
                    say(f"{cfg.model}: already finished ({lane.iteration:,} iterations); skipping")
                    continue
                say(f"{cfg.model}: resuming at iteration {lane.iteration:,} of {cfg.recipe.iterations:,}")
            if lane.iteration < cfg.recipe.iterations:  # a sitting that only publishes trains nothing: none recorded
                # DDP calls the model's own forward: not compiled
                lane.sittings.append(dict(start=lane.iteration, device=device_name(device),
                                          precision=precision(cfg, device), compile=cfg.compile and not ddp))
            lanes.append(lane)
        if not overwrite:
            refuse_replacing_published(lanes, out_dir)
        if not lanes:
            return status
        writable_folder(out_dir, "--out")
        writable_folder(state_dir, "--state-dir")
        for lane in lanes:
            lock(lane.name)

        data = load_data(data_dir, first.limit_train, first.limit_test, device)
        match_saved_data(lanes, data, state_dir, data_dir)
        match_saved_plan(lanes, plan_fingerprint(len(data.train_y), first.seed), say)
        batch = first.recipe.batch_size
        steps_per_epoch = epoch_steps(len(data.train_y), batch, world)
        local = batch // world
        use_graphs = device.type == "cuda" and not ddp
        prepare_lanes(lanes, device, ddp, use_graphs)
        if fuse:
            fuse_for_run(lanes, ddp, say)
        # Static batch buffers: graphs read from these addresses on every replay.
        x = torch.zeros(local, 3, 32, 32, device=device)
        x = x.to(memory_format=torch.channels_last) if all(lane.cfg.channels_last for lane in lanes) else x
        y = torch.zeros(local, dtype=torch.long, device=device)
        start = min(lane.iteration for lane in lanes)
        end = max(lane.cfg.recipe.iterations for lane in lanes)
        for lane in lanes:
            lane.stats["iteration"].fill_(lane.iteration)

        say(f"training {', '.join(lane.name for lane in lanes)} on {device_name(device)}"
            f"{f' x{world} processes' if ddp else ''}: {len(data.train_y):,} train / {len(data.test_y):,} test images, "
            f"{steps_per_epoch} iterations per epoch, batch {batch}, "
            f"{'CUDA graphs, ' if any(lane.stream is not None for lane in lanes) else ''}"
            f"{precision(first, device)}")
        for note in cpu_notes(first, device, end - start):
            say(note)
        old_handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)} \
            if _is_main_thread() else {}
        Stop.requested = None
        t_start = time.perf_counter()
        session_models = [lane.name for lane in lanes]  # what shared this run; a checkpoint names the others
        for lane in lanes:  # a resumed lane's clock goes on from its saved time
            lane.clock_zero = t_start - lane.wall_time_s
        bar = tqdm(total=end, initial=start, unit="it", dynamic_ncols=True, disable=not is_main, file=sys.stderr,
                   desc=lanes[0].name if len(lanes) == 1 else f"{len(lanes)} models")
        it = start
        epoch_t0, epoch_it0 = time.perf_counter(), it
        plan_epoch = None
        diverged: list[str] = []

        def write(line: str) -> None:  # a line above the progress bar
            if is_main:
                bar.write(line, file=sys.stderr)

        def stop_diverged(lane: Lane, message: str) -> None:
            """Take a lane that went NaN/inf out of the run, its last saved state kept; say so now, raise at the end."""
            lanes.remove(lane)
            status[lane.name] = "diverged"
            diverged.append(message)
            write(f"error: {message}" + (" The other models go on." if lanes else ""))

        def drop_diverged() -> None:
            for lane, message in check_finite(lanes, state_dir):
                stop_diverged(lane, message)

        def save(lane: Lane) -> None:
            lane.stamp_wall_time()
            if is_main:
                try:
                    save_state(lane, state_dir, command)
                except (OSError, SafetensorError) as e:  # the machine's (disk full...): the last state saved stays
                    if lane.saved_iteration is None:
                        kept = "no state of it had been saved yet: once the disk is fixed, start it again"
                    else:
                        kept = (f"its state saved at iteration {lane.saved_iteration:,} is intact: once the disk is "
                                f"fixed, the same command with --resume continues from it")
                    raise WriteFailed(f"could not save the state of {lane.name} in {Path(state_dir) / lane.name} "
                                      f"({error_line(e)}); {kept}") from e
            lane.saved_at, lane.saved_iteration = time.perf_counter(), lane.iteration

        def finish(lane: Lane) -> None:
            """Publish the lane, then save its final state. A publish that fails (disk full, --out taken away)
            first saves every unfinished lane, this one at its last iteration: --resume then publishes it."""
            try:
                written = publish(lane, data, out_dir, device, world, command, session_models, overwrite, log=write)
            except Exception as e:
                failed = f"could not publish {lane.name} into {out_dir} ({error_line(e)})"
                try:
                    for other in lanes:
                        if not other.finished:
                            save(other)
                except WriteFailed as again:  # a full disk: the saves before it stay whole
                    raise WriteFailed(f"{failed}; then {again}") from e
                message = (f"{failed}; its state, and that of any model beside it, is saved in {state_dir}: once "
                           f"that is fixed, the same command with --resume publishes it")
                if isinstance(e, (OSError, SafetensorError)):  # the machine's (disk full...), not a bug of ours
                    raise WriteFailed(message) from e
                write(f"error: {message}")
                raise
            lane.finished = True
            status[lane.name] = "finished"
            write(f"{lane.name}: finished; checkpoint written to {written}")
            save(lane)

        def outcome() -> dict[str, str]:
            if diverged:
                raise TrainingDiverged("\n".join(diverged), status)
            return status

        try:
            for lane in [lane for lane in lanes if lane.iteration >= lane.cfg.recipe.iterations]:
                finish(lane)  # saved at its end by a sitting whose publish failed: published now, nothing trained
            while it < end and lanes:
                epoch, step = divmod(it, steps_per_epoch)
                if plan_epoch != epoch:
                    perm, offsets, flips = augmentation_plan(len(data.train_y), epoch, first.seed, device)
                    plan_epoch = epoch
                fill_batch(data, rank_rows(perm, step, batch, rank, world), offsets, flips, x, y)
                active = [lane for lane in lanes if lane.iteration == it and it < lane.cfg.recipe.iterations]
                try:
                    step_lanes(active, x, y, it, capture=use_graphs)
                except Exception as e:
                    if any(lane.cfg.compile for lane in active) and compile_failure(e):
                        raise SystemExit(f"error: --compile failed at iteration {it:,} on {device_name(device)} "
                                         f"({error_line(e)}); train without --compile (with --resume, from the last "
                                         "saved state)") from e
                    raise
                it += 1
                bar.update(1)
                epoch_end = (it % steps_per_epoch == 0) or it == end or \
                    any(lane.iteration == lane.cfg.recipe.iterations for lane in active)
                if it % SYNC_EVERY == 0 or epoch_end:
                    drop_diverged()
                    active = [lane for lane in active if lane in lanes]
                if epoch_end:
                    elapsed = time.perf_counter() - epoch_t0  # this epoch's training steps, shared by the active lanes
                    test_losses = []
                    for lane in active:
                        lane.stamp_wall_time()
                        record = end_epoch(lane, data, epoch + 1, elapsed, (it - epoch_it0) * batch, world)
                        test_losses.append(record["test_loss"])
                        write(format_record(lane.name, record))
                    # Never saved or published: a state that went NaN/inf (the training loss may not have, yet).
                    for lane, what in went_bad(active, test_losses):
                        stop_diverged(lane, divergence(lane, f"{what} by the end of epoch {epoch + 1} (iteration "
                                                             f"{lane.iteration:,})", state_dir))
                    for lane in [lane for lane in active if lane in lanes]:
                        if lane.iteration >= lane.cfg.recipe.iterations:
                            finish(lane)
                        elif time.perf_counter() - lane.saved_at >= SAVE_EVERY_S:
                            save(lane)
                    epoch_t0, epoch_it0 = time.perf_counter(), it
                over_time = time_budget_s is not None and time.perf_counter() - t_called > time_budget_s
                reason = Stop.requested or ("time budget" if over_time else None) or \
                    ("--stop-after" if stop_after is not None and it - start >= stop_after else None)
                if ddp:  # every rank must stop at the same iteration, or the others hang in all-reduce
                    reason = agreed_stop(reason, device) if (it % SYNC_EVERY == 0 or epoch_end) else None
                if reason and it < end:
                    drop_diverged()
                    for lane, what in went_bad([lane for lane in lanes if not lane.finished]):
                        stop_diverged(lane, divergence(lane, f"{what} by iteration {lane.iteration:,}", state_dir))
                    for lane in lanes:
                        if not lane.finished:
                            save(lane)
                            status[lane.name] = "stopped"
                    bar.close()
                    say(f"stopped ({reason}) at iteration {it:,}; state saved in {state_dir}/. "
                        f"Continue with the same command plus --resume.")
                    return outcome()
        finally:
            bar.close()
            for s, h in old_handlers.items():
                signal.signal(s, h)
        if lanes:
            say(f"done in {(time.perf_counter() - t_start) / 60:.1f} min")
        return outcome()


def agreed_stop(reason: str | None, device: torch.device) -> str | None:
    """A stop that any rank asks for, agreed by all ranks (a sync point: called every SYNC_EVERY iterations)."""
    flag = torch.tensor([reason is not None], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return (reason or "another process stopped") if int(flag) else None


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def check_finite(lanes: list[Lane], state_dir: Path) -> list[tuple[Lane, str]]:
    """A sync point, every SYNC_EVERY iterations: the lanes whose loss went NaN/inf, each with a message saying where.
    Their last good state stays on disk; the caller stops them and lets the others go on. Under DDP the ranks
    agree first (the earliest bad iteration of any rank): a rank whose loss went bad one step after another's
    would otherwise train on alone and hang in all-reduce."""
    if not lanes:  # every lane already stopped (a stop due on the iteration the last one diverged)
        return []
    first_bad = torch.stack([lane.stats["first_bad"] for lane in lanes])  # (lanes,), -1 where all finite
    if dist.is_available() and dist.is_initialized():
        never = torch.iinfo(first_bad.dtype).max
        first_bad = torch.where(first_bad < 0, never, first_bad)
        dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
        first_bad = torch.where(first_bad == never, -1, first_bad)
    return [(lane, divergence(lane, f"the training loss became NaN/inf at iteration {bad + 1:,} (epoch "
                                    f"{len(lane.history) + 1}, lr {lr_at(bad, lane.cfg.recipe):g})", state_dir))
            for lane, bad in zip(lanes, first_bad.tolist()) if bad >= 0]


def divergence(lane: Lane, what: str, state_dir: Path) -> str:
    """The message for a lane stopped as diverged: `what` went NaN/inf and where, the state kept on disk (the one
    last saved, not the last epoch's: saves come once a minute) and the way on. Not --resume: it refuses a changed
    recipe, and the same recipe, deterministic, diverges again."""
    kept = (f"its last good state, saved at iteration {lane.saved_iteration:,}, stays in {state_dir / lane.name}"
            if lane.saved_iteration is not None else "no state had been saved yet")
    return (f"{lane.name}: {what}. Stopped; {kept}. Start it over with --restart and a lower --lr or some "
            f"--warmup-iters (--model {lane.name} for it alone).")


def finite_state(lane: Lane) -> bool:
    """Whether the lane's weights, BN statistics and momentum are all finite (a sync point)."""
    tensors = [t for t in (*lane.model.state_dict().values(), *lane.momentum) if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def went_bad(lanes: list[Lane], test_losses: list[float] | None = None) -> list[tuple[Lane, str]]:
    """The lanes whose weights, BN statistics or momentum, or test loss (when given), are NaN/inf, each with which,
    checked before a state is saved or published: a training loss can stay finite (1e26) while the weights
    overflow. Under DDP the ranks agree first (each holds its own BN statistics)."""
    if not lanes:
        return []
    bad = torch.tensor([[not finite_state(lane), test_losses is not None and not math.isfinite(test_losses[i])]
                        for i, lane in enumerate(lanes)], dtype=torch.int32, device=lanes[0].lr.device)  # (lanes, 2)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return [(lane, "its weights, BN statistics or momentum became NaN/inf" if state else "the test loss became NaN/inf")
            for lane, (state, test) in zip(lanes, bad.tolist()) if state or test]


def end_epoch(lane: Lane, data: Data, epoch: int, elapsed: float, images: int, world: int) -> dict:
    s = lane.stats
    if world > 1:
        for k in ("loss_sum", "correct"):
            dist.all_reduce(s[k])
    steps = max(1, int(s["steps"]))
    seen = steps * lane.cfg.recipe.batch_size
    test = evaluate(lane.model, data.test_x, data.test_y, data.mean, data.std, batch_size=EVAL_BATCH,
                    amp=uses_bf16(lane.cfg, data.test_x.device))
    record = dict(epoch=epoch, iteration=lane.iteration, lr=lr_at(lane.iteration - 1, lane.cfg.recipe),
                  train_loss=float(s["loss_sum"]) / (steps * world),
                  train_error=100.0 * (1 - int(s["correct"]) / seen),
                  test_loss=test["test_loss"], test_error=test["test_error"], test_top5_error=test["test_top5_error"],
                  wall_time_s=lane.wall_time_s, epoch_time_s=elapsed, images_per_s=images / max(elapsed, 1e-9),
                  grad_norms=[float(v) / steps for v in s["grad_norm_sum"].cpu()])
    lane.history.append(record)
    for k in ("loss_sum", "correct", "steps", "grad_norm_sum"):
        s[k].zero_()
    return record


def format_record(name: str, r: dict) -> str:
    return (f"{name:>10s} epoch {r['epoch']:4d} it {r['iteration']:7,d} lr {r['lr']:.4f} | "
            f"train err {r['train_error']:6.2f} % loss {r['train_loss']:.3f} | "
            f"test err {r['test_error']:6.2f} % top-5 {r['test_top5_error']:5.2f} % loss {r['test_loss']:.3f} | "
            f"{r['images_per_s']:8,.0f} img/s {r['epoch_time_s']:6.1f} s")


@contextmanager
def strict_fp32():
    """fp32 arithmetic inside, TF32 off: cuDNN may run fp32 convolutions in TF32 (a 10-bit mantissa) by default,
    and a GPU's final evaluation would then not be the fp32 re-evaluation that `report --verify` does."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def as_stored(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` holding the weights its checkpoint stores (storage_state: parameters rounded to fp16,
    BN statistics fp32), back in fp32: the net that load_pretrained gives whoever loads the checkpoint."""
    stored = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # as load_pretrained builds it
    stored.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in storage_state(model).items()})
    return stored


@torch.no_grad()
def final_metrics(model, test_x: torch.Tensor, test_y: torch.Tensor, train_x: torch.Tensor, train_y: torch.Tensor,
                  mean: torch.Tensor, std: torch.Tensor) -> dict:
    """What metrics.json records of a net's final weights, all in fp32 (no autocast, no TF32), so that the
    figures are the ones `report --verify` re-evaluates: test loss, top-1/top-5 error, confusion matrix and
    per-class accuracy; the error on the clean (un-augmented) training set; Fig. 7's response std on the first
    1,000 test images; the most confident mistakes. Images (N, 32, 32, 3) uint8 on the model's device."""
    with strict_fp32():
        test = evaluate(model, test_x, test_y, mean, std, batch_size=FINAL_BATCH)
        train_clean = evaluate(model, train_x, train_y, mean, std, batch_size=FINAL_BATCH)
        fixed = normalize(test_x[:RESPONSE_IMAGES], mean, std)
        return dict(
            test_error=test["test_error"], test_top5_error=test["test_top5_error"], test_loss=test["test_loss"],
            train_error_clean=train_clean["test_error"], train_loss_clean=train_clean["test_loss"],
            confusion_matrix=test["confusion_matrix"], per_class_accuracy=per_class_accuracy(test["confusion_matrix"]),
            classes=list(CLASSES), response_std=response_std(model, fixed),
            response_batch=f"first {len(fixed):,} test images", test_images=len(test_y), train_images=len(train_y),
            confident_mistakes=confident_mistakes(model, test_x, test_y, mean, std, k=RECORDED_MISTAKES,
                                                  batch_size=FINAL_BATCH))


def publish(lane: Lane, data: Data, out_dir: Path, device: torch.device, world: int, command: str | None,
            session_models: list[str], overwrite: bool = False, log=print) -> Path:
    """Final analysis (final_metrics of the weights as published) and the checkpoint folder, out_dir/<model>;
    returns the folder. session_models: every model trained in this run, side by side with this one (its wall
    time is theirs too). train() refused at the start if that folder held a checkpoint, unless overwrite; one that
    another run published there since is kept, and this run goes to out_dir/<model>-run<id> instead, said in log."""
    cfg, folder = lane.cfg, Path(out_dir) / lane.cfg.model
    if not overwrite and (held := published_checkpoint(folder)) is not None and published_by(folder) != lane.run_id:
        folder = Path(out_dir) / diverted_name(cfg.model, lane.run_id)
    else:
        held = None
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return folder
    if held:
        log(f"{cfg.model}: {Path(out_dir) / cfg.model} now holds {held}, published by another run while this one "
            f"trained; that one is kept, and this run publishes to {folder} instead")
    model = lane.model
    # Scored as stored: the fp16 rounding of the weights is in the recorded figures, which a reload reproduces.
    scored = as_stored(model) if cfg.publish_weights else model
    which = "its final weights as stored in model.safetensors" if cfg.publish_weights else \
        "its final weights (fp32; not bundled)"
    last, info = lane.history[-1], model_info(cfg.model)
    metrics = dict(
        final_metrics(scored, data.test_x, data.test_y, data.train_x, data.train_y, data.mean, data.std),
        train_error=last["train_error"], train_loss=last["train_loss"],
        epochs_to_90=first_epoch_reaching(lane.history, 90.0), iterations=lane.iteration,
        final_evaluation=f"{which}, fp32 arithmetic, on {device_name(device)} when it was published",
        confident_mistakes_from=f"{which} in fp32 on {device_name(device)} when it was published, over "
                                f"{len(data.test_y):,} test images")
    lane.stamp_wall_time()  # the final analysis included
    # cfg's amp, cpu_bf16, cuda_graphs, channels_last and compile are the flags as asked for; autocast acts on CUDA
    # (on the CPU only with cpu_bf16), graphs only on CUDA (not under DDP, and only once captured) and compile not
    # under DDP, so these say what took effect.
    graphs = lane.graph is not None or any(s.get("cuda_graphs") for s in lane.sittings)
    used = dict(precision=run_precision(lane.sittings), sittings=lane.sittings, cuda_graphs_used=graphs,
                compile_used=run_compiled(lane.sittings),
                channels_last_used=lane.layer_weights[0].is_contiguous(memory_format=torch.channels_last))
    config = dict(cfg.to_dict(), **used, depth=info["depth"], residual=info["residual"], family=info["family"],
                  dataset="CIFAR-10", normalization=dict(mean=list(CIFAR10_MEAN), std=list(CIFAR10_STD)),
                  torch_version=torch.__version__, device=device_name(device), world_size=world,
                  wall_time_s=lane.wall_time_s, trained_alongside=sorted(set(session_models) - {cfg.model}),
                  run_id=lane.run_id,
                  git_commit=git_commit(), command=command or "python train.py",
                  classes=list(CLASSES))
    history = dict(layers=lane.layer_names, records=lane.history)
    return save_checkpoint(folder.parent, folder.name, model if cfg.publish_weights else None, config, history,
                           metrics)
