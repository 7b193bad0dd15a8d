"""Groups: in templates, in the design file (validated, round-tripped), kept in step with edits and passes."""

from __future__ import annotations

import json

import pytest

from convstudio.ir.design import Design, dumps, loads
from convstudio.ir.errors import DesignError
from convstudio.ir.graph import verify
from convstudio.ir.groups import Group, children, members, visible_owner
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.passes.fuse import fuse
from convstudio.ir.templates import build_template
from convstudio.ir.templates.blocks import bottleneck_residual
from convstudio.ir.templates.resnet import resnet


def grouped_nodes(graph) -> set[str]:
    return {n for g in graph.groups.values() for n in g.nodes}


def test_resnet_groups_stem_stages_blocks_and_head():
    graph = build_template("resnet18")
    assert children(graph.groups, None) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert children(graph.groups, "layer2") == ["layer2_0", "layer2_1"]
    assert graph.groups["stem"].nodes == ["conv1", "bn1", "relu", "maxpool"]
    assert "layer2_0_downsample_0" in graph.groups["layer2_0"].nodes
    assert graph.groups["head"].nodes == ["avgpool", "flatten", "fc"]
    layers = {n for n, node in graph.nodes.items() if node.op not in ("Input", "Output")}
    assert grouped_nodes(graph) == layers  # every layer sits in exactly one innermost group
    assert sum(len(members(graph.groups, g)) for g in children(graph.groups, None)) == len(layers)


def test_resnet152_has_stem_four_stages_of_3_8_36_3_blocks_and_head():
    graph = resnet("resnet152", bottleneck_residual, 4, (3, 8, 36, 3), (3, 224, 224), 1000)
    top = children(graph.groups, None)
    assert top == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert [len(children(graph.groups, s)) for s in top[1:5]] == [3, 8, 36, 3]


def test_regnet_groups_stem_stages_blocks_and_head():
    graph = build_template("regnet_y_400mf")
    assert children(graph.groups, None) == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert graph.groups["stem"].nodes == ["stem_0", "stem_1", "stem_2"]
    assert graph.groups["head"].nodes == ["avgpool", "flatten", "fc"]
    layers = {n for n, node in graph.nodes.items() if node.op not in ("Input", "Output")}
    assert grouped_nodes(graph) == layers
    assert sum(len(members(graph.groups, g)) for g in children(graph.groups, None)) == len(layers)


@pytest.mark.parametrize("name, expected", [
    ("googlenet", ["inception3a", "inception4e", "inception5b", "stem", "head"]),
    ("inception_v3", ["Mixed_5b", "Mixed_7c", "stem", "head"]),
    ("mobilenet_v2", ["features_1", "features_17", "features_0", "head"]),
    ("efficientnet_b0", ["features_2", "features_2_1", "head"]),
    ("densenet121", ["features_denseblock1", "features_transition3", "stem", "head"]),
    ("convnext_tiny", ["stage3", "features_5_8", "stem", "head"]),
    ("shufflenet_v2_x1_0", ["stage2", "stage3_7", "stage4_3"]),
    ("regnet_y_400mf", ["stage4", "trunk_output_block4_block4_5"]),
    ("squeezenet1_1", ["features_3", "features_12"]),
    ("unet_small", ["enc1", "bottleneck", "dec1"]),
])
def test_templates_group_their_modules(name, expected):
    graph = build_template(name)
    for group in expected:
        assert group in graph.groups and members(graph.groups, group)
    if name == "googlenet":
        assert "inception3a_branch2_0_conv" in graph.groups["inception3a"].nodes
    if name == "efficientnet_b0":
        assert graph.groups["features_2_1"].parent == "features_2"


def test_design_without_groups_has_no_groups_field():
    text = dumps(Design(build_template("lenet")))
    assert "groups" not in json.loads(text)


def test_groups_round_trip_byte_identical():
    graph = build_template("resnet18")
    graph.groups["layer3"].collapsed = True
    text = dumps(Design(graph))
    again = loads(text)
    assert dumps(again) == text
    assert again.graph.groups["layer3"].collapsed and again.graph.groups["layer3_1"].parent == "layer3"
    assert '\n    {"name": "layer3", "nodes": [], "collapsed": true},\n' in text  # one line per group


