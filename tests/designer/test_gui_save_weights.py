"""Save As in the designer carries the weights a design holds (after a training run) to the new file's side,
as one design + weights pair; a plain Save writes the weights the design holds, so a pruned or retrained design
never sits beside the weights of the one it replaced."""

import numpy as np

from convstudio.backends.weights import init_params, load_design_weights
from convstudio.designer.gui.controller import Controller
from convstudio.ir.design import Design, load, save
from convstudio.ir.templates import build_template


def test_save_as_writes_the_held_weights_beside_the_new_design(qapp, tmp_path):
    path = tmp_path / "net.json"
    save(Design(build_template("lenet", (1, 8, 8), 10)), path)
    ctl = Controller(load(path))
    assert ctl.save(tmp_path / "plain.json") is None and not (tmp_path / "plain.safetensors").exists()  # nothing held, nothing written
    init_params(ctl.graph, seed=2)  # what a training run leaves in the design
    assert ctl.save(tmp_path / "copy.json") is None
    copy = load(tmp_path / "copy.json")
    assert copy.weights is None and load_design_weights(copy, required=True) == tmp_path / "copy.safetensors"
    assert np.array_equal(copy.graph.nodes["conv1"].params["weight"], ctl.graph.nodes["conv1"].params["weight"])
    written = (tmp_path / "copy.safetensors").read_bytes()
    assert ctl.save() is None and (tmp_path / "copy.safetensors").read_bytes() == written  # the same weights give the same bytes
    init_params(ctl.graph, seed=3, only_missing=False)  # weights changed in memory (a rewrite that kept and cut them)
    assert ctl.save() is None
    again = load(tmp_path / "copy.json")
    load_design_weights(again, required=True)
    assert np.array_equal(again.graph.nodes["conv1"].params["weight"], ctl.graph.nodes["conv1"].params["weight"])
