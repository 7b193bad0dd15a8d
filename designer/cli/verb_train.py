"""`convstudio train FILE ...`: train a design from its training section, flags overriding it."""

from __future__ import annotations

import argparse
import sys

from convstudio.designer.cli.common import load_design, print_json
from convstudio.ir.design import save
from convstudio.ir.errors import DesignError
from convstudio.ir.training import LOSSES, OPTIMIZERS, SCHEDULERS

VERB = "train"
HELP = "train a design (digits, .npz or image folder) and save its weights beside it; flags override its training section"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="design file (.json)")
    p.add_argument("--data", metavar="digits|X.npz|FOLDER", help="digits, a .npz file with arrays x and y, or a folder of class subfolders of images")
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the training data")
    p.add_argument("--batch-size", metavar="N|full", help="N (1 = SGD, n = mini-batch) or 'full' (batch gradient descent)")
    p.add_argument("--lr", type=float, metavar="X", help="learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--momentum", type=float, metavar="X", help="momentum (sgd, rmsprop)")
    p.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (sgd)")
    p.add_argument("--weight-decay", type=float, metavar="X", help="L2 weight decay")
    p.add_argument("--l1", type=float, metavar="X", help="L1 penalty on all parameters")
    p.add_argument("--loss", choices=LOSSES, help="training loss (triplet: an embedding net, triplets mined from the labels)")
    p.add_argument("--scheduler", choices=SCHEDULERS, help="learning-rate schedule")
    p.add_argument("--val-split", type=float, metavar="X", help="share of samples held out for validation")
    p.add_argument("--seed", type=int, metavar="N", help="seed of initialization, split and shuffling (same seed, same result on CPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto takes the GPU when there is one")
    p.add_argument("--out", metavar="W.safetensors", help="weights file to write (default: the design's, else <design>.safetensors)")
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint file written each epoch (default: the weights path with .ckpt)")
    p.add_argument("--resume", metavar="CKPT", help="continue a run from its checkpoint (with its configuration; only --epochs may change)")
    p.add_argument("--log", metavar="RUN.csv", help="CSV file with one row per epoch")
    p.add_argument("--plot", metavar="CURVES.png", help="PNG file with the loss, accuracy and learning-rate curves")
    p.add_argument("--from-scratch", action="store_true", help="ignore the design's weights; initialize from the seed")
    p.add_argument("--nproc", type=int, default=1, metavar="N", help="train with DistributedDataParallel in N processes (torchrun)")
    p.add_argument("--rank-weights", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result (history, files) as JSON")


def overrides_from(args: argparse.Namespace) -> dict:
    """Training-section overrides from the flags that were given."""
    out: dict = {}
    flags = (("data", "dataset"), ("epochs", "epochs"), ("l1", "l1"), ("loss", "loss"), ("val_split", "val_split"), ("seed", "seed"))
    for flag, key in flags:
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag)
    if args.batch_size is not None:
        if args.batch_size == "full":
            out["batch_size"] = "full"
        elif args.batch_size.isdigit():
            out["batch_size"] = int(args.batch_size)
        else:
            raise DesignError(f"must be a positive integer or 'full', got '{args.batch_size}'", "--batch-size")
    optimizer = {k: getattr(args, a) for k, a in (("name", "optimizer"), ("lr", "lr"), ("momentum", "momentum"),
                                                   ("nesterov", "nesterov"), ("weight_decay", "weight_decay"))
                 if getattr(args, a) is not None}
    if optimizer:
        out["optimizer"] = optimizer
    if args.scheduler is not None:
        out["scheduler"] = {"name": args.scheduler}
    return out


