"""Training a design from its `training` section: `fit(design, overrides, ...)`.

The run lowers the graph, trains on the dataset (digits, .npz or image folder) with the configured
loss, optimizer, schedule, L2 weight decay and L1 penalty, evaluates each epoch, and writes a
checkpoint each epoch (model, optimizer, schedule, position and RNG state) so that a resumed run ends
with the same weights as an uninterrupted one. Trained weights go back into `node.params` and the
safetensors file paired with the design (`<design>.safetensors` beside it); the design file itself is
never rewritten, and a design is written only where `design_out` asks, with its weights as one pair. Launched by
torchrun, the same code trains with DistributedDataParallel; rank 0 writes every file.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler

from convstudio.backends.torch import distributed as dist_ctx
from convstudio.backends.torch.data import Samples, load_samples, mine_triplets, split_indices
from convstudio.backends.torch.losses import class_accuracy, l1_penalty, make_loss, nearest_centroid_accuracy
from convstudio.backends.torch.lower import lower, params_from_module
from convstudio.backends.torch.optim import Schedule, make_optimizer
from convstudio.backends.weights import (
    has_params,
    load_design_weights,
    retire_pending,
    save_design_and_weights,
    save_weights,
    trained_epochs,
)
from convstudio.ir.budget import check_estimate, estimate_memory
from convstudio.ir.design import Design, write_atomic
from convstudio.ir.errors import DesignError
from convstudio.ir.training import SCHEDULER_PARAMS, training_config, validate_training

CHECKPOINT_FORMAT = "convstudio.checkpoint"
EVAL_CHUNK = 1024
LOG_FIELDS = ("epoch", "loss", "val_loss", "accuracy", "lr", "seconds")


class TrainingDiverged(DesignError):
    """The training or validation loss became NaN or infinite."""


@dataclass
class RunOptions:
    """How and where a run happens; what is trained lives in the training configuration."""

    device: str = "auto"  # auto | cpu | cuda
    weights_out: Path | str | None = None  # default: the design's paired weights file (<design>.safetensors beside it)
    weights_in: Path | str | None = None  # start from these weights instead of the design's own
    design_out: Path | str | None = None  # also write the trained design here, its weights beside it as one pair
    checkpoint: Path | str | None = None  # default: the weights path with suffix .ckpt
    resume: Path | str | None = None
    log: Path | str | None = None  # CSV, one row per epoch
    plot: Path | str | None = None  # PNG of the curves
    from_scratch: bool = False  # ignore the design's weights and initialize from the seed
    rank_weights: Path | str | None = None  # every rank writes rank<k>.safetensors here
    max_memory: int | None = None  # bytes a training step or evaluation chunk may need (None: ir.budget's default limit)


def merged_config(section: dict | None, overrides: dict | None) -> dict:
    """The training section with `overrides` applied (nested optimizer/scheduler merged), validated, defaults filled."""
    merged = copy.deepcopy(section or {})
    for key, value in (overrides or {}).items():
        if key in ("optimizer", "scheduler") and isinstance(value, str):
            value = {"name": value}
        if key in ("optimizer", "scheduler") and isinstance(value, dict) and isinstance(merged.get(key), dict):
            base = merged[key]
            if key == "scheduler" and value.get("name", base.get("name")) != base.get("name", "none"):
                base = {}
            value = {**base, **value}
        merged[key] = value
    validate_training(merged, "training")
    config = training_config(merged)
    extra = set(config["scheduler"]) - set(SCHEDULER_PARAMS[config["scheduler"]["name"]]) - {"name"}
    for key in extra:
        del config["scheduler"][key]
    return config


def choose_device(request: str, local_rank: int = 0) -> torch.device:
    """'auto' takes the GPU when there is one; 'cuda' without a GPU is an error."""
    if request not in ("auto", "cpu", "cuda"):
        raise DesignError(f"device must be auto, cpu or cuda, got '{request}'", "--device")
    if request == "cuda" and not torch.cuda.is_available():
        raise DesignError("CUDA was requested but no GPU is available", "--device")
    if request == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def default_weights_path(design: Design) -> Path:
    """Where a run writes its weights: the file paired with the design, else <name>.safetensors in the working folder."""
    return design.weights_path() or Path.cwd() / f"{design.name}.safetensors"


def read_checkpoint(path: Path | str) -> dict:
    """A checkpoint written by a run; a missing or foreign file is a DesignError."""
    path = Path(path)
    where = f"checkpoint '{path}'"
    if not path.is_file():
        raise DesignError("checkpoint not found", where)
    try:
        state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for foreign files
        raise DesignError("not a checkpoint written by convstudio train (torch.load cannot read it)", where) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DesignError("not a ConvStudio checkpoint", where)
    return state


def state_signature(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Tensor name -> shape of a state_dict, as a checkpoint records it."""
    return {k: list(v.shape) for k, v in state.items()}


