"""`convstudio train`: the shipped example, files written, and one clear line for each kind of bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from convstudio.designer.cli.main import main
from convstudio.ir.design import Design, load, save
from convstudio.ir.templates import Builder, build_template

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_lenet_digits_example_reaches_95_percent(tmp_path, capsys):
    design = tmp_path / "lenet_digits.json"
    shutil.copy(EXAMPLES / "lenet_digits.json", design)
    log, plot = tmp_path / "run.csv", tmp_path / "curves.png"
    assert main(["train", str(design), "--log", str(log), "--plot", str(plot), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "epoch 20/20" in out and "accuracy" in out
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 20 and float(rows[-1]["accuracy"]) >= 0.95
    assert sum(float(r["seconds"]) for r in rows) < 60  # the example trains in under 60 s on 2 cores
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = load(design)
    assert saved.weights == "lenet_digits.safetensors" and (tmp_path / "lenet_digits.safetensors").is_file()
    assert (tmp_path / "lenet_digits.ckpt").is_file()


def small_design(tmp_path: Path, outputs: int = 10, name: str = "net") -> Path:
    b = Builder(name)
    x = b.op("Flatten", b.input("x", (1, 8, 8)), "flatten")
    b.output(b.op("Linear", x, "fc", out_features=outputs), "logits")
    path = tmp_path / f"{name}.json"
    save(Design(b.graph, {"epochs": 1, "batch_size": 128}), path)
    return path


def test_json_result_and_flag_overrides(tmp_path, capsys):
    path = small_design(tmp_path)
    args = ["train", str(path), "--json", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.2", "--momentum", "0.5", "--nesterov",
            "--batch-size", "full", "--scheduler", "step", "--val-split", "0.25", "--seed", "2", "--out", str(tmp_path / "o.safetensors")]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert [h["epoch"] for h in result["history"]] == [1, 2] and result["history"][0]["lr"] == 0.2
    assert result["weights"] == str(tmp_path / "o.safetensors") and not result["stopped_early"]
    assert load(path).weights == "o.safetensors"


def write_npz(tmp_path: Path, name: str, x: np.ndarray, y: np.ndarray) -> str:
    np.savez(tmp_path / name, x=x, y=y)
    return str(tmp_path / name)


def expect_error(capsys, args: list[str], *needles: str) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_samples_not_matching_the_input_shape(tmp_path, capsys):
    data = write_npz(tmp_path, "rgb.npz", np.zeros((20, 3, 8, 8), np.float32), np.zeros(20, np.int64))
    args = ["train", str(small_design(tmp_path)), "--data", data]
    expect_error(capsys, args, "samples are [3, 8, 8]", "input 'x' is [1, 8, 8]", "rgb.npz")
    assert not (tmp_path / "net.safetensors").exists()


def test_labels_out_of_range_for_the_output_width(tmp_path, capsys):
    data = write_npz(tmp_path, "labels.npz", np.zeros((20, 1, 8, 8), np.float32), np.arange(20) % 13)
    expect_error(capsys, ["train", str(small_design(tmp_path)), "--data", data], "label 12 is out of range for the output width 10")
    expect_error(capsys, ["train", str(small_design(tmp_path, outputs=1)), "--loss", "bce"], "label 9 is out of range for one output logit")


def test_missing_files(tmp_path, capsys):
    path = small_design(tmp_path)
    expect_error(capsys, ["train", str(path), "--data", str(tmp_path / "nothere.npz")], "no such file", "nothere.npz")
    expect_error(capsys, ["train", str(path), "--resume", str(tmp_path / "nothere.ckpt")], "checkpoint not found", "nothere.ckpt")
    expect_error(capsys, ["train", str(tmp_path / "nothere.json")], "no such file")
    design = load(path)
    design.weights = "gone.safetensors"
    save(design, path)
    expect_error(capsys, ["train", str(path)], "weights file not found (--from-scratch ignores the design's weights)", "gone.safetensors")
    assert main(["train", str(path), "--from-scratch", "--json"]) == 0
    assert (tmp_path / "gone.safetensors").is_file()  # the file the design names is written anew


def test_checkpoint_of_another_design(tmp_path, capsys):
    first = small_design(tmp_path, name="first")
    assert main(["train", str(first), "--no-progress"]) == 0
    capsys.readouterr()
    other = tmp_path / "lenet.json"
    save(Design(build_template("lenet", (1, 8, 8), 10)), other)
    expect_error(capsys, ["train", str(other), "--resume", str(tmp_path / "first.ckpt")], "checkpoint of design 'first' does not match")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    expect_error(capsys, ["train", str(first), "--resume", str(tmp_path / "junk.ckpt")], "not a checkpoint written by convstudio train")


def test_resume_from_the_cli_continues_to_the_requested_epochs(tmp_path, capsys):
    path = small_design(tmp_path)
    assert main(["train", str(path), "--epochs", "1", "--json"]) == 0
    capsys.readouterr()
    assert main(["train", str(path), "--resume", str(tmp_path / "net.ckpt"), "--epochs", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]


def test_bad_flags_and_divergence(tmp_path, capsys):
    path = small_design(tmp_path)
    expect_error(capsys, ["train", str(path), "--batch-size", "lots"], "--batch-size")
    expect_error(capsys, ["train", str(path), "--log", str(tmp_path / "no" / "run.csv")], "does not exist", "--log")
    expect_error(capsys, ["train", str(path), "--lr", "-1"], "training.optimizer.lr")
    expect_error(capsys, ["train", str(path), "--optimizer", "sgd", "--momentum", "0", "--nesterov"], "Nesterov")
    expect_error(capsys, ["train", str(path), "--loss", "mse", "--optimizer", "sgd", "--lr", "50", "--epochs", "3"],
                 "loss became", "at epoch 1 step")
    if not torch.cuda.is_available():
        expect_error(capsys, ["train", str(path), "--device", "cuda"], "no GPU", "--device")


def test_image_folder(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 210)):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(level, 20, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    path = small_design(tmp_path, outputs=2)
    args = ["train", str(path), "--data", str(tmp_path / "images"), "--epochs", "15", "--lr", "0.05", "--val-split", "0.25", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["history"][-1]["accuracy"] == 1.0
    expect_error(capsys, ["train", str(small_design(tmp_path, outputs=1)), "--data", str(tmp_path / "images")],
                 "label 1 is out of range for the output width 1")


def test_file_targets_that_are_folders_are_refused_before_training(tmp_path, capsys):
    path = small_design(tmp_path)
    folder = tmp_path / "outputs"
    folder.mkdir()
    for flag in ("--out", "--checkpoint", "--log", "--plot"):
        expect_error(capsys, ["train", str(path), flag, str(folder)], "is a folder", flag)
    assert not list(tmp_path.glob("net.*ckpt")) and not (tmp_path / "net.safetensors").exists() and not any(folder.iterdir())


def test_resuming_a_finished_run_asks_for_more_epochs(tmp_path, capsys):
    path = small_design(tmp_path)
    assert main(["train", str(path), "--json"]) == 0
    capsys.readouterr()
    expect_error(capsys, ["train", str(path), "--resume", str(tmp_path / "net.ckpt")], "already finished its 1 epoch;", "--epochs")
    expect_error(capsys, ["train", str(path), "--resume", str(tmp_path / "net.ckpt"), "--epochs", "2", "--lr", "0.5", "--seed", "3"],
                 "only epochs may change, not optimizer, seed", "net.ckpt")


def test_progress_bar_counts_the_steps_of_an_epoch():
    import io

    from rich.console import Console

    from convstudio.designer.cli.verb_train import EpochProgress

    screen = io.StringIO()
    progress = EpochProgress(Console(file=screen, force_terminal=True, width=80))
    for step in range(1, 5):
        progress.update(step, 4)
    progress.finish()
    assert "steps" in screen.getvalue() and "4/4" in screen.getvalue() and progress.bar is None


def test_epoch_line_reads_well():
    from convstudio.designer.cli.verb_train import epoch_line

    row = {"epoch": 3, "loss": 0.51234, "val_loss": None, "accuracy": 0.9375, "lr": 0.00125, "seconds": 1.234}
    assert epoch_line(row, 10) == "epoch 3/10  loss 0.5123  val_loss -  accuracy 93.75%  lr 0.00125  1.23 s"
    assert "centroid_accuracy 93.75%" in epoch_line(row, 10, "triplet")
