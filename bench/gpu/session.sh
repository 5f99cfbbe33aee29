#!/usr/bin/env bash
# ../shared/GPU.md for this project: one subcommand per `device run` call, so that a session's device minutes
# (15 at present, the machine's start included) go to training, not typing. Run from the repository root.
# bench/gpu/README.md is the runbook in prose: why each step, what a session measured, publishing a CPU run.
#
#   here:    bash bench/gpu/session.sh lean           # first: checkpoints/, parked state out of what travels
#   here:    bash bench/gpu/session.sh stage          # .gpu-1 ... .gpu-N: the data (+ unfinished state), cut to fill
#   device:  bash bench/gpu/session.sh unpack; bash bench/gpu/session.sh smoke
#                # carry=[".gpu-1"]: the machine's start and the unfused CUDA paths end to end (~1 min); `;`, not
#                # `&&`: a damaged piece must not skip the test. If it fails, the last call sets
#                # QUEUE_FLAGS=--no-cuda-graphs. In a 15-minute session `check` (the CUDA tests, the throughput
#                # table and the flags it weighs, --fuse among them: ~2-3 min) costs more training than it can win:
#                # run it (check --images 10000 --lanes 2 --fuse) where the budget is larger, or alone
#   device:  bash bench/gpu/session.sh unpack         # carry=[".gpu-2"], ... up to .gpu-N-1, one call each
#   device:  bash bench/gpu/session.sh unpack && START_WAIT=30 bash bench/gpu/session.sh queue T "--depth 44 --both" \
#                "--depth 32 --both" && bash bench/gpu/session.sh poll 540   # carry=[".gpu-N"]
#   device:  bash bench/gpu/session.sh poll 540       # if T is longer than that call: chain these until it stops
#   here:    give_back, then bash bench/gpu/session.sh unlean, then git mv the 15-epoch pair of each depth that came
#            back published to -15ep (FILES_AT/status.txt says which), then bash bench/gpu/session.sh receive FILES_AT
#
#   T (minutes) = the device seconds the previous call's reply left (lease.budget_left_s), less 110, over 60: the
#   gap before the call, its carry and unpack (~15 s), and after the deadline the trainer's stop, the last
#   poll's snapshot and the trip back (~45 s) all count. Over 9.3, a poll 540 in that call ends before the
#   deadline: chain another poll call.
#   `check` writes the flags every group gets to /root/queue-flags (QUEUE_FLAGS_FILE), and `queue` adds them,
#   one line each saying why: --no-cuda-graphs if a CUDA test other than the fused, compiled and torchrun ones did
#   not pass (eager steps: slower, but the path the CPU tests run); --fuse if every fused test passed and "ours pair
#   fused" beat "ours pair" for every model benchmarked; --compile if check ran with --compile, the compiled test
#   passed and the compiled columns beat the eager ones. train.py fuses no compiled lane, so where both would, only
#   --fuse stays if "ours pair fused" beat "compiled x2 lanes" on every model, else only --compile (with no
#   "compiled x2 lanes" column to weigh them, --fuse). QUEUE_FLAGS="..." (empty too) stands in for the file (after
#   `smoke` alone, which writes none: QUEUE_FLAGS=--no-cuda-graphs if it failed).
#   `queue` runs train.py once per group, in turn, inside T: a group's nets train side by side (the GPU busier)
#   and publish together; the group the deadline stops saves its state, and a group with under 90 s left
#   (QUEUE_MIN_S) does not start. Order the groups by what the session can finish (an H200, 2026-11-30: the
#   56-layer pair in 8.2 min, the 44-layer pair at 162 iterations/s, about 6.6 min). `start --all --time-budget T`
#   is one group of all ten: none published before the slowest ends (30 min projected on an H200).
#   `start` and `queue` while a run they started still runs say so and start nothing: a call repeated after a lost
#   reply polls the first. `poll` stops waiting 560 s after its call began (CALL_DEADLINE; the call's own shell
#   tells when), so that its snapshot comes back inside the call's 600 s; in a call of a shorter timeout_s, or
#   with less device time left than 600 s (the call's limit is then what is left), set CALL_DEADLINE to that
#   less 40. It also snapshots each time a net is published: a call killed at its limit
#   still brings back what was published before.
#   Also, with minutes to spare before give_back (the machine and its data are still there):
#   device:  bash bench/gpu/session.sh landscape NET...  # the pairs this session published (~15 s each)
#   device:  bash bench/gpu/session.sh collect        # what a poll brings back, without the wait
#
# Every device call follows the last with nothing to do here in between: the machine goes back after 30 s idle,
# and all it holds with it. Everything a session carries is staged before its first call.
# Unfinished state comes back with every poll; `receive` parks it in bench/gpu/state/, which git tracks (runs/ is
# ignored, and a later session's checkout is fresh): commit it. A later session resumes: `stage` carries the
# parked state (and runs/' unfinished state) too, and the last call starts
# `start --model <the unfinished ones> --resume --time-budget T` (status.txt in every snapshot names them), or
# queues them: `queue` adds --resume to a group whose nets all have state there, some unfinished, and warns of one
# mixing them with nets not started (queue those apart: "--model <the unfinished ones>" "--depth ... --both").
# Every poll returns what collect would: if the machine is lost, `receive` the last poll's files.
set -euo pipefail
DATA=${DATA:-/root/data}
CKPT=${CKPT:-/root/ckpt}
RUNS=${RUNS:-/root/runs}
LOG=${LOG:-/root/train.log}
INCOMING=${INCOMING:-/root/incoming}
PIDFILE=${PIDFILE:-/root/train.pid}
FLAGS_FILE=${QUEUE_FLAGS_FILE:-/root/queue-flags}  # check's verdict on the flags every queued group gets
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

