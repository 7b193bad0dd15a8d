"""The command line as people type it: options never swallow the file, tables never cut numbers, one layer count,
progress on a terminal only (issue 9, item 10)."""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import select
import subprocess
import sys

import pytest
from rich.console import Console

from convstudio.designer.cli.common import Progress
from convstudio.designer.cli.main import build_parser, main
from convstudio.designer.cli.verb_cost import render
from convstudio.ir.cost import analyze
from convstudio.ir.design import load
from tests.designer.cli_calls import cli


@pytest.fixture(scope="module")
def designs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("designs")
    for template in ("lenet", "resnet50"):
        assert main(["new", template, "-o", str(folder / f"{template}.json")]) == 0
    return folder


# ---- options and positionals ----------------------------------------------------------------------


def test_no_option_takes_a_variable_number_of_values():
    """An option with nargs '+', '*' or '?' swallows the file name typed after it; every verb repeats options instead."""
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"cost", "export", "infer", "train", "validate"} <= set(verbs)
    for verb, sub in verbs.items():
        for action in sub._actions:
            if action.option_strings:
                assert action.nargs in (None, 0), f"{verb} {action.option_strings[0]} takes nargs={action.nargs!r}"


def test_cost_input_before_the_file(designs, capsys):
    path = designs / "lenet.json"
    code, before, err = cli(capsys, "cost", "--input", "1x1x32x32", path, "--json")
    assert code == 0, err
    assert json.loads(before) == json.loads(cli(capsys, "cost", path, "--input", "1x1x32x32", "--json")[1])
    assert json.loads(before)["input_shapes"] == {"x": [1, 1, 32, 32]}


# ---- the cost table at terminal widths ------------------------------------------------------------


def table_cells(text: str) -> tuple[list[str], list[list[str]]]:
    """Headers and body/footer rows of a rich table rendered with its default box."""
    lines = text.splitlines()
    headers = [h.strip() for h in next(line for line in lines if line.startswith("┃")).strip("┃").split("┃")]
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in lines if line.startswith("│")]
    return headers, rows


@pytest.mark.parametrize("width", [60, 80, 100, 240])
def test_cost_table_never_cuts_a_number(designs, width):
    report = analyze(load(designs / "resnet50.json").graph, "flops")
    data = report.as_dict()
    whole = {
        "params": {f"{n['params']:,}" for n in data["nodes"]} | {f"{data['total']['params']:,}"},
        "MACs": {f"{n['macs']:,}" for n in data["nodes"]} | {f"{data['total']['macs']:,}"},
        "FLOPs": {f"{n['flops']:,}" for n in data["nodes"]} | {f"{data['total']['flops']:,}"},
        "output shape": {"x".join(map(str, n["output_shape"])) for n in data["nodes"]},
    }
    screen = io.StringIO()
    left_out = render(report, None, False, Console(file=screen, width=width, highlight=False))
    text = screen.getvalue()
    assert "…" not in text
    assert all(len(line) <= width for line in text.splitlines())
    headers, rows = table_cells(text)
    assert "name" in headers and "params" in headers and not set(headers) & set(left_out)
    params = headers.index("params")
    assert len([r for r in rows if r[params]]) == len(data["nodes"]) + 1  # a folded name continues on a line of blank cells
    for header, values in whole.items():
        if header in headers:
            cells = {row[headers.index(header)] for row in rows} - {""}
            assert cells <= values, f"{header} at {width} columns: {sorted(cells - values)[:3]}"
    if width >= 100:
        assert {"MACs", "FLOPs", "output shape"} <= set(headers)
    if width == 240:
        assert left_out == [] and "share" in headers
    else:
        assert f"left out to fit {width} columns: {', '.join(left_out)}" in " ".join(text.split())