def check_signature(state: dict, module: torch.nn.Module, path: Path | str) -> None:
    """The checkpoint's tensors must be exactly the module's (names and shapes)."""
    mine = state_signature(module.state_dict())
    theirs = state["signature"]
    for key in sorted(set(mine) | set(theirs)):
        if mine.get(key) != theirs.get(key):
            detail = f"'{key}' is {theirs.get(key, 'absent')} there and {mine.get(key, 'absent')} here"
            raise DesignError(f"checkpoint of design '{state['design']}' does not match this design ({detail})", f"checkpoint '{path}'")


@contextmanager
def sigint_as_flag() -> Iterator[list[bool]]:
    """While active (main thread only), the first Ctrl-C sets flag[0]; a second one interrupts at once.

    Under torchrun every Ctrl-C only sets the flag: the terminal's and the one torchrun forwards arrive
    together, and the run must still save its checkpoint.
    """
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    under_torchrun = dist_ctx.launched_by_torchrun()

    def handler(signum, frame):
        flag[0] = True
        if not under_torchrun:
            signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def fit(
    design: Design,
    overrides: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    options: RunOptions | None = None,
) -> dict:
    """Train `design`; returns {history, weights, checkpoint, stopped_early, interrupted, device, world_size, config}.

    `on_epoch` gets each epoch's {epoch, loss, val_loss, accuracy, lr, seconds}; `on_step(step, steps)` follows
    progress inside an epoch; `should_stop()` true ends the run at the next step with a checkpoint saved.
    """
    return Trainer(design, overrides, options or RunOptions()).run(on_epoch, on_step, should_stop)


