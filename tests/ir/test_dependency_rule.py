"""The dependency rule of DESIGN §1: ir/ imports only stdlib, numpy and networkx; backends/ never imports Qt."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THIRD_PARTY_ALLOWED_IN_IR = {"numpy", "networkx"}
FORBIDDEN_IN_IR = {"torch", "onnx", "onnxruntime", "PyQt6", "safetensors", "pyqtgraph", "matplotlib", "rich", "sklearn"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def imported_roots(path: Path) -> set[str]:
    """Top-level distributions a file imports; the project's own packages count as convstudio.ir etc."""
    roots = set()
    for module in imported_modules(path):
        parts = module.split(".")
        roots.add(".".join(parts[:2]) if parts[0] == "convstudio" else parts[0])
    return roots


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_ir_imports_only_stdlib_numpy_networkx():
    offenders = {}
    for path in sorted((ROOT / "ir").rglob("*.py")):
        roots = imported_roots(path)
        third_party = {r for r in roots if r not in sys.stdlib_module_names and r != "convstudio.ir"}
        bad = third_party - THIRD_PARTY_ALLOWED_IN_IR
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_backends_never_import_qt_or_the_designer():
    offenders = [str(p.relative_to(ROOT)) for p in python_files("backends") if imported_roots(p) & {"PyQt6", "pyqtgraph", "convstudio.designer"}]
    assert offenders == []


def test_project_packages_are_imported_through_the_convstudio_namespace():
    offenders = [str(p.relative_to(ROOT)) for p in python_files("ir", "backends", "designer", "tests", "bench", "examples")
                 if imported_roots(p) & {"ir", "backends", "designer"}]
    assert offenders == []


def test_every_package_folder_is_installed():
    """pyproject's package list names every folder with an __init__.py, under the convstudio namespace."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    inits = [p for top in ("ir", "backends", "designer") for p in (ROOT / top).rglob("__init__.py")]
    folders = {".".join(("convstudio",) + p.parent.relative_to(ROOT).parts) for p in inits}
    assert set(config["packages"]) == folders
    assert config["package-dir"] == {f"convstudio.{top}": top for top in ("ir", "backends", "designer")}


def ruff_banned(path: str, source: str) -> list[str]:
    """TID251 (banned-api) findings ruff reports for `source` as if it were the repository file `path`."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the dev extra)")
    result = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "--select", "TID251", "--stdin-filename", path, "-"],
                            input=source, capture_output=True, text=True, cwd=ROOT, timeout=60)
    return [line for line in result.stdout.splitlines() if "TID251" in line]


def test_ruff_banned_api_covers_ir():
    source = "import torch.nn\nfrom onnx import helper\nimport onnxruntime\nfrom PyQt6.QtCore import Qt\nprint(torch.nn, helper, onnxruntime, Qt)\n"
    findings = ruff_banned("ir/probe_module.py", source)
    assert [f.split("`")[1] for f in findings] == ["torch", "onnx", "onnxruntime", "PyQt6"]
    assert ruff_banned("backends/probe_module.py", "import torch.nn\nimport onnx\nprint(torch.nn, onnx)\n") == []


def test_importing_ir_loads_no_heavy_framework():
    modules = "convstudio.ir, convstudio.ir.templates, convstudio.ir.passes"
    code = f"import sys, {modules}; print(sorted(m for m in {sorted(FORBIDDEN_IN_IR)!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
