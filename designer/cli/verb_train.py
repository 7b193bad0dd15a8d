"""`convstudio train FILE ...`: train a design from its training section, flags overriding it."""

from __future__ import annotations

import argparse
import sys

from convstudio.designer.cli.common import Progress, add_memory_argument, add_weights_argument, load_design, print_json
from convstudio.ir.errors import DesignError
from convstudio.ir.training import LOSSES, OPTIMIZERS, SCHEDULER_PARAMS, SCHEDULERS

VERB = "train"
HELP = "train a design (digits, .npz or image folder) and save its weights beside it; flags override its training section"

# flag destination -> the training field it overrides (errors about a field given by a flag name the flag)
FIELDS = {"data": "training.dataset", "epochs": "training.epochs", "batch_size": "training.batch_size", "lr": "training.optimizer.lr",
          "optimizer": "training.optimizer.name", "momentum": "training.optimizer.momentum", "nesterov": "training.optimizer.nesterov",
          "weight_decay": "training.optimizer.weight_decay", "l1": "training.l1", "loss": "training.loss", "scheduler": "training.scheduler",
          "val_split": "training.val_split", "seed": "training.seed"}
SCHEDULER_FLAGS = sorted({param for params in SCHEDULER_PARAMS.values() for param in params})
FIELDS.update({param: f"training.scheduler.{param}" for param in SCHEDULER_FLAGS})


def add_arguments(p: argparse.ArgumentParser, distributed: bool = True) -> None:
    """The flags of `train`; without `distributed` (a verb that runs in one process), no --nproc."""
    p.add_argument("file", help="design file (.json)")
    p.add_argument("--data", metavar="digits|X.npz|FOLDER", help="digits, a .npz file with arrays x and y, or a folder of class subfolders of images")
    p.add_argument("--epochs", type=int, metavar="N", help="passes over the training data")
    p.add_argument("--batch-size", metavar="N|full", help="N (1 = SGD, n = mini-batch) or 'full' (batch gradient descent)")
    p.add_argument("--lr", type=float, metavar="X", help="learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--momentum", type=float, metavar="X", help="momentum (sgd, rmsprop; default 0 as in torch)")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, help="Nesterov momentum (sgd); --no-nesterov for plain SGD")
    p.add_argument("--weight-decay", type=float, metavar="X", help="L2 weight decay")
    p.add_argument("--l1", type=float, metavar="X", help="L1 penalty on all parameters")
    p.add_argument("--loss", choices=LOSSES, help="training loss (triplet: an embedding net, triplets mined from the labels)")
    p.add_argument("--scheduler", choices=SCHEDULERS, help="learning-rate schedule")
    for param in SCHEDULER_FLAGS:
        defaults = {name: params[param] for name, params in SCHEDULER_PARAMS.items() if param in params}
        default = next(iter(defaults.values()))
        shown = ", ".join(f"{value:g}{' = the epochs' if param == 't_max' else ''}{f' for {name}' * (len(defaults) > 1)}"
                          for name, value in defaults.items())
        p.add_argument("--" + param.replace("_", "-"), type=type(default), metavar="N" if isinstance(default, int) else "X",
                       help=f"{param} of the {' and '.join(defaults)} scheduler{'s' * (len(defaults) > 1)} (default {shown})")
    p.add_argument("--val-split", type=float, metavar="X", help="share of samples held out for validation")
    p.add_argument("--seed", type=int, metavar="N", help="seed of initialization, split and shuffling (same seed, same result on CPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto takes the GPU when there is one")
    add_weights_argument(p)
    p.add_argument("--out", metavar="W.safetensors", help="weights file to write (default: <design>.safetensors beside the design)")
    p.add_argument("-o", "--output", metavar="DESIGN.json", help="also write the design here, its weights beside it (train never rewrites the given design)")
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint file written each epoch (default: the weights path with .ckpt)")
    p.add_argument("--resume", metavar="CKPT", help="continue a run from its checkpoint (with its configuration; only --epochs may change)")
    p.add_argument("--log", metavar="RUN.csv", help="CSV file with one row per epoch")
    p.add_argument("--plot", metavar="CURVES.png", help="PNG file with the loss, accuracy and learning-rate curves")
    p.add_argument("--from-scratch", action="store_true", help="ignore the design's weights; initialize from the seed")
    if distributed:
        p.add_argument("--nproc", type=int, default=1, metavar="N", help="train with DistributedDataParallel in N processes (torchrun)")
        p.add_argument("--rank-weights", help=argparse.SUPPRESS)
    else:
        p.set_defaults(nproc=1, rank_weights=None)
    add_memory_argument(p)
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
    scheduler = {"name": args.scheduler} if args.scheduler is not None else {}
    scheduler.update({param: getattr(args, param) for param in SCHEDULER_FLAGS if getattr(args, param) is not None})
    if scheduler:
        out["scheduler"] = scheduler
    return out


