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


def test_validate_and_cost_of_a_large_file_match_the_graph_it_was_saved_from(tmp_path, capsys):
    """A file whose nodes are listed after their consumers, with output indices and sharing groups, loads to the
    graph it was saved from: `validate` and `cost --json` report what analysing that graph in memory gives."""
    import json

    g = Graph("mixed")
    x = g.add("Input", name="x", attrs={"shape": [8, 16, 16]}).name
    for i in range(400):
        a = g.add("Conv2d", [x], attrs={"out_channels": 8, "kernel_size": 3, "padding": 1}, share="c" if i % 4 == 0 else None).name
        s = g.add("ChannelSplit", [a], attrs={"parts": 2}).name
        x = g.add("Concat", [s, g.add("ReLU", [f"{s}:1"]).name]).name
    g.add("Output", [g.add("Flatten", [g.add("GlobalAvgPool", [x]).name]).name], name="y")
    path = tmp_path / "mixed.json"
    save(Design(g), path)
    data = json.loads(path.read_text())
    nodes = data["nodes"]
    for i, entry in enumerate(nodes):
        if entry["op"] == "Concat":  # each Concat before the ReLU it reads: the loader connects it in a second pass
            nodes[i - 1], nodes[i] = entry, nodes[i - 1]
    path.write_text(json.dumps(data))
    expected = analyze(g)
    assert main(["validate", "--json", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["nodes"] == g.layer_count() and summary["params"] == expected.total.params
    assert main(["cost", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == expected.total.as_dict()
    assert sorted(n["name"] for n in report["nodes"]) == sorted(g.nodes)
    by_name = {n["name"]: n for n in report["nodes"]}
    assert all(by_name[c.name] == c.as_dict(None) for c in expected.nodes)