def run_options(args: argparse.Namespace):
    from convstudio.backends.torch.train import RunOptions

    return RunOptions(device=args.device, weights_out=args.out, checkpoint=args.checkpoint, resume=args.resume,
                      log=args.log, plot=args.plot, from_scratch=args.from_scratch, rank_weights=args.rank_weights)


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def epoch_line(row: dict, epochs: int, loss: str = "cross_entropy") -> str:
    """One epoch as a line; with triplet loss the accuracy is the embeddings' nearest-centroid accuracy."""
    accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
    label = "centroid_accuracy" if loss == "triplet" else "accuracy"
    return (f"epoch {row['epoch']}/{epochs}  loss {fmt(row['loss'], '.4f')}  val_loss {fmt(row['val_loss'], '.4f')}  "
            f"{label} {accuracy}  lr {row['lr']:.3g}  {row['seconds']:.2f} s")


def launch_distributed(args: argparse.Namespace, overrides: dict) -> int:
    """Check the inputs here, then run this verb in `--nproc` processes through torchrun."""
    from convstudio.backends.torch.distributed import launch_command, run_launcher
    from convstudio.backends.torch.train import Trainer

    if args.nproc < 1:
        raise DesignError(f"must be at least 1, got {args.nproc}", "--nproc")
    Trainer(load_design(args.file), overrides, run_options(args))  # every input check, before any process starts
    result = run_launcher(launch_command(args.nproc, "convstudio.designer.cli.main", [VERB, *worker_argv(args)]))
    if result.interrupted:
        return 130
    if result.code == 0:
        return 0
    if result.errors:
        print(result.errors[0], file=sys.stderr)  # the first process to fail names the cause
        return 2
    print("\n".join(result.other[-40:]), file=sys.stderr)
    print(f"error: the training processes failed (torchrun exit code {result.code}), --nproc {args.nproc}", file=sys.stderr)
    return 1


def worker_argv(args: argparse.Namespace) -> list[str]:
    """This invocation's flags without --nproc, for the processes torchrun starts."""
    argv = [args.file]
    for dest, value in vars(args).items():
        if dest in ("file", "nproc", "verb") or dest.startswith("_") or value is None or value is False:
            continue
        flag = "--" + dest.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def run(args: argparse.Namespace) -> int:
    overrides = overrides_from(args)
    if args.nproc != 1:
        return launch_distributed(args, overrides)
    from convstudio.backends.torch.train import Trainer

    design = load_design(args.file)
    trainer = Trainer(design, overrides, run_options(args))
    main_process, epochs, cfg = trainer.ctx.is_main, trainer.config["epochs"], trainer.config
    progress = EpochProgress() if sys.stderr.isatty() and not (args.no_progress or args.json) and main_process else None
    if main_process and not args.json:
        processes = f", {trainer.ctx.world} processes" if trainer.ctx.distributed else ""
        print(f"training '{design.name}' on {trainer.samples.source} ({len(trainer.train_rows)} train, {len(trainer.val_rows)} validation) "
              f"with {cfg['loss']}, {cfg['optimizer']['name']} lr {cfg['optimizer']['lr']:g}, batch {cfg['batch_size']}, "
              f"device {trainer.device}{processes}", flush=True)

    def on_epoch(row: dict) -> None:
        if progress:
            progress.finish()
        if not args.json:
            print(epoch_line(row, epochs, cfg["loss"]), flush=True)

    result = trainer.run(on_epoch, progress.update if progress else None)
    if progress:
        progress.finish()
    if not main_process:
        return 0
    if design.path is not None:
        save(design, design.path)
    if args.json:
        print_json({k: v for k, v in result.items() if k != "config"})
    else:
        print(f"weights: {result['weights']}  checkpoint: {result['checkpoint']}")
        if result["interrupted"]:
            print(f"interrupted at epoch {result['epoch'] + 1} step {result['step']}; continue with --resume {result['checkpoint']}")
    return 130 if result["interrupted"] else 0


class EpochProgress:
    """A rich progress bar for the steps of the current epoch (on stderr)."""

    def __init__(self, console=None):
        self.console = console
        self.bar = None
        self.task = None

    def update(self, step: int, steps: int) -> None:
        if self.bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self.bar = Progress("steps", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=self.console or Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("epoch", total=steps)
        self.bar.update(self.task, completed=step, total=steps)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

