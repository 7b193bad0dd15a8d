"""Code generation: the standalone file runs, loads the design's safetensors and matches the lowering."""

from __future__ import annotations

import ast
import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file

from convstudio.backends.torch import lower
from convstudio.backends.torch.codegen import generate
from convstudio.backends.weights import init_params, save_weights
from convstudio.designer.cli.main import main
from convstudio.ir.design import Design, save
from convstudio.ir.graph import Graph
from convstudio.ir.templates import TEMPLATES, build_template
from tests.backends.test_torch_lowering import CASES, _case_id, _template_input, assert_outputs_close, op_graph, random_params

ATOL = 1e-6  # same torch ops on the same weights; only kernel scheduling may differ


def mixed_graph() -> Graph:
    """Deformable conv, BN, shuffle, split, broadcasting add, concat, upsample, fused activations, two outputs."""
    g = Graph("mixed net")
    g.add("Input", name="x", attrs={"shape": [4, 8, 8]})
    g.add("Input", name="torch", attrs={"shape": [4, 1, 1]})
    g.add("Conv2d", ["x"], name="conv", attrs={"out_channels": 8, "kernel_size": 3, "padding": "same", "activation": "leaky_relu",
                                                "activation_param": 0.2})
    g.add("BatchNorm2d", ["conv"], name="bn")
    g.add("ChannelShuffle", ["bn"], name="shuffle", attrs={"groups": 2})
    g.add("ChannelSplit", ["shuffle"], name="split", attrs={"sections": [4, 4]})
    g.add("Add", ["split:0", "split:1", "torch"], name="add")
    g.add("Concat", ["add", "split:1"], name="cat")
    g.add("Conv2d", ["cat"], name="offsets", attrs={"out_channels": 18, "kernel_size": 3, "padding": 1})
    g.add("Conv2d", ["cat"], name="mask_logits", attrs={"out_channels": 9, "kernel_size": 3, "padding": 1, "activation": "sigmoid"})
    g.add("DeformConv2d", ["cat", "offsets", "mask_logits"], name="deform", attrs={"out_channels": 4, "kernel_size": 3, "padding": 1})
    g.add("Upsample", ["deform"], name="up", attrs={"mode": "bilinear", "scale_factor": 2})
    g.add("GlobalAvgPool", ["up"], name="gap")
    g.add("Flatten", ["gap"], name="flat")
    g.add("Linear", ["flat"], name="fc", attrs={"out_features": 3, "activation": "elu", "activation_param": 1.0})
    g.add("Output", ["fc"], name="logits")
    g.add("Output", ["split:0"], name="features")
    return g


def siamese_graph() -> Graph:
    g = Graph("siamese")
    for side in ("a", "b"):
        g.add("Input", name=side, attrs={"shape": [3, 8, 8]})
        g.add("Conv2d", [side], name=f"{side}_conv", attrs={"out_channels": 4, "kernel_size": 3}, share="encoder")
        g.add("Output", [f"{side}_conv"], name=f"{side}_out")
    return g


