import json

import numpy as np
import pytest
import torch

from conftest import run_here
from src.bench import LR, plain_loop
from src.data import mnist_sample
from src.estimator import build_estimator
from src.model import NeuralNet

VARIANTS = {"plain_nn_linear", "plain_custom_linear", "skorch_project", "skorch_seed_way"}


def test_bench_runs_and_writes_well_formed_json(tmp_path):
    """The JSON and the printed table agree, and each ratio is its variant's time over (a)'s, as the README reads them."""
    out = tmp_path / "bench.json"
    proc = run_here("--device", "cpu", "--epochs", "2", "--n-samples", "256", "--num-units", "8", "--json", str(out), module="src.bench")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["torch"] == torch.__version__
    assert report["workload"] == {"n_samples": 256, "num_units": 8, "batch_size": 64, "epochs": 2}
    assert set(report["results"]) == VARIANTS
    reference = report["results"]["plain_nn_linear"]["s_per_epoch"]
    for name, r in report["results"].items():
        assert r["ratio"] == pytest.approx(r["s_per_epoch"] / reference)
        assert f"{name:<22}{r['s_per_epoch']:>10.4f}{r['ratio']:>8.2f}" in proc.stdout.splitlines()
    for key, batch in (("linear_vs_F_linear", 64), ("linear_vs_F_linear_large", 4096)):
        m = report[key]
        assert m["shape"] == [batch, 784, 8] and m["ratio"] == pytest.approx(m["linear_function_us"] / m["F_linear_us"])


def test_bench_rejects_bad_arguments_in_one_line():
    proc = run_here("--epochs", "0", module="src.bench")
    assert proc.returncode == 2 and "--epochs=0: must be at least 1" in proc.stderr and "Traceback" not in proc.stderr


def test_lean_path_trains_the_same_model_as_a_plain_loop():
    """Shuffling off and the same initial weights: one epoch through the project's estimator and one through
    a hand-written loop end with the same weights."""
    X, y = mnist_sample(limit=640)
    net = build_estimator({"num_units": 32}, torch.optim.SGD, {"lr": LR}, max_epochs=1, shuffle=False, verbose="quiet").initialize()
    plain = NeuralNet(32)
    plain.load_state_dict(net.module_.state_dict())
    initial = {k: v.clone() for k, v in net.module_.state_dict().items()}
    net.partial_fit(X, y)
    plain_loop(plain, torch.as_tensor(np.array(X)), torch.as_tensor(y), epochs=1, batch_size=64, shuffle=False)
    for (name, ours), theirs in zip(net.module_.named_parameters(), plain.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
    for name, value in net.module_.state_dict().items():  # both trained: an epoch that took no step would pass the above
        assert (value - initial[name]).abs().max() > 1e-4, name


def test_mlp_paths_train_the_same_fits_both_ways():
    """--mlp-paths times the default grid's MLP fits through the hand-written step and through torch.func (src.vmapped):
    the same 12 fits, so the two ways' weights agree, and each run of each way is timed."""
    from src.bench import mlp_paths_table, time_mlp_paths

    report = time_mlp_paths("cpu", epochs=1, runs=1)
    assert len(report["paths"]["hand-written"]) == len(report["paths"]["torch.func"]) == 1
    assert report["paths"]["max_weight_diff"] < 1e-4
    assert "torch.func / hand-written: " in mlp_paths_table(report)
