import numpy as np
import pytest
import torch
from sklearn.base import clone

from src.data import mnist_sample
from src.estimator import build_estimator, resolve_device


@pytest.fixture(scope="module")
def data():
    return mnist_sample(limit=300)


def make(**kw):
    kw = {"max_epochs": 2, "verbose": "quiet", **kw}
    return build_estimator({"num_units": 16}, torch.optim.SGD, {"lr": 0.01}, **kw)


def weights(net):
    return [p.detach().clone() for p in net.module_.parameters()]


def test_same_seed_same_model_and_clone_keeps_it(data):
    a, b = make(seed=1).fit(*data), clone(make(seed=1)).fit(*data)
    for p, q in zip(weights(a), weights(b)):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    c = make(seed=2).fit(*data)
    assert not torch.equal(weights(a)[0], weights(c)[0])


def test_training_data_is_reshuffled_every_epoch():
    net = make().initialize()
    loader = net.get_iterator(net.get_dataset(np.arange(256, dtype=np.float32)[:, None], np.zeros(256, dtype=np.int64)), training=True)
    first, second = (next(iter(loader))[0].ravel() for _ in range(2))
    assert not torch.equal(first, second) and not torch.equal(first, torch.arange(64.0))


def test_no_internal_validation_by_default_and_on_when_asked(data):
    assert "valid_loss" not in make().fit(*data).history[-1]
    hist = make(valid_split=0.2).fit(*data).history
    assert {"valid_loss", "valid_acc"} <= set(hist[-1])


def test_routing_reaches_module_and_optimizer():
    net = build_estimator({"num_units": 12, "init": "randn"}, torch.optim.SGD, {"lr": 0.5, "momentum": 0.9}, verbose="quiet").initialize()
    assert net.module_.layers[0].weight.shape == (784, 12) and net.module_.layers[0].init == "randn"
    group = net.optimizer_.param_groups[0]
    assert group["lr"] == 0.5 and group["momentum"] == 0.9
    assert net.get_params()["module__num_units"] == 12


def test_history_is_appended_per_fit(tmp_path, data):
    path = tmp_path / "h.jsonl"
    make(history_path=str(path)).fit(*data)
    make(history_path=str(path)).fit(*data)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and '"train_loss"' in lines[0] and '"batches"' not in lines[0]


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="train.verbose='loud'"):
        make(verbose="loud")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="device=cuda: no CUDA device"):
        resolve_device("cuda")
