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
    original = design.read_bytes()
    log, plot = tmp_path / "run.csv", tmp_path / "curves.png"
    assert main(["train", str(design), "--log", str(log), "--plot", str(plot), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "epoch 20/20" in out and "accuracy" in out
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 20 and float(rows[-1]["accuracy"]) >= 0.95
    assert sum(float(r["seconds"]) for r in rows) < 60  # the example trains in under 60 s on 2 cores
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert design.read_bytes() == original and (tmp_path / "lenet_digits.safetensors").is_file()  # weights beside it, the design untouched
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
    assert load(path).weights is None  # --out elsewhere leaves the design as it was


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
    expect_error(capsys, ["train", str(path), "--lr", "-1"], "must be in (0, 100], got -1", "--lr")
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

    from convstudio.designer.cli.common import Progress

    screen = io.StringIO()
    progress = Progress("steps", console=Console(file=screen, force_terminal=True, width=80))
    for step in range(1, 5):
        progress.update(step, 4)
    progress.finish()
    assert "steps" in screen.getvalue() and "4/4" in screen.getvalue() and progress.bar is None


def test_epoch_line_reads_well():
    from convstudio.designer.cli.verb_train import epoch_line

    row = {"epoch": 3, "loss": 0.51234, "val_loss": None, "accuracy": 0.9375, "lr": 0.00125, "seconds": 1.234}
    assert epoch_line(row, 10) == "epoch 3/10  loss 0.5123  val_loss -  accuracy 93.75%  lr 0.00125  1.23 s"
    assert "centroid_accuracy 93.75%" in epoch_line(row, 10, "triplet")


# ---- hyper-parameters as typed, and divergence (issue 9, items 7 and 10) ----------------------------


@pytest.mark.parametrize(
    "flags,names",
    [
        (["--lr", "1e300"], ["must be in (0, 100], got 1e+300", "--lr"]),
        (["--lr", "nan"], ["must be a finite number", "--lr"]),
        (["--optimizer", "sgd", "--momentum", "1.5"], ["must be in [0, 1), got 1.5", "--momentum"]),
        (["--weight-decay", "inf"], ["must be a finite number", "--weight-decay"]),
        (["--seed", str(2**40)], ["must be in [0, 2,147,483,647]", "--seed"]),
        (["--scheduler", "plateau", "--factor", "1"], ["must be in (0, 1), got 1", "--factor"]),
        (["--scheduler", "step", "--step-size", "0"], ["must be in [1, ", "--step-size"]),
        (["--gamma", "0.5"], ["scheduler 'none' has no parameter 'gamma' (gamma is a parameter of step, exponential)", "--gamma"]),
        (["--scheduler", "cyclic", "--base-lr", "0.5", "--max-lr", "0.1"], ["base_lr 0.5 must not exceed max_lr 0.1", "--base-lr"]),
    ],
    ids=["lr_huge", "lr_nan", "momentum", "weight_decay", "seed", "factor", "step_size", "param_of_another_scheduler", "cyclic_range"],
)
def test_hyper_parameters_are_checked_before_training_and_name_the_flag(tmp_path, capsys, flags, names):
    path = small_design(tmp_path)
    expect_error(capsys, ["train", str(path), *flags], *names)
    assert not list(tmp_path.glob("net.*ckpt")) and not (tmp_path / "net.safetensors").exists()


def test_a_field_from_the_design_is_named_as_a_field(tmp_path, capsys):
    path = small_design(tmp_path)
    design = load(path)
    design.training["optimizer"] = {"name": "sgd", "lr": 1e300}
    save(design, path)
    expect_error(capsys, ["train", str(path)], "must be in (0, 100]", "training.optimizer.lr")


def test_torch_refusing_an_optimizer_is_one_error_naming_the_field():
    from convstudio.backends.torch.optim import make_optimizer
    from convstudio.ir.errors import DesignError

    params = [torch.nn.Parameter(torch.zeros(2))]
    unchecked = {"name": "sgd", "lr": -0.5, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}  # as if validation were skipped
    with pytest.raises(DesignError) as info:
        make_optimizer(params, unchecked)
    assert info.value.where == "training.optimizer.lr" and "Invalid learning rate" in info.value.what


def test_momentum_defaults_to_torchs_zero(tmp_path):
    from convstudio.backends.torch.optim import make_optimizer
    from convstudio.ir.training import training_config

    params = [torch.nn.Parameter(torch.zeros(2))]
    for name in ("sgd", "rmsprop"):
        optimizer = make_optimizer(params, training_config({"optimizer": {"name": name}})["optimizer"])
        assert optimizer.param_groups[0]["momentum"] == 0 == type(optimizer)(params).param_groups[0]["momentum"]


def test_no_nesterov_turns_off_what_the_design_sets(tmp_path, capsys):
    from convstudio.backends.torch.train import read_checkpoint

    path = small_design(tmp_path)
    design = load(path)
    design.training["optimizer"] = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}
    save(design, path)
    expect_error(capsys, ["train", str(path), "--momentum", "0"], "Nesterov momentum needs momentum > 0", "training.optimizer.nesterov")
    assert main(["train", str(path), "--momentum", "0", "--no-nesterov", "--json"]) == 0
    capsys.readouterr()
    config = read_checkpoint(tmp_path / "net.ckpt")["config"]["optimizer"]
    assert config["momentum"] == 0 and config["nesterov"] is False


def test_scheduler_parameters_from_flags(tmp_path, capsys):
    path = small_design(tmp_path)
    args = ["train", str(path), "--json", "--epochs", "3", "--optimizer", "sgd", "--lr", "0.2", "--scheduler", "step", "--step-size", "1",
            "--gamma", "0.5"]
    assert main(args) == 0
    lrs = [row["lr"] for row in json.loads(capsys.readouterr().out)["history"]]
    assert lrs == pytest.approx([0.2, 0.1, 0.05], rel=1e-9)


def test_flags_travel_to_the_distributed_workers():
    from convstudio.designer.cli.main import build_parser
    from convstudio.designer.cli.verb_train import worker_argv

    args = build_parser("train").parse_args(["train", "d.json", "--no-nesterov", "--scheduler", "step", "--gamma", "0.5", "--nproc", "2"])
    argv = worker_argv(args)
    assert "--no-nesterov" in argv and argv[argv.index("--gamma") + 1] == "0.5" and "--nproc" not in argv
    again = build_parser("train").parse_args(["train", *argv])
    assert (again.nesterov, again.gamma, again.scheduler) == (False, 0.5, "step")


def test_a_non_finite_validation_loss_stops_the_run(tmp_path, capsys):
    """One step per epoch: the weights after an epoch's last step overflow the validation loss before any training loss."""
    path = small_design(tmp_path)
    args = ["train", str(path), "--loss", "mse", "--optimizer", "sgd", "--lr", "50", "--batch-size", "full", "--epochs", "40"]
    line = expect_error(capsys, args, "validation loss became", "(try a lower learning rate)", "no weights were written", "training")
    epoch = int(line.split(" at epoch ")[1].split(" ")[0])
    assert epoch > 1 and f"the checkpoint after epoch {epoch - 1} is in '{tmp_path / 'net.ckpt'}'" in line
    assert not (tmp_path / "net.safetensors").exists()
    from convstudio.backends.torch.train import read_checkpoint

    assert read_checkpoint(tmp_path / "net.ckpt")["epoch"] == epoch - 1


def test_a_training_loss_that_diverges_at_once_saves_nothing(tmp_path, capsys):
    path = small_design(tmp_path)
    args = ["train", str(path), "--loss", "mse", "--optimizer", "sgd", "--lr", "100", "--batch-size", "1", "--epochs", "1"]
    expect_error(capsys, args, "training loss became", "at epoch 1 step", "nothing was written")
    assert not list(tmp_path.glob("net.*"))[1:]  # only the design itself


NPROC_CASES = [("0", "must be at least 1, got 0"), ("257", "at most 256 processes on one machine, got 257"), ("9" * 400, "absurdly many processes")]


@pytest.mark.parametrize("count,what", NPROC_CASES)
def test_nproc_is_bounded_before_any_process_starts(tmp_path, capsys, count, what):
    path = small_design(tmp_path)
    expect_error(capsys, ["train", str(path), "--nproc", count], what, "--nproc")
