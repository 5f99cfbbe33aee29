"""bench/train_throughput.py on the CPU, tiny: the table it prints (and writes as JSON), and a --compile that cannot run
on the machine."""
import json
import runpy
import sys

import pytest
import torch._dynamo.exc

from conftest import REPO, failing_block_compiler

BENCH = str(REPO / "bench" / "train_throughput.py")


def run_bench(monkeypatch, capsys, *args: str) -> tuple[list[str], str]:
    monkeypatch.setattr(sys, "argv", ["train_throughput.py", "--models", "resnet20", "--images", "256", "--steps", "1",
                                      "--warmup", "1", "--workers", "0", *args])
    runpy.run_path(BENCH, run_name="__main__")
    out = capsys.readouterr()
    return out.out.splitlines(), out.err


def test_the_table_has_a_row_per_model_with_both_pipelines(monkeypatch, capsys, shared_cifar, tmp_path):
    lines, _ = run_bench(monkeypatch, capsys, "--data-dir", str(shared_cifar), "--lanes", "2", "--fuse",
                         "--json", str(tmp_path / "bench.json"))
    head, row = lines[-2].split(), lines[-1].split()
    # the same table for a script (session.sh check decides the queue's flags from it): every column's images/s
    table = json.loads((tmp_path / "bench.json").read_text())
    assert list(table) == ["resnet20"] and list(table["resnet20"]) == [
        "baseline img/s", "ours img/s", "ours x2 lanes img/s", "ours pair img/s", "ours pair fused img/s"]
    assert [f"{v:,.0f}" for v in table["resnet20"].values()] == [row[1], row[2], row[5], row[8], row[11]]
    assert head[:4] == ["model", "baseline", "img/s", "ours"] and "x2" in head
    # two copies side by side, then resnet20 beside plain20 as two lanes, then the two fused
    assert " ours pair img/s " in lines[-2] and lines[-2].index(" ours pair img/s ") < lines[-2].index("pair fused")
    assert row[0] == "resnet20" and float(row[1].replace(",", "")) > 0
    speedups = [float(cell[:-1]) for cell in row if cell.endswith("x")]
    assert len(speedups) == 5 and all(v > 0 for v in speedups)  # alone, two copies, the pair, the pair fused, fused/lanes
    # several nets' images/s together over the one-net baseline's is headed so, not "speed-up"; and last, what --fuse
    # gains: the pair fused against the pair as two lanes, both timed in this run
    assert head.count("speed-up") == 1 and head.count("all/base") == 3 and head[-1] == "fused/lanes"
    assert row[-1] == f"{table['resnet20']['ours pair fused img/s'] / table['resnet20']['ours pair img/s']:.2f}x"


