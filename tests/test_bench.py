import json

import numpy as np
import torch

from conftest import run_cli
from src.bench import LR, plain_loop
from src.data import mnist_sample
from src.estimator import build_estimator
from src.model import NeuralNet

VARIANTS = {"plain_nn_linear", "plain_custom_linear", "skorch_project", "skorch_seed_way"}


def test_bench_runs_and_writes_well_formed_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("--device", "cpu", "--epochs", "2", "--n-samples", "256", "--num-units", "8", "--json", str(out), module="src.bench")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["torch"] == torch.__version__
    assert set(report["results"]) == VARIANTS
    for r in report["results"].values():
        assert r["s_per_epoch"] > 0 and r["ratio"] > 0
    assert report["results"]["plain_nn_linear"]["ratio"] == 1.0
    assert report["linear_vs_F_linear"]["ratio"] > 0 and report["linear_vs_F_linear"]["shape"] == [64, 784, 8]
    assert "skorch_project" in proc.stdout and "ratio" in proc.stdout


def test_bench_rejects_bad_arguments_in_one_line():
    proc = run_cli("--epochs", "0", module="src.bench")
    assert proc.returncode == 2 and "--epochs=0: must be at least 1" in proc.stderr and "Traceback" not in proc.stderr


def test_lean_path_trains_the_same_model_as_a_plain_loop():
    """Shuffling off and the same initial weights: one epoch through the project's estimator and one through
    a hand-written loop end with the same weights."""
    X, y = mnist_sample(limit=640)
    net = build_estimator({"num_units": 32}, torch.optim.SGD, {"lr": LR}, max_epochs=1, shuffle=False, verbose="quiet").initialize()
    plain = NeuralNet(32)
    plain.load_state_dict(net.module_.state_dict())
    net.partial_fit(X, y)
    plain_loop(plain, torch.as_tensor(np.array(X)), torch.as_tensor(y), epochs=1, batch_size=64, shuffle=False)
    for (name, ours), theirs in zip(net.module_.named_parameters(), plain.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(net.module_.layers[0].weight, NeuralNet(32).layers[0].weight)
