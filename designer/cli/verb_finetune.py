"""`convstudio finetune STUDENT --teacher TEACHER`: train a (compressed) design with distillation from the original."""

from __future__ import annotations

import argparse

from convstudio.designer.cli import verb_train
from convstudio.designer.cli.common import Progress, load_design, print_json
from convstudio.ir.errors import DesignError

VERB = "finetune"
HELP = "fine-tune a student design on the labels and a teacher's softened outputs (distillation); flags as for train"


def add_arguments(p: argparse.ArgumentParser) -> None:
    verb_train.add_arguments(p, distributed=False)
    p.add_argument("--teacher", required=True, metavar="TEACHER.json", help="the teacher design (its weights beside it, or --teacher-weights)")
    p.add_argument("--teacher-weights", metavar="W.safetensors", help="the teacher's weights (default: TEACHER.safetensors beside it)")
    p.add_argument("--alpha", type=float, default=0.5, metavar="X", help="weight of the distillation term; the labels' cross-entropy gets 1 - X (default 0.5)")
    p.add_argument("--temperature", type=float, default=4.0, metavar="T", help="softmax temperature of the distillation term (default 4)")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def run(args: argparse.Namespace) -> int:
    from convstudio.backends.torch.distill import DistillTrainer, check_distill_options
    from convstudio.backends.weights import load_design_weights

    check_distill_options(args.alpha, args.temperature)
    overrides = verb_train.overrides_from(args)
    student = load_design(args.file)
    teacher = load_design(args.teacher)
    if load_design_weights(teacher, args.teacher_weights) is None:
        raise DesignError("the teacher has no weights (train it or give --teacher-weights)", f"file '{args.teacher}'")
    try:
        trainer = DistillTrainer(student, teacher, overrides, verb_train.run_options(args), args.alpha, args.temperature)
    except DesignError as e:
        flag = next((dest for dest, field in verb_train.FIELDS.items() if field == e.where and getattr(args, dest) is not None), None)
        if flag is None:
            raise
        raise type(e)(e.what, "--" + flag.replace("_", "-")) from None
    cfg, epochs = trainer.config, trainer.config["epochs"]
    _, before = trainer.evaluate()
    terms_before = trainer.terms()
    progress = Progress("steps", show=not (args.no_progress or args.json))
    if not args.json:
        print(trainer.start, flush=True)
        print(f"fine-tuning '{student.name}' from teacher '{teacher.name}' on {trainer.samples.source} ({len(trainer.train_rows)} train, "
              f"{len(trainer.val_rows)} validation), alpha {args.alpha:g}, temperature {args.temperature:g}, {cfg['optimizer']['name']} "
              f"lr {cfg['optimizer']['lr']:g}, batch {cfg['batch_size']}, device {trainer.device}", flush=True)
        print(f"before: accuracy {percent(before)}  kl {terms_before['kl']:.4f}  ce {terms_before['ce']:.4f}", flush=True)

    def on_epoch(row: dict) -> None:
        progress.finish()
        if not args.json:
            print(verb_train.epoch_line(row, epochs), flush=True)

    try:
        result = trainer.run(on_epoch, progress.update)
    finally:
        progress.finish()
    after, terms_after = trainer.evaluate()[1], trainer.terms()
    if args.json:
        print_json({**{k: v for k, v in result.items() if k != "config"}, "teacher": args.teacher, "alpha": args.alpha, "temperature": args.temperature,
                    "accuracy_before": before, "accuracy_after": after, "terms_before": terms_before, "terms_after": terms_after})
    else:
        print(f"after:  accuracy {percent(after)}  kl {terms_after['kl']:.4f}  ce {terms_after['ce']:.4f}")
        print(f"{f'design: {args.output}  ' if args.output else ''}weights: {result['weights']}  checkpoint: {result['checkpoint']}")
        if result["interrupted"]:
            print(f"interrupted at epoch {result['epoch'] + 1} step {result['step']}; continue with --resume {result['checkpoint']}")
    return 130 if result["interrupted"] else 0