def test_fuse_needs_a_residual_net_with_a_plain_twin(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_bench(monkeypatch, capsys, "--models", "resnet20", "plain20", "resnet18", "--fuse")
    assert "its plain twin: plain20, resnet18 have none" in capsys.readouterr().err


def test_a_compile_that_cannot_run_here_leaves_the_eager_columns(monkeypatch, capsys, shared_cifar, tmp_path):
    from resnet_core import trainer

    cannot_compile = failing_block_compiler(torch._dynamo.exc.TorchDynamoException("no Triton on this machine"))
    monkeypatch.setattr(trainer, "block_compiler", cannot_compile)
    lines, err = run_bench(monkeypatch, capsys, "--data-dir", str(shared_cifar), "--compile",
                           "--json", str(tmp_path / "bench.json"))
    assert "resnet20: --compile failed: TorchDynamoException: no Triton on this machine" in err
    row = lines[-1].split()
    assert row[0] == "resnet20" and row[3].endswith("x") and row[-1] == "failed"  # eager timed, compiled said failed
    table = json.loads((tmp_path / "bench.json").read_text())["resnet20"]
    assert table["ours img/s"] > 0 and table["compiled img/s"] is None

    monkeypatch.setattr(trainer, "block_compiler", failing_block_compiler(ValueError("a bug of ours")))
    with pytest.raises(ValueError, match="a bug of ours"):  # not taken for the machine's lack
        run_bench(monkeypatch, capsys, "--data-dir", str(shared_cifar), "--compile")


@pytest.fixture
def no_loading(monkeypatch):
    """The data loader replaced by a failure: a refusal must come before the data loads (and any model is timed)."""
    from resnet_core import data

    def never(*args, **kwargs):
        raise AssertionError("data loaded before the arguments were checked")

    monkeypatch.setattr(data, "load_cifar10", never)


def refusal(monkeypatch, capsys, *args: str) -> str:
    """The last line on stderr of a run refused with exit status 2, without a traceback."""
    with pytest.raises(SystemExit) as stop:
        run_bench(monkeypatch, capsys, *args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["--models", "resnet20", "resnt20"], "--models: unknown resnt20; known: resnet20, plain20, resnet32,"),
    (["--models", "resnt20", "--fuse"], "--models: unknown resnt20; known: resnet20,"),  # not "has no plain twin"
    (["--device", "gpu"], "--device gpu: not a device; use cpu, cuda or cuda:N"),
    (["--workers", "-1"], "argument --workers: -1 is not at least 0"),
    (["--batch-size", "0"], "argument --batch-size: 0 is not at least 1"),
    (["--lanes", "0"], "argument --lanes: 0 is not at least 1"),
    (["--steps", "0"], "argument --steps: 0 is not at least 1"),
    (["--warmup", "-1"], "argument --warmup: -1 is not at least 0"),
    (["--images", "0"], "argument --images: 0 is not at least 1"),
    (["--images", "64", "--batch-size", "128"],  # not one whole batch: the baseline's loader would loop for ever
     "--batch-size 128 is more than the 64 training images loaded; lower it or raise --images"),
])
def test_bad_arguments_are_refused_before_the_data_loads(monkeypatch, capsys, no_loading, args, message):
    assert refusal(monkeypatch, capsys, *args).startswith(f"train_throughput.py: error: {message}")


def test_cuda_is_refused_on_a_machine_without_a_gpu(monkeypatch, capsys, no_loading):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert refusal(monkeypatch, capsys, "--device", "cuda") == (
        "train_throughput.py: error: --device cuda: no CUDA GPU on this machine; use --device cpu")


def test_a_json_path_that_cannot_be_written_is_refused_at_the_start(monkeypatch, capsys, no_loading, tmp_path):
    missing = tmp_path / "no-such-folder" / "bench.json"
    assert refusal(monkeypatch, capsys, "--json", str(missing)) == (
        f"train_throughput.py: error: --json {missing}: cannot write there (No such file or directory); name a file "
        f"in a folder that exists and can be written")
    assert refusal(monkeypatch, capsys, "--json", str(tmp_path)).endswith("(it is a folder); name a file in a folder "
                                                                          "that exists and can be written")
    assert list(tmp_path.iterdir()) == []  # the probe's temp file is gone


def test_missing_data_is_one_line(monkeypatch, capsys, tmp_path):
    line = refusal(monkeypatch, capsys, "--data-dir", str(tmp_path / "nowhere"))
    assert line.startswith(f"error: CIFAR-10 train split not found in {tmp_path / 'nowhere'}: ") and "--data-dir" in line


def test_help_shows_every_default(monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        run_bench(monkeypatch, capsys, "--help")
    text = " ".join(capsys.readouterr().out.split())  # as argparse wraps it, unwrapped
    assert stop.value.code == 0
    for expected in ["--models MODELS [MODELS ...] registry names, timed in turn (default: resnet20 resnet56 resnet110)",
                     "--device DEVICE cuda, cuda:N or cpu (default: cuda if available)",
                     "--batch-size BATCH_SIZE images per step, both pipelines (default 128)",
                     "--workers WORKERS baseline DataLoader workers (default 4)",
                     "--lanes LANES also time this many copies side by side (ours only; default 1: no such column)"]:
        assert expected in text
