"""bench/train_throughput.py on the CPU, tiny: the table it prints (and writes as JSON), and a --compile that cannot run
on the machine."""
import json
import runpy
import sys

import pytest
import torch._dynamo.exc

from conftest import REPO

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
    assert len(speedups) == 4 and all(v > 0 for v in speedups)  # alone, two copies, the pair, the pair fused


def test_fuse_needs_a_residual_net_with_a_plain_twin(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_bench(monkeypatch, capsys, "--models", "resnet20", "plain20", "resnet18", "--fuse")
    assert "its plain twin: plain20, resnet18 have none" in capsys.readouterr().err


def test_a_compile_that_cannot_run_here_leaves_the_eager_columns(monkeypatch, capsys, shared_cifar, tmp_path):
    from resnet_core import trainer

    def cannot_compile():
        def call(block, x):
            raise torch._dynamo.exc.TorchDynamoException("no Triton on this machine")
        return call

    monkeypatch.setattr(trainer, "block_compiler", cannot_compile)
    lines, err = run_bench(monkeypatch, capsys, "--data-dir", str(shared_cifar), "--compile",
                           "--json", str(tmp_path / "bench.json"))
    assert "resnet20: --compile failed: TorchDynamoException: no Triton on this machine" in err
    row = lines[-1].split()
    assert row[0] == "resnet20" and row[3].endswith("x") and row[-1] == "failed"  # eager timed, compiled said failed
    table = json.loads((tmp_path / "bench.json").read_text())["resnet20"]
    assert table["ours img/s"] > 0 and table["compiled img/s"] is None

    def a_bug():
        def call(block, x):
            raise ValueError("a bug of ours")
        return call

    monkeypatch.setattr(trainer, "block_compiler", a_bug)
    with pytest.raises(ValueError, match="a bug of ours"):  # not taken for the machine's lack
        run_bench(monkeypatch, capsys, "--data-dir", str(shared_cifar), "--compile")
