"""The diff view: from the compare dialog ("Show diff") and from `convstudio design A --diff B`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from PyQt6.QtGui import QImage

from convstudio.designer.gui.dialogs.compare import compare
from convstudio.designer.gui.diff_view import STATUS_FILL, DiffDialog, open_diff
from convstudio.ir.design import Design, save
from convstudio.ir.diff import METRICS
from convstudio.ir.passes.compress import STRATEGIES
from convstudio.ir.templates import build_template
from tests.designer.windows import make_window


def run_design(*args):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run([sys.executable, "-m", "designer", "design", *args], capture_output=True, text=True, env=env, timeout=300)


def test_show_diff_from_the_compare_dialog(qtbot, tmp_path):
    win = make_window(qtbot, Design(build_template("resnet18")), tmp_path, (1200, 800))
    dialog = compare(win)
    label = dialog.add_variant("separable")
    dialog.diff_button.click()
    diff_dialog = dialog.diff_dialog
    assert isinstance(diff_dialog, DiffDialog) and diff_dialog.isVisible()
    result = diff_dialog.result
    variant = dialog.graphs[label]
    added = {d.name for d in result.of("added")}
    assert added == set(variant.nodes) - set(win.ctl.graph.nodes) and "layer3_1_conv2_dw" in added
    assert {d.name for d in result.of("changed")} == {n for n, node in win.ctl.graph.nodes.items()
                                                      if node.op == "Conv2d" and node.resolved["kernel_size"] != (1, 1)}
    for m in METRICS:
        assert sum(getattr(d, m) for d in result.nodes) == result.total_b[m] - result.total_a[m]
    scene = diff_dialog.scene
    assert scene.items_b["layer3_1_conv2_dw"].fill == STATUS_FILL["added"]
    assert scene.items_a["layer3_1_conv2"].fill == STATUS_FILL["changed"] == scene.items_b["layer3_1_conv2"].fill
    assert scene.items_b["layer3_1_conv2_dw"].texts[3] == "Δ +2.3 k params · +452 k MACs"  # 256 × 3×3 weights over 14×14
    assert scene.items_b["layer1_0_conv1_dw_relu"].texts[3] == "Δ +201 k FLOPs"  # no params nor MACs: its 64×56×56 FLOPs
    assert scene.items_b["layer3_1_bn2"].fill != STATUS_FILL["changed"]  # unchanged nodes keep their usual colour
    assert diff_dialog.table.rowCount() == len(added) + len(result.of("changed"))
    assert "-83.3%" in diff_dialog.summary.text()
    left = max(item.sceneBoundingRect().right() for item in scene.items_a.values())
    assert min(item.sceneBoundingRect().left() for item in scene.items_b.values()) > left  # side by side
    diff_dialog.table.selectRow(0)
    win.close()
    assert not diff_dialog.isVisible()  # the window's dialogs close with it


def test_removed_nodes_show_red_on_the_left(qtbot):
    from convstudio.ir.passes.fuse import fuse

    a = build_template("lenet")
    dialog = open_diff(None, a, fuse(a).graph, "lenet", "fused")
    qtbot.addWidget(dialog)
    removed = [d.a for d in dialog.result.of("removed")]
    assert removed and all(dialog.scene.items_a[n].fill == STATUS_FILL["removed"] for n in removed)
    assert not set(removed) & set(dialog.scene.items_b)
    dialog.close()


def test_cli_diff_screenshot_summary_and_json(tmp_path):
    a = build_template("resnet18")
    b = STRATEGIES["separable"].apply(a).graph
    save(Design(a), tmp_path / "a.json")
    save(Design(b), tmp_path / "b.json")
    out = tmp_path / "diff.png"
    result = run_design(str(tmp_path / "a.json"), "--diff", str(tmp_path / "b.json"), "--screenshot", str(out), "--size", "1000x700")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "a.json -> b.json: 51 added, 0 removed, 17 changed, 54 unchanged"
    image = QImage(str(out))
    assert (image.width(), image.height()) == (1000, 700)
    result = run_design(str(tmp_path / "a.json"), "--diff", str(tmp_path / "b.json"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["counts"] == {"added": 51, "removed": 0, "changed": 17, "same": 54}
    assert data["delta"]["params"] == data["total_b"]["params"] - data["total_a"]["params"] < 0


def test_cli_diff_bad_paths_are_one_line_errors(tmp_path):
    save(Design(build_template("lenet")), tmp_path / "a.json")
    cases = [
        ((str(tmp_path / "a.json"), "--diff", str(tmp_path / "missing.json"), "--screenshot", str(tmp_path / "x.png")), "no such file"),
        ((str(tmp_path / "a.json"), "--diff", str(tmp_path / "a.json"), "--screenshot", str(tmp_path / "nope" / "x.png")), "folder does not exist"),
        ((str(tmp_path / "a.json"), "--diff", str(tmp_path / "a.json"), "--screenshot", str(tmp_path / "a.json")), "would overwrite"),
        (("--diff", str(tmp_path / "a.json"), "--screenshot", str(tmp_path / "x.png")), "give the design to diff from"),
    ]
    before = (tmp_path / "a.json").read_bytes()
    for args, what in cases:
        result = run_design(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and what in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "x.png").exists() and (tmp_path / "a.json").read_bytes() == before
