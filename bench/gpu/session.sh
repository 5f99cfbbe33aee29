#!/usr/bin/env bash
# ../shared/GPU.md for this project: one subcommand per `device run` call, so that a session's device minutes
# (15 at present, the machine's start included) go to training, not typing. Run from the repository root.
#
#   here:    bash bench/gpu/session.sh lean           # first: checkpoints/, parked state out of what travels
#   here:    bash bench/gpu/session.sh stage          # .gpu-1 ... .gpu-N: the data (+ unfinished state), cut to fill
#   device:  bash bench/gpu/session.sh unpack && bash bench/gpu/session.sh check --images 10000 --lanes 2 --fuse
#                # carry=[".gpu-1"]: the machine's start, the CUDA tests and the throughput table (~2 min)
#   device:  bash bench/gpu/session.sh unpack         # carry=[".gpu-2"], ... up to .gpu-N-1, one call each
#   device:  bash bench/gpu/session.sh unpack && START_WAIT=30 bash bench/gpu/session.sh queue T "--depth 44 --both" \
#                "--depth 32 --both" && bash bench/gpu/session.sh poll 540   # carry=[".gpu-N"]
#   device:  bash bench/gpu/session.sh poll 540       # if T is longer than that call: chain these until it stops
#   here:    give_back, then bash bench/gpu/session.sh unlean, then receive FILES_AT   # the last poll's files
#
#   T (minutes) = the device seconds the previous call's reply left (lease.budget_left_s), less 110, over 60: the
#   gap before the call, its carry and unpack (~15 s), and after the deadline the trainer's stop, the last
#   poll's snapshot and the trip back (~45 s) all count. If a CUDA test of graphs, lanes or bf16 failed (`check`,
#   or `smoke` alone), add --no-cuda-graphs to every group (eager steps: slower, but the path the CPU tests run);
#   if only the compiled one failed (`check --compile` runs it), leave --compile out and nothing else. Add --fuse
#   to every group if the table's "ours pair fused" beats "ours pair img/s" and the fused tests passed; if only
#   fused tests failed, leave --fuse out and nothing else.
#   `queue` runs train.py once per group, in turn, inside T: a group's nets train side by side (the GPU busier)
#   and publish together; the group the deadline stops saves its state, and a group with under 5 minutes left
#   does not start. Order the groups by what the session can finish (an H200, 2026-11-30: the 56-layer pair in
#   8.2 min, the 44-layer pair at 162 iterations/s, about 6.6 min). `start --all --time-budget T` is one group
#   of all ten: none published before the slowest ends (30 min projected on an H200).
#   Also, with minutes to spare before give_back (the machine and its data are still there):
#   device:  bash bench/gpu/session.sh landscape plain56 resnet56   # once those are published (~15 s each)
#   device:  bash bench/gpu/session.sh collect        # what a poll brings back, without the wait
#
# Every device call follows the last with nothing to do here in between: the machine goes back after 30 s idle,
# and all it holds with it. Everything a session carries is staged before its first call.
# Unfinished state comes back with every poll; `receive` parks it in bench/gpu/state/, which git tracks (runs/ is
# ignored, and a later session's checkout is fresh): commit it. A later session resumes: `stage` carries the
# parked state (and runs/' unfinished state) too, and the last call starts
# `start --model <the unfinished ones> --resume --time-budget T` (status.txt in every snapshot names them), or
# queue them: queue T "--model <the unfinished ones> --resume" "--depth <the ones not started> --both".
# Every poll returns what collect would: if the machine is lost, `receive` the last poll's files.
set -euo pipefail
DATA=${DATA:-/root/data}
CKPT=${CKPT:-/root/ckpt}
RUNS=${RUNS:-/root/runs}
LOG=${LOG:-/root/train.log}
INCOMING=${INCOMING:-/root/incoming}
PIDFILE=${PIDFILE:-/root/train.pid}
# here: unfinished runs' state between sessions, tracked by git (runs/ is not, and a fresh checkout lacks it)
PARKED=${PARKED:-bench/gpu/state}
cmd=${1:-help}
shift || true

progress() {  # the log without tqdm's carriage-return redraws: its last lines and the latest bar
    [ -f "$LOG" ] || { echo "no log at $LOG"; return; }
    # grep finding nothing (no bar yet, say) is not a failure of the call
    tr '\r' '\n' < "$LOG" | grep -v '^[[:space:]]*$' | grep -v 'it/s\] *$\|s/it\] *$' | tail -n "${1:-25}" || true
    tr '\r' '\n' < "$LOG" | grep 'it/s\] *$\|s/it\] *$' | tail -n 1 || true
}

