"""The fused engine's general path (src/vmapped.py: torch.func over any module) against the GridSearchCV path's own
skorch estimator training the same (candidate, fold) fits, and its place in the engine dispatch (src/engine.py)."""
import dataclasses
import logging

import numpy as np
import pytest
import torch

from small_modules import BatchNormNet, DeepMLP, DropoutNet, InPlaceStatsNet, TinyCNN
from src import config, engine, job, vmapped
from src.data import mnist_sample
from src.estimator import build_estimator
from src.model import NeuralNet
from src.search import build_search
from src.seeding import split_test_fold

SGD, ADAM = "torch.optim.SGD", "torch.optim.Adam"


@pytest.fixture(scope="module")
def data():
    return mnist_sample(limit=450, seed=0)


def folds(y, k=3, seed=0):
    """(test_fold, training rows per fold) of the stratified folds the search would use."""
    test_fold = split_test_fold(build_search(None, {}, folds=k, seed=seed).cv, np.zeros((len(y), 1)), y)
    return test_fold, [np.flatnonzero(test_fold != f) for f in range(k)]


def reference_fit(X, y, train, spec, shared, test_fold, *, valid_split=None):
    """The GridSearchCV path's estimator (src.estimator, as src.job builds it) over `shared.module`, trained on rows `train`
    (whose `test_fold` names the split, spec.fold)."""
    optimizer = getattr(torch.optim, shared.optimizer.rsplit(".", 1)[1])
    net = build_estimator({}, optimizer, spec.optimizer, max_epochs=shared.max_epochs, batch_size=shared.batch_size,
                          shuffle=shared.shuffle, valid_split=valid_split, verbose="quiet", seed=spec.seed)
    net.set_params(module=shared.module, **{f"module__{k}": v for k, v in spec.module.items()})
    return net.fit(X[train], y[train], test_fold=test_fold[train])


def assert_same_weights(outcome, net, atol=1e-5, rtol=1e-5):
    state = net.module_.state_dict()
    assert set(outcome.state_dict) == set(state)
    for name, value in state.items():
        torch.testing.assert_close(outcome.state_dict[name], value.cpu(), atol=atol, rtol=rtol, msg=name)


# (module class, its keywords, candidates as (init, optimizer keywords)): each candidate x 3 folds is one stack
CASES = [
    (TinyCNN, {"channels": 3}, SGD, [("default", {"lr": 0.05}), ("randn", {"lr": 0.01, "momentum": 0.9}),
                                     ("default", {"lr": 0.02, "momentum": 0.5, "weight_decay": 1e-3, "nesterov": True})]),
    (TinyCNN, {"channels": 2}, ADAM, [("default", {"lr": 0.003}), ("default", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 1e-4})]),
    (DeepMLP, {"hidden": (24, 12, 8)}, SGD, [("default", {"lr": 0.1, "momentum": 0.9}), ("randn", {"lr": 0.001})]),
    (NeuralNet, {"num_units": 16, "activation": "gelu"}, ADAM, [("default", {"lr": 0.001}), ("randn", {"lr": 0.01, "betas": (0.8, 0.99)})]),
]


@pytest.mark.parametrize("module, kwargs, optimizer, candidates", CASES, ids=["cnn-sgd", "cnn-adam", "deep-mlp-sgd", "mlp-adam"])
def test_one_epoch_equals_the_gridsearch_paths_fits(data, module, kwargs, optimizer, candidates):
    """After one epoch every (candidate, fold) fit of one stack has the GridSearchCV path's weights and loss, to 1e-5."""
    X, y = data
    test_fold, train = folds(y)
    shared = vmapped.Shared(module, optimizer, max_epochs=1, batch_size=32)
    specs = [vmapped.FitSpec({**kwargs, "init": init}, kw, 0, f, train[f]) for init, kw in candidates for f in range(3)]
    stacks = list(vmapped.train_stacks(X, y, specs, shared))
    assert [indices for indices, _ in stacks] == [list(range(len(specs)))]  # one program
    for spec, outcome in zip(specs, stacks[0][1]):
        net = reference_fit(X, y, spec.train_idx, spec, shared, test_fold)
        assert_same_weights(outcome, net)
        assert outcome.epochs[0]["train_loss"] == pytest.approx(net.history[-1, "train_loss"], rel=1e-5)
        assert outcome.epochs[0]["train_batch_count"] == net.history[-1, "train_batch_count"]


