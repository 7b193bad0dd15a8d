"""Design files: canonical JSON that round-trips byte for byte, validation with field paths, atomic saves."""

from __future__ import annotations

import json
import os

import pytest

from convstudio.ir.cost import analyze
from convstudio.ir.design import Design, dumps, load, loads, save, write_atomic
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import Graph
from convstudio.ir.templates import build_template
from convstudio.ir.training import DEFAULTS, training_config, validate_training


def rich_design() -> Design:
    """Two inputs, shared weights, a multi-output split, pairs, 'same' padding, layout, training, weights."""
    g = Graph("two_towers")
    g.add("Input", name="left", attrs={"shape": [4, 8, 8]})
    g.add("Input", name="right", attrs={"shape": [4, 8, 8]})
    g.add("Conv2d", ["left"], name="conv_l", attrs={"out_channels": 8, "kernel_size": [3, 1], "padding": "same"}, share="tower")
    g.add("Conv2d", ["right"], name="conv_r", attrs={"out_channels": 8, "kernel_size": [3, 1], "padding": "same"}, share="tower")
    g.add("ChannelSplit", ["conv_l"], name="split", attrs={"sections": [3, 5]})
    g.add("Concat", ["split:1", "conv_r", "split"], name="cat")
    g.add("Upsample", ["cat"], name="up", attrs={"mode": "bilinear", "scale_factor": 1.5, "align_corners": True})
    g.add("Dropout", ["up"], name="drop", attrs={"p": 0.25})
    g.add("Output", ["drop"], name="map")
    g.add("Output", ["split:1"], name="aux")
    g.layout.update({"left": (0.0, 0.0), "conv_l": (120.5, -40.25), "map": (300.0, 12.0)})
    training = {"loss": "mse", "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
                "scheduler": {"name": "step", "step_size": 5, "gamma": 0.5}, "epochs": 3, "batch_size": "full", "l1": 1e-5}
    return Design(g, training, "two_towers.safetensors")


def test_round_trip_is_byte_identical(tmp_path):
    path = tmp_path / "d.json"
    save(rich_design(), path)
    first = path.read_bytes()
    again = load(path)
    save(again, tmp_path / "e.json")
    assert (tmp_path / "e.json").read_bytes() == first
    assert dumps(loads(first.decode())) == first.decode()
    assert list(again.graph.nodes) == list(rich_design().graph.nodes)
    assert again.graph.layout["conv_l"] == (120.5, -40.25)
    assert again.training["optimizer"]["nesterov"] is True
    assert again.weights == "two_towers.safetensors" and again.weights_path() == tmp_path / "two_towers.safetensors"
    assert again.graph["cat"].inputs == ["split:1", "conv_r", "split"]
    assert again.graph.share_groups() == {"tower": ["conv_l", "conv_r"]}


def test_template_round_trip_and_layout_of_the_file(tmp_path):
    design = Design(build_template("lenet", (1, 8, 8)))
    path = tmp_path / "lenet.json"
    save(design, path)
    text = path.read_text()
    assert text == dumps(load(path))
    data = json.loads(text)
    assert list(data) == ["format", "version", "name", "inputs", "nodes", "outputs"]
    assert data["format"] == "convstudio.design" and data["version"] == 1
    assert data["inputs"] == {"x": [1, 8, 8]} and data["outputs"] == {"logits": "fc3"}
    # one line per node, attributes as given (defaults not written)
    lines = text.splitlines()
    conv1 = next(line for line in lines if '"conv1"' in line)
    assert json.loads(conv1.strip().rstrip(",")) == {"name": "conv1", "op": "Conv2d", "inputs": ["x"],
                                                     "attrs": {"out_channels": 6, "kernel_size": 3, "padding": 1}}
    assert text.endswith("}\n")