training() {  # is what `start` or `queue` launched (train.py, or queue's runner) still running?
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2> /dev/null
}

need_data() {  # fail now, not in a detached log a minute later
    for z in train-1 train-2 train-3 train-4 train-5 test; do
        [ -f "$DATA/$z.zip" ] || { echo "error: $DATA/$z.zip is missing: unpack every staged folder first"; exit 1; }
    done
    mkdir -p "$CKPT" "$RUNS"
}

started() {  # what the detached trainer printed in its first minute or so (sooner if it died)
    for _ in $(seq 1 $((${START_WAIT:-75} / 5))); do training || break; sleep 5; done
    progress 30
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv || true
}

snapshot() {  # into $OUT: a status summary, the log, published checkpoints and unfinished runs' state
    python3 - "$RUNS" "$CKPT" > "$OUT/status.txt" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "bench/gpu")
from pack import resume_command
runs, ckpt = Path(sys.argv[1]), Path(sys.argv[2])
commands = {}
for meta in sorted(runs.glob("*/state.json")):
    m = json.loads(meta.read_text())
    total = m["config"]["recipe"]["iterations"]
    state = "finished" if m["finished"] else f"at iteration {m['iteration']:,} of {total:,}"
    print(f"{meta.parent.name}: {state}; published: {(ckpt / meta.parent.name / 'metrics.json').is_file()}")
    if not m["finished"]:
        commands.setdefault(m.get("command"), []).append(meta.parent.name)
for command, models in commands.items():  # one line per command that started them
    print("resume: " + resume_command(command, models))