def design_with_groups(groups) -> str:
    data = json.loads(dumps(Design(build_template("lenet"))))
    data["groups"] = groups
    return json.dumps(data)


@pytest.mark.parametrize("groups, what, where", [
    ({"a": 1}, "groups must be a list", "field groups"),
    ([{"name": "feat", "nodes": ["nope"]}], "unknown node 'nope'", "group 'feat'"),
    ([{"name": "a", "nodes": ["conv1"]}, {"name": "b", "nodes": ["conv1"]}], "node 'conv1' is also in group 'a'", "group 'b'"),
    ([{"name": "a", "parent": "b"}, {"name": "b", "parent": "a"}], "cycle", "group 'a'"),
    ([{"name": "a", "parent": "zz"}], "parent 'zz' is no group", "group 'a'"),
    ([{"name": "a"}, {"name": "a"}], "two groups are named 'a'", "group 'a'"),
    ([{"name": "a", "collapsed": "yes"}], "collapsed must be true or false", "group 'a'"),
    ([{"name": "a", "colour": 1}], "unknown group field 'colour'", "group 'a'"),
    ([{"nodes": []}], "non-empty string name", "field groups[0].name"),
])
def test_bad_groups_give_one_line_naming_the_group(groups, what, where):
    with pytest.raises(DesignError) as info:
        loads(design_with_groups(groups), "d.json")
    line = info.value.line()
    assert what in line and where in line and "\n" not in line


def test_nested_listing_of_a_node_is_allowed():
    text = design_with_groups([{"name": "outer", "nodes": ["conv1"]}, {"name": "inner", "nodes": ["conv1"], "parent": "outer"}])
    graph = loads(text).graph
    assert members(graph.groups, "outer") == ["conv1"]


def test_rename_and_erase_keep_groups_in_step():
    graph = build_template("resnet18")
    graph.rename("fc", "classifier")
    assert graph.groups["head"].nodes == ["avgpool", "flatten", "classifier"]
    graph.groups["solo"] = Group("solo", ["classifier"])
    graph.groups["head"].nodes.remove("classifier")
    graph.set_input("logits", 0, "flatten")
    graph.erase("classifier")
    assert "solo" not in graph.groups  # emptied groups are dropped
    copy = graph.copy()
    copy.groups["head"].nodes.append("x")
    assert "x" not in graph.groups["head"].nodes  # copies do not share group lists


def test_fuse_drops_removed_nodes_from_groups():
    graph = build_template("resnet18")
    fused = fuse(graph).graph
    verify(fused)
    assert fused.groups["stem"].nodes == ["conv1", "maxpool"]
    assert grouped_nodes(fused) <= set(fused.nodes)
    assert graph.groups["stem"].nodes == ["conv1", "bn1", "relu", "maxpool"]  # the input graph is untouched


def test_separable_puts_replacements_in_the_replaced_nodes_group():
    graph = build_template("resnet18")
    out = STRATEGIES["separable"].apply(graph, nodes=["layer2_1_conv2", "conv1"]).graph
    assert {"layer2_1_conv2_dw", "layer2_1_conv2"} <= set(out.groups["layer2_1"].nodes)
    assert "conv1_dw" in out.groups["stem"].nodes
    assert grouped_nodes(out) == {n for n, node in out.nodes.items() if node.op not in ("Input", "Output")}
    assert loads(dumps(Design(out))).graph.groups["layer2_1"].nodes == out.groups["layer2_1"].nodes


def test_visible_owner_is_the_outermost_collapsed_group():
    graph = build_template("resnet18")
    assert visible_owner(graph.groups, "layer1_0_conv1") is None
    graph.groups["layer1_0"].collapsed = True
    assert visible_owner(graph.groups, "layer1_0_conv1") == "layer1_0"
    graph.groups["layer1"].collapsed = True
    assert visible_owner(graph.groups, "layer1_0_conv1") == "layer1"
    assert visible_owner(graph.groups, "conv1") is None


def test_save_refuses_groups_a_file_could_not_load(tmp_path):
    from convstudio.ir.design import save

    graph = build_template("resnet18")
    graph.groups["layer1"].parent = "layer1_0"  # a cycle: layer1_0 sits in layer1
    with pytest.raises(DesignError, match="cycle"):
        save(Design(graph), tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists()
