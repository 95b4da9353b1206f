"""src.search: GridSearchCV over the estimator, repeated cross-validation, and the two engines' one search path, in-process."""
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold

from src import config, engine, job
from src.model import NeuralNet
from src.seeding import fit_generator, split_test_fold

TINY = ["dataset.limit=150", "train.max_epochs=2", "train.verbose=quiet"]


def prepared(compose_cfg, *overrides):
    settings = config.settings_of(compose_cfg(*TINY, *overrides))
    j = job.prepare(settings, [], {}, swept=set())
    return settings, j.X, j.y, j.search


def test_repeats_give_scikit_learns_repeated_splitter(compose_cfg):
    """cv.repeats=3: RepeatedStratifiedKFold with folds x repeats splits, whose first repeat is the cv.repeats=1 split."""
    _, X, y, search = prepared(compose_cfg, "cv.repeats=3", "seed=4")
    assert isinstance(search.cv, RepeatedStratifiedKFold) and search.cv.get_n_splits() == 9
    _, _, _, single = prepared(compose_cfg, "seed=4")
    assert isinstance(single.cv, StratifiedKFold)
    for (train_a, test_a), (train_b, test_b) in zip(single.cv.split(X, y), list(search.cv.split(X, y))[:3]):
        np.testing.assert_array_equal(train_a, train_b)
        np.testing.assert_array_equal(test_a, test_b)


@pytest.fixture(scope="module")
def repeated_results():
    """One candidate, cv.repeats=2, through both engines."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*TINY, "cv.repeats=2", "module.num_units=16"], return_hydra_config=True)
    settings = config.settings_of(cfg)
    out = {}
    for name in ("gridsearch", "fused"):
        out[name] = engine.run(job.prepare(settings, [], {}, swept=set()), name=name)
    return out


def test_repeated_cv_keeps_scikit_learns_schema(repeated_results):
    result = repeated_results["gridsearch"]
    assert result.status == "ok"
    df = result.cv_results
    assert [c for c in df.columns if c.endswith("_test_accuracy") and c.startswith("split")] == [f"split{s}_test_accuracy" for s in range(6)]
    splits = df[[f"split{s}_test_accuracy" for s in range(6)]].to_numpy()[0]
    assert df["mean_test_accuracy"][0] == pytest.approx(splits.mean()) and df["std_test_accuracy"][0] == pytest.approx(splits.std())
    assert [(h.get("repeat"), h["fold"]) for h in result.histories] == [(r, k) for r in range(2) for k in range(3)]


def test_both_engines_train_the_same_repeated_fits(repeated_results):
    """The fused engine trains candidates x repeats x folds as the GridSearchCV path does: the same scores."""
    a, b = repeated_results["gridsearch"].cv_results, repeated_results["fused"].cv_results
    scores = [c for c in a.columns if c.startswith(("split", "mean_test", "std_test", "mean_train", "rank_test"))]
    pd.testing.assert_frame_equal(a[scores], b[scores], atol=1e-6, rtol=0)
    assert [(h.get("repeat"), h["fold"]) for h in repeated_results["fused"].histories] == [(r, k) for r in range(2) for k in range(3)]


def test_a_repeated_fit_draws_from_its_seed_repeat_and_fold(compose_cfg):
    """Split (repeat 1, fold 2) starts from NeuralNet's weights drawn from fit_generator(seed, 2, 1)."""
    settings, X, y, search = prepared(compose_cfg, "cv.repeats=2", "seed=3", "module.num_units=16", "train.max_epochs=1")
    test_fold = split_test_fold(search.cv, X, y)
    train = np.flatnonzero(test_fold[:, 1] != 2)
    net = search.estimator.set_params(optimizer__lr=0.0)  # no step: the weights stay the initial ones
    net.fit(X[train], y[train], test_fold=test_fold[train])
    assert (net.repeat_, net.fold_) == (1, 2)
    reference = NeuralNet(16, generator=fit_generator(3, 2, 1))
    for p, q in zip(net.module_.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_each_fused_fit_is_freed_once_scored(compose_cfg):
    """The fused engine's fits hand their weights to the net that scores them: once the job is scored, no fit holds
    weights, though its caller (the launcher) still holds the fits; the scores are those of the GridSearchCV path."""
    settings = config.settings_of(compose_cfg(*TINY, "module.num_units=16"))
    j = job.prepare(settings, [], {}, swept=set())
    trained = engine.train_group([j])[0]
    weights = [weakref.ref(t) for fit in trained.values() for t in fit.state_dict.values()]
    fused_result = engine.run(j, trained)
    assert fused_result.status == "ok" and all(w() is None for w in weights)
    reference = engine.run(job.prepare(settings, [], {}, swept=set()), name="gridsearch").cv_results
    scores = [c for c in reference.columns if c.startswith(("split", "mean_test", "mean_train"))]
    pd.testing.assert_frame_equal(fused_result.cv_results[scores], reference[scores], atol=1e-6, rtol=0)
