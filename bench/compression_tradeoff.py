"""Accuracy against cost on sklearn digits: a small ResNet trained, compressed, fine-tuned by distillation, quantized.

    python3 bench/compression_tradeoff.py [--out-dir DIR] [--jobs 2] [--chart docs/pareto_digits.png]

Trains examples/resnet_digits.json (three residual blocks, 8x8 input) on digits, then sweeps variants with
`backends.explore` (3 epochs of distillation from the original each) and prints the table and the checks:
pruning 50 % of channels stays within 2 points of the original, int8 within 1 point and at least 3.5x smaller,
at least 8 variants on one chart. Latencies are ONNX Runtime medians on one thread (or the latency model's
predictions when the machine has one and no int8 variant is asked).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["prune:0.25,0.5,0.75", "lowrank:energy=0.9,energy=0.7", "separable", "width:0.5,0.75", "bottleneck", "int8"]


def main() -> int:
    import torch

    from convstudio.backends.explore import Settings, explore, parse_variants, write_chart
    from convstudio.backends.torch.train import RunOptions, fit
    from convstudio.ir.design import load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", help="working folder (default: a temporary one)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="distillation epochs per variant")
    parser.add_argument("--chart", default=str(ROOT / "docs" / "pareto_digits.png"))
    args = parser.parse_args()

    torch.set_num_threads(1)
    folder = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="tradeoff_"))
    folder.mkdir(parents=True, exist_ok=True)
    design_path = folder / "resnet_digits.json"
    shutil.copy(ROOT / "examples" / "resnet_digits.json", design_path)
    started = time.perf_counter()
    if not design_path.with_suffix(".safetensors").is_file():
        history = fit(load(design_path), options=RunOptions(device="cpu"))["history"]
        print(f"trained resnet_digits: {len(history)} epochs, validation accuracy {100 * history[-1]['accuracy']:.2f}% "
              f"({time.perf_counter() - started:.0f} s)", flush=True)

    def on_result(row: dict, done: int, total: int) -> None:
        state = f"failed: {row['error']}" if "error" in row else f"accuracy {100 * row['accuracy']:.2f}%"
        print(f"[{done}/{total}] {row['name']}: {state} ({row['seconds']:.0f} s)", flush=True)

    settings = Settings(design_path, "digits", folder / "variants", epochs=args.epochs)
    summary = explore(settings, parse_variants(VARIANTS), args.jobs, on_result)
    write_chart(summary, args.chart)

    base = summary["baseline"]
    print(f"\n{'variant':22}{'params':>10}{'MACs':>12}{'latency ms':>12}{'accuracy':>10}  front")
    for row in [base, *summary["variants"]]:
        if "error" in row:
            print(f"{row['name']:22}  failed: {row['error']}")
            continue
        front = ("macs" if row["pareto"] else "") + (" latency" if row["pareto_latency"] else "")
        print(f"{row['name']:22}{row['params']:>10,}{row['macs']:>12,}{row['latency_ms']:>12.4f}{100 * row['accuracy']:>9.2f}%  {front}")
    rows = {r["name"]: r for r in summary["variants"]}
    prune, int8 = rows["prune:ratio=0.5"], rows["int8"]
    measured = [r for r in summary["variants"] if "error" not in r]
    checks = [
        (f"original accuracy {100 * base['accuracy']:.2f}% >= 97%", base["accuracy"] >= 0.97),
        (f"prune 50% + {args.epochs} epochs of distillation: {100 * prune.get('accuracy', 0):.2f}% "
         f"({100 * (prune.get('accuracy', 0) - base['accuracy']):+.2f} points, within 2), MACs x{base['macs'] / prune.get('macs', base['macs']):.2f} fewer",
         "error" not in prune and base["accuracy"] - prune["accuracy"] <= 0.02),
        (f"int8: {100 * int8.get('accuracy', 0):.2f}% ({100 * (int8.get('accuracy', 0) - base['accuracy']):+.2f} points, within 1), "
         f"{int8.get('float_bytes', 0) / max(int8.get('bytes', 1), 1):.2f}x smaller (at least 3.5)",
         "error" not in int8 and base["accuracy"] - int8["accuracy"] <= 0.01 and int8["float_bytes"] / int8["bytes"] >= 3.5),
        (f"{len(measured)} variants measured on one chart (at least 8): {args.chart}", len(measured) >= 8),
    ]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"total {time.perf_counter() - started:.0f} s, latency {summary['latency_source']}, files in {folder}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
