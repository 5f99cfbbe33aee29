"""Pack result folders for the trip back from the device machine, within its limits (at most 8 files of at
most 16 MiB, 64 MiB together, under $OUT): folders are binned, largest first, into NAME-1.tgz, NAME-2.tgz, ...

    python3 bench/gpu/pack.py $OUT ckpt /root/ckpt/*                    # published checkpoints
    python3 bench/gpu/pack.py $OUT runs /root/runs/* --unfinished-only  # resumable state of unfinished runs

Sizes are bounded by the folders' uncompressed sizes, so an archive never exceeds its limit. What does not
fit (the files or the total are used up) is listed on stdout and in $OUT/NAME-left.txt: collect it with
another call. Standard library only, but for resume_command (it reads commands with resnet_core's parser, so
it needs torch, as on the device machine).
"""
from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
import tarfile
from pathlib import Path

MIB = 1 << 20
STATE_READ_TRIES = 5  # re-reads of state.json when a save replaced the tensors file it named (saves: ~a minute apart)


def folder_size(path: Path) -> int:
    """Bytes that would be packed: for a trainer state folder, state.json and the tensors file it names (not a
    newer one being written beside it); a file that vanishes meanwhile counts nothing."""
    files = list(path.rglob("*"))
    meta = path / "state.json"
    if meta.is_file():
        try:
            files = [meta, path / json.loads(meta.read_text()).get("tensors", "state.safetensors")]
        except (OSError, ValueError):
            pass
    total = 0
    for p in files:
        try:
            total += p.stat().st_size if p.is_file() else 0
        except FileNotFoundError:
            pass
    return total


def unfinished(path: Path) -> bool:
    """A trainer state folder whose state.json does not say finished. A folder without a state.json is no run's
    state (a CPU run's own --out and --state-dir kept under runs/, say) and is left where it is; one whose
    state.json cannot be read goes, for the trainer to say what is wrong with it."""
    meta = path / "state.json"
    if not meta.is_file():
        return False
    try:
        return not json.loads(meta.read_text()).get("finished", False)
    except (OSError, ValueError):
        return True


# train.py options that session.sh's `start` sets itself (or that need a network the device lacks), or that name
# the models or the stop: a resume drops them
# --device too: a run started on a CPU (--device cpu) goes on on the device machine's GPU
SET_BY_START = {"--data-dir", "--out", "--state-dir", "--time-budget", "--stop-after", "--download", "--device"}
CHOOSE_MODELS = {"--depth", "--model", "--all", "--plain", "--both", "--resume", "--restart"}


def resume_command(command: str | None, models: list[str]) -> str:
    """The `session.sh start` call that continues `models`, with the recipe options of the train.py `command` that
    saved them (state.json's "command"; None for state from before it was recorded: then say so)."""
    tail = f"--model {' '.join(models)} --resume --time-budget N"
    if not command:
        return f"bash bench/gpu/session.sh start <the first start's options> {tail}"
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from resnet_core.checkpoint import without_options  # the one parser of recorded commands

    kept = without_options(command, SET_BY_START | CHOOSE_MODELS)[2:]  # after "python train.py"
    return f"bash bench/gpu/session.sh start {' '.join(shlex.quote(w) for w in kept)} {tail}"


def plan(sizes: dict[str, int], per_file: int, files: int, total: int) -> tuple[list[list[str]], list[str]]:
    """First-fit decreasing: bins of folder names (each bin's sum <= per_file, at most `files` bins, all bins
    together <= total), and the names left over."""
    bins: list[list[str]] = []
    used: list[int] = []
    left = []
    for name in sorted(sizes, key=lambda n: -sizes[n]):
        size = sizes[name]
        if size > per_file or sum(used) + size > total:
            left.append(name)
            continue
        for i, u in enumerate(used):
            if u + size <= per_file:
                bins[i].append(name)
                used[i] += size
                break
        else:
            if len(bins) < files:
                bins.append([name])
                used.append(size)
            else:
                left.append(name)
    return bins, left


def add_state(tar: tarfile.TarFile, folder: Path, arcname: str) -> None:
    """A trainer state folder as one consistent pair, though the trainer may be saving meanwhile: state.json as
    read, and the tensors file it names, opened before a newer save can remove it (an open file stays readable).
    If that file is gone already, a newer state.json names its successor: read again."""
    for _ in range(STATE_READ_TRIES):
        meta = (folder / "state.json").read_bytes()
        named = json.loads(meta).get("tensors", "state.safetensors")
        try:
            tensors = open(folder / named, "rb")
        except FileNotFoundError:
            continue
        with tensors:
            tar.addfile(tar.gettarinfo(arcname=f"{arcname}/{named}", fileobj=tensors), tensors)
        info = tarfile.TarInfo(f"{arcname}/state.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
        return
    raise OSError(f"{folder}: state.json kept naming tensors files that were gone; not packed")


def add_folder(tar: tarfile.TarFile, folder: Path, arcname: str) -> None:
    """A folder into the archive; a trainer state folder (it holds state.json) as a consistent pair. Every file
    is opened before the first is written, so a folder replaced meanwhile fails whole, never half-packed."""
    if (folder / "state.json").is_file():
        add_state(tar, folder, arcname)
        return
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    opened = []
    try:
        for p in files:
            opened.append((p, open(p, "rb")))  # FileNotFoundError (an OSError) if it went meanwhile
        for p, f in opened:
            tar.addfile(tar.gettarinfo(arcname=f"{arcname}/{p.relative_to(folder).as_posix()}", fileobj=f), f)
    finally:
        for _, f in opened:
            f.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("name")
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--unfinished-only", action="store_true", help="only trainer states (a folder with a state.json) not marked finished")
    parser.add_argument("--max-mib", type=float, default=15.5, help="per archive (the limit is 16 MiB)")
    parser.add_argument("--max-files", type=int, default=7, help="files under OUT in all (the limit is 8)")
    parser.add_argument("--total-mib", type=float, default=63.0, help="everything under OUT (the limit is 64 MiB)")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    present = [p for p in args.out.iterdir() if p.is_file()]
    files_left = args.max_files - len(present)
    bytes_left = int(args.total_mib * MIB) - sum(p.stat().st_size for p in present)
    folders = [f for f in args.folders if f.is_dir() and not f.name.startswith(".")]
    if args.unfinished_only:
        folders = [f for f in folders if unfinished(f)]
    sizes = {f.name: folder_size(f) for f in folders}
    where = {f.name: f for f in folders}
    bins, left = plan(sizes, int(args.max_mib * MIB), max(files_left, 0), max(bytes_left, 0))
    for k, names in enumerate(bins, 1):
        archive = args.out / f"{args.name}-{k}.tgz"
        packed = []
        with tarfile.open(archive, "w:gz") as tar:
            for name in sorted(names):
                try:
                    add_folder(tar, where[name], name)
                    packed.append(name)
                except OSError as e:  # a folder changing under us: the others still go
                    print(f"{name}: {e}")
                    left.append(name)
        print(f"{archive.name}: {', '.join(packed)} ({archive.stat().st_size / MIB:.1f} MiB)")
    if left:
        (args.out / f"{args.name}-left.txt").write_text("\n".join(sorted(left)) + "\n")
        print(f"NOT PACKED (no room in this call's return, or changing while packed; collect with another call): "
              f"{', '.join(sorted(left))}")
    if not folders:
        print(f"{args.name}: nothing to pack")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
