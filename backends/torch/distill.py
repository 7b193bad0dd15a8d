"""Fine-tuning with knowledge distillation: a student design trains on the labels and a teacher's softened outputs.

The loss of a batch is `alpha * KL(softmax(t/T) || softmax(s/T)) * T^2 + (1 - alpha) * CE(s, labels)` (Hinton et al.),
with `t` the teacher's and `s` the student's logits. `DistillTrainer` is the training run of `train.Trainer` (same
options, checkpoints and files) with that loss; the teacher's logits are computed once for every sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from convstudio.backends.torch.data import io_shapes
from convstudio.backends.torch.lower import lower
from convstudio.backends.torch.train import EVAL_CHUNK, RunOptions, Trainer
from convstudio.backends.weights import has_params
from convstudio.ir.design import Design
from convstudio.ir.errors import DesignError


def check_distill_options(alpha: float, temperature: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise DesignError(f"alpha must lie in [0, 1], got {alpha:g}", "--alpha")
    if not temperature > 0.0 or temperature == float("inf"):
        raise DesignError(f"temperature must be a positive number, got {temperature:g}", "--temperature")


def distill_terms(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL term scaled by T^2, cross-entropy) of a batch of student logits against the teacher's and the labels."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True, reduction="batchmean") * (t * t)
    return kl, F.cross_entropy(student, labels)


class DistillTrainer(Trainer):
    """A `Trainer` whose loss mixes the teacher's softened outputs (weight alpha) with the labels (weight 1 - alpha)."""

    def __init__(self, student: Design, teacher: Design, overrides: dict | None, options: RunOptions, alpha: float = 0.5, temperature: float = 4.0):
        check_distill_options(alpha, temperature)
        if not has_params(teacher.graph):
            raise DesignError("the teacher has no weights (train it or give --teacher-weights)", f"design '{teacher.name}'")
        super().__init__(student, overrides, options)
        if self.config["loss"] != "cross_entropy":
            raise DesignError(f"distillation needs cross_entropy (class logits), the run's loss is {self.config['loss']}", "training.loss")
        (s_in,), (s_out,) = io_shapes(student)
        t_in, t_out = io_shapes(teacher)
        if t_in != [s_in] or t_out != [s_out]:
            raise DesignError(f"the teacher maps {[list(s) for s in t_in]} to {[list(s) for s in t_out]} but the student maps "
                              f"{list(s_in)} to {list(s_out)}; they must match", f"design '{teacher.name}'")
        self.alpha, self.temperature = alpha, temperature
        self.teacher_logits = self.logits_of(lower(teacher.graph).to(self.device))

    @torch.no_grad()
    def logits_of(self, model: torch.nn.Module) -> torch.Tensor:
        """`model`'s outputs for every sample, in evaluation mode."""
        model.eval()
        return torch.cat([model(chunk) for chunk in self.x.split(EVAL_CHUNK)])

    def objective(self, outputs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        kl, ce = distill_terms(outputs, self.teacher_logits[rows], self.targets[rows], self.temperature)
        return self.alpha * kl + (1.0 - self.alpha) * ce

    @torch.no_grad()
    def terms(self, rows: torch.Tensor | None = None) -> dict[str, float]:
        """{loss, kl, ce} of the student in evaluation mode on `rows` (default: the training rows)."""
        rows = self.train_rows if rows is None else rows
        self.model.eval()
        try:
            outputs = self.embeddings(rows)
        finally:
            self.model.train()
        kl, ce = distill_terms(outputs, self.teacher_logits[rows], self.targets[rows], self.temperature)
        return {"loss": float(self.alpha * kl + (1.0 - self.alpha) * ce), "kl": float(kl), "ce": float(ce)}


def finetune(student: Design, teacher: Design, overrides: dict | None = None, options: RunOptions | None = None, alpha: float = 0.5,
             temperature: float = 4.0, on_epoch: Callable[[dict], None] | None = None, on_step: Callable[[int, int], None] | None = None) -> dict:
    """Distil `teacher` (weights loaded) into `student`; `train.fit`'s result plus accuracy and loss terms before and after."""
    trainer = DistillTrainer(student, teacher, overrides, options or RunOptions(), alpha, temperature)
    before_terms, (_, before) = trainer.terms(), trainer.evaluate()
    result = trainer.run(on_epoch, on_step)
    result.update(accuracy_before=before, accuracy_after=trainer.evaluate()[1], terms_before=before_terms, terms_after=trainer.terms(),
                  alpha=alpha, temperature=temperature)
    return result
