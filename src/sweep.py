"""Entry point: python -m src.sweep [key=value ...] [-m]

Each Hydra job cross-validates one candidate with GridSearchCV, so its row comes straight from
scikit-learn, then rebuilds the results folder's aggregate and HiPlot report. With -m, Hydra's
sweeper launches one job per grid point (and its launchers can run them in parallel or on a cluster).
"""
import contextlib
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from src import report, results
from src.estimator import build_estimator, resolve_device
from src.search import build_search

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """One job: compose -> data -> estimator -> search -> results -> report. Returns the mean test score."""
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    history = job_dir / "history.jsonl"
    history.unlink(missing_ok=True)
    with user_errors():
        X, y, search, extras = prepare(cfg, list(hc.overrides.task), dict(hc.runtime.choices), history)

    search.fit(X, y)

    job = results.rank(results.job_results(search.cv_results_, extras))
    results.write_cv_results(job, job_dir)
    results.write_json(job_dir / results.HISTORY, results.fold_histories(history, job["params"][0]))
    history.unlink()
    results.write_json(job_dir / results.ENVIRONMENT, results.environment(search.estimator.device, cfg.seed))
    results_dir = Path(hc.sweep.dir) if multirun else job_dir
    table = results.update_aggregate(results_dir) if multirun else job
    report.write_report([results_dir], results_dir / report.REPORT)

    metric = results.metric_names(job)[0]
    score, spread = job[f"mean_test_{metric}"][0], job[f"std_test_{metric}"][0]
    log.info(f"job {hc.job.num if multirun else 0} ({' '.join(hc.overrides.task) or 'defaults'}): "
             f"mean_test_{metric} {score:.4f} ± {spread:.4f}, fit {job['mean_fit_time'][0]:.1f} s/fold -> {job_dir}")
    if not multirun:
        print(f"\n{results.ranked_table(table)}\nreport: {results_dir / report.REPORT}")
    return float(score)


def prepare(cfg: DictConfig, overrides: list[str], choices: dict, history_path: Path | None = None):
    """Build (X, y, search, extras) from the composed config; raises ValueError on a bad value.

    `overrides` are this job's command-line overrides: the estimator ones become GridSearchCV's
    param_grid (so cv_results_ carries their columns), the others the job-level `extras`.
    """
    c = OmegaConf.to_container(cfg, resolve=True)  # plain Python from here on
    device = resolve_device(c["device"])
    X, y = instantiate(c["dataset"])
    param_grid, extras = swept_params(overrides, cfg, choices)
    opt = dict(c["optimizer"])
    estimator = build_estimator(
        c["module"], get_class(opt.pop("_target_")), opt, **c["train"],
        history_path=None if history_path is None else str(history_path), device=device, seed=c["seed"],
    )
    estimator.initialize()  # builds module and optimizer now, so bad values fail before any training
    verbose = 0 if c["train"]["verbose"] == "quiet" else 3
    search = build_search(estimator, param_grid, **c["cv"], seed=c["seed"], verbose=verbose)
    return X, y, search, extras


# Overrides that map onto the estimator's own parameters (skorch's `__` routing); the rest of a job's
# overrides (seed, dataset.*, cv.*, group choices) are job-level params with their own columns.
ESTIMATOR_PARAMS = {"train.max_epochs": "max_epochs", "train.batch_size": "batch_size", "train.shuffle": "iterator_train__shuffle"}
NOT_PARAMS = {"train.verbose", "sweeps"}  # presentation, and the named-sweep group itself


def swept_params(task_overrides: list[str], cfg: DictConfig, choices: dict) -> tuple[dict[str, list], dict]:
    """Split this job's overrides into GridSearchCV's param_grid and job-level params.

    module.num_units=64 -> param_grid {"module__num_units": [64]}; seed=1 -> extras {"seed": 1};
    optimizer=adam (a group choice) -> extras {"optimizer": "adam"}. Values are the resolved config's.
    """
    grid, extras = {}, {}
    for override in OverridesParser.create().parse_overrides(task_overrides):
        key = override.key_or_group
        if key.startswith("hydra") or key in NOT_PARAMS or override.is_delete():
            continue
        if key in choices:
            extras[key] = choices[key]
            continue
        value = OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(cfg, key)}), resolve=True)["v"]
        head, _, rest = key.partition(".")
        if head in ("module", "optimizer") and rest:
            grid[f"{head}__{rest.replace('.', '__')}"] = [value]
        elif key in ESTIMATOR_PARAMS:
            grid[ESTIMATOR_PARAMS[key]] = [value]
        else:
            extras[key.replace(".", "__")] = value
    return grid, extras


@contextlib.contextmanager
def user_errors():
    """A configuration mistake ends the job with one line and exit status 2 (full trace with HYDRA_FULL_ERROR=1)."""
    try:
        yield
    except (ValueError, TypeError, InstantiationException) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ else e
        print(f"Error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
