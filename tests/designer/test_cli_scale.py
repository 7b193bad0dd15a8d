"""Large designs on the command line: the cost table of a design with thousands of nodes shows its most expensive layers."""

from __future__ import annotations

from convstudio.designer.cli.main import main
from convstudio.designer.cli.verb_cost import TABLE_ROWS, TOP_ROWS
from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, save
from convstudio.ir.graph import Graph


def long_design(path, blocks: int) -> Graph:
    """conv -> relu blocks with generated names; the convs grow wider, so the last ones cost the most."""
    g = Graph("long")
    x = g.add("Input", name="x", attrs={"shape": [4, 8, 8]}).name
    for i in range(blocks):
        x = g.add("ReLU", [g.add("Conv2d", [x], attrs={"out_channels": 4 + i, "kernel_size": 3, "padding": 1}).name]).name
    g.add("Output", [x], name="y")
    save(Design(g), path)
    return g


def test_cost_of_a_large_design_tables_its_most_expensive_layers(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    path = tmp_path / "long.json"
    graph = long_design(path, TABLE_ROWS)
    assert main(["cost", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"its {TOP_ROWS} layers with the most FLOPs" in out.splitlines()[0]
    assert f"top {TOP_ROWS} by FLOPs" in out
    rows = [line for line in out.splitlines() if " Conv2d " in line]
    expected = [f"conv2d_{i}" for i in range(TABLE_ROWS - 1, TABLE_ROWS - 1 - TOP_ROWS, -1)]
    assert [line.split()[1] for line in rows] == expected
    assert f"FLOPs: {analyze(graph).total.flops:,}" in out
    assert main(["cost", str(path), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "most FLOPs" not in out.splitlines()[0]
    assert len([line for line in out.splitlines() if " Conv2d " in line]) == 3


def test_cost_of_a_design_at_the_limit_tables_every_layer(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    path = tmp_path / "long.json"
    long_design(path, (TABLE_ROWS - 2) // 2)
    assert main(["cost", str(path)]) == 0
    out = capsys.readouterr().out
    assert "most FLOPs" not in out and len([line for line in out.splitlines() if " Conv2d " in line]) == (TABLE_ROWS - 2) // 2
