"""What `session.sh receive` checks before it puts a device reply's folders in place: exit 1, saying why, where one
would take something out of the tree (standard library only).

    python3 bench/gpu/arrivals.py lengths checkpoints/.receiving checkpoints   # a checkpoint of another length there
    python3 bench/gpu/arrivals.py states bench/gpu/state/.receiving bench/gpu/state   # an older state of a run
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def read(folder: Path, name: str) -> dict:
    """folder/name as JSON, or {} where it is missing or damaged (nothing to compare with)."""
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return {}


def other_lengths(coming: Path, into: Path) -> list[str]:
    """A checkpoint of another training length (the 15-epoch run) would vanish from the tree, replaced: it must be
    moved first, under the name said."""
    said = []
    for new in sorted(coming.iterdir()):
        old = into / new.name
        was, comes = read(old, "config.json").get("recipe", {}), read(new, "config.json").get("recipe", {})
        if old.is_dir() and was.get("iterations") != comes.get("iterations"):
            per_epoch = (read(old, "config.json").get("limit_train") or 50_000) // was.get("batch_size", 128)  # 390
            short = f"{new.name}-{round(was['iterations'] / per_epoch)}ep" if was.get("iterations") else f"{new.name}-old"
            said.append(f"receive: {into.name}/{new.name} is a run of {was.get('iterations')} iterations, the one "
                        f"coming of {comes.get('iterations')}: git mv {into.name}/{new.name} {into.name}/{short} first "
                        "(FORCE=1 replaces it)")
    return said


def older_states(coming: Path, into: Path) -> list[str]:
    """An older reply's state (a files_at received out of order) would roll a run back; another run of the net (one
    started over) may well be at an earlier iteration."""
    said = []
    for new in sorted(coming.iterdir()):
        was, comes = read(into / new.name, "state.json"), read(new, "state.json")
        if was.get("run_id") and was["run_id"] == comes.get("run_id") and comes.get("iteration", 0) < was.get("iteration", 0):
            said.append(f"receive: the state of {new.name} coming is at iteration {comes.get('iteration'):,}, the one "
                        f"parked at {was['iteration']:,} of the same run: is this an older reply's files_at? Nothing "
                        "from runs-*.tgz put in place (FORCE=1 takes it)")
    return said


if __name__ == "__main__":
    check = {"lengths": other_lengths, "states": older_states}[sys.argv[1]]
    refusals = check(Path(sys.argv[2]), Path(sys.argv[3]))
    for line in refusals:
        print(line)
    sys.exit(1 if refusals else 0)
