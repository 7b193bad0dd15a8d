"""`convstudio train --nproc 2`: DistributedDataParallel through torchrun on CPU (gloo)."""

from __future__ import annotations

import csv
import sys

import numpy as np
from safetensors.numpy import load_file

from convstudio.backends.torch.distributed import run_launcher
from convstudio.designer.cli.main import main
from convstudio.ir.design import Design, load, save
from convstudio.ir.templates import Builder, build_template


def test_two_processes_train_and_end_with_identical_weights(tmp_path, capfd):
    path = tmp_path / "lenet.json"
    save(Design(build_template("lenet", (1, 8, 8), 10), {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 3e-3}}), path)
    ranks = tmp_path / "ranks"
    ranks.mkdir()
    log = tmp_path / "run.csv"
    code = main(["train", str(path), "--nproc", "2", "--device", "cpu", "--rank-weights", str(ranks), "--log", str(log), "--no-progress"])
    assert code == 0
    first, second = load_file(ranks / "rank0.safetensors"), load_file(ranks / "rank1.safetensors")
    assert sorted(first) == sorted(second) and len(first) == 10
    for key in first:
        assert np.array_equal(first[key], second[key]), key  # exact: DDP keeps replicas bitwise in step
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 2 and float(rows[1]["loss"]) < float(rows[0]["loss"]) and float(rows[1]["accuracy"]) > 0.5
    assert load(path).weights is None  # the design is not rewritten; its weights pair with it by stem
    written = load_file(tmp_path / "lenet.safetensors")
    assert all(np.array_equal(written[k], first[k]) for k in first)
    assert "2 processes" in capfd.readouterr().out


def test_a_failing_worker_gives_one_error_line(tmp_path, capfd):
    """Divergence happens inside the workers (the launcher's own checks pass): one line, exit 2, no torchrun report."""
    b = Builder("net")
    b.output(b.op("Linear", b.op("Flatten", b.input("x", (1, 8, 8)), "flatten"), "fc", out_features=10), "logits")
    path = tmp_path / "net.json"
    save(Design(b.graph, {"epochs": 2, "batch_size": 128, "loss": "mse", "optimizer": {"name": "sgd", "lr": 100.0}}), path)
    assert main(["train", str(path), "--nproc", "2", "--device", "cpu", "--no-progress"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: training loss became") and "at epoch 1 step" in err, err


def test_launcher_keeps_one_copy_of_the_workers_errors_and_hides_its_own_report():
    script = ("import sys; print('W1129 torchrun log', file=sys.stderr); print('error: bad, here', file=sys.stderr); "
              "print('error: bad, here', file=sys.stderr); print('Traceback (most recent call last):', file=sys.stderr); sys.exit(1)")
    result = run_launcher([sys.executable, "-c", script])
    assert (result.code, result.errors, result.interrupted) == (1, ["error: bad, here"], False)
    assert result.other == ["W1129 torchrun log", "Traceback (most recent call last):"]
