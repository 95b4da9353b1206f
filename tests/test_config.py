from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from conftest import ROOT, run_cli
from src.sweep import prepare, swept_params

GROUPS = {group.name: sorted(p.stem for p in group.glob("*.yaml")) for group in (ROOT / "conf").iterdir() if group.is_dir()}
OPTIONS = [f"{g}={o}" for g, opts in GROUPS.items() for o in opts]
NAMED_SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))


def prepared(compose_cfg, *overrides):
    """prepare() on the config `python -m src.sweep overrides` composes, as the job would see it."""
    cfg = compose_cfg(*overrides, "dataset.limit=60")
    choices = dict(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return prepare(cfg, [*overrides, "dataset.limit=60"], choices)


@pytest.mark.parametrize("option", OPTIONS)
def test_every_group_option_builds_a_search(compose_cfg, option):
    X, y, search, extras = prepared(compose_cfg, option)
    assert len(X) == len(y) == 60
    assert search.estimator.initialized_
    assert extras[option.split("=")[0]] == option.split("=")[1]


@pytest.mark.parametrize("name", NAMED_SWEEPS)
def test_named_sweeps_compose(compose_cfg, name):
    cfg = compose_cfg(f"+sweeps={name}")
    assert str(cfg.hydra.sweeper.params["module.num_units"]) == "32,64,128,256"
    X, y, search, _ = prepared(compose_cfg, f"+sweeps={name}")
    if name == "seed_reproduction":
        assert cfg.module.init == "randn"
        assert search.estimator.iterator_train__shuffle is False and search.estimator.train_split is not None
        assert search.cv.shuffle is False


def test_public_cli_keys_reach_the_search(compose_cfg):
    overrides = ["module.num_units=64", "module.init=randn", "optimizer.lr=0.1", "train.max_epochs=3",
                 "train.batch_size=32", "cv.folds=4", "device=cpu", "seed=5"]
    X, y, search, extras = prepared(compose_cfg, *overrides)
    net = search.estimator
    assert net.module_.layers[0].weight.shape == (784, 64) and net.module_.layers[0].init == "randn"
    assert net.optimizer_.param_groups[0]["lr"] == 0.1
    assert (net.max_epochs, net.batch_size, net.device, net.seed) == (3, 32, "cpu", 5)
    assert search.cv.n_splits == 4 and search.cv.random_state == 5
    assert search.param_grid == {"module__num_units": [64], "module__init": ["randn"], "optimizer__lr": [0.1],
                                 "max_epochs": [3], "batch_size": [32]}
    assert extras == {"cv__folds": 4, "device": "cpu", "seed": 5, "dataset__limit": 60}


def test_swept_params_ignores_hydra_and_presentation_keys(compose_cfg):
    cfg = compose_cfg("optimizer=adam", "train.verbose=quiet")
    grid, extras = swept_params(["optimizer=adam", "train.verbose=quiet", "hydra.verbose=true", "+sweeps=hidden_sizes"],
                                cfg, dict(cfg.hydra.runtime.choices))
    assert grid == {} and extras == {"optimizer": "adam"}


def test_cfg_job_and_help():
    cfg = run_cli("module.num_units=64", "--cfg", "job")
    assert cfg.returncode == 0 and "num_units: 64" in cfg.stdout and "max_epochs: 25" in cfg.stdout
    help_ = run_cli("--help")
    assert help_.returncode == 0 and "module.num_units=32,64,128,256 -m" in help_.stdout and "optimizer: adam, sgd" in help_.stdout