already_running() {  # a call repeated (its reply lost, say) must not start a second trainer over the first's log and
    # pidfile: it says so, and the poll chained after it watches the first
    training || return 1
    echo "already running (pid $(cat "$PIDFILE")): polling it"
}

need_data() {  # fail now, not in a detached log a minute later
    for z in train-1 train-2 train-3 train-4 train-5 test; do
        [ -f "$DATA/$z.zip" ] || { echo "error: $DATA/$z.zip is missing: unpack every staged folder first"; exit 1; }
    done
    mkdir -p "$CKPT" "$RUNS"
}

resumed() {  # the queue's groups, one a line, each plus --resume where $RUNS holds state of every net it names and
    # some of it unfinished (parked by an earlier session, a CPU run's): without it train.py would refuse to start
    # them, and the call be wasted; with it, a net that finished is skipped
    if ! grep -qs '"finished": false' "$RUNS"/*/state.json; then printf '%s\n' "$@"; return; fi  # no python to start
    python3 - "$RUNS" "$@" <<'PY'
import json, sys
from pathlib import Path

import train

runs = Path(sys.argv[1])


def finished(name):  # None: no state of it
    try:
        return bool(json.loads((runs / name / "state.json").read_text())["finished"])
    except (OSError, ValueError, KeyError):
        return None


for group in sys.argv[2:]:
    words = group.split()
    try:
        states = {} if {"--resume", "--restart"} & set(words) else \
            {n: finished(n) for n in train.model_names(train.parse_args(words))}
    except SystemExit:  # a group train.py refuses: it says why when it runs
        states = {}
    begun = [n for n, done in states.items() if done is False]
    if begun and None not in states.values():
        print(f"{group} --resume")
        print(f"queue: --resume added to '{group}': {runs} holds unfinished state of {', '.join(begun)}",
              file=sys.stderr)
    else:
        print(group)
        if begun:
            print(f"queue: '{group}' names {', '.join(begun)}, whose unfinished state is in {runs}, and nets with "
                  "none: train.py will refuse it; queue them apart, the first with --resume", file=sys.stderr)
PY
}

started() {  # what the detached trainer printed in its first minute or so (sooner if it died)
    for _ in $(seq 1 $((${START_WAIT:-75} / 5))); do training || break; sleep 5; done
    progress 30
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv || true
}

snapshot() {  # into $1: a status summary, the log, published checkpoints and unfinished runs' state, in at most $2
              # files and $3 MiB there
    python3 - "$RUNS" "$CKPT" > "$1/status.txt" <<'PY'
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
    tr '\r' '\n' < "$LOG" | grep -v 'it/s\] *$\|s/it\] *$' > "$1/train.log" || true
    python3 bench/gpu/pack.py "$1" ckpt "$CKPT"/* --max-files "$2" --total-mib "$3" || true
    python3 bench/gpu/pack.py "$1" runs "$RUNS"/* --unfinished-only --max-files "$2" --total-mib "$3" || true
}

deliver() {  # a snapshot into $OUT, built in a folder beside it, then moved in: a call killed while it packs still
             # returns the last whole snapshot, and one killed at its limit whatever the last one held
    local next f others=0 bytes=0
    for f in "$OUT"/*; do  # what else comes back from this call (a check's logs, say) leaves the snapshot less room
        [ -f "$f" ] || continue
        case ${f##*/} in status.txt|train.log|ckpt-*|runs-*) continue;; esac  # the last snapshot's: replaced
        others=$((others + 1)); bytes=$((bytes + $(stat -c %s "$f")))
    done
    # beside $OUT, so that the move is a rename; pack.py counts what its folder holds against the return's limits,
    # so the log goes beside that folder
    next=$(mktemp -d "$(dirname "$OUT")/.snapshot.XXXXXX" 2> /dev/null || mktemp -d)
    mkdir "$next/out"
    snapshot "$next/out" $((7 - others)) "$(awk -v b="$bytes" 'BEGIN { print 63 - b / 1048576 }')" > "$next/log" 2>&1 \
        || echo "snapshot failed:"
    grep -i 'NOT PACKED\|error\|Traceback' "$next/log" && tail -n 5 "$next/log" || true
    # the last snapshot's files first: it and this one together could pass the return's 8 files and 64 MiB
    rm -f "$OUT"/status.txt "$OUT"/train.log "$OUT"/ckpt-* "$OUT"/runs-*
    for f in "$next"/out/*; do  # a rename where the two share a disk; else a copy, put in place only once whole
        mv "$f" "$OUT/.${f##*/}.part" && mv "$OUT/.${f##*/}.part" "$OUT/${f##*/}"
    done
    rm -rf "$next"
    echo "snapshot: $(ls "$OUT" | grep -c 'tgz$') archives, $(du -sh "$OUT" | cut -f1) in \$OUT"
}

