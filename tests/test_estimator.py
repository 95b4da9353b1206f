import numpy as np
import pytest
import torch
from sklearn.base import clone

from src.data import mnist_sample
from src.devices import resolve_device
from src.estimator import build_estimator


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


def test_a_net_that_only_predicts_builds_no_optimizer_and_keeps_its_optimizer_params(data):
    """src.estimator.PredictingNet (the fused engine's fits, scored or refit): skorch would refuse optimizer__lr without
    the optimizer prefix that building an optimizer registers; the weights it loads predict as the trained net's do."""
    from src.estimator import PredictingNet

    trained = build_estimator({"num_units": 16}, torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}, max_epochs=2, verbose="quiet").fit(*data)
    net = PredictingNet(**clone(trained).get_params(deep=False))
    net.check_data(*data)
    net.initialize().module_.load_state_dict(trained.module_.state_dict())
    assert net.optimizer_ is None and clone(net).get_params()["optimizer__momentum"] == 0.9
    np.testing.assert_array_equal(net.predict_proba(data[0]), trained.predict_proba(data[0]))
    from src.model import NeuralNet

    PredictingNet(NeuralNet, optimizer=torch.optim.SGD, module__num_units=16, optimizer__momentum=0.9).initialize()
    with pytest.raises(ValueError, match="unexpected argument.* optimizr__momentum"):  # skorch still checks every other name
        PredictingNet(NeuralNet, optimizer=torch.optim.SGD, module__num_units=16, optimizr__momentum=0.9).initialize()


def test_histories_are_recorded_per_fit_with_their_fold(data):
    from src.estimator import FitHistories

    X, y = data
    test_fold = np.arange(len(y)) % 3
    store = FitHistories()
    net = make().set_params(callbacks__history__store=store)
    net.fit(X[test_fold != 1], y[test_fold != 1], test_fold=test_fold[test_fold != 1])
    clone(net).fit(X, y)  # clones share the store, as GridSearchCV's clones of the estimator do
    assert [r["fold"] for r in store.records] == [1, None]
    assert [row["epoch"] for row in store.records[0]["epochs"]] == [1, 2]
    assert all("batches" not in row and np.isfinite(row["train_loss"]) for r in store.records for row in r["epochs"])