def test_a_fit_with_fewer_batches_sits_out_and_equals_the_gridsearch_path(data):
    """Fits with fewer rows (fewer batches, a shorter last one) skip the steps they lack, optimizer state and all, over
    three epochs; and a fit's history and validation scores follow skorch's (valid split, no shuffling)."""
    X, y = data
    test_fold, train = folds(y)
    shared = vmapped.Shared(TinyCNN, SGD, max_epochs=3, batch_size=40, shuffle=False)
    rows = [train[0], train[1][:200], train[2][:135]]
    specs = [vmapped.FitSpec({"channels": 2}, {"lr": 0.05, "momentum": 0.9}, 0, f, r) for f, r in enumerate(rows)]
    for spec, outcome in zip(specs, vmapped.train(X, y, specs, shared)):
        net = reference_fit(X, y, spec.train_idx, spec, shared, test_fold)
        assert_same_weights(outcome, net)
        assert [e["train_loss"] for e in outcome.epochs] == pytest.approx([e["train_loss"] for e in net.history], rel=1e-5)


def test_the_validation_split_is_scored_as_skorch_scores_it(data):
    X, y = data
    test_fold, train = folds(y)
    shared = vmapped.Shared(DeepMLP, SGD, max_epochs=2, batch_size=32)
    spec = vmapped.FitSpec({"hidden": (16, 8)}, {"lr": 0.1}, 0, 1, train[1])
    net = reference_fit(X, y, train[1], spec, shared, test_fold, valid_split=0.2)
    inner_train, inner_valid = net.train_split(train[1], y[train[1]])  # the same split skorch makes
    spec = dataclasses.replace(spec, train_idx=train[1][np.asarray(inner_train.indices)], valid_idx=train[1][np.asarray(inner_valid.indices)])
    outcome = vmapped.train(X, y, [spec], shared)[0]
    assert_same_weights(outcome, net)
    for mine, theirs in zip(outcome.epochs, net.history):
        for key in ("train_loss", "valid_loss", "valid_acc"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5), key
        assert mine["valid_acc_best"] == theirs["valid_acc_best"] and mine["valid_batch_count"] == theirs["valid_batch_count"]


def test_a_diverging_fit_stops_being_recorded_and_leaves_its_neighbours_alone(data):
    X, y = data
    _, train = folds(y)
    shared = vmapped.Shared(TinyCNN, SGD, max_epochs=3, batch_size=64)
    specs = [vmapped.FitSpec({"channels": 2}, {"lr": lr}, 0, 0, train[0]) for lr in (1e30, 0.05)]
    wild, calm = vmapped.train(X, y, specs, shared)
    assert wild.diverged is not None and wild.diverged.startswith("training loss became") and len(wild.epochs) < 3
    alone = vmapped.train(X, y, specs[1:], shared)[0]
    assert calm.diverged is None
    for name, value in alone.state_dict.items():
        torch.testing.assert_close(calm.state_dict[name], value)


def test_fits_stack_by_module_keywords_but_init(data):
    X, y = data
    _, train = folds(y)
    specs = [vmapped.FitSpec({"channels": c, "init": init}, {"lr": 0.01}, 0, 0, train[0][:64])
             for c, init in [(2, "default"), (3, "default"), (2, "randn")]]
    stacks = list(vmapped.train_stacks(X, y, specs, vmapped.Shared(TinyCNN, SGD, max_epochs=1)))
    assert sorted(indices for indices, _ in stacks) == [[0, 2], [1]]


def test_a_stack_that_would_not_fit_is_split(data):
    X, y = data
    _, train = folds(y)
    shared = vmapped.Shared(TinyCNN, SGD, max_epochs=1)
    specs = [vmapped.FitSpec({"channels": 2}, {"lr": 0.01 * (i + 1)}, 0, i % 3, train[i % 3][:64]) for i in range(4)]
    one = vmapped.stack_bytes(specs[:1], shared, X)
    stacks = list(vmapped.train_stacks(X, y, specs, shared, memory_budget=X.nbytes + y.nbytes + int(2.5 * one)))
    assert [len(indices) for indices, _ in stacks] == [2, 2]


@pytest.mark.parametrize("module, says", [
    (BatchNormNet, "batch norm in training mode (norm: its running statistics are updated in place)"),
    (DropoutNet, "torch.func.vmap cannot run it (RuntimeError: vmap: called random operation while in randomness error mode"),
    (InPlaceStatsNet, "torch.func.vmap cannot run it (RuntimeError: output with shape [] doesn't match the broadcast shape [2])"),
])
def test_what_vmap_cannot_train_is_named(data, module, says):
    reason = vmapped.unsupported(module, {}, data[0][:2])
    assert reason is not None and reason.startswith(f"small_modules.{module.__name__}: {says}")


def test_what_vmap_can_train_is_not_refused(data):
    assert vmapped.unsupported(TinyCNN, {"channels": 2}, data[0][:2]) is None
    assert vmapped.unsupported(DeepMLP, {}, data[0][:2]) is None


# ---- the engine: dispatch, groups, and a small sweep through both engines -----------------------------------------


TINY = ["dataset.limit=300", "train.max_epochs=3", "train.batch_size=32", "train.verbose=quiet"]