def test_save_is_atomic_and_refuses_invalid_graphs(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("old contents")
    broken = rich_design()
    broken.graph["cat"].inputs.append("nowhere")
    with pytest.raises(DesignError):
        save(broken, path)
    assert path.read_text() == "old contents"
    with pytest.raises(DesignError, match="folder does not exist"):
        write_atomic(tmp_path / "missing" / "d.json", "x")
    write_atomic(path, "new")
    assert path.read_text() == "new"
    (tmp_path / "folder").mkdir()
    with pytest.raises(DesignError, match="is a folder"):
        write_atomic(tmp_path / "folder", "x")
    too_long = tmp_path / ("d" * 300 + ".json")
    with pytest.raises(DesignError, match="cannot write") as info:
        write_atomic(too_long, "x")
    assert info.value.where == f"file '{too_long}'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "folder"] and not any((tmp_path / "folder").iterdir())


def base() -> dict:
    return json.loads(dumps(rich_design()))


def mutate(fn) -> str:
    data = base()
    fn(data)
    return json.dumps(data)


LOAD_ERRORS = [
    # (change, text in the message, location)
    (lambda d: d.update(format="onnx"), "format must be 'convstudio.design'", "field format"),
    (lambda d: d.update(version=7), "unsupported version 7", "field version"),
    (lambda d: d.update(extra=1), "unknown field 'extra'", "field extra"),
    (lambda d: d.update(inputs=[]), "inputs must be an object", "field inputs"),
    (lambda d: d["inputs"].update(left="4x8x8"), "shape must be a list", "field inputs.left"),
    (lambda d: d["inputs"].update(left=[4, 0, 8]), "shape must be >= 1", "field inputs.left"),
    (lambda d: d["nodes"][1].update(op="Conv9d"), "unknown op 'Conv9d'", "node 'conv_r' (nodes[1]) field op"),
    (lambda d: d["nodes"][0].update(color="red"), "unknown node field 'color'", "field nodes[0].color"),
    (lambda d: d["nodes"][0]["attrs"].update(stride=[1, 0]), "stride must be >= 1", "node 'conv_l' (nodes[0]) attrs.stride"),
    (lambda d: d["nodes"][2]["attrs"].update(sections="3,5"), "sections must be a list", "node 'split' (nodes[2]) attrs.sections"),
    (lambda d: d["nodes"][3].update(inputs=["split:1", "ghost"]), "input 'ghost' refers to no node", "node 'cat' (nodes[3]) input 1"),
    (lambda d: d["nodes"][3].update(inputs=["split:7"]), "asks for output 7", "node 'cat' input 0"),
    (lambda d: d["nodes"].append({"name": "x", "op": "Input", "inputs": []}), "Input nodes are declared in 'inputs'", "field op"),
    (lambda d: d["outputs"].update(map="ghost"), "input 'ghost' refers to no node", "field outputs.map input 0"),
    (lambda d: d["outputs"].update(again="map"), "input 'map' is an Output node", "field outputs.again input 0"),
    (lambda d: d["outputs"].update(drop="cat"), "duplicate node name 'drop'", "node 'drop' field name"),
    (lambda d: d["layout"].update(ghost=[1, 2]), "layout names unknown node 'ghost'", "field layout.ghost"),
    (lambda d: d["layout"].update(left=[1]), "position must be [x, y]", "field layout.left"),
    (lambda d: d.update(weights=""), "weights must be a file name", "field weights"),
    (lambda d: d["training"].update(loss="hinge"), "must be one of", "field training.loss"),
    (lambda d: d["nodes"][1]["attrs"].update(out_channels=16), "attributes differ", "node 'conv_r' share"),
    (lambda d: d.update(version=True), "unsupported version True", "field version"),
    (lambda d: d["inputs"].update({"2x": [4, 8, 8]}), "invalid node name '2x'", "field inputs.2x"),
    (lambda d: d["nodes"][0].update(name="conv l"), "invalid node name 'conv l'", "node 'conv l' (nodes[0]) field name"),
    (lambda d: d["nodes"][0].update(attrs=[3, 3]), "attrs must be an object, got list", "node 'conv_l' (nodes[0]) attrs"),
    (lambda d: d["nodes"][0]["attrs"].update(out_channels=10**30), "out_channels is absurdly large", "node 'conv_l' (nodes[0]) attrs.out_channels"),
    (lambda d: d["layout"].update(left=[float("nan"), 0]), "position must be [x, y]", "field layout.left"),
]


def test_nodes_may_name_producers_listed_after_them():
    """Nodes are connected as they are read when their producers came first, and in a second pass otherwise."""
    data = json.loads(dumps(rich_design()))
    data["nodes"].reverse()
    shuffled, ordered = loads(json.dumps(data)).graph, loads(dumps(rich_design())).graph
    assert list(shuffled.nodes)[2:6] == ["drop", "up", "cat", "split"]
    for name, node in ordered.nodes.items():
        assert shuffled.nodes[name].inputs == node.inputs
        assert sorted(shuffled.users(name)) == sorted(ordered.users(name))
    assert set(shuffled.topo_order()) == set(ordered.topo_order())
    assert analyze(shuffled).total == analyze(ordered).total


@pytest.mark.parametrize("change,text,where", LOAD_ERRORS, ids=[e[2] for e in LOAD_ERRORS])
def test_loading_names_the_bad_field(change, text, where):
    with pytest.raises(DesignError) as info:
        loads(mutate(change), "'d.json'")
    assert text in info.value.what
    assert where in info.value.where
    assert "'d.json'" in info.value.where


def test_load_file_problems(tmp_path):
    with pytest.raises(DesignError, match="no such file"):
        load(tmp_path / "none.json")
    with pytest.raises(DesignError, match="is a folder"):
        load(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "convstudio.design",\n "version": }')
    with pytest.raises(DesignError, match=r"malformed JSON: .*line 2 column 13") as info:
        load(bad)
    assert info.value.where == f"file '{bad}'"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DesignError, match="cannot read"):
        load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(DesignError, match="must be a JSON object"):
        load(bad)
    bad.write_text(dumps(rich_design()).replace('"inputs": {', '"inputs": {"left": [1, 1, 1], ', 1))
    with pytest.raises(DesignError, match="duplicate key 'left' in one JSON object") as info:
        load(bad)
    assert info.value.where == f"file '{bad}'"
    bad.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DesignError, match="malformed JSON: nested too deeply") as info:
        load(bad)
    assert info.value.where == f"file '{bad}'"