def test_each_fit_draws_from_its_own_seed_and_fold_generator(data):
    """The initial weights are NeuralNet's, drawn from fit_generator(seed, fold); the fold comes from test_fold."""
    from src.model import NeuralNet
    from src.seeding import fit_generator

    X, y = data
    test_fold = np.arange(len(y)) % 3
    for fold in (0, 2):
        train = test_fold != fold
        net = make(seed=7, max_epochs=1).initialize()
        net.fold_ = fold
        net.initialize()
        reference = NeuralNet(16, generator=fit_generator(7, fold))
        for p, q in zip(net.module_.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
        a = make(seed=7).fit(X[train], y[train], test_fold=test_fold[train])
        b = make(seed=7).fit(X[train], y[train], test_fold=test_fold[train])
        assert a.fold_ == fold and all(torch.equal(p, q) for p, q in zip(weights(a), weights(b)))


def test_devices():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device='tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="device=cuda: no CUDA device"):
        resolve_device("cuda")


def test_batch_iterator_covers_every_sample_once_per_pass():
    from skorch.dataset import Dataset

    from src.estimator import BatchIterator

    X = np.arange(200, dtype=np.float32)[:, None]
    it = BatchIterator(Dataset(X, np.arange(200)), batch_size=64, shuffle=True)
    passes = [torch.cat([xb.ravel() for xb, _ in it]) for _ in range(2)]
    assert len(it) == 4 and [len(xb) for xb, _ in it] == [64, 64, 64, 8]
    for seen in passes:
        assert sorted(seen.tolist()) == list(range(200))
    assert not torch.equal(passes[0], passes[1])  # a new order every epoch
    for xb, yb in it:
        torch.testing.assert_close(xb.ravel().long(), yb)  # features and labels stay paired
    ordered = BatchIterator(Dataset(X, None), batch_size=64)
    assert torch.equal(torch.cat([xb for xb, yb in ordered]).ravel(), torch.arange(200.0)) and all(yb is None for _, yb in ordered)


def test_epoch_loss_is_recorded_once_per_epoch(data):
    net = make(max_epochs=2).fit(*data)
    assert all(np.isfinite(row["train_loss"]) for row in net.history)
    assert "train_loss" not in net.history[-1, "batches", 0]  # no per-batch loss read back


CNN_PARAMS = {"_target_": "src.cnn.CNN", "channels": [4, 8], "kernel_size": 3}


class Unseeded(torch.nn.Module):
    """A module of the user's that takes no generator: its init comes from torch's global one."""

    def __init__(self, hidden: int = 8):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

    def forward(self, X):
        return self.layers(X)


def test_a_module_target_is_the_module_and_draws_from_the_fits_generator(data):
    """module._target_ names the class (module=cnn), its keys reach it, and its init is drawn from fit_generator(seed, fold)."""
    from src.cnn import CNN
    from src.seeding import fit_generator

    X, y = data
    net = build_estimator(CNN_PARAMS, torch.optim.SGD, {"lr": 0.01}, max_epochs=1, verbose="quiet", seed=3)
    assert net.module is CNN and net.get_params()["module__channels"] == [4, 8] and "module___target_" not in net.get_params()
    net.fold_ = 1
    net.initialize()
    reference = CNN([4, 8], 3, generator=fit_generator(3, 1))
    assert all(torch.equal(p, q) for p, q in zip(net.module_.parameters(), reference.parameters()))
    test_fold = np.arange(len(y)) % 3
    a, b = (clone(net).fit(X[test_fold != 1], y[test_fold != 1], test_fold=test_fold[test_fold != 1]) for _ in range(2))
    assert a.fold_ == 1 and all(torch.equal(p, q) for p, q in zip(weights(a), weights(b)))


def test_a_module_without_a_generator_is_seeded_from_the_fit_and_torchs_own_generator_is_put_back():
    own = {"_target_": f"{__name__}.Unseeded", "hidden": 6}
    state = torch.random.get_rng_state()
    first = [weights(make_own(own, seed=5, fold=f)) for f in (0, 0, 1)]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first[0][0].shape == (6, 784)
    assert all(torch.equal(p, q) for p, q in zip(first[0], first[1])) and not torch.equal(first[0][0], first[2][0])


def make_own(module_params: dict, seed: int, fold: int):
    net = build_estimator(module_params, torch.optim.SGD, {"lr": 0.01}, verbose="quiet", seed=seed)
    net.fold_ = fold
    return net.initialize()



@pytest.mark.parametrize("target", [None, "small_modules.ScaledLinear", "small_modules.ValueInInit"])
def test_a_pretrained_net_scores_the_fits_own_tensors(data, target):
    """PretrainedNet (the fused engine's fits, scored by GridSearchCV) holds each fit's weights once: its module is
    built on the meta device and given the fit's tensors themselves. A module with a buffer its state_dict lacks, or
    whose constructor reads a tensor's value, is built as usual and the weights copied in. Either way it predicts as a net holding those weights does."""
    from src.estimator import FittedFolds, PretrainedNet
    from src.fused import FitOutcome

    X, y = data
    module = {"num_units": 16} if target is None else {"_target_": target}
    reference = build_estimator(module, torch.optim.SGD, {"lr": 0.01}, max_epochs=1, verbose="quiet").fit(X, y)
    state_dict = {k: v.clone() for k, v in reference.module_.state_dict().items()}
    pointers = {k: v.data_ptr() for k, v in state_dict.items()}
    fitted = FittedFolds({(0, 0): FitOutcome(state_dict, reference.history.to_list(), None, 0.0)}, torch.as_tensor(X))
    net = PretrainedNet(**reference.get_params(deep=False), fitted=fitted)
    net.fit(np.arange(len(X))[:, None], y, test_fold=np.ones(len(X), dtype=int))  # the rows of every fold but 0: fit (0, 0)
    assert not any(t.is_meta for t in (*net.module_.parameters(), *net.module_.buffers()))
    shared = {k: v.data_ptr() == pointers[k] for k, v in net.module_.state_dict().items()}
    assert all(shared.values()) if target is None else not any(shared.values())
    np.testing.assert_array_equal(net.predict_proba(np.arange(len(X))[:, None]), reference.predict_proba(X))