def custom_job(compose_cfg, module, kwargs: dict, *overrides: str) -> job.Job:
    """The job `overrides` compose, over `module(**kwargs)` (module._target_): its estimator is the job's own with that module."""
    settings = config.settings_of(compose_cfg(*TINY, *overrides))
    prepared = job.prepare(settings, [], {})
    params = {k: v for k, v in prepared.search.estimator.get_params(deep=False).items() if not k.startswith("module__")}
    prepared.search.estimator = type(prepared.search.estimator)(**{**params, "module": module}, **{f"module__{k}": v for k, v in kwargs.items()})
    module_cfg = {"_target_": f"{module.__module__}.{module.__qualname__}", **kwargs}
    return dataclasses.replace(prepared, settings={**settings, "module": module_cfg})


def test_a_module_the_mlp_step_cannot_train_fuses_through_vmap(compose_cfg, monkeypatch, caplog):
    """NeuralNet with an activation that has no hand-written derivative, and a module._target_ of the user's, fuse through
    src.vmapped; what vmap cannot run goes to GridSearchCV, saying why."""
    from src import layers

    settings = config.settings_of(compose_cfg("engine=fused"))
    assert engine.by_hand(settings) and engine.choose(settings) == "fused"
    monkeypatch.setitem(layers.ACTIVATIONS, "silu", layers.Activation(torch.nn.SiLU))  # NeuralNet builds it; no derivative
    silu = {**settings, "module": {**settings["module"], "activation": "silu"}}
    assert not engine.by_hand(silu) and engine.choose(silu) == "fused"
    cnn = {**settings, "module": {"_target_": "small_modules.TinyCNN", "channels": 2}}
    assert not engine.by_hand(cnn) and engine.choose(cnn) == "fused"
    norm = {**settings, "module": {"_target_": "small_modules.BatchNormNet"}}
    with caplog.at_level(logging.INFO, logger=engine.log.name):
        assert engine.choose(norm, say_why=True) == "gridsearch"
    assert ("engine=fused: the fused engine cannot train small_modules.BatchNormNet: batch norm in training mode (norm: its running "
            "statistics are updated in place); this job runs through GridSearchCV") in caplog.text


def test_groups_of_a_module_differ_in_optimizer_numbers_and_module_keys(compose_cfg):
    cnn = {"_target_": "small_modules.TinyCNN", "channels": 2}
    base = config.settings_of(compose_cfg(*TINY))
    key = lambda lr, module: engine.group_key({**base, "optimizer": {**base["optimizer"], "lr": lr}, "module": module})  # noqa: E731
    assert key(0.1, cnn) == key(0.01, cnn) == key(0.1, {**cnn, "channels": 3, "init": "randn"})
    assert key(0.1, cnn) != key(0.1, {**cnn, "_target_": "small_modules.DeepMLP"}) != key(0.1, base["module"])


def test_a_small_sweep_scores_as_the_gridsearch_path_does(compose_cfg):
    """Three learning rates x 3 folds of a CNN, trained as one program (engine.train_jobs) and scored by each job's
    GridSearchCV, agree with the GridSearchCV path's per candidate within 0.002 (and so do their histories)."""
    lrs = (0.01, 0.03, 0.1)
    fused_jobs = [custom_job(compose_cfg, TinyCNN, {"channels": 3}, f"optimizer.lr={lr}", "optimizer.momentum=0.9") for lr in lrs]
    groups = {engine.group_key(j.settings) for j in fused_jobs}
    assert len(groups) == 1
    trained = list(engine.train_jobs(fused_jobs))
    assert len(trained) == 1 and sorted(trained[0]) == [0, 1, 2]  # one stack: every job's three folds
    for j, lr in enumerate(lrs):
        fused_result = engine.run(fused_jobs[j], trained[0][j])
        reference = engine.run(custom_job(compose_cfg, TinyCNN, {"channels": 3}, f"optimizer.lr={lr}", "optimizer.momentum=0.9"),
                               name="gridsearch")
        assert fused_result.status == reference.status == "ok" and fused_result.engine == "fused"
        for k in range(3):
            column = f"split{k}_test_accuracy"
            assert abs(fused_result.cv_results[column][0] - reference.cv_results[column][0]) <= 0.002, (lr, column)
        for mine, theirs in zip(fused_result.histories, reference.histories):
            assert [e["train_loss"] for e in mine["epochs"]] == pytest.approx([e["train_loss"] for e in theirs["epochs"]], rel=1e-4)


def test_the_refit_trains_on_all_rows_as_the_gridsearch_path(compose_cfg):
    fused_job = custom_job(compose_cfg, DeepMLP, {"hidden": [16, 8]})
    reference = custom_job(compose_cfg, DeepMLP, {"hidden": [16, 8]})
    engine.fit_all(fused_job, "fused")
    engine.fit_all(reference, "gridsearch")
    for name, value in reference.search.estimator.module_.state_dict().items():
        torch.testing.assert_close(fused_job.search.estimator.module_.state_dict()[name], value, atol=1e-5, rtol=1e-5)
