"""Optimizers and learning-rate schedules of the training section.

Momentum applies to SGD and RMSprop (0 unless set, as in torch); weight decay (L2) to all. Schedules
step once per epoch, except `cyclic`, which steps once per batch; `plateau` watches the validation
loss (the training loss when there is no validation split).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import lr_scheduler

from convstudio.ir.errors import DesignError

# words of torch's ValueError messages -> the optimizer field they are about
TORCH_FIELDS = (("learning rate", "lr"), ("momentum", "momentum"), ("nesterov", "nesterov"), ("weight_decay", "weight_decay"),
                ("weight decay", "weight_decay"))


def make_optimizer(params: Iterable[torch.nn.Parameter], opt: dict) -> torch.optim.Optimizer:
    """The torch optimizer for the training section's `optimizer` object; torch's refusals become a DesignError."""
    name, lr, wd = opt["name"], float(opt["lr"]), float(opt["weight_decay"])
    momentum = float(opt["momentum"])
    if name == "sgd" and opt["nesterov"] and momentum <= 0:
        raise DesignError("Nesterov momentum needs momentum > 0 (set momentum, or turn nesterov off)", "training.optimizer.nesterov")
    table = {
        "sgd": lambda: torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=bool(opt["nesterov"]), weight_decay=wd),
        "adagrad": lambda: torch.optim.Adagrad(params, lr=lr, weight_decay=wd),
        "adadelta": lambda: torch.optim.Adadelta(params, lr=lr, weight_decay=wd),
        "rmsprop": lambda: torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=wd),
        "adam": lambda: torch.optim.Adam(params, lr=lr, weight_decay=wd),
        "adamw": lambda: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    }
    try:
        return table[name]()
    except ValueError as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        field = next((f for words, f in TORCH_FIELDS if words in reason.lower()), None)
        raise DesignError(f"torch's {name} optimizer refuses it: {reason}", f"training.optimizer{'.' + field if field else ''}") from None


class Schedule:
    """A learning-rate schedule that knows whether it steps per batch or per epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, sched: dict, epochs: int):
        self.name = sched["name"]
        self.optimizer = optimizer
        try:
            self.scheduler = self._build(sched, epochs)
        except ValueError as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DesignError(f"torch's {self.name} scheduler refuses it: {reason}", "training.scheduler") from None

    def _build(self, s: dict, epochs: int):
        opt = self.optimizer
        if self.name == "none":
            return None
        if self.name == "step":
            return lr_scheduler.StepLR(opt, step_size=max(1, int(s["step_size"])), gamma=float(s["gamma"]))
        if self.name == "exponential":
            return lr_scheduler.ExponentialLR(opt, gamma=float(s["gamma"]))
        if self.name == "plateau":
            return lr_scheduler.ReduceLROnPlateau(opt, factor=float(s["factor"]), patience=int(s["patience"]))
        if self.name == "cyclic":
            if float(s["base_lr"]) > float(s["max_lr"]):
                raise DesignError(f"base_lr {s['base_lr']:g} must not exceed max_lr {s['max_lr']:g}", "training.scheduler.base_lr")
            return lr_scheduler.CyclicLR(opt, base_lr=float(s["base_lr"]), max_lr=float(s["max_lr"]),
                                         step_size_up=max(1, int(s["step_size_up"])), cycle_momentum=False)
        if self.name == "cosine":
            return lr_scheduler.CosineAnnealingLR(opt, T_max=int(s["t_max"]) or epochs)
        raise DesignError(f"unknown scheduler '{self.name}'", "training.scheduler")

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def after_batch(self) -> None:
        if self.name == "cyclic":
            self.scheduler.step()

    def after_epoch(self, monitored_loss: float) -> None:
        if self.name == "plateau":
            self.scheduler.step(monitored_loss)
        elif self.scheduler is not None and self.name != "cyclic":
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)