TRAINING_ERRORS = [
    ({"loss": "hinge"}, "training.loss"),
    ({"optimizer": {"name": "lbfgs"}}, "training.optimizer.name"),
    ({"optimizer": {"name": "sgd", "lr": -1}}, "training.optimizer.lr"),
    ({"optimizer": {"name": "sgd", "nesterov": "yes"}}, "training.optimizer.nesterov"),
    ({"optimizer": {"name": "sgd", "beta": 0.9}}, "training.optimizer.beta"),
    ({"optimizer": "adam"}, "training.optimizer"),
    ({"scheduler": {"name": "warmup"}}, "training.scheduler"),
    ({"scheduler": {"name": "step", "t_max": 3}}, "training.scheduler.t_max"),
    ({"scheduler": {"name": "cosine", "t_max": "ten"}}, "training.scheduler.t_max"),
    ({"epochs": 0}, "training.epochs"),
    ({"epochs": 2.5}, "training.epochs"),
    ({"batch_size": 0}, "training.batch_size"),
    ({"batch_size": "half"}, "training.batch_size"),
    ({"val_split": 0.95}, "training.val_split"),
    ({"l1": float("nan")}, "training.l1"),
    ({"seed": True}, "training.seed"),
    ({"triplet_margin": -1}, "training.triplet_margin"),
    ({"dataset": 3}, "training.dataset"),
    ({"learning_rate": 0.1}, "training.learning_rate"),
    # hyper-parameters out of a sane range are refused before torch sees them
    ({"optimizer": {"name": "sgd", "lr": 1e300}}, "training.optimizer.lr"),
    ({"optimizer": {"name": "sgd", "lr": 0}}, "training.optimizer.lr"),
    ({"optimizer": {"name": "sgd", "lr": float("inf")}}, "training.optimizer.lr"),
    ({"optimizer": {"name": "sgd", "momentum": 1.0}}, "training.optimizer.momentum"),
    ({"optimizer": {"name": "adamw", "weight_decay": 5.0}}, "training.optimizer.weight_decay"),
    ({"scheduler": {"name": "plateau", "factor": 1.0}}, "training.scheduler.factor"),
    ({"scheduler": {"name": "step", "step_size": 0}}, "training.scheduler.step_size"),
    ({"scheduler": {"name": "step", "step_size": 2.5}}, "training.scheduler.step_size"),
    ({"scheduler": {"name": "exponential", "gamma": 0}}, "training.scheduler.gamma"),
    ({"scheduler": {"name": "cyclic", "max_lr": 1e3}}, "training.scheduler.max_lr"),
    ({"scheduler": {"gamma": 0.5}}, "training.scheduler.gamma"),
    ({"seed": 2**40}, "training.seed"),
    ({"epochs": 10**7}, "training.epochs"),
]


@pytest.mark.parametrize("section,where", TRAINING_ERRORS, ids=[w + str(i) for i, (_, w) in enumerate(TRAINING_ERRORS)])
def test_training_section_validation(section, where):
    with pytest.raises(DesignError) as info:
        validate_training(section, "training")
    assert info.value.where == where


def test_training_config_fills_defaults():
    assert training_config(None) == DEFAULTS | {"scheduler": {"name": "none"}}
    config = training_config({"optimizer": {"name": "sgd", "lr": 0.1}, "scheduler": {"name": "step", "gamma": 0.5}, "batch_size": "full"})
    assert config["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}  # torch's default
    assert config["scheduler"] == {"name": "step", "step_size": 10, "gamma": 0.5}
    assert config["batch_size"] == "full" and config["epochs"] == 10
    validate_training(rich_design().training)


def test_atomic_write_keeps_permissions(tmp_path):
    existing = tmp_path / "shared.json"
    existing.write_text("old")
    os.chmod(existing, 0o640)
    write_atomic(existing, "new")
    assert existing.stat().st_mode & 0o777 == 0o640
    umask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.json"
        write_atomic(fresh, "x")
        assert fresh.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(umask)