def load_generated(path, class_name):
    spec = importlib.util.spec_from_file_location("generated_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_name)


GRAPHS = {
    "mixed": (mixed_graph, "MixedNet"),
    "siamese": (siamese_graph, "Siamese"),
    "lenet": (lambda: build_template("lenet", (1, 8, 8), 10), "Lenet"),
    "unet": (lambda: build_template("unet_small", (3, 32, 32), 2), "UnetSmall"),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_generated_file_loads_weights_and_matches_lowering(name, tmp_path):
    make, class_name = GRAPHS[name]
    graph = make()
    init_params(graph, seed=5)
    for node in graph:  # non-trivial running statistics
        if "running_var" in node.params:
            node.params["running_mean"] = node.params["running_mean"] + 0.3
            node.params["running_var"] = node.params["running_var"] * 1.7
    save_weights(graph, tmp_path / "w.safetensors")
    source = generate(graph)
    path = tmp_path / "model.py"
    path.write_text(source)
    model = load_generated(path, class_name)()
    model.load_state_dict(load_file(tmp_path / "w.safetensors"))
    lowered = lower(graph)
    assert list(model.state_dict()) == list(lowered.state_dict())
    model.eval()
    lowered.eval()
    torch.manual_seed(0)
    xs = [torch.randn(2, *graph.nodes[i].attrs["shape"]) for i in graph.inputs]
    with torch.no_grad():
        assert_outputs_close(model(*xs), lowered(*xs), atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_generated_code_for_every_op_case(case, tmp_path):
    op, attrs, shapes, _ = case
    graph = op_graph(op, attrs, shapes)
    random_params(graph)
    path = tmp_path / "case.py"
    path.write_text(generate(graph, class_name="Case"))
    model = load_generated(path, "Case")()
    lowered = lower(graph).eval()
    model.load_state_dict(lowered.state_dict())
    model.eval()
    xs = [torch.randn(2, *s) for s in shapes]
    with torch.no_grad():
        assert_outputs_close(model(*xs), lowered(*xs), atol=ATOL, rtol=1e-6)


def test_generated_file_imports_only_torch_and_reads_well():
    source = generate(mixed_graph(), class_name="Net")
    tree = ast.parse(source)
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported and all(name == "torch" or name.startswith("torch.") for name in imported)
    classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
    assert classes == ["DeformConv2d", "Net"]
    assert "def deform_conv2d(" in source
    assert "self.conv = nn.Conv2d(4, 8, kernel_size=3, padding='same')" in source
    assert "conv_leaky_relu = F.leaky_relu(conv, 0.2)" in source
    assert "def forward(self, x, torch_):" in source
    assert "return fc_elu, split_0" in source
    plain = generate(build_template("lenet", (1, 8, 8), 10))
    assert "deform" not in plain and "import torch\n" not in plain and "from torch import nn" in plain


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_generates_one_class_with_init_and_forward(name):
    template = TEMPLATES[name]
    graph = build_template(name, _template_input(template), min(template.num_classes, 10))
    tree = ast.parse(generate(graph, class_name="Net"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"torch", "torch.nn.functional"}
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Net"]
    assert [f.name for f in cls.body if isinstance(f, ast.FunctionDef)] == ["__init__", "forward"]
    assert len([a for a in ast.walk(cls) if isinstance(a, ast.Return)]) == 1


def test_generated_module_trains_like_the_lowering(tmp_path):
    graph = build_template("lenet", (1, 8, 8), 10)
    init_params(graph, seed=1)
    path = tmp_path / "lenet.py"
    path.write_text(generate(graph))
    model = load_generated(path, "Lenet")()
    lowered = lower(graph)
    model.load_state_dict(lowered.state_dict())
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    for m in (model, lowered):
        torch.nn.functional.cross_entropy(m(x), y).backward()
    torch.testing.assert_close(model.conv1.weight.grad, lowered.conv1.weight.grad, atol=ATOL, rtol=1e-5)


# ---- the verb -----------------------------------------------------------------------------------


@pytest.fixture
def design_file(tmp_path):
    graph = build_template("lenet", (1, 8, 8), 10)
    init_params(graph, seed=2)
    save_weights(graph, tmp_path / "lenet.safetensors")
    path = tmp_path / "lenet.json"
    save(Design(graph, weights="lenet.safetensors"), path)
    return path


def test_codegen_verb_writes_a_working_file(design_file, tmp_path, capsys):
    out = tmp_path / "model.py"
    assert main(["codegen", str(design_file), "-o", str(out), "--class-name", "Digits", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["class_name"] == "Digits" and summary["output"] == str(out)
    model = load_generated(out, "Digits")()
    model.load_state_dict(load_file(tmp_path / "lenet.safetensors"))
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 10)
    assert main(["codegen", str(design_file), "-o", str(tmp_path / "plain.py")]) == 0
    plain = (tmp_path / "plain.py").read_text()
    assert "class Lenet(nn.Module)" in plain and "load_file('lenet.safetensors')" in plain


@pytest.mark.parametrize(
    "argv,message",
    [
        (["missing.json"], "no such file"),
        (["{design}", "--class-name", "1st"], "class name must be a Python identifier"),
        (["{design}", "--class-name", "class"], "class name must be a Python identifier"),
        (["{design}", "--class-name", "DeformConv2d"], "class name 'DeformConv2d' is already used"),
        (["{design}", "--input", "2x3x8x8"], "weight 'conv1.weight' has shape [6, 1, 3, 3], the design needs [6, 3, 3, 3]"),
    ],
)
def test_codegen_verb_bad_input_exits_2(design_file, tmp_path, capsys, argv, message):
    out = tmp_path / "model.py"
    argv = [a.replace("{design}", str(design_file)) for a in argv]
    assert main(["codegen", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_codegen_verb_missing_output_folder_or_weights(design_file, tmp_path, capsys):
    assert main(["codegen", str(design_file), "-o", str(tmp_path / "nowhere" / "model.py")]) == 2
    assert "folder does not exist" in capsys.readouterr().err
    (tmp_path / "lenet.safetensors").unlink()
    assert main(["codegen", str(design_file), "-o", str(tmp_path / "model.py")]) == 2
    assert "weights file not found" in capsys.readouterr().err
    assert not (tmp_path / "model.py").exists()


def test_codegen_verb_refuses_an_op_without_lowering(tmp_path, capsys):
    graph = build_template("lenet", (1, 8, 8), 10)
    graph.add("Opaque", ["fc3"], name="custom", attrs={"onnx_op": "Foo", "proto": "", "num_inputs": 1, "output_shapes": [[10]]})
    graph.set_input("logits", 0, "custom")
    save(Design(graph), tmp_path / "opaque.json")
    assert main(["codegen", str(tmp_path / "opaque.json"), "-o", str(tmp_path / "model.py")]) == 2
    assert "error: op 'Opaque' has no PyTorch lowering, node 'custom'" in capsys.readouterr().err


def test_codegen_into_another_folder_points_at_the_weights_from_there(design_file, tmp_path, capsys, monkeypatch):
    (tmp_path / "project" / "models").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project")
    assert main(["codegen", str(design_file), "-o", "models/lenet_model.py", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "../../lenet.safetensors"
    source = (tmp_path / "project" / "models" / "lenet_model.py").read_text()
    assert "load_file('../../lenet.safetensors')" in source
    monkeypatch.chdir(tmp_path / "project" / "models")
    model = load_generated("lenet_model.py", "Lenet")()
    model.load_state_dict(load_file("../../lenet.safetensors"))  # the path the docstring gives, from the file's folder


def test_python_keywords_as_node_names(tmp_path):
    g = Graph("keywords")
    g.add("Input", name="class", attrs={"shape": [2, 4, 4]})
    g.add("Input", name="self", attrs={"shape": [2, 4, 4]})
    g.add("Add", ["class", "self"], name="lambda")
    g.add("ReLU", ["lambda"], name="relu")
    g.add("Output", ["relu"], name="return")
    lowered = lower(g)
    path = tmp_path / "keywords.py"
    path.write_text(generate(g))
    assert "def forward(self, class_, self_):" in path.read_text()
    a, b = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(load_generated(path, "Keywords")()(a, b), lowered(a, b), atol=0, rtol=0)
