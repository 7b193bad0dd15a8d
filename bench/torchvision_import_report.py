"""Reference report: every torchvision classification family, exported by both torch exporters, imported by ConvStudio.

Two steps, two interpreters (the project's CPU torch cannot import PyPI's torchvision):

    # 1. export, in a venv with torch 2.14.1 + torchvision 0.29.1 + onnx + onnxscript:
    /tmp/tvenv/bin/python bench/torchvision_import_report.py export [--out /tmp/tvref] [--models resnet18,...]
    # 2. import with the project (`convstudio import`), re-export, compare, write OUT/report.md:
    python3 bench/torchvision_import_report.py report [--out /tmp/tvref]

Step 1 writes OUT/<model>.<exporter>.onnx (exporter: dynamo or script, batch dynamic where the exporter
allows it) and OUT/reference.json with the module's own figures: parameters (sum of numel), conv+linear
MACs counted with forward hooks at batch 1, and the parameters the exporter folded away: a BatchNorm the file no
longer holds by name was folded into the conv it reads (its 2C parameters gone; a conv without bias gains a
C-channel bias, so C fewer; a conv with a bias keeps its C, so 2C fewer). With --reuse, existing files are kept and
only the module's figures are counted again. Parameters are randomized first (see `_randomize`). Step 2 imports each
file, counts opaque nodes, compares params and MACs with the module's, re-exports the design and runs both ONNX
files in ONNX Runtime (CPU) on the same random input.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

FAMILIES = {
    "alexnet": {}, "vgg11_bn": {}, "resnet18": {}, "resnext50_32x4d": {}, "wide_resnet50_2": {}, "densenet121": {},
    "googlenet": {"aux_logits": False, "init_weights": True}, "inception_v3": {"aux_logits": False, "init_weights": True},
    "mobilenet_v2": {}, "mobilenet_v3_small": {}, "mnasnet0_5": {}, "shufflenet_v2_x0_5": {}, "squeezenet1_1": {},
    "efficientnet_b0": {}, "efficientnet_v2_s": {}, "regnet_y_400mf": {}, "convnext_tiny": {},
}
EXPORTERS = ("script", "dynamo")


def _side(model: str) -> int:
    return 299 if model == "inception_v3" else 224


def _module_figures(torch, module, x) -> dict:
    """Parameters, conv+linear MACs (hooks, batch 1), and for each affine BatchNorm the parameters its folding removes."""
    macs, produced, read_by_bn = [], {}, {}

    def hook(mod, inputs, output):
        if isinstance(mod, torch.nn.Conv2d):
            kh, kw = mod.kernel_size
            macs.append(output[0].numel() * (mod.in_channels // mod.groups) * kh * kw)
            produced[id(output)] = (output, mod)  # the tensor is kept so its id is not reused during the pass
        elif isinstance(mod, torch.nn.Linear):
            macs.append(output[0].numel() * mod.in_features)
        else:
            read_by_bn[mod] = produced.get(id(inputs[0]), (None, None))[1]

    layers = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, layers)]
    with torch.no_grad():
        module(x[:1])
    for h in handles:
        h.remove()
    # folding into a conv with a bias removes the BN's weight and bias (2C); into one without, the conv gains a C bias
    bns = {name: m.num_features * (2 if getattr(read_by_bn.get(m), "bias", None) is not None else 1)
           for name, m in module.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.affine}
    return {"params": sum(p.numel() for p in module.parameters()), "macs": sum(macs), "batchnorms": bns}


def _randomize(torch, module) -> None:
    """Every parameter and BatchNorm statistic drawn at random, as trained weights would be: exporters drop all-zero
    biases and merge equal constants (default ones/zeros), which would hide parameters from the comparison."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p + torch.empty_like(p).uniform_(-0.05, 0.05))
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.track_running_stats:
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def export_all(out: Path, models: list[str], reuse: bool = False) -> None:
    import onnx
    import torch
    import torchvision

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    ref_path = out / "reference.json"
    reference = json.loads(ref_path.read_text()) if ref_path.exists() else {}
    for model in models:
        module = getattr(torchvision.models, model)(weights=None, **FAMILIES[model]).eval()
        _randomize(torch, module)
        side = _side(model)
        x = torch.randn(2, 3, side, side)
        entry = {**_module_figures(torch, module, x), "input": [3, side, side], "exports": {}}
        entry_before = reference.get(model, {}).get("exports", {})
        for exporter in EXPORTERS:
            path = out / f"{model}.{exporter}.onnx"
            start = time.time()
            if reuse and path.exists():
                before = entry_before.get(exporter, {})
                _account(onnx, entry, exporter, path, before.get("seconds"), before.get("note", ""))
                continue
            note = ""
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    if exporter == "script":
                        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
                    else:
                        try:
                            torch.onnx.export(module, (x,), str(path), dynamo=True, external_data=False, input_names=["x"], output_names=["y"],
                                              dynamic_shapes={"x": {0: torch.export.Dim("N", min=1, max=1024)}})
                        except Exception as e:  # some graphs specialize the batch: export it fixed
                            note = f"fixed batch ({type(e).__name__})"
                            torch.onnx.export(module, (x[:1],), str(path), dynamo=True, external_data=False, input_names=["x"],
                                              output_names=["y"])
                except Exception as e:
                    entry["exports"][exporter] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                    print(f"{model} {exporter}: export failed: {entry['exports'][exporter]['error']}", flush=True)
                    continue
            _account(onnx, entry, exporter, path, round(time.time() - start, 1), note)
        del entry["batchnorms"]
        reference[model] = entry
        ref_path.write_text(json.dumps(reference, indent=1))