class Trainer:
    """One training run: data, lowered module, optimizer, schedule and position, resumable from a checkpoint."""

    def __init__(self, design: Design, overrides: dict | None, options: RunOptions):
        self.design, self.options = design, options
        resume = read_checkpoint(options.resume) if options.resume else None
        if resume is not None:
            changed = sorted(set(overrides or {}) - {"epochs"})
            if changed:
                raise DesignError(f"a resumed run keeps its training configuration; only epochs may change, not {', '.join(changed)}",
                                  f"checkpoint '{options.resume}'")
            self.config = dict(resume["config"])
            if overrides and "epochs" in overrides:
                self.config = merged_config(self.config, {"epochs": overrides["epochs"]})
        else:
            self.config = merged_config(design.training, overrides)
        cfg = self.config
        self.device = choose_device(options.device, int(os.environ.get("LOCAL_RANK", 0)))
        self.check_memory(1, 1)  # the smallest run first: the dataset is fitted to the design's input shape next
        self.samples: Samples = load_samples(cfg["dataset"], design, cfg["loss"])
        self.ctx = dist_ctx.context(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        train_idx, val_idx = split_indices(len(self.samples), cfg["val_split"], cfg["seed"])
        self.weights_path = self.output_paths(design, options)
        self.checkpoint_path = Path(options.checkpoint) if options.checkpoint else self.weights_path.with_suffix(".ckpt")
        for flag, target in (("--out", self.weights_path), ("-o", options.design_out), ("--checkpoint", self.checkpoint_path), ("--log", options.log),
                             ("--plot", options.plot), ("--rank-weights", options.rank_weights and Path(options.rank_weights) / "x")):
            if target and not Path(target).parent.is_dir():
                raise DesignError(f"folder '{Path(target).parent}' does not exist", flag)
            if target and Path(target).is_dir():
                raise DesignError(f"'{target}' is a folder; give a file name", flag)

        graph = design.graph
        self.check_memory(len(train_idx), len(val_idx) or len(train_idx))
        self.start_epochs = int(resume.get("start_epochs", 0)) if resume is not None else 0
        self.start = self.starting_weights(resume)
        torch.manual_seed(cfg["seed"])
        self.model = lower(graph, seed=cfg["seed"]).to(self.device)
        if resume is not None:
            check_signature(resume, self.model, options.resume)
            done = int(resume["epoch"])
            if done >= cfg["epochs"]:
                raise DesignError(f"the run already finished its {done} epoch{'s' * (done != 1)}; give more (--epochs N) to continue it",
                                  f"checkpoint '{options.resume}'")
            self.model.load_state_dict(resume["model"])
        self.net = self.model
        if self.ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = make_optimizer(self.net.parameters(), cfg["optimizer"])
        self.schedule = Schedule(self.optimizer, cfg["scheduler"], cfg["epochs"])
        self.criterion = make_loss(cfg["loss"], cfg["triplet_margin"])
        self.triplet = cfg["loss"] == "triplet"
        self.three_inputs = len(graph.inputs) == 3

        self.x = torch.from_numpy(self.samples.x).to(self.device)
        self.targets = torch.from_numpy(self.samples.targets).to(self.device)
        self.labels = torch.from_numpy(self.samples.labels).to(self.device) if self.samples.labels is not None else None
        self.train_rows = torch.from_numpy(train_idx).to(self.device)
        self.val_rows = torch.from_numpy(val_idx).to(self.device)

        self.history: list[dict] = []
        self.epoch, self.step, self.partial = 0, 0, [0.0, 0.0]
        self.saved: tuple[int, Path] | None = None  # (epoch, file) of the last checkpoint this run can go back to
        if resume is not None:
            self.saved = (int(resume["epoch"]), Path(options.resume))
            self.optimizer.load_state_dict(resume["optimizer"])
            self.schedule.load_state_dict(resume["scheduler"])
            self.history = list(resume["history"])
            self.epoch, self.step, self.partial = int(resume["epoch"]), int(resume["step"]), list(resume["partial"])
            torch.set_rng_state(resume["rng"])
            if self.device.type == "cuda" and "cuda_rng" in resume:
                torch.cuda.set_rng_state(resume["cuda_rng"], self.device)

    def check_memory(self, train_rows: int, eval_rows: int) -> None:
        """Refuse a run whose training step (activations kept for backward, gradients, optimizer state) or evaluation
        chunk needs more than `max_memory`, before any weights are read or the model is built."""
        cfg, graph = self.config, self.design.graph
        size = cfg["batch_size"]
        batch = max(1, min(train_rows if size == "full" else size, train_rows))
        estimates = [estimate_memory(graph, batch, training=True, optimizer=cfg["optimizer"]["name"]),
                     estimate_memory(graph, max(1, min(EVAL_CHUNK, eval_rows)))]
        where = f"file '{self.design.path}'" if self.design.path else f"design '{self.design.name}'"
        check_estimate(max(estimates, key=lambda e: e.total), self.options.max_memory, where)

    @staticmethod
    def output_paths(design: Design, options: RunOptions) -> Path:
        """The weights file the run writes: --out, else beside the design that -o asks for, else the design's own."""
        if options.design_out is None:
            return Path(options.weights_out) if options.weights_out else default_weights_path(design)
        out = Path(options.design_out)
        if options.weights_out:
            raise DesignError("-o writes the weights beside the design it writes; drop --out", "--out")
        if out.suffix == ".safetensors":
            raise DesignError("the design file needs another suffix: its weights are written as .safetensors beside it", "-o")
        if design.path is not None and out.resolve() == design.path.resolve():
            raise DesignError("-o names the design being trained, which train never rewrites; without -o its weights go beside it", "-o")
        return out.with_suffix(".safetensors")

    def starting_weights(self, resume: dict | None) -> str:
        """Load the weights the run starts from; returns the line that says which, and how to start fresh."""
        design, options, seed = self.design, self.options, self.config["seed"]
        if options.from_scratch:
            for flag, value in (("--weights", options.weights_in), ("--resume", options.resume)):
                if value:
                    raise DesignError(f"--from-scratch ignores all weights; drop {flag}", flag)
            for node in design.graph.nodes.values():
                node.params = {}
            return f"starting from fresh weights (seed {seed}), as --from-scratch asks"
        if resume is not None:
            if options.weights_in:
                raise DesignError("a resumed run continues from its checkpoint's weights; drop --weights", "--weights")
            return (f"resuming '{options.resume}' after epoch {int(resume['epoch'])} of {self.config['epochs']}; "
                    "drop --resume and add --from-scratch to start from fresh weights")
        if options.weights_in is None and has_params(design.graph):
            return "starting from the weights the design holds; --from-scratch starts from fresh weights"
        try:
            source = load_design_weights(design, options.weights_in)
        except DesignError as e:
            raise DesignError(f"{e.what} (--from-scratch ignores the design's weights)", e.where) from None
        if source is None:
            return f"starting from fresh weights (seed {seed}): the design has no weights yet"
        epochs = trained_epochs(source)
        self.start_epochs = epochs or 0
        after = f"after epoch {epochs}" if epochs is not None else "not trained by convstudio train"
        return f"starting from the weights in '{source}' ({after}); --from-scratch starts from fresh weights (seed {seed})"

    # ----- batches -----

    def epoch_batches(self, epoch: int) -> list[torch.Tensor]:
        """Positions into the training rows for each of this rank's batches (DistributedSampler order)."""
        n = len(self.train_rows)
        sampler = DistributedSampler(range(n), num_replicas=self.ctx.world, rank=self.ctx.rank, shuffle=True, seed=self.config["seed"])
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler), dtype=torch.long, device=self.device)
        size = self.config["batch_size"]
        per_rank = len(order) if size == "full" else max(1, math.ceil(size / self.ctx.world))
        batches = list(order.split(per_rank))
        if len(batches) > 1 and len(batches[-1]) == 1 and per_rank > 1:
            batches[-2:] = [torch.cat(batches[-2:])]  # a lone last sample would break BatchNorm statistics
        return batches

    def epoch_triplets(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.config["seed"] * 100_003 + epoch)
        pos, neg = mine_triplets(self.labels[self.train_rows].cpu(), g)
        return pos.to(self.device), neg.to(self.device)

    def embed_triplet(self, a: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> tuple:
        if self.three_inputs:
            return tuple(self.net(a, p, n))
        return tuple(self.net(torch.cat([a, p, n])).split(len(a)))

    def batch_loss(self, positions: torch.Tensor, triplets: tuple | None) -> tuple[torch.Tensor, int]:
        rows = self.train_rows[positions]
        if self.triplet:
            pos, neg = triplets
            positives, negatives = self.x[self.train_rows[pos[positions]]], self.x[self.train_rows[neg[positions]]]
            loss = self.criterion(*self.embed_triplet(self.x[rows], positives, negatives))
        else:
            try:
                outputs = self.net(self.x[rows])
            except ValueError as e:  # e.g. BatchNorm1d on a batch of one sample
                reason = str(e).splitlines()[0]
                raise DesignError(f"the design cannot train on batches of {len(rows)} ({reason})", "training.batch_size") from None
            loss = self.objective(outputs, rows)
        if self.config["l1"] > 0:
            loss = loss + self.config["l1"] * l1_penalty(self.model)
        return loss, len(rows)

    def objective(self, outputs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The loss of a batch's outputs against its targets (distillation adds the teacher's term here)."""
        return self.criterion(outputs, self.targets[rows])

    # ----- evaluation -----

    @torch.no_grad()
    def embeddings(self, rows: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in rows.split(EVAL_CHUNK):
            x = self.x[chunk]
            out.append(self.model(x, x, x)[0] if self.three_inputs else self.model(x))
        return torch.cat(out)

    @torch.no_grad()
    def evaluate(self) -> tuple[float | None, float | None]:
        """(validation loss, accuracy) on the validation split; accuracy on the training rows when there is none."""
        self.model.eval()
        try:
            rows = self.val_rows if len(self.val_rows) else self.train_rows
            outputs = self.embeddings(rows)
            val_loss = None
            if self.triplet:
                if len(self.val_rows):
                    g = torch.Generator().manual_seed(self.config["seed"])
                    pos, neg = mine_triplets(self.labels[rows].cpu(), g)
                    val_loss = self.criterion(outputs, outputs[pos.to(self.device)], outputs[neg.to(self.device)]).item()
                train_emb = self.embeddings(self.train_rows) if len(self.val_rows) else outputs
                return val_loss, nearest_centroid_accuracy(train_emb, self.labels[self.train_rows], outputs, self.labels[rows])
            if len(self.val_rows):
                val_loss = self.criterion(outputs, self.targets[rows]).item()
            accuracy = None
            if self.labels is not None and outputs.ndim == 2 and (outputs.shape[1] > 1 or self.config["loss"] == "bce"):
                accuracy = class_accuracy(outputs, self.labels[rows])
            return val_loss, accuracy
        finally:
            self.model.train()

    # ----- files -----

    def save_checkpoint(self) -> None:
        model_state = self.model.state_dict()
        state = {
            "format": CHECKPOINT_FORMAT,
            "design": self.design.name,
            "signature": state_signature(model_state),
            "config": self.config,
            "epoch": self.epoch,
            "step": self.step,
            "partial": list(self.partial),
            "history": self.history,
            "model": model_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "rng": torch.get_rng_state(),
            "start_epochs": self.start_epochs,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(self.checkpoint_path, buffer.getvalue())

    def write_log(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=LOG_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.history:
            writer.writerow({k: "" if row[k] is None else row[k] for k in LOG_FIELDS})
        write_atomic(self.options.log, text.getvalue())

    def write_weights(self) -> None:
        """Copy the trained tensors into node.params; rank 0 writes the weights file (with -o, the design and its weights as one pair)."""
        graph = self.design.graph
        params_from_module(graph, self.model)
        metadata = {"epochs": str(self.start_epochs + self.epoch)}
        if self.options.rank_weights:
            save_weights(graph, Path(self.options.rank_weights) / f"rank{self.ctx.rank}.safetensors", metadata)
        if not self.ctx.is_main:
            return
        if self.options.design_out:
            save_design_and_weights(Design(graph, self.design.training), Path(self.options.design_out), graph, metadata)
            return
        save_weights(graph, self.weights_path, metadata)
        retire_pending(self.weights_path)

    # ----- the loop -----

    def run(self, on_epoch=None, on_step=None, should_stop=None) -> dict:
        cfg, main = self.config, self.ctx.is_main
        stopped = interrupted = False
        try:
            with sigint_as_flag() as ctrl_c:
                while self.epoch < cfg["epochs"] and not (stopped or interrupted):
                    started = time.perf_counter()
                    batches = self.epoch_batches(self.epoch)
                    triplets = self.epoch_triplets(self.epoch) if self.triplet else None
                    lr_used = self.schedule.lr
                    while self.step < len(batches):
                        stop_now = bool(should_stop and should_stop())
                        flags = dist_ctx.all_sum([float(stop_now), float(ctrl_c[0])], self.ctx, self.device)
                        if flags[0] or flags[1]:
                            stopped, interrupted = bool(flags[0]), bool(flags[1])
                            break
                        self.train_step(batches[self.step], triplets)
                        self.step += 1
                        if on_step and main:
                            on_step(self.step, len(batches))
                    if not (stopped or interrupted):
                        self.finish_epoch(started, lr_used, on_epoch)
            if main and (stopped or interrupted):  # a finished epoch has saved its checkpoint already
                self.save_checkpoint()
            self.write_weights()
            if main and self.options.plot:
                write_plot(self.history, self.options.plot)
        finally:
            dist_ctx.shutdown()
        return {
            "history": self.history,
            "start": self.start,
            "weights": str(self.weights_path),
            "checkpoint": str(self.checkpoint_path),
            "stopped_early": stopped or interrupted,
            "interrupted": interrupted,
            "epoch": self.epoch,
            "step": self.step,
            "device": str(self.device),
            "world_size": self.ctx.world,
            "config": cfg,
        }

    def train_step(self, positions: torch.Tensor, triplets) -> None:
        loss, count = self.batch_loss(positions, triplets)
        value = loss.detach().item()
        total, n = dist_ctx.all_sum([value * count, float(count)], self.ctx, self.device)
        self.check_finite("training", total, f" step {self.step + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.after_batch()
        self.partial[0] += total
        self.partial[1] += n

    def check_finite(self, which: str, loss: float | None, step: str = "") -> None:
        """Stop the run when a loss is NaN or infinite, saying where and what is kept (nothing is written now)."""
        if loss is None or math.isfinite(loss):
            return
        kind = "NaN" if math.isnan(loss) else "infinite"
        kept = f"no weights were written, the checkpoint after epoch {self.saved[0]} is in '{self.saved[1]}'" if self.saved else "nothing was written"
        raise TrainingDiverged(f"{which} loss became {kind} at epoch {self.epoch + 1}{step} (try a lower learning rate); {kept}", "training")

    def finish_epoch(self, started: float, lr_used: float, on_epoch) -> None:
        train_loss = self.partial[0] / max(self.partial[1], 1.0)
        self.check_finite("training", train_loss)
        val_loss, accuracy = self.evaluate()
        self.check_finite("validation", val_loss)
        self.schedule.after_epoch(val_loss if val_loss is not None else train_loss)
        self.epoch += 1
        self.step, self.partial = 0, [0.0, 0.0]
        row = {"epoch": self.epoch, "loss": train_loss, "val_loss": val_loss, "accuracy": accuracy,
               "lr": lr_used, "seconds": round(time.perf_counter() - started, 4)}
        self.history.append(row)
        self.saved = (self.epoch, self.checkpoint_path)  # rank 0 writes it; every rank reports it
        if self.ctx.is_main:
            self.save_checkpoint()
            if self.options.log:
                self.write_log()
            if on_epoch:
                on_epoch(dict(row))


def write_plot(history: list[dict], path: Path | str) -> None:
    """A PNG with the loss curves (training and validation), accuracy and learning rate per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 3.6), dpi=100)
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o", label="training")
    if any(h["val_loss"] is not None for h in history):
        val = [h["val_loss"] if h["val_loss"] is not None else float("nan") for h in history]
        ax_loss.plot(epochs, val, marker="o", label="validation")
    ax_loss.set_title("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [h["accuracy"] if h["accuracy"] is not None else float("nan") for h in history], marker="o", color="tab:green")
    ax_acc.set_title("accuracy")
    ax_lr.plot(epochs, [h["lr"] for h in history], marker="o", color="tab:red")
    ax_lr.set_title("learning rate")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())
