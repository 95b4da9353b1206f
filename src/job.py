"""One job, without Hydra: its data, estimator and search from the resolved config, then its run.

The entry point (src.sweep) and the fused launcher (hydra_plugins/fused_launcher/_core.py) build jobs (a Job) through prepare(); run()
is the job's whole computation: check the config, hold the job folder (src.locks), skip the job if an
identical one already finished there, train (or take the fits the fused engine trained), and record
the job folder.
"""
import functools
import logging
import os
from pathlib import Path

import pandas as pd
import torch

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import OmegaConf

from src import config, data, engine, locks, loggers, store
from src.devices import Placement, granted_cpus, resolve_device
from src.estimator import build_estimator, n_parameters
from src.identity import NOT_IDENTITY
from src.search import Job, build_search

log = logging.getLogger(__name__)


def swept_keys(multirun: dict) -> set[str]:
    """The keys a multirun varies, from its multirun.yaml (Hydra's record of the sweep): its command line's
    sweep overrides with more than one value, and the sweeper's own params (a named sweep's, Optuna's)."""
    hydra_cfg = multirun.get("hydra", {})
    keys = set((hydra_cfg.get("sweeper") or {}).get("params") or {})
    for override in OverridesParser.create().parse_overrides(list((hydra_cfg.get("overrides") or {}).get("task") or [])):
        if override.is_sweep_override() and len(list(override.sweep_string_iterator())) > 1:
            keys.add(override.key_or_group)
    return {k.lstrip("+~") for k in keys}


def sweep_size(multirun: dict) -> int | None:
    """How many jobs the multirun of this multirun.yaml launches (None for a sweeper that draws its own points)."""
    hydra_cfg = multirun.get("hydra", {})
    sweeper = hydra_cfg.get("sweeper") or {}
    if sweeper.get("_target_") != config.BASIC_SWEEPER:
        return sweeper.get("n_trials")
    task = list((hydra_cfg.get("overrides") or {}).get("task") or [])
    return len(config.job_overrides(task, {k: str(v) for k, v in (sweeper.get("params") or {}).items()}))