PY
    tr '\r' '\n' < "$LOG" | grep -v 'it/s\] *$\|s/it\] *$' > "$OUT/train.log" || true
    python3 bench/gpu/pack.py "$OUT" ckpt "$CKPT"/* || true
    python3 bench/gpu/pack.py "$OUT" runs "$RUNS"/* --unfinished-only || true
}

case "$cmd" in
stage)  # here: the six CIFAR-10 zips and the unfinished state (parked, and runs/') into .gpu-1, .gpu-2, ...: one carry a call
    python3 "$(dirname "$0")/stage.py" "$@"
    ;;
unpack)  # device: the carried zips into $DATA, the carried state archives into $RUNS; show the machine
    # pieces wait in $INCOMING until their file is whole; then it is checked (SHA-256) and put in place
    python3 "$(dirname "$0")/stage.py" unpack --data "$DATA" --runs "$RUNS" --incoming "$INCOMING"
    # train.py locks each model's state folder (flock): a file system without locks would stop every start
    python3 -c 'import fcntl, os, sys; p = os.path.join(sys.argv[1], ".lock-probe"); fcntl.flock(os.open(p, os.O_RDWR | os.O_CREAT), fcntl.LOCK_EX | fcntl.LOCK_NB); os.remove(p)' "$RUNS" \
        && echo "file locks in $RUNS: ok" || echo "file locks in $RUNS: NOT AVAILABLE: set RUNS to a folder on a local disk for start/queue"
    nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true
    python3 -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "python", sys.version.split()[0])'
    ;;
smoke)  # device: train.py's CUDA-only paths end to end on synthetic data (graphs, lanes on streams, bf16, resume,
        # publish), and the ten lanes' memory and projected wall time of the paper's schedule: ~1 min
    # the unfused paths only: a --fuse failure must not turn CUDA graphs off for every group (`check` runs those)
    PYTHONUNBUFFERED=1 python3 -m pytest -q -s -x -rs tests/test_gpu.py -p no:cacheprovider \
        -k "(end_to_end or ten_lanes) and not fused" 2>&1 | tee "${OUT:-/tmp}/smoke.txt" | tail -n 30
    # skipped (no CUDA) is no pass: the groups would then need --no-cuda-graphs too
    grep -q "2 passed" "${OUT:-/tmp}/smoke.txt" || { echo "smoke: not passed"; exit 1; }
    ;;
check)  # device: the CUDA-only tests, then the throughput table against the textbook baseline
    export PYTHONUNBUFFERED=1
    # A failing test must not cost the benchmark (the call's minutes are spent either way): both run, both logs
    # come back whole in $OUT, and the call fails at the end if either did.
    set +e
    # the compiled test spends a minute or two compiling: only when the session weighs --compile
    case " $* " in *" --compile "*) only=();; *) only=(-k "not compiled");; esac
    python3 -m pytest -q tests/test_gpu.py -p no:cacheprovider -rA ${only[@]+"${only[@]}"} 2>&1 | tee "${OUT:-/tmp}/gpu_tests.txt" | tail -n 30
    tests=${PIPESTATUS[0]}
    python3 bench/train_throughput.py --data-dir "$DATA" --workers 8 "$@" 2>&1 | tee "${OUT:-/tmp}/bench.txt" | tail -n 40
    bench=${PIPESTATUS[0]}
    set -e
    echo "tests/test_gpu.py exit $tests, bench/train_throughput.py exit $bench"
    [ "$tests" = 0 ] && [ "$bench" = 0 ]
    ;;
start)  # device: train.py detached (it outlives this call), writing outside the synced tree
    need_data
    PYTHONUNBUFFERED=1 setsid nohup python3 train.py --data-dir "$DATA" --out "$CKPT" --state-dir "$RUNS" "$@" \
        > "$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"  # setsid execs in place (a background job leads no process group): this is train.py
    started
    ;;
queue)  # device: like start, but train.py once per group of models, in turn, all within T minutes:
        #   queue T "--depth 20 --both" "--depth 32 --both" ...   (a group may add --resume)
        # a group that finishes is published before the next starts; the one the deadline stops saves its state
    minutes=${1:?queue T GROUP...: T is the minutes for all the groups}
    shift
    need_data
    deadline=$(python3 -c 'import sys, time; print(int(time.time() + 60 * float(sys.argv[1])))' "$minutes")
    PYTHONUNBUFFERED=1 setsid nohup bash "$0" run-queue "$deadline" "$@" > "$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"  # the runner, alive until its last group ends
    started
    ;;
run-queue)  # (queue's detached runner) each group in turn, with the minutes left as its --time-budget
    deadline=$1
    shift
    set -f  # a group's words are options: split them, never glob them
    for group in "$@"; do
        left=$((deadline - $(date +%s) - 10))  # python and torch take seconds to import before the budget's clock
        # A group with too little time would train a minute and leave state (tens of MB for the deep nets) that
        # the next session must carry, a call's minutes, to gain that minute.
        if [ "$left" -lt "${QUEUE_MIN_S:-300}" ]; then
            echo "queue: not started, $left s left (under ${QUEUE_MIN_S:-300}): $group"; continue
        fi
        echo "queue: train.py $group --time-budget $((left / 60)) min $((left % 60)) s"
        # shellcheck disable=SC2086  # a group is several options
        python3 train.py --data-dir "$DATA" --out "$CKPT" --state-dir "$RUNS" $group \
            --time-budget "$(python3 -c 'import sys; print(int(sys.argv[1]) / 60)' "$left")" < /dev/null \
            || echo "queue: train.py exited with $? for: $group"
    done
    echo "queue: done"
    ;;
poll)  # device: wait (default 540 s, inside one call's 600), then show progress
    secs=${1:-540}
    # checked every 5 s, so the call returns (and stops spending device time) soon after the trainer stops
    for _ in $(seq 1 $((secs / 5))); do training || break; sleep 5; done
    progress 25
    training && echo "train.py: running" || echo "train.py: not running"
    ls "$CKPT" 2>/dev/null | sed 's/^/published: /' || true  # none yet is no failure: the snapshot still goes
    # Insurance: every poll brings back what collect would, as of now. If the machine is lost before collect,
    # `receive` the last poll's files_at. SNAPSHOT=0 skips it.
    if [ -n "${OUT:-}" ] && [ "${SNAPSHOT:-1}" = 1 ]; then
        snapshot > /tmp/snapshot.txt 2>&1 || echo "snapshot failed:"
        grep -i 'NOT PACKED\|error\|Traceback' /tmp/snapshot.txt && tail -n 5 /tmp/snapshot.txt || true
        echo "snapshot: $(ls "$OUT" | grep -c 'tgz$') archives, $(du -sh "$OUT" | cut -f1) in \$OUT"
    fi
    ;;
landscape)  # device: loss landscapes of published checkpoints, written beside them in $CKPT
    for m in "$@"; do
        PYTHONUNBUFFERED=1 python3 -m resnet_core.landscape --model "$m" --checkpoints "$CKPT" --data-dir "$DATA" --device cuda
    done
    ;;
collect)  # device: published checkpoints, unfinished state, the log and a status summary, into $OUT
    : "${OUT:?collect runs on the device machine, where OUT is set}"
    snapshot
    cat "$OUT/status.txt"
    ls -la "$OUT"
    ;;
lean)  # here, before stage, on a clean tree: a temporary branch that leaves checkpoints/ (and $PARKED, if tracked)
       # untracked and ignored, so that they do not travel with every call (the device needs neither: stage carries
       # the parked state once) and each carry holds more data
    cd "$(git rev-parse --show-toplevel)"
    marker=$(git rev-parse --git-path gpu-lean-from); hold=$(git rev-parse --git-path gpu-lean-hold)
    exclude=$(git rev-parse --git-path info/exclude)
    [ ! -e "$marker" ] || { echo "lean: already lean; unlean first"; exit 1; }
    [ ! -e "$hold" ] || { echo "lean: $hold holds a copy an earlier unlean kept: look at it, then remove it"; exit 1; }
    [ -z "$(git status --porcelain)" ] || { echo "lean: the tree has uncommitted changes: commit them first"; exit 1; }
    from=$(git symbolic-ref --quiet --short HEAD) || { echo "lean: not on a branch"; exit 1; }
    [ -n "$(git ls-files checkpoints)" ] || { echo "lean: nothing under checkpoints/ is tracked: nothing to leave out"; exit 1; }
    ! git rev-parse --quiet --verify refs/heads/gpu-lean > /dev/null || { echo "lean: a branch gpu-lean exists already"; exit 1; }
    paths=checkpoints
    if [ -n "$(git ls-files "$PARKED")" ]; then paths="$paths ${PARKED%/}"; fi
    undo() {  # a step failed: back to where lean started, nothing left behind
        for p in $paths; do
            git reset -q "$from" -- "$p" 2> /dev/null || true
            sed -i "\\#^/$p/\$#d" "$exclude" 2> /dev/null || true
        done
        git switch -q "$from" 2> /dev/null && git branch -q -D gpu-lean 2> /dev/null || true
        rm -f "$marker"
        echo "lean: failed; back on $from as before"
    }
    trap undo ERR
    git switch -q -c gpu-lean
    printf '%s\n' "$from" $paths > "$marker"  # the branch to go back to, then what was left out
    # shellcheck disable=SC2086  # paths: a list of folders without spaces
    git rm -r -q --cached $paths
    mkdir -p "$(dirname "$exclude")"
    for p in $paths; do echo "/$p/" >> "$exclude"; done
    git commit -q -m "gpu-lean: $paths left out of the tree that travels to the device (temporary: never merge)"
    trap - ERR
    echo "lean: on branch gpu-lean (from $from); $paths stay on disk but do not travel. After the device" \
         "calls: unlean, then receive. Commit nothing here."
    ;;
unlean)  # here, after the device calls and before receive: back to the branch lean left, what it left out tracked again
    cd "$(git rev-parse --show-toplevel)"
    marker=$(git rev-parse --git-path gpu-lean-from); hold=$(git rev-parse --git-path gpu-lean-hold)
    exclude=$(git rev-parse --git-path info/exclude)
    from=$(head -n 1 "$marker" 2> /dev/null) && [ -n "$from" ] || { echo "unlean: not lean (no $marker)"; exit 1; }
    paths=$(tail -n +2 "$marker" | tr '\n' ' '); paths=${paths% }
    [ -n "$paths" ] || paths=checkpoints  # a marker written before lean named what it left out
    [ "$(git symbolic-ref --quiet --short HEAD)" = gpu-lean ] || { echo "unlean: not on branch gpu-lean"; exit 1; }
    [ ! -e "$hold" ] || { echo "unlean: $hold holds a copy an earlier unlean kept: look at it, then remove it"; exit 1; }
    extra=$(git rev-list --count "$from"..gpu-lean)
    [ "$extra" = 1 ] || { echo "unlean: gpu-lean has $((extra - 1)) commit(s) beyond lean's own: move them to $from" \
        "(git cherry-pick) and drop them here first: \`git log $from..gpu-lean\`"; exit 1; }
    [ -z "$(git status --porcelain)" ] || { echo "unlean: uncommitted changes on gpu-lean: commit them on $from instead"; exit 1; }
    # The switch back would refuse to overwrite what lean left out, untracked once unignored. (A folder is gone if
    # someone switched to $from and back by hand: the switch back to $from then restores it.)
    mkdir -p "$hold"
    for p in $paths; do
        if [ -e "$p" ]; then mkdir -p "$hold/$(dirname "$p")"; mv "$p" "$hold/$p"; fi
        sed -i "\\#^/$p/\$#d" "$exclude"
    done
    if ! git switch -q "$from"; then  # put everything back as lean left it
        for p in $paths; do echo "/$p/" >> "$exclude"; [ ! -e "$hold/$p" ] || mv "$hold/$p" "$p"; done
        rm -rf "$hold"
        echo "unlean: could not switch back to $from; still lean"; exit 1
    fi
    git branch -D gpu-lean
    rm "$marker"
    changed=""
    for p in $paths; do  # a folder that changed while lean: that copy is kept for the person to look at
        if [ ! -e "$hold/$p" ] || diff -r -q "$hold/$p" "$p" > /dev/null; then rm -rf "${hold:?}/$p"; else changed="$changed $p/"; fi
    done
    if [ -z "$changed" ]; then
        rm -rf "$hold"; echo "unlean: back on $from; tracked again: $paths"
    else
        echo "unlean: back on $from; changed while lean:$changed: that copy is kept in $hold"
    fi
    ;;
receive)  # here: unpack what a poll or collect returned (the reply's files_at) into checkpoints/ and, for the runs
         # still unfinished, into $PARKED, which git tracks: a later session's fresh checkout resumes from it
    from=${1:?the files_at folder of the last poll or collect call}
    # unlean's switch back would put the old checkpoints back over the new ones
    [ ! -e "$(git rev-parse --git-path gpu-lean-from 2> /dev/null)" ] || { echo "receive: unlean first"; exit 1; }
    for kind in ckpt:checkpoints "runs:$PARKED"; do  # each folder replaces the one of that name whole: nothing
        into=${kind#*:}; tmp="$into/.receiving"   # of the old one (a landscape.json, say) stays beside the new
        mkdir -p "$into"; rm -rf "$tmp"; mkdir "$tmp"
        for t in "$from/${kind%%:*}"-*.tgz; do [ -e "$t" ] && tar -xzf "$t" -C "$tmp"; done
        for d in "$tmp"/*/; do
            [ -d "$d" ] || continue
            name=$(basename "$d"); rm -rf "${into:?}/$name"; mv "$d" "$into/"
            # a net published now needs its parked state no more: left, a later stage would carry it back. One
            # published beside another run's checkpoint is <model>-run<first 8 of its run id>: its state is <model>'s
            [ "$into" = checkpoints ] || continue
            base=$name
            if [[ $name =~ ^(.+)-run([0-9a-f]{8})$ ]] && python3 -c 'import json, sys
