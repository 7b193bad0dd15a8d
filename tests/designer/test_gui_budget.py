"""The designer's run dialogs refuse a design too big to run before allocating anything, in one line."""

import json
from pathlib import Path

from convstudio.designer.gui.dialogs.export import ExportDialog, InferenceDialog
from convstudio.designer.gui.dialogs.train import TrainDialog
from convstudio.ir.design import load
from tests.designer.windows import make_window

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lenet_digits.json"


def test_export_inference_and_training_dialogs_refuse_an_absurd_input(qtbot, tmp_path):
    data = json.loads(EXAMPLE.read_text())
    data.pop("weights", None)
    data["inputs"]["x"] = [1, 16384, 16384]  # fc1 alone needs 120 GiB
    path = tmp_path / "big.json"
    path.write_text(json.dumps(data))
    window = make_window(qtbot, load(path), tmp_path / "recovery", (1000, 700), autosave=False)

    export = ExportDialog(window)
    assert export.export(tmp_path / "big.onnx") is None
    line = export.status.text()
    assert export.status.is_error() and line.startswith("error: the design needs ") and "\n" not in line
    assert "(node 'fc1' parameters 120 GiB), above the" in line and "--max-memory allows more" in line and f"file '{path}'" in line
    assert not (tmp_path / "big.onnx").exists()

    inference = InferenceDialog(window)  # no model chosen: the current design, exported first
    assert not inference.run()
    assert inference.status.is_error() and inference.status.text() == line

    train = TrainDialog(window)
    with qtbot.waitSignal(train.failed, timeout=60_000) as failed:
        train.start()
    assert failed.args[0].startswith("error: the design needs ") and "to train at batch 1 (node 'fc1' parameters 120 GiB)" in failed.args[0]
    assert not (tmp_path / "big.safetensors").exists()
    for dialog in (export, inference, train):
        dialog.close()
