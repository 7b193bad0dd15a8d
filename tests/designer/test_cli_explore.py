"""`convstudio explore`: variants built, fine-tuned and measured in worker processes, failures reported, resumed runs, bad flags."""

from __future__ import annotations

import json

import pytest
import torch

from convstudio.backends.explore import RESULTS, Settings, pareto_flags, source_digest
from convstudio.backends.weights import load_design_weights
from convstudio.designer.cli.main import main
from convstudio.ir.design import load
from tests.backends.distill_fixtures import trained_teacher


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield trained_teacher(tmp_path_factory.mktemp("explore"))
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sweep(teacher):
    """A first sweep with one job: a pruned variant, one that applies nowhere, and int8."""
    design, data = teacher
    out = design.parent / "sweep"
    argv = ["explore", str(design), "--data", str(data), "--variants", "prune:0.5 stack3x3", "--variants", "int8", "--finetune-epochs", "1",
            "--jobs", "1", "--out-dir", str(out), "--plot", str(design.parent / "pareto.png"), "--json"]
    return out, argv, run_json(argv)


def run_json(argv):
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    assert code == 0
    return json.loads(stdout.getvalue())


def test_sweep_measures_variants_and_reports_the_one_that_fails(teacher, sweep):
    design, _ = teacher
    out, _, result = sweep
    base = result["baseline"]
    assert base["design"] == str(design) and base["accuracy"] > 0.5 and base["pareto"]
    rows = {r["name"]: r for r in result["variants"]}
    assert list(rows) == ["prune:ratio=0.5", "stack3x3", "int8"]
    assert "applies nowhere" in rows["stack3x3"]["error"] and rows["stack3x3"]["pareto"] is False
    pruned = rows["prune:ratio=0.5"]
    assert pruned["macs"] < base["macs"] and pruned["params"] < base["params"] and 0 <= pruned["accuracy"] <= 1 and pruned["latency_ms"] > 0
    variant = load(pruned["design"])
    assert load_design_weights(variant, required=True).parent == out  # the variant is saved with its fine-tuned weights
    assert rows["int8"]["design"].endswith("int8.onnx") and rows["int8"]["macs"] == base["macs"] and rows["int8"]["bytes"] < rows["int8"]["float_bytes"]
    assert pruned["pareto"]  # fewer MACs than anything as accurate
    assert (design.parent / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / RESULTS).read_text().splitlines()) == 4


def test_pareto_front():
    assert pareto_flags([(10, 0.9), (5, 0.8), (6, 0.7), (10, 0.95), (5, 0.8)]) == [False, True, False, True, True]


def test_rerun_resumes_with_two_jobs(teacher, sweep):
    design, data = teacher
    out, argv, first = sweep
    results = out / RESULTS
    settings = Settings(design, str(data), out, epochs=1)
    interrupted = {"name": "prune:ratio=0.25", "key": f"{source_digest(settings)}:prune:ratio=0.25", "params": 1, "macs": 2, "latency_ms": 0.5,
                   "latency_source": "measured", "accuracy": 0.5, "design": "x.json"}
    with results.open("a") as f:
        f.write(json.dumps(interrupted) + "\n" + '{"name": "width:alp')  # a finished variant, then a line torn by the interruption
    before = len(results.read_text().splitlines())
    argv = [*argv[:argv.index("--variants") + 1], "prune:0.5,0.25 stack3x3 width:0.5", *argv[argv.index("--finetune-epochs"):]]
    argv[argv.index("--jobs") + 1] = "2"
    result = run_json(argv)
    rows = {r["name"]: r for r in result["variants"]}
    assert list(rows) == ["prune:ratio=0.5", "prune:ratio=0.25", "stack3x3", "width:alpha=0.5"]
    assert {k: v for k, v in rows["prune:ratio=0.5"].items() if not k.startswith("pareto")} == \
        {k: v for k, v in first["variants"][0].items() if not k.startswith("pareto")}  # done before: not run again
    assert rows["prune:ratio=0.25"]["accuracy"] == 0.5  # taken from the results file
    assert "error" in rows["stack3x3"] and rows["width:alpha=0.5"]["accuracy"] is not None
    new = [json.loads(line)["name"] for line in results.read_text().splitlines()[before:]]
    assert sorted(new) == ["stack3x3", "width:alpha=0.5"]  # only the failed and the new variant ran


@pytest.mark.parametrize("flags, message", [
    (["--variants", "shrink:0.5"], "error: unknown variant 'shrink' (strategies: {known}, or int8), --variants shrink:0.5"),
    (["--variants", "prune:half"], "error: parameter 'ratio' must be a float, got 'half', --variants prune:half"),
    (["--variants", "prune:size=2"], "error: strategy 'prune' has no parameter 'size' (known: {prune}), --variants prune:size=2"),
    (["--variants", "int8:4"], "error: int8 takes no parameters, --variants int8:4"),
    (["--variants", "int8", "--jobs", "0"], "error: must be at least 1, got 0, --jobs"),
    (["--variants", "int8", "--finetune-epochs", "-1"], "error: must be 0 or more, got -1, --finetune-epochs"),
    (["--variants", "int8", "--alpha", "2"], "error: alpha must lie in [0, 1], got 2, --alpha"),
    (["--variants", "int8", "--weights", "{tmp}/none.safetensors"], "error: weights file not found, file '{tmp}/none.safetensors'"),
])
def test_bad_flags_are_one_line_and_start_nothing(teacher, tmp_path, capsys, flags, message):
    from convstudio.ir.passes.compress import STRATEGIES

    design, data = teacher
    out = tmp_path / "out"
    names = {"tmp": tmp_path, "known": ", ".join(STRATEGIES), "prune": ", ".join(STRATEGIES["prune"].params)}
    assert main(["explore", str(design), "--data", str(data), "--out-dir", str(out), *[f.format(**names) for f in flags]]) == 2
    assert capsys.readouterr().err.strip() == message.format(**names)
    assert not out.exists()