sys.exit(not json.load(open(sys.argv[1])).get("run_id", "").startswith(sys.argv[2]))' \
                "$PARKED/${BASH_REMATCH[1]}/state.json" "${BASH_REMATCH[2]}" 2> /dev/null; then
                base=${BASH_REMATCH[1]}
            fi
            if [ -e "$PARKED/$base" ]; then rm -rf "${PARKED:?}/$base"; echo "unparked: $base"; fi
        done
        rm -rf "$tmp"
    done
    rmdir "$PARKED" 2> /dev/null || true  # nothing left unfinished
    [ -f "$from/status.txt" ] && cat "$from/status.txt"
    kept=bench/results/gpu-$(date -u +%Y%m%d-%H%M)  # the device's log and status, for the record
    mkdir -p "$kept"
    for f in train.log status.txt; do [ -f "$from/$f" ] && cp "$from/$f" "$kept/"; done
    du -sh checkpoints
    [ -d "$PARKED" ] && du -sh "$PARKED" && echo "unfinished state parked in $PARKED: commit it (a fresh checkout has" \
        "no runs/), and a later session's stage carries it"
    add="checkpoints $kept"  # the parked state too while there is some, or was (git add of a path never there fails)
    if [ -d "$PARKED" ] || [ -n "$(git ls-files "$PARKED" 2> /dev/null)" ]; then add="$add $PARKED"; fi
    echo "next: python -m resnet_core.report --verify --readme README.md; then git add -A $add"
    ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d'  # the header comment, however long it grows
    ;;
esac