def trainer_for(design, overrides: dict, args: argparse.Namespace):
    """The run, every input checked; an error about a training field that a flag set names the flag."""
    from convstudio.backends.torch.train import Trainer

    try:
        return Trainer(design, overrides, run_options(args))
    except DesignError as e:
        flag = next((dest for dest, field in FIELDS.items() if field == e.where and getattr(args, dest) is not None), None)
        if flag is None:
            raise
        raise type(e)(e.what, "--" + flag.replace("_", "-")) from None


def run_options(args: argparse.Namespace):
    from convstudio.backends.torch.train import RunOptions

    return RunOptions(device=args.device, weights_out=args.out, weights_in=args.weights, design_out=args.output, checkpoint=args.checkpoint, resume=args.resume,
                      log=args.log, plot=args.plot, from_scratch=args.from_scratch, rank_weights=args.rank_weights,
                      max_memory=args.max_memory)


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def epoch_line(row: dict, epochs: int, loss: str = "cross_entropy") -> str:
    """One epoch as a line; with triplet loss the accuracy is the embeddings' nearest-centroid accuracy."""
    accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
    label = "centroid_accuracy" if loss == "triplet" else "accuracy"
    return (f"epoch {row['epoch']}/{epochs}  loss {fmt(row['loss'], '.4f')}  val_loss {fmt(row['val_loss'], '.4f')}  "
            f"{label} {accuracy}  lr {row['lr']:.3g}  {row['seconds']:.2f} s")


MAX_NPROC = 256  # processes one machine starts; several machines use torchrun's own --nnodes (see README)


def launch_distributed(args: argparse.Namespace, overrides: dict) -> int:
    """Check the inputs here, then run this verb in `--nproc` processes through torchrun."""
    from convstudio.backends.torch.distributed import launch_command, run_launcher

    if args.nproc < 1:
        raise DesignError(f"must be at least 1, got {args.nproc}", "--nproc")
    if args.nproc > MAX_NPROC:
        raise DesignError(f"at most {MAX_NPROC} processes on one machine, got {args.nproc:,}" if args.nproc < 10**12 else "absurdly many processes", "--nproc")
    trainer_for(load_design(args.file), overrides, args)  # every input check, before any process starts
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
        if dest in ("file", "nproc", "verb") or dest.startswith("_") or value is None or (value is False and dest != "nesterov"):
            continue
        flag = "--" + dest.replace("_", "-")
        if dest == "nesterov":
            flag = flag if value else "--no-nesterov"
        argv += [flag] if isinstance(value, bool) else [flag, str(value)]
    return argv


def run(args: argparse.Namespace) -> int:
    overrides = overrides_from(args)
    if args.nproc != 1:
        return launch_distributed(args, overrides)
    design = load_design(args.file)
    trainer = trainer_for(design, overrides, args)
    main_process, epochs, cfg = trainer.ctx.is_main, trainer.config["epochs"], trainer.config
    progress = Progress("steps", show=main_process and not (args.no_progress or args.json))
    if main_process and not args.json:
        print(trainer.start, flush=True)
        processes = f", {trainer.ctx.world} processes" if trainer.ctx.distributed else ""
        print(f"training '{design.name}' on {trainer.samples.source} ({len(trainer.train_rows)} train, {len(trainer.val_rows)} validation) "
              f"with {cfg['loss']}, {cfg['optimizer']['name']} lr {cfg['optimizer']['lr']:g}, batch {cfg['batch_size']}, "
              f"device {trainer.device}{processes}", flush=True)

    def on_epoch(row: dict) -> None:
        progress.finish()
        if not args.json:
            print(epoch_line(row, epochs, cfg["loss"]), flush=True)

    try:
        result = trainer.run(on_epoch, progress.update)
    finally:
        progress.finish()
    if not main_process:
        return 0
    if args.json:
        print_json({k: v for k, v in result.items() if k != "config"})
    else:
        print(f"{f'design: {args.output}  ' if args.output else ''}weights: {result['weights']}  checkpoint: {result['checkpoint']}")
        if result["interrupted"]:
            print(f"interrupted at epoch {result['epoch'] + 1} step {result['step']}; continue with --resume {result['checkpoint']}")
    return 130 if result["interrupted"] else 0