published() {  # the checkpoints published so far, and when: a poll snapshots when this changes
    stat -c '%n %Y' "$CKPT"/*/metrics.json 2> /dev/null || true
}

call_deadline() {  # epoch seconds at which poll stops waiting: CALL_DEADLINE s (default 560) after its call began,
    # leaving the last snapshot and the trip back inside the call's 600. The call began when its command line's shell
    # did: this script's parent, if that is a shell younger than any call can be; else (a terminal, a test) when this
    # poll began. CALL_START (epoch seconds) says outright.
    python3 - "$PPID" "${CALL_DEADLINE:-560}" "${CALL_START:-}" <<'PY'
import os, sys, time
parent, after, start = sys.argv[1], float(sys.argv[2]), sys.argv[3]
now = time.time()
if not start:
    start = now
    try:
        with open(f"/proc/{parent}/stat") as f:  # field 22, after the name in parentheses: clock ticks after boot
            began = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            age = float(f.read().split()[0]) - began
        with open(f"/proc/{parent}/comm") as f:
            shell = f.read().strip() in ("bash", "sh", "dash", "zsh")
        if shell and 0 <= age < 600:
            start = now - age
    except (OSError, ValueError, IndexError):
        pass
print(int(float(start) + after))
PY
}

decide_flags() {  # $1 pytest's JUnit XML, $2 the bench's JSON, $3 1 if check ran with --compile: into $FLAGS_FILE, one
                  # line per flag every queued group gets, and why
    python3 - "$1" "$2" "$3" "$FLAGS_FILE" <<'PY'
import json, sys
import xml.etree.ElementTree as ET
junit, table, weighed_compile, flags_file = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
outcomes = {}  # test name -> passed, failed or skipped; none where pytest stopped (its time limit) before its report
try:
    for case in ET.parse(junit).iter("testcase"):
        kinds = {child.tag for child in case}
        outcomes[case.get("name")] = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
except (OSError, ET.ParseError):
    pass
try:
    with open(table) as f:
        rates = json.load(f)  # {model: {column heading: images/s, None where it failed}}, the rows timed in time
except (OSError, ValueError):
    rates = {}


def named(word):
    return {name: outcome for name, outcome in outcomes.items() if word in name}


def failing(chosen):  # why these tests do not count as passed ('' if they do)
    if not chosen:
        return "none ran (pytest stopped before its report?)"
    return ", ".join(f"{name} {outcome}" for name, outcome in sorted(chosen.items()) if outcome != "passed")


def slower(fast, slow):  # where the `fast` column did not beat `slow` ('' if it did on every model timed)
    if not rates:
        return "no throughput table"
    rate = lambda r: f"{r:,.0f}" if r else "none"
    return ", ".join(f"{m} {rate(r.get(fast))} against {rate(r.get(slow))} img/s" for m, r in rates.items()
                     if not (r.get(fast) and r.get(slow) and r[fast] > r[slow]))


flags, notes, models = {}, {}, ", ".join(rates)
# torchrun's test is left out: queue never trains under torchrun, so NCCL alone says nothing of the graphs
core = {name: outcome for name, outcome in outcomes.items()
        if "fused" not in name and "compiled" not in name and "torchrun" not in name}
if bad := failing(core):  # a skip too: no CUDA, so the captured path went untried
    flags["--no-cuda-graphs"] = f"CUDA tests not passed: {bad}"
else:
    notes["--no-cuda-graphs"] = "every CUDA test but the fused, compiled and torchrun ones passed"
if bad := failing(named("fused")):
    notes["--fuse"] = f"fused tests not passed: {bad}"
elif lost := slower("ours pair fused img/s", "ours pair img/s"):
    notes["--fuse"] = f'"ours pair fused" did not beat "ours pair": {lost}'
else:
    flags["--fuse"] = f'every fused test passed and "ours pair fused" beat "ours pair" ({models})'
eager = {h: "ours" + h[len("compiled"):] for r in rates.values() for h in r if h.startswith("compiled")}
if not weighed_compile:
    notes["--compile"] = "check ran without --compile"
elif bad := failing(named("compiled")):
    notes["--compile"] = f"compiled test not passed: {bad}"
elif not eager:
    notes["--compile"] = "no compiled column in the throughput table"
elif lost := "; ".join(filter(None, (slower(c, e) for c, e in eager.items()))):
    notes["--compile"] = f"the compiled columns did not beat the eager ones: {lost}"
else:
    flags["--compile"] = f"the compiled test passed and the compiled columns beat the eager ones ({models})"
if "--fuse" in flags and "--compile" in flags:  # train.py fuses no compiled lane: keep the faster of the two
    two = "compiled x2 lanes img/s"  # two nets compiled, side by side: what --compile would train a pair as
    if not all(r.get(two) for r in rates.values()):
        notes["--compile"] = f'not weighed against --fuse (no "{two[:-6]}" column: check --lanes 2)'
        del flags["--compile"]
    elif lost := slower("ours pair fused img/s", two):
        notes["--fuse"] = f'--compile is faster ("ours pair fused" did not beat "compiled x2 lanes": {lost})'
        del flags["--fuse"]
    else:
        notes["--compile"] = f'--fuse is faster ("ours pair fused" beat "compiled x2 lanes" on {models})'
        del flags["--compile"]
with open(flags_file, "w") as f:
    f.writelines(f"{flag} {reason}\n" for flag, reason in flags.items())
for flag in ("--no-cuda-graphs", "--fuse", "--compile"):
    print(f"check: every group gets {flag}: {flags[flag]}" if flag in flags else f"check: no {flag}: {notes[flag]}")
print(f"check: flags for queue in {flags_file}: {' '.join(flags) or 'none'}")
PY
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
check)  # device: the CUDA-only tests, then the throughput table against the textbook baseline, then the flags every
        # queued group gets (decide_flags), into $FLAGS_FILE
    export PYTHONUNBUFFERED=1
    out=${OUT:-/tmp}
    rm -f "$out/gpu_tests.xml" "$out/bench.json"  # (where OUT is unset, /tmp may hold an earlier check's)
    # A failing test must not cost the benchmark (the call's minutes are spent either way): both run, both logs
    # come back whole in $OUT, and the call fails at the end if either did. Each has a cap (CHECK_TESTS_S,
    # CHECK_BENCH_S): a hung one must not take the call's 600 s; what it printed till then is in its log.
    set +e
    # the compiled test spends a minute or two compiling: only when the session weighs --compile
    case " $* " in *" --compile "*) only=(); weighed=1;; *) only=(-k "not compiled"); weighed=0;; esac
    timeout -k 10 "${CHECK_TESTS_S:-300}" python3 -m pytest -q tests/test_gpu.py -p no:cacheprovider -rA \
        --junitxml="$out/gpu_tests.xml" ${only[@]+"${only[@]}"} 2>&1 | tee "$out/gpu_tests.txt" | tail -n 30
    tests=${PIPESTATUS[0]}
    timeout -k 10 "${CHECK_BENCH_S:-240}" python3 bench/train_throughput.py --data-dir "$DATA" --workers 8 \
        --json "$out/bench.json" "$@" 2>&1 | tee "$out/bench.txt" | tail -n 40
    bench=${PIPESTATUS[0]}
    set -e
    echo "tests/test_gpu.py exit $tests, bench/train_throughput.py exit $bench (124: stopped at its time limit)"
    decide_flags "$out/gpu_tests.xml" "$out/bench.json" "$weighed"
    [ "$tests" = 0 ] && [ "$bench" = 0 ]
    ;;
start)  # device: train.py detached (it outlives this call), writing outside the synced tree
    already_running && exit 0
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
    already_running && exit 0
    need_data
    if [ -n "${QUEUE_FLAGS+set}" ]; then
        flags=$QUEUE_FLAGS
        echo "queue: every group gets QUEUE_FLAGS: ${flags:-(none)}"
    elif [ -f "$FLAGS_FILE" ]; then
        flags=""
        while read -r flag why; do
            flags="$flags $flag"; echo "queue: every group gets $flag: $why"
        done < "$FLAGS_FILE"
        [ -n "$flags" ] || echo "queue: no flag added: check named none ($FLAGS_FILE)"
    else
        flags=""; echo "queue: no flag added: no $FLAGS_FILE (check did not run on this machine)"
    fi
    deadline=$(python3 -c 'import sys, time; print(int(time.time() + 60 * float(sys.argv[1])))' "$minutes")
    if ! typed=$(resumed "$@"); then
        typed=$(printf '%s\n' "$@"); echo "queue: could not tell which groups resume: queued as typed"
    fi
    groups=()
    while IFS= read -r group; do groups+=("$group${flags:+ ${flags# }}"); done <<< "$typed"
    if awk -v t="$minutes" 'BEGIN { exit !(t > 9.3) }'; then
        echo "queue: T = $minutes is over 9.3 minutes: a poll 540 in the same call ends before the deadline: chain" \
             "another \`poll\` call"
    fi
    PYTHONUNBUFFERED=1 setsid nohup bash "$0" run-queue "$deadline" "${groups[@]}" > "$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"  # the runner, alive until its last group ends
    started
    ;;
run-queue)  # (queue's detached runner) each group in turn, with the minutes left as its --time-budget
    deadline=$1
    shift
    set -f  # a group's words are options: split them, never glob them
    # A group with too little time would train a minute or so and leave state that the next session must carry.
    # 90 s, not more: after the 44-layer pair a session has about 150-200 s left, the 32-layer pair's state (about
    # 17 MiB) fits beside the data in the next session's last carry, and those minutes are otherwise idle.
    min_s=${QUEUE_MIN_S:-90}
    for group in "$@"; do
        left=$((deadline - $(date +%s) - 10))  # python and torch take seconds to import before the budget's clock
        if [ "$left" -lt "$min_s" ]; then
            echo "queue: not started, $left s left (under $min_s): $group"; continue
        fi
        echo "queue: train.py $group --time-budget $((left / 60)) min $((left % 60)) s"
        # shellcheck disable=SC2086  # a group is several options
        python3 train.py --data-dir "$DATA" --out "$CKPT" --state-dir "$RUNS" $group \
            --time-budget "$(python3 -c 'import sys; print(int(sys.argv[1]) / 60)' "$left")" < /dev/null \
            || echo "queue: train.py exited with $? for: $group"
    done
    echo "queue: done"
    ;;
poll)  # device: wait (default 540 s) while the trainer runs, to the call's deadline at most (call_deadline), then
       # show progress
    secs=${1:-540}
    stop=$(($(date +%s) + secs))
    deadline=$(call_deadline)
    if [ "$deadline" -lt "$stop" ]; then
        echo "poll: waiting $((deadline - $(date +%s))) s, to the call's deadline (CALL_DEADLINE), not $secs"
        stop=$deadline
    fi
    # Insurance: a snapshot of what collect would bring back each time a net is published, and at the end. If the
    # call is killed at its limit, or the machine lost before collect, `receive` the last poll's files_at.
    # SNAPSHOT=0 skips them.
    snap=0; if [ -n "${OUT:-}" ] && [ "${SNAPSHOT:-1}" = 1 ]; then snap=1; fi
    seen=$(published)
    # checked every second, so the call returns (and stops spending device time) soon after the trainer stops
    while training && [ "$(date +%s)" -lt "$stop" ]; do
        sleep 1
        if [ "$snap" = 1 ] && [ "$(published)" != "$seen" ]; then
            seen=$(published)
            echo "poll: published $(ls "$CKPT" | tr '\n' ' ')at $(date -u +%H:%M:%S); a snapshot of it:"
            deliver
        fi
    done
    progress 25
    training && echo "train.py: running" || echo "train.py: not running"
    ls "$CKPT" 2>/dev/null | sed 's/^/published: /' || true  # none yet is no failure: the snapshot still goes
    if [ "$snap" = 1 ]; then deliver; fi
    ;;
landscape)  # device: loss landscapes of published checkpoints, written beside them in $CKPT
    for m in "$@"; do
        [ ! -e "$CKPT/$m/landscape.json" ] || { echo "landscape: $m has one already"; continue; }  # a call again
        PYTHONUNBUFFERED=1 python3 -m resnet_core.landscape --model "$m" --checkpoints "$CKPT" --data-dir "$DATA" --device cuda
    done
    ;;
collect)  # device: published checkpoints, unfinished state, the log and a status summary, into $OUT
    : "${OUT:?collect runs on the device machine, where OUT is set}"
    deliver
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
    # whatever stops receive, no half-received folder stays (nor an empty $PARKED)
    trap 'rm -rf "$PARKED/.receiving" checkpoints/.receiving; rmdir "$PARKED" 2> /dev/null || true' EXIT
    fresh=" " damaged=""  # the state received now (a net published beside its own new run keeps it); what failed
    # The state first: a damaged checkpoint archive must not cost the intact state beside it (nor the reverse).
    for kind in "runs:$PARKED" ckpt:checkpoints; do  # each folder replaces the one of that name whole: nothing
        into=${kind#*:}; tmp="$into/.receiving"   # of the old one (a landscape.json, say) stays beside the new
        mkdir -p "$into"; rm -rf "$tmp"; mkdir "$tmp"
        for t in "$from/${kind%%:*}"-*.tgz; do
            [ -e "$t" ] || continue
            tar -xzf "$t" -C "$tmp" || { echo "receive: $t is damaged: nothing from ${kind%%:*}-*.tgz put in place"; damaged=1; continue 2; }
        done
        # an older reply's state would roll a run back, a checkpoint of another length would leave the tree:
        # refused, unless FORCE=1 (arrivals.py says which and why)
        check=$([ "$into" = checkpoints ] && echo lengths || echo states)
        if [ "${FORCE:-0}" != 1 ] && ! python3 "$(dirname "$0")/arrivals.py" "$check" "$tmp" "$into"; then
            damaged=1; continue
        fi
        for d in "$tmp"/*/; do
            [ -d "$d" ] || continue
            name=$(basename "$d"); rm -rf "${into:?}/$name"; mv "$d" "$into/"
            if [ "$into" != checkpoints ]; then fresh="$fresh$name "; continue; fi
            # a net published now needs its parked state no more: left, a later stage would carry it back. One
            # published beside another run's checkpoint is <model>-run<first 8 of its run id>: its state is <model>'s
            base=$name
            if [[ $name =~ ^(.+)-run([0-9a-f]{8})$ ]] && python3 -c 'import json, sys
sys.exit(not json.load(open(sys.argv[1])).get("run_id", "").startswith(sys.argv[2]))' \
                "$PARKED/${BASH_REMATCH[1]}/state.json" "${BASH_REMATCH[2]}" 2> /dev/null; then
                base=${BASH_REMATCH[1]}
            fi
            case $fresh in *" $base "*) continue;; esac  # its state came now: a run of it goes on
            if [ -e "$PARKED/$base" ]; then rm -rf "${PARKED:?}/$base"; echo "unparked: $base"; fi
        done
        rm -rf "$tmp"
    done
    [ -z "$damaged" ] || { echo "receive: not all received (above); run it again once that is mended"; exit 1; }
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
help|-h|--help|"")
    sed -n '2,/^set -euo/p' "$0" | sed '$d'  # the header comment, however long it grows
    ;;
*)  # a typo must not pass an && chain (unpak && queue ... would queue on data never unpacked)
    echo "session.sh: unknown command '$cmd' (bash bench/gpu/session.sh help lists them)" >&2
    exit 2
    ;;
esac
