"""Training: every optimizer, schedule and loss on small problems, determinism, checkpoints and resume."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from convstudio.backends.torch.train import RunOptions, Trainer, fit, merged_config
from convstudio.backends.weights import load_weights
from convstudio.ir.design import Design, load
from convstudio.ir.errors import DesignError
from convstudio.ir.templates import Builder

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(hidden: int = 32, outputs: int = 10, dropout: bool = False, shape=(1, 8, 8), activation: str = "relu"):
    b = Builder("mlp")
    x = b.op("Flatten", b.input("x", shape), "flatten")
    x = b.op("Linear", x, "fc1", out_features=hidden, activation=activation)
    if dropout:
        x = b.op("Dropout", x, "drop", p=0.2)
    b.output(b.op("Linear", x, "fc2", out_features=outputs), "logits")
    return b.graph


def run(design: Design, tmp_path, overrides=None, **kw) -> dict:
    options = RunOptions(weights_out=tmp_path / "w.safetensors", **kw.pop("options", {}))
    return fit(design, overrides, options=options, **kw)


def initial_and_final_val_loss(design: Design, tmp_path, overrides: dict) -> tuple[float, float, dict]:
    options = RunOptions(weights_out=tmp_path / "w.safetensors")
    trainer = Trainer(design, overrides, options)
    before, _ = trainer.evaluate()
    result = trainer.run()
    return before, result["history"][-1]["val_loss"], result


OPTIMIZER_CASES = {
    "sgd": {"name": "sgd", "lr": 0.5, "momentum": 0.0},
    "sgd_nesterov": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
    "adagrad": {"name": "adagrad", "lr": 0.05},
    "adadelta": {"name": "adadelta", "lr": 1.0},
    "rmsprop": {"name": "rmsprop", "lr": 1e-3, "momentum": 0.0},
    "adam": {"name": "adam", "lr": 3e-3},
    "adamw": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01},
}


@pytest.mark.parametrize("case", sorted(OPTIMIZER_CASES))
def test_every_optimizer_lowers_the_loss(case, tmp_path):
    overrides = {"optimizer": OPTIMIZER_CASES[case], "epochs": 2, "batch_size": 64}
    before, after, result = initial_and_final_val_loss(Design(mlp()), tmp_path, overrides)
    assert after < 0.8 * before
    assert result["history"][-1]["accuracy"] > 0.5


SCHEDULER_CASES = {
    "step": ({"name": "step", "step_size": 1, "gamma": 0.5}, lambda lrs: lrs == pytest.approx([0.1, 0.05, 0.025], rel=1e-9)),
    "exponential": ({"name": "exponential", "gamma": 0.9}, lambda lrs: lrs == pytest.approx([0.1, 0.09, 0.081], rel=1e-9)),
    "cosine": ({"name": "cosine"}, lambda lrs: lrs[0] == 0.1 and lrs[0] > lrs[1] > lrs[2] > 0),
    "cyclic": ({"name": "cyclic", "base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5}, lambda lrs: len(set(lrs)) == 3),
}


@pytest.mark.parametrize("case", sorted(SCHEDULER_CASES))
def test_every_scheduler_changes_lr_and_lowers_the_loss(case, tmp_path):
    sched, lr_check = SCHEDULER_CASES[case]
    overrides = {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "scheduler": sched, "epochs": 3, "batch_size": 64}
    before, after, result = initial_and_final_val_loss(Design(mlp()), tmp_path, overrides)
    assert after < 0.8 * before
    assert lr_check([h["lr"] for h in result["history"]])


def test_plateau_reacts_to_validation_loss(tmp_path):
    stall = {"optimizer": {"name": "sgd", "lr": 1e-6, "momentum": 0.0}, "scheduler": {"name": "plateau", "factor": 0.5, "patience": 1},
             "epochs": 4, "batch_size": 256}
    lrs = [h["lr"] for h in run(Design(mlp()), tmp_path, stall)["history"]]
    assert lrs[:3] == [1e-6, 1e-6, 1e-6] and lrs[3] == pytest.approx(5e-7, rel=1e-9)
    improving = {**stall, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}}
    before, after, result = initial_and_final_val_loss(Design(mlp()), tmp_path, improving)
    assert after < 0.8 * before
    assert [h["lr"] for h in result["history"]] == [0.1] * 4


def test_batch_size_one_n_and_full(tmp_path):
    steps = {}
    for size in (1, 100, "full"):
        overrides = {"batch_size": size, "epochs": 1, "val_split": 0.9, "optimizer": {"name": "sgd", "lr": 0.01 if size == 1 else 0.5}}
        result = run(Design(mlp(hidden=8)), tmp_path, overrides, on_step=lambda step, total, size=size: steps.setdefault(size, total))
        assert result["history"][0]["val_loss"] < 2.3  # ln(10) = 2.303 is the loss of a uniform guess
    n_train = 1797 - round(1797 * 0.9)
    assert steps == {1: n_train, 100: -(-n_train // 100), "full": 1}


def test_without_validation_split(tmp_path):
    history = run(Design(mlp()), tmp_path, {"epochs": 2, "val_split": 0.0, "optimizer": {"name": "adam", "lr": 3e-3},
                                              "scheduler": {"name": "plateau"}})["history"]
    assert history[0]["val_loss"] is None and history[0]["accuracy"] > 0.5  # accuracy on the training rows


def test_batch_norm_with_batch_size_one_is_a_clear_error(tmp_path):
    b = Builder("bn")
    x = b.op("Linear", b.op("Flatten", b.input("x", (1, 8, 8))), "fc1", out_features=8)
    b.output(b.op("Linear", b.op("BatchNorm1d", x, "bn"), "fc2", out_features=10))
    with pytest.raises(DesignError, match="cannot train on batches of 1"):
        run(Design(b.graph), tmp_path, {"epochs": 1, "batch_size": 1})


def test_same_seed_same_result(tmp_path):
    overrides = {"epochs": 2, "seed": 3, "batch_size": 32}
    a, b = Design(mlp(dropout=True)), Design(mlp(dropout=True))
    ra, rb = run(a, tmp_path, overrides), run(b, tmp_path, overrides)
    assert [h["loss"] for h in ra["history"]] == [h["loss"] for h in rb["history"]]
    for name in ("fc1", "fc2"):
        for key in ("weight", "bias"):
            assert np.array_equal(a.graph.nodes[name].params[key], b.graph.nodes[name].params[key])
    c = Design(mlp(dropout=True))
    run(c, tmp_path, {**overrides, "seed": 4})
    assert not np.array_equal(a.graph.nodes["fc1"].params["weight"], c.graph.nodes["fc1"].params["weight"])


def params_equal(a: Design, b: Design) -> bool:
    return all(np.array_equal(n.params[k], b.graph.nodes[name].params[k]) for name, n in a.graph.nodes.items() for k in n.params)


def test_stop_then_resume_equals_uninterrupted_run(tmp_path):
    overrides = {"epochs": 3, "seed": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 3e-3},
                 "scheduler": {"name": "step", "step_size": 1, "gamma": 0.7}}
    full = Design(mlp(dropout=True))
    (tmp_path / "reference").mkdir()
    reference = run(full, tmp_path / "reference", overrides)

    steps = [0]

    def stop_after_30():
        steps[0] += 1
        return steps[0] > 30

    part = Design(mlp(dropout=True))
    ckpt = tmp_path / "run.ckpt"
    first = run(part, tmp_path, overrides, should_stop=stop_after_30, options={"checkpoint": ckpt})
    assert first["stopped_early"] and first["epoch"] == 1 and first["step"] == 7  # 23 steps per epoch
    assert len(first["history"]) == 1

    resumed = Design(mlp(dropout=True))
    second = run(resumed, tmp_path, None, options={"resume": ckpt, "checkpoint": tmp_path / "run2.ckpt"})
    assert not second["stopped_early"]
    assert [h["loss"] for h in second["history"]] == [h["loss"] for h in reference["history"]]
    assert params_equal(full, resumed)


def test_ctrl_c_saves_a_checkpoint_and_stops_cleanly(tmp_path):
    def press_ctrl_c(step, total):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    design = Design(mlp())
    result = run(design, tmp_path, {"epochs": 2, "batch_size": 64}, on_step=press_ctrl_c, options={"checkpoint": tmp_path / "c.ckpt"})
    assert result["interrupted"] and result["stopped_early"] and (result["epoch"], result["step"]) == (0, 5)
    assert (tmp_path / "c.ckpt").is_file() and (tmp_path / "w.safetensors").is_file()
    resumed = run(Design(mlp()), tmp_path, None, options={"resume": tmp_path / "c.ckpt"})
    assert len(resumed["history"]) == 2 and not resumed["interrupted"]


def test_fit_runs_in_a_worker_thread_and_stops_on_request(tmp_path):
    import threading

    results, epochs = [], []
    worker = threading.Thread(target=lambda: results.append(
        run(Design(mlp()), tmp_path, {"epochs": 5}, on_epoch=epochs.append, should_stop=lambda: len(epochs) >= 2)))
    worker.start()
    worker.join(timeout=60)
    assert results and results[0]["stopped_early"] and not results[0]["interrupted"]
    assert [e["epoch"] for e in epochs] == [1, 2] and set(epochs[0]) == {"epoch", "loss", "val_loss", "accuracy", "lr", "seconds"}


def test_weights_go_to_params_and_the_file_beside_the_design(tmp_path):
    design = Design(mlp(), path=tmp_path / "net.json")
    result = fit(design, {"epochs": 1})
    assert result["weights"] == str(tmp_path / "net.safetensors") and design.weights is None
    trained = design.graph.nodes["fc1"].params["weight"].copy()
    fresh = mlp()
    load_weights(fresh, tmp_path / "net.safetensors")
    assert np.array_equal(fresh.nodes["fc1"].params["weight"], trained)
    # a second run starts from the weights paired with the design by its stem, not from the seed
    again = Design(mlp(), path=tmp_path / "net.json")
    first_loss = fit(again, {"epochs": 1})["history"][0]["loss"]
    assert first_loss < result["history"][0]["loss"]


def digits_npz(tmp_path, name: str, make_y) -> str:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    path = tmp_path / name
    np.savez(path, x=x, y=make_y(d.target, x))
    return str(path)


def test_bce_trains_a_binary_task(tmp_path):
    data = digits_npz(tmp_path, "small.npz", lambda y, x: (y < 5).astype(np.int64))
    overrides = {"dataset": data, "loss": "bce", "epochs": 3, "optimizer": {"name": "adam", "lr": 3e-3}}
    before, after, result = initial_and_final_val_loss(Design(mlp(outputs=1)), tmp_path, overrides)
    assert after < 0.6 * before
    assert result["history"][-1]["accuracy"] > 0.85


@pytest.mark.parametrize("loss", ["l1", "mse", "smooth_l1"])
def test_regression_losses_learn_a_target_from_npz(loss, tmp_path):
    data = digits_npz(tmp_path, "reg.npz", lambda y, x: np.stack([x.mean(axis=(1, 2, 3)), x[:, 0, :4].mean(axis=(1, 2))], 1))
    overrides = {"dataset": data, "loss": loss, "epochs": 3, "optimizer": {"name": "adam", "lr": 3e-3}}
    before, after, result = initial_and_final_val_loss(Design(mlp(outputs=2)), tmp_path, overrides)
    assert after < 0.5 * before
    assert result["history"][-1]["accuracy"] is None


def test_l1_penalty_shrinks_weights(tmp_path):
    plain, sparse = Design(mlp()), Design(mlp())
    overrides = {"epochs": 2, "optimizer": {"name": "adam", "lr": 3e-3}}
    run(plain, tmp_path, overrides)
    run(sparse, tmp_path, {**overrides, "l1": 1e-3})
    mass = lambda d: np.abs(d.graph.nodes["fc1"].params["weight"]).sum()
    assert mass(sparse) < 0.7 * mass(plain)


def test_l2_weight_decay_shrinks_weights(tmp_path):
    plain, decayed = Design(mlp()), Design(mlp())
    overrides = {"epochs": 2, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}}
    run(plain, tmp_path, overrides)
    run(decayed, tmp_path, {**overrides, "optimizer": {**overrides["optimizer"], "weight_decay": 0.05}})
    norm = lambda d: np.square(d.graph.nodes["fc1"].params["weight"]).sum()
    assert norm(decayed) < 0.7 * norm(plain)


def test_triplet_example_embeddings_classify_digits(tmp_path):
    design = load(EXAMPLES / "triplet_digits.json")
    assert design.training["loss"] == "triplet" and len(design.graph.inputs) == 3
    before, after, result = initial_and_final_val_loss(design, tmp_path, {"epochs": 3})
    assert after < 0.5 * before
    assert result["history"][-1]["accuracy"] >= 0.90  # nearest-centroid accuracy on the validation split


def test_triplet_with_a_single_embedding_network(tmp_path):
    overrides = {"loss": "triplet", "epochs": 2, "optimizer": {"name": "adam", "lr": 3e-3}}
    before, after, result = initial_and_final_val_loss(Design(mlp(outputs=8)), tmp_path, overrides)
    assert after < 0.6 * before and result["history"][-1]["accuracy"] > 0.8


def test_digits_resized_to_a_larger_input(tmp_path):
    result = run(Design(mlp(shape=(1, 12, 12))), tmp_path, {"epochs": 1})
    assert result["history"][0]["accuracy"] > 0.5


def test_nan_loss_names_epoch_and_step(tmp_path):
    with pytest.raises(DesignError, match=r"loss became (NaN|infinite) at epoch 1 step \d+"):
        overrides = {"epochs": 2, "loss": "mse", "optimizer": {"name": "sgd", "lr": 10.0, "momentum": 0.9}}
        run(Design(mlp(activation="none")), tmp_path, overrides)


def test_overrides_merge_into_the_section():
    section = {"optimizer": {"name": "sgd", "lr": 0.5}, "scheduler": {"name": "step", "gamma": 0.3}}
    cfg = merged_config(section, {"optimizer": {"lr": 0.1}, "scheduler": {"name": "cosine"}, "batch_size": "full"})
    assert cfg["optimizer"]["name"] == "sgd" and cfg["optimizer"]["lr"] == 0.1
    assert cfg["scheduler"] == {"name": "cosine", "t_max": 0} and cfg["batch_size"] == "full"
    assert merged_config(section, {"scheduler": {"step_size": 4}})["scheduler"] == {"name": "step", "step_size": 4, "gamma": 0.3}
    with pytest.raises(DesignError, match="training.optimizer.lr"):
        merged_config(section, {"optimizer": {"lr": -1}})
