"""Stage everything a GPU session carries, before its first device call: the six CIFAR-10 zips and the resumable
state of unfinished runs (runs/), spread over carry folders .gpu-1, .gpu-2, ... so that each call's working tree
(what travels: tracked and untracked-not-ignored files, plus the one carried folder) stays under the device's
64 MiB. Each folder is carried by one `session.sh unpack` call.

    python3 bench/gpu/stage.py                 # session.sh stage calls this
    python3 bench/gpu/stage.py --no-state      # the data only, even if runs/ holds unfinished runs

How many folders it takes depends on the tree: two zips a call while the tree is under about 17 MiB, one
beyond. Standard library only, like pack.py.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pack  # noqa: E402  (beside this file)

MIB = 1 << 20
ZIPS = ("train-1", "train-2", "train-3", "train-4", "train-5", "test")


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


def fill(items: dict[str, int], capacity: int) -> list[list[str]]:
    """Item names in as few folders of `capacity` bytes as pack.plan's first-fit decreasing finds."""
    too_big = [n for n in items if items[n] > capacity]
    if too_big:
        raise SystemExit(f"error: {', '.join(too_big)} does not fit one call "
                         f"({capacity / MIB:.1f} MiB left beside the tree)")
    folders, left = pack.plan(items, capacity, files=len(items), total=sum(items.values()))
    assert not left  # one folder an item at worst, and the total is everything
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zips", type=Path, default=Path(os.environ.get("CIFAR_ZIPS", "../shared/datasets/cifar10")))
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="state of unfinished runs to carry")
    parser.add_argument("--no-state", action="store_true", help="carry the data only")
    parser.add_argument("--limit-mib", type=float, default=float(os.environ.get("TRAVEL_LIMIT_MIB", 64)),
                        help="the device's limit on what travels with one call")
    parser.add_argument("--margin-mib", type=float, default=1.0, help="kept free under the limit")
    args = parser.parse_args(argv)
    repo = Path.cwd()

    for old in repo.glob(".gpu-*"):  # a new plan replaces the last one whole
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    sources = {f"{z}.zip": args.zips / f"{z}.zip" for z in ZIPS}
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no CIFAR-10 zip at {', '.join(missing)} (set CIFAR_ZIPS to their folder)")
    tree = travelling_bytes(repo)
    capacity = int((args.limit_mib - args.margin_mib) * MIB) - tree
    if capacity <= 0:
        raise SystemExit(f"error: the tree alone is {tree / MIB:.1f} MiB, over the {args.limit_mib:g} MiB a call takes "
                         "(less the margin): untrack or ignore something first")
    with tempfile.TemporaryDirectory(dir=repo, prefix=".gpu-pack-") as packed:
        states = [] if args.no_state or not args.runs.is_dir() else sorted(args.runs.iterdir())
        archive_mib = min(15.5, capacity / MIB)  # each archive fits a call beside the tree
        if states and pack.main([packed, "runs", *map(str, states), "--unfinished-only", "--max-files", "999",
                                 "--total-mib", "1e6", "--max-mib", str(archive_mib)]) != 0:
            raise SystemExit("error: some unfinished runs could not be packed (see above); nothing staged")
        sources.update({p.name: p for p in sorted(Path(packed).glob("runs-*.tgz"))})
        items = {name: path.stat().st_size for name, path in sources.items()}
        plan = fill(items, capacity)
        for n, names in enumerate(plan, 1):
            folder = repo / f".gpu-{n}"
            folder.mkdir()
            for name in names:
                shutil.copyfile(sources[name], folder / name)
            size = tree + sum(items[name] for name in names)
            print(f".gpu-{n}: {' '.join(sorted(names))} -> {size / MIB:.1f} MiB travel with the tree "
                  f"(limit {args.limit_mib:g})")
    print(f"tree {tree / MIB:.1f} MiB; {len(plan)} carries: one `bash bench/gpu/session.sh unpack` call each, "
          f"carry=[\".gpu-1\"] ... [\".gpu-{len(plan)}\"], back to back")
    return 0


if __name__ == "__main__":
    sys.exit(main())
