"""Stage everything a GPU session carries, before its first device call, and put it back together there.

Here (`session.sh stage`): the six CIFAR-10 zips and the resumable state of unfinished runs (bench/gpu/state/,
where `session.sh receive` parks it in git between sessions, and runs/, the trainer's own), cut into
pieces that fill carry folders .gpu-1, .gpu-2, ... to the brim, so that each call's working tree (what travels:
tracked and untracked-not-ignored files, plus the one carried folder) stays under the device's 64 MiB and the
data takes as few calls as its bytes need: ceil(payload / room beside the tree), not one zip a call once two no
longer fit. Each folder holds a manifest.json naming every file's size and SHA-256 and the pieces it carries.

On the device (`session.sh unpack`, once per carried folder, in any order): the pieces wait in a staging folder;
a file whose pieces have all arrived is joined, checked against its SHA-256, and put where the trainer reads it
(a zip into the data folder, a state archive unpacked into the runs folder). Each call says what is complete and
what it still waits for.

    python3 bench/gpu/stage.py                 # session.sh stage
    python3 bench/gpu/stage.py --no-state      # the data only, even if there are unfinished runs
    python3 bench/gpu/stage.py unpack --data /root/data --runs /root/runs   # session.sh unpack

Standard library only (of pack.py it uses the packer, not resume_command, the one part that needs torch).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pack  # noqa: E402  (beside this file)

MIB = 1 << 20
ZIPS = ("train-1", "train-2", "train-3", "train-4", "train-5", "test")
MANIFEST = "manifest.json"
MANIFEST_ROOM = 8 << 10  # bytes kept in each folder for its manifest (1.4 KiB for the six zips and one state archive)


def travelling_bytes(repo: Path) -> int:
    """Bytes of the files that travel with every call: tracked, and untracked but not ignored."""
    total = 0
    for args in (["ls-files", "-z"], ["ls-files", "-z", "-o", "--exclude-standard"]):
        names = subprocess.run(["git", *args], cwd=repo, capture_output=True, check=True).stdout.split(b"\0")
        for name in filter(None, names):
            path = repo / os.fsdecode(name)
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def cut(sizes: dict[str, int], capacity: int) -> list[list[tuple[str, int, int]]]:
    """The files, in order, as one stream cut into folders of at most `capacity` bytes: per folder a list of
    (name, offset, length) pieces. Every folder but the last is full, so the count is ceil(total / capacity)."""
    folders: list[list[tuple[str, int, int]]] = [[]]
    room = capacity
    for name, size in sizes.items():
        offset = 0
        while True:
            if room == 0 and offset < size:
                folders.append([])
                room = capacity
            length = min(room, size - offset)
            folders[-1].append((name, offset, length))
            offset += length
            room -= length
            if offset == size:
                break
    return folders


def copy_range(source: Path, offset: int, length: int, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        src.seek(offset)
        while length:
            block = src.read(min(length, 8 * MIB))
            if not block:
                raise OSError(f"{source} ended early")
            dst.write(block)
            length -= len(block)


def piece_name(name: str, index: int, count: int) -> str:
    return f"{name}.part{index}of{count}"


def stage(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zips", type=Path, default=Path(os.environ.get("CIFAR_ZIPS", "../shared/datasets/cifar10")))
    parser.add_argument("--runs", type=Path, nargs="+", default=[Path("bench/gpu/state"), Path("runs")],
                        help="folders of run states: the unfinished ones are carried (default: the parked state, "
                             "then runs/)")
    parser.add_argument("--no-state", action="store_true", help="carry the data only")
    parser.add_argument("--limit-mib", type=float, default=float(os.environ.get("TRAVEL_LIMIT_MIB", 64)),
                        help="the device's limit on what travels with one call")
    parser.add_argument("--margin-mib", type=float, default=1.0, help="kept free under the limit")
    args = parser.parse_args(argv)
    repo = Path.cwd()

    sources = {f"{z}.zip": args.zips / f"{z}.zip" for z in ZIPS}
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no CIFAR-10 zip at {', '.join(missing)} (set CIFAR_ZIPS to their folder)")
    tree = travelling_bytes(repo)
    capacity = int((args.limit_mib - args.margin_mib) * MIB) - tree - MANIFEST_ROOM
    if capacity <= 0:
        raise SystemExit(f"error: the tree alone is {tree / MIB:.1f} MiB, over the {args.limit_mib:g} MiB a call takes "
                         "(less the margin): untrack or ignore something first")
    with tempfile.TemporaryDirectory(dir=repo, prefix=".gpu-pack-") as packed:
        states = [] if args.no_state else [p for runs in args.runs if runs.is_dir() for p in sorted(runs.iterdir())
                                           if pack.unfinished(p)]
        names = [p.name for p in states]
        if twice := sorted({str(p) for p in states if names.count(p.name) > 1}):
            # unpacked into one folder on the device, one would silently replace the other
            raise SystemExit(f"error: unfinished runs of one name in two places: {', '.join(twice)}; move one away")
        # one archive for all the state: the cut spreads it over the folders like any other file
        if states and pack.main([packed, "runs", *map(str, states), "--unfinished-only", "--max-files", "1",
                                 "--total-mib", "1e6", "--max-mib", "1e6"]) != 0:
            raise SystemExit("error: some unfinished runs could not be packed (see above); the last staging stays")
        sources.update({p.name: p for p in sorted(Path(packed).glob("runs-*.tgz"))})
        files = {name: dict(size=path.stat().st_size, sha256=sha256(path)) for name, path in sources.items()}
        plan = cut({name: f["size"] for name, f in files.items()}, capacity)
        for name, f in files.items():
            f["pieces"] = sum(p[0] == name for folder in plan for p in folder)
        # one id per staging, in time order: unpack takes the newest and skips a folder left from an older one
        now = time.time_ns()
        staging = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}"
        index = dict.fromkeys(files, 0)
        for n, pieces in enumerate(plan, 1):  # built beside the last staging, which stays until this one is whole
            folder = Path(packed) / f"new-{n}"
            folder.mkdir()
            carried = []
            for name, offset, length in pieces:
                index[name] += 1
                part = piece_name(name, index[name], files[name]["pieces"])
                copy_range(sources[name], offset, length, folder / part)
                carried.append(dict(file=name, part=part, offset=offset, length=length))
            (folder / MANIFEST).write_text(json.dumps(dict(staging=staging, carry=n, carries=len(plan), files=files,
                                                           pieces=carried), indent=2, sort_keys=True))
            size = tree + sum(p.stat().st_size for p in folder.iterdir())
            print(f".gpu-{n}: {', '.join(p['part'] for p in carried)} -> {size / MIB:.1f} MiB travel with the tree "
                  f"(limit {args.limit_mib:g})")
        for old in repo.glob(".gpu-*"):  # the new staging replaces the last one whole
            if old.name != Path(packed).name:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        for n in range(1, len(plan) + 1):
            os.replace(Path(packed) / f"new-{n}", repo / f".gpu-{n}")
    payload = sum(f["size"] for f in files.values())
    print(f"tree {tree / MIB:.1f} MiB, payload {payload / MIB:.1f} MiB; {len(plan)} carries: one "
          f"`bash bench/gpu/session.sh unpack` call each, carry=[\".gpu-1\"] ... [\".gpu-{len(plan)}\"], back to back")
    return 0


def unpack(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stage.py unpack")
    parser.add_argument("--data", type=Path, required=True, help="where the zips go")
    parser.add_argument("--runs", type=Path, required=True, help="where the state archives are unpacked")
    parser.add_argument("--incoming", type=Path, required=True, help="where pieces wait for the rest of their file")
    parser.add_argument("folders", nargs="*", type=Path, help="carried folders (default: ./.gpu-*)")
    args = parser.parse_args(argv)
    for d in (args.data, args.runs, args.incoming):
        d.mkdir(parents=True, exist_ok=True)
    done_path = args.incoming / "done.json"  # files already joined: a folder left from an earlier call is skipped
    done = json.loads(done_path.read_text()) if done_path.is_file() else {}
    carried = {}
    for folder in args.folders or sorted(Path.cwd().glob(".gpu-*")):
        carried[folder] = json.loads((folder / MANIFEST).read_text())
    if not carried:
        print("no carried folder (.gpu-N) here: carry one of those that `session.sh stage` made")
    newest = max((m.get("staging", "") for m in carried.values()), default="")
    waiting = args.incoming / (newest or "unnamed")  # pieces of this staging until their file is whole
    waiting.mkdir(exist_ok=True)
    files = {}
    for folder, manifest in sorted(carried.items(), key=lambda fm: fm[1].get("carry", 0)):
        if manifest.get("staging", "") != newest:  # left on the machine by a call before a new `stage`
            print(f"skipped {folder.name}: from an earlier staging ({manifest.get('staging') or 'unnamed'})")
            continue
        files.update(manifest["files"])
        for piece in manifest["pieces"]:
            if done.get(piece["file"]) != files[piece["file"]]["sha256"]:
                shutil.copyfile(folder / piece["part"], waiting / piece["part"])
    bad = []
    for name, f in sorted(files.items()):
        if done.get(name) == f["sha256"]:
            continue
        count = f["pieces"]
        parts = [waiting / piece_name(name, i, count) for i in range(1, count + 1)]
        if not all(p.is_file() for p in parts):
            print(f"waiting: {name} ({sum(p.is_file() for p in parts)} of {count} pieces here)")
            continue
        joined = waiting / name
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f_in:
                    shutil.copyfileobj(f_in, out, 8 * MIB)
        if joined.stat().st_size != f["size"] or sha256(joined) != f["sha256"]:
            bad.append(name)
            print(f"CORRUPT: {name} joined from {count} pieces does not match its SHA-256; carry its folders again")
            joined.unlink()
            continue
        if name.endswith(".tgz"):
            with tarfile.open(joined) as tar:
                tar.extractall(args.runs, filter="data")
            joined.unlink()
        else:
            os.replace(joined, args.data / name)
        for part in parts:
            part.unlink()
        done[name] = f["sha256"]
        done_path.write_text(json.dumps(done, indent=2, sort_keys=True))
        print(f"complete: {name} ({f['size'] / MIB:.1f} MiB, SHA-256 checked)")
    zips = [z for z in ZIPS if (args.data / f"{z}.zip").is_file()]
    print(f"data: {len(zips)} of {len(ZIPS)} zips in {args.data}"
          f"{'' if len(zips) < len(ZIPS) else ': complete'}; runs: {', '.join(sorted(p.name for p in args.runs.iterdir())) or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["unpack"]:
        sys.exit(unpack(sys.argv[2:]))
    sys.exit(stage(sys.argv[1:]))