def _account(onnx, entry: dict, exporter: str, path: Path, seconds: float | None, note: str) -> None:
    """Record an exported file and the parameters of the BatchNorms the exporter folded (those the file no longer names)."""
    names = {t.name for t in onnx.load(str(path), load_external_data=False).graph.initializer}
    folded = {n: removed for n, removed in entry["batchnorms"].items() if f"{n}.weight" not in names}
    entry["exports"][exporter] = {"file": path.name, "seconds": seconds, "folded_bn_params": sum(folded.values()), "folded_bn": len(folded), "note": note}
    print(f"{path.stem}: exported in {seconds}s, {len(folded)} BN folded ({sum(folded.values()):,} parameters)", flush=True)


def _parity(original: Path, reexport: Path, shape: list[int]) -> float:
    """max |a - b| / max(1, max |a|) of the two models' first outputs on one random input."""
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    outs = []
    for path in (original, reexport):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(session.run(None, {session.get_inputs()[0].name: x})[0])
    return float(np.abs(outs[0] - outs[1]).max() / max(1.0, float(np.abs(outs[0]).max())))


def _cli(*args: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "convstudio.designer.cli.main", *args], capture_output=True, text=True)
    return done.returncode, done.stdout if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


def report_all(out: Path) -> str:
    reference = json.loads((out / "reference.json").read_text())
    rows = ["| model | exporter | opaque | params (ours / module, BN folded accounted) | MACs (ours / module hooks) | ORT parity of re-export |",
            "|---|---|---|---|---|---|"]
    work = out / "designs"
    work.mkdir(exist_ok=True)
    for model, entry in sorted(reference.items(), key=lambda item: list(FAMILIES).index(item[0])):
        for exporter in EXPORTERS:
            info = entry["exports"].get(exporter, {})
            if "file" not in info:
                rows.append(f"| {model} | {exporter} | export failed: {info.get('error', 'not run')} | | | |")
                continue
            design = work / f"{model}.{exporter}.json"
            code, text = _cli("import", str(out / info["file"]), "-o", str(design), "--json")
            if code:
                rows.append(f"| {model} | {exporter} | import failed: {text} | | | |")
                continue
            imported = json.loads(text)
            expected = entry["params"] - info["folded_bn_params"]
            params = f"{imported['params']:,} / {expected:,}"
            params += " ok" if imported["params"] == expected else f" (diff {imported['params'] - expected:+,})"
            macs = f"{imported['macs']:,} / {entry['macs']:,}"
            macs += " ok" if imported["macs"] == entry["macs"] else f" (diff {imported['macs'] - entry['macs']:+,})"
            reexport = work / f"{model}.{exporter}.reexport.onnx"
            code, text = _cli("export", str(design), "-o", str(reexport))
            parity = f"{_parity(out / info['file'], reexport, entry['input']):.1e}" if code == 0 else f"re-export failed: {text}"
            opaque = imported["counts"]["opaque"]
            ops = sorted({e["op"] for e in imported["opaque"]})
            rows.append(f"| {model} | {exporter}{' (' + info['note'] + ')' if info['note'] else ''} | {opaque}{' ' + ', '.join(ops) if ops else ''} "
                        f"| {params} | {macs} | {parity} |")
            print(rows[-1], flush=True)
    text = "# torchvision import report\n\n" + "\n".join(rows) + "\n"
    (out / "report.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("export", "report"))
    parser.add_argument("--out", default="/tmp/tvref", type=Path)
    parser.add_argument("--models", default=",".join(FAMILIES), help="comma-separated torchvision model names")
    parser.add_argument("--reuse", action="store_true", help="export: keep existing ONNX files, count the module's figures again")
    args = parser.parse_args()
    if args.step == "export":
        export_all(args.out, [m for m in args.models.split(",") if m], args.reuse)
    else:
        print(report_all(args.out))


if __name__ == "__main__":
    main()