@pytest.mark.parametrize("columns", ["60", "80", "100"])
def test_cost_follows_columns_when_piped(designs, capsys, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = cli(capsys, "cost", designs / "resnet50.json", "--convention", "torchvision")
    assert code == 0 and "…" not in out
    assert max(len(line) for line in out.splitlines()) <= int(columns)
    assert "25,557,032" in table_cells(out)[1][-1]  # the total row's params, whole
    monkeypatch.delenv("COLUMNS")
    code, out, _ = cli(capsys, "cost", designs / "resnet50.json")
    assert "left out" not in out and "act. memory" in out  # a file or pipe gets the whole table


# ---- one layer count ------------------------------------------------------------------------------


def test_every_command_counts_layers_the_same_way(designs, capsys, tmp_path):
    path = designs / "resnet50.json"
    graph = load(path).graph
    layers = graph.layer_count()
    assert layers == len(graph) - 2 == 175  # Input and Output nodes are not layers
    validate = json.loads(cli(capsys, "validate", path, "--json")[1])
    compare = json.loads(cli(capsys, "compare", path, "--json")[1])
    fuse = json.loads(cli(capsys, "fuse", path, "-o", tmp_path / "f.json", "--json")[1])
    assert validate["nodes"] == compare["totals"]["resnet50"]["nodes"] == fuse["before"]["nodes"] == layers
    assert "175 layers" in cli(capsys, "validate", path)[1]
    assert "│ layers " in cli(capsys, "compare", path)[1]
    assert "175 layers" in cli(capsys, "new", "resnet50", "-o", tmp_path / "r.json")[1]


# ---- progress on a terminal -----------------------------------------------------------------------


def test_progress_shows_only_on_a_terminal_and_clears_itself():
    off = io.StringIO()
    with Progress("exporting m.onnx", console=Console(file=off)) as progress:  # not a terminal
        progress.advance()
    with Progress("exporting m.onnx", show=False, console=Console(file=off, force_terminal=True)):  # --json
        pass
    assert off.getvalue() == ""
    on = io.StringIO()
    with Progress("running m.onnx", total=3, console=Console(file=on, force_terminal=True, width=80)) as progress:
        for _ in range(3):
            progress.advance()
    assert "running m.onnx" in on.getvalue() and "3/3" in on.getvalue() and progress.bar is None
    assert on.getvalue().endswith("\x1b[2K")  # the line is erased at the end
    spinner = io.StringIO()
    with Progress("importing m.onnx", console=Console(file=spinner, force_terminal=True, width=80)):
        pass
    assert "importing m.onnx" in spinner.getvalue() and "/" not in spinner.getvalue()


def run_with_terminal_stderr(argv: list[str], cwd) -> tuple[int, str, str]:
    """Run `convstudio argv` with stderr on a pseudo-terminal; returns (exit code, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "convstudio.designer.cli.main", *argv], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    screen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed with the process
                chunk = b""
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    out = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(), out, screen.decode(errors="replace")


def test_export_and_infer_show_progress_on_a_terminal_only(designs, tmp_path):
    code, out, screen = run_with_terminal_stderr(["export", str(designs / "lenet.json"), "-o", "m.onnx"], tmp_path)
    assert code == 0 and "wrote m.onnx" in out and "exporting m.onnx" in screen
    code, out, screen = run_with_terminal_stderr(["infer", "m.onnx", "--random", "--runs", "5", "--warmup", "1"], tmp_path)
    assert code == 0 and "latency over 5 runs" in out
    assert "running m.onnx" in screen and "6/6" in screen
    code, out, screen = run_with_terminal_stderr(["infer", "m.onnx", "--random", "--runs", "5", "--json"], tmp_path)
    assert code == 0 and json.loads(out)["runs"] == 5 and "running" not in screen
    piped = subprocess.run([sys.executable, "-m", "convstudio.designer.cli.main", "infer", "m.onnx", "--random", "--runs", "5"],
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "running" not in piped.stderr and "latency over 5 runs" in piped.stdout