def multirun_facts(path: Path) -> tuple[frozenset[str], int | None]:
    """The keys a multirun sweeps and its number of jobs, from its multirun.yaml; computed once per sweep in
    a process (the jobs of a sequential launcher would otherwise expand the whole grid once each)."""
    return _multirun_facts(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _multirun_facts(path: str, mtime_ns: int) -> tuple[frozenset[str], int | None]:
    sweep = OmegaConf.to_container(OmegaConf.load(path))
    return frozenset(swept_keys(sweep)), sweep_size(sweep)


def run(settings: dict, overrides: list[str], choices: dict, job_dir: Path, label: str, swept: set[str] | None = None,
        placement: Placement | None = None, trained: dict | BaseException | None = None) -> pd.DataFrame:
    """Check, then compute and record the job in job_dir unless an identical job already finished there;
    returns its row in cv_results_ form.

    The job holds its folder throughout (src.locks), and reads what the folder holds under that hold, so
    a second command's job of the same configuration waits and then finds it finished. Raises
    ValueError on a configuration mistake; a failing or diverging grid point is recorded instead.
    `placement`: the job's device and threads under a parallel launcher (src.devices); None: as configured.
    `trained`: the job's fits, when the fused launcher trained them with its group (or the error that stopped that).
    """
    config.check(settings)
    identity = config.identity(settings)
    with locks.job(job_dir):
        try:
            finished = settings["resume"] and store.finished_job(job_dir, identity, damaged_ok=False)
        except store.DamagedJob as e:
            log.warning(f"{label}: {e}; the job counts as unfinished and runs again")
            finished = None
        if finished:
            log.info(f"{label}: identical to the finished job in {job_dir}; not trained again (resume=false retrains)")
            return store.read_cv_results(job_dir)
        prepared = prepare(settings, overrides, choices, swept, job_dir, placement)
        result = engine.run(prepared, trained)
        store.record(job_dir, result, overrides, identity, n_parameters(prepared.search.estimator))
    log.info(f"{label}: trained by the {result.engine} engine in {result.seconds:.1f} s")
    return result.cv_results


def prepare(c: dict, overrides: list[str], choices: dict, swept: set[str] | None = None, job_dir: Path | None = None,
            placement: Placement | None = None) -> Job:
    """Build the Job of the resolved config (plain Python); raises ValueError on a bad value.

    `overrides` are this job's command-line overrides; those of the keys in `swept` (the keys the
    sweep varies; None: all of them) are params: the estimator's become GridSearchCV's param_grid
    (so cv_results_ carries their columns), the others the job-level `extras`. `job_dir` is where the
    job writes (its loggers too).
    """
    placement = placement or Placement(resolve_device(c["device"]), c["train"].get("threads") or granted_cpus(os.environ))  # SLURM's grant
    device = placement.device
    if placement.threads:
        torch.set_num_threads(placement.threads)
    X, y = data.load(c)
    param_grid, extras = swept_params(overrides, c, choices, swept)
    opt = dict(c["optimizer"])
    train = {k: v for k, v in c["train"].items() if k != "threads"}
    callbacks = [] if job_dir is None else loggers.build(c.get("logger"), job_dir, f"{job_dir.parent.name}/{job_dir.name}")
    estimator = build_estimator(c["module"], get_class(opt.pop("_target_")), opt, **train, device=device, seed=c["seed"], loggers=callbacks)
    verbose = 0 if c["train"]["verbose"] == "quiet" else 3
    cv = {k: v for k, v in c["cv"].items() if k != "refit"}  # each job's GridSearchCV has one candidate: the refit is the sweep's
    search = build_search(estimator, param_grid, **cv, seed=c["seed"], verbose=verbose)
    return Job(c, X, y, search, extras, job_dir)


# Overrides that map onto the estimator's own parameters (skorch's `__` routing); the rest of a job's
# overrides (seed, dataset.*, cv.*, group choices) are job-level params with their own columns.
ESTIMATOR_PARAMS = {"train.max_epochs": "max_epochs", "train.batch_size": "batch_size", "train.shuffle": "iterator_train__shuffle"}
NOT_PARAMS = {*NOT_IDENTITY, "sweeps"}  # keys that change no result, and the named-sweep group


def swept_params(task_overrides: list[str], settings: dict, choices: dict, swept: set[str] | None = None) -> tuple[dict[str, list], dict]:
    """Split this job's overrides of swept keys (None: all) into GridSearchCV's param_grid and job-level params.

    module.num_units=64 -> param_grid {"module__num_units": [64]}; seed=1 -> extras {"seed": 1};
    optimizer=adam (a group choice) -> extras {"optimizer": "adam"}. Values are the resolved config's.
    """
    grid, extras, target = {}, {}, None
    for override in OverridesParser.create().parse_overrides(task_overrides):
        key = override.key_or_group
        if key.startswith("hydra") or key in NOT_PARAMS or override.is_delete() or (swept is not None and key not in swept):
            continue
        if key in choices:
            extras[key] = choices[key]
            continue
        if key == "module._target_":  # the module's class is no estimator keyword: the `module` column names it, unless
            target = settings["module"]["_target_"]  # the module group's choice (module=custom) is a param too
            continue
        value = settings
        for part in key.split("."):
            value = value[part]
        head, _, rest = key.partition(".")
        if head in ("module", "optimizer") and rest:
            grid[f"{head}__{rest.replace('.', '__')}"] = [value]
        elif key in ESTIMATOR_PARAMS:
            grid[ESTIMATOR_PARAMS[key]] = [value]
        else:
            extras[key.replace(".", "__")] = value
    if target is not None:
        extras.setdefault("module", target)
    return grid, extras
