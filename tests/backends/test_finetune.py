"""Fine-tuning with distillation: the loss terms, a run that lowers them, and `convstudio finetune`."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from convstudio.backends.torch.distill import DistillTrainer, distill_terms
from convstudio.backends.torch.train import RunOptions
from convstudio.backends.weights import load_design_weights, save_design_and_weights
from convstudio.designer.cli.main import main
from convstudio.ir.design import Design, load
from convstudio.ir.passes.compress import STRATEGIES
from tests.backends.distill_fixtures import conv_design, trained_teacher

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(teacher path, pruned student path, data path): the student keeps half the teacher's channels and its weights."""
    folder = tmp_path_factory.mktemp("distill")
    teacher, data = trained_teacher(folder)
    design = load(teacher)
    load_design_weights(design, required=True)
    pruned = STRATEGIES["prune"].apply(design.graph, None, ratio=0.75).graph
    student = folder / "student.json"
    save_design_and_weights(Design(pruned, design.training), student, pruned)
    return teacher, student, data


def trained(path):
    design = load(path)
    load_design_weights(design, required=True)
    return design


def test_distill_terms_match_their_definition():
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    kl, ce = distill_terms(s, t, y, 4.0)
    p = F.softmax(t / 4, 1)
    expected = (p * (p.log() - F.log_softmax(s / 4, 1))).sum(1).mean() * 16
    assert torch.allclose(kl, expected, atol=1e-6) and torch.allclose(ce, F.cross_entropy(s, y))
    assert distill_terms(t, t, y, 2.0)[0].abs().item() < 1e-6  # a student equal to its teacher has nothing to learn from it


def test_distillation_lowers_the_loss_and_the_kl_term(pair, tmp_path):
    teacher, student, data = pair
    options = RunOptions(device="cpu", weights_out=tmp_path / "s.safetensors")
    run = DistillTrainer(trained(student), trained(teacher), {"dataset": str(data), "epochs": 3, "batch_size": 16}, options, 0.7, 4.0)
    before = run.terms()
    run.run()
    after = run.terms()
    assert after["loss"] < before["loss"] and after["kl"] < before["kl"]
    assert (tmp_path / "s.safetensors").is_file()


def test_finetune_cli_reports_accuracy_and_never_rewrites_its_inputs(pair, tmp_path, capsys):
    teacher, student, data = pair
    inputs = {p: p.read_bytes() for p in (teacher, student, teacher.with_suffix(".safetensors"), student.with_suffix(".safetensors"))}
    out = tmp_path / "tuned.json"
    assert main(["finetune", str(student), "--teacher", str(teacher), "--data", str(data), "--epochs", "2", "--batch-size", "16",
                 "--alpha", "0.6", "--temperature", "3", "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["accuracy_before"] <= 1 and 0 <= result["accuracy_after"] <= 1
    assert result["terms_after"]["kl"] < result["terms_before"]["kl"] and len(result["history"]) == 2
    assert out.is_file() and out.with_suffix(".safetensors").is_file()
    assert all(p.read_bytes() == b for p, b in inputs.items())
    assert main(["finetune", str(out), "--teacher", str(teacher), "--data", str(data), "--epochs", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "before: accuracy" in text and "after:  accuracy" in text


@pytest.mark.parametrize("flags, message", [
    (["--alpha", "1.5"], "error: alpha must lie in [0, 1], got 1.5, --alpha"),
    (["--temperature", "0"], "error: temperature must be a positive number, got 0, --temperature"),
    (["--loss", "mse"], "error: distillation needs cross_entropy (class logits), the run's loss is mse, --loss"),
])
def test_bad_flags_are_one_line(pair, capsys, flags, message):
    teacher, student, data = pair
    assert main(["finetune", str(student), "--teacher", str(teacher), "--data", str(data), *flags]) == 2
    assert capsys.readouterr().err.strip() == message


def test_teacher_without_weights_or_of_another_shape_is_refused(pair, tmp_path, capsys):
    _, student, data = pair
    bare = conv_design(tmp_path, "bare")
    assert main(["finetune", str(student), "--teacher", str(bare), "--data", str(data)]) == 2
    assert capsys.readouterr().err.strip() == f"error: the teacher has no weights (train it or give --teacher-weights), file '{bare}'"
    other = trained_teacher_of_width(tmp_path, outputs=12)
    assert main(["finetune", str(student), "--teacher", str(other), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the teacher maps [[1, 8, 8]] to [[12]] but the student maps [1, 8, 8] to [10]") and err.count("\n") == 0


def trained_teacher_of_width(folder, outputs: int):
    from convstudio.backends.weights import init_params, save_weights

    path = conv_design(folder, "wide", outputs=outputs)
    design = load(path)
    init_params(design.graph, 0)
    save_weights(design.graph, path.with_suffix(".safetensors"))
    return path
