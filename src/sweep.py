"""Entry point: python -m src.sweep [key=value ...] [-m]

Each Hydra job cross-validates one candidate with GridSearchCV, so its row comes straight from
scikit-learn, then rebuilds the results folder's aggregate and HiPlot report. With -m, Hydra's
sweeper launches one job per grid point (and its launchers can run them in parallel or on a cluster).
Before any job starts, every job's configuration is checked (src.config.preflight).
"""
import contextlib
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from src import config, report, results
from src.estimator import Diverged, build_estimator, resolve_device
from src.search import build_search

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """One job: compose -> data -> estimator -> search -> results -> report. Returns the mean test score."""
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    results_dir = Path(hc.sweep.dir) if multirun else job_dir
    overrides = list(hc.overrides.task)
    label = f"job {hc.job.num if multirun else 0} ({' '.join(overrides) or 'defaults'})"
    settings = OmegaConf.to_container(cfg, resolve=True)
    identity = config.identity(settings)
    history = job_dir / "history.jsonl"  # estimator.HistoryToFile appends one line per finished fit

    with user_errors():
        config.check(settings)
        record = results.finished_job(job_dir) if settings["resume"] else None
        done = record is not None and record["config"] == identity
        if not done:
            X, y, search, extras = prepare(settings, overrides, dict(hc.runtime.choices), history)
    if done:
        log.info(f"{label}: identical to the finished job in {job_dir}; not trained again (resume=false retrains)")
    else:
        fit_and_record(search, X, y, extras, job_dir, history, identity, overrides)

    with results.lock(results_dir):
        if multirun:
            results.aggregate(results_dir)
        report.write_report([results_dir], results_dir / report.REPORT)

    job = results.read_cv_results(job_dir)
    metric = results.metric_names(job)[0]
    score = job[f"mean_test_{metric}"][0]
    log.info(f"{label}: {job['status'][0]}, mean_test_{metric} {score:.4f} ± {job[f'std_test_{metric}'][0]:.4f}, "
             f"fit {job['mean_fit_time'][0]:.1f} s/fold -> {job_dir}")
    if not multirun and report.print_outcome(job_dir):
        sys.exit(1)
    return float(score)


def prepare(c: dict, overrides: list[str], choices: dict, history_path: Path | None = None):
    """Build (X, y, search, extras) from the resolved config (plain Python); raises ValueError on a bad value.

    `overrides` are this job's command-line overrides: the estimator ones become GridSearchCV's
    param_grid (so cv_results_ carries their columns), the others the job-level `extras`.
    """
    device = resolve_device(c["device"])
    X, y = config.load_data(c)
    param_grid, extras = swept_params(overrides, c, choices)
    opt = dict(c["optimizer"])
    estimator = build_estimator(
        c["module"], get_class(opt.pop("_target_")), opt, **c["train"],
        history_path=None if history_path is None else str(history_path), device=device, seed=c["seed"],
    )
    verbose = 0 if c["train"]["verbose"] == "quiet" else 3
    search = build_search(estimator, param_grid, **c["cv"], seed=c["seed"], verbose=verbose)
    return X, y, search, extras


def fit_and_record(search, X, y, extras: dict, job_dir: Path, history: Path, identity: dict, overrides: list[str]) -> str:
    """Run the search and write the job folder; a raising or diverging fit is recorded, not re-raised.

    Files are written atomically and job.json last, so a killed job leaves no finished-looking folder.
    """
    for stale in [history, job_dir / results.ERROR_LOG, *job_dir.glob(".*.tmp")]:  # left by an earlier, killed try
        stale.unlink(missing_ok=True)
    status, error = "ok", None
    try:
        search.fit(X, y)
        job = results.job_results(search.cv_results_, extras)
    except Diverged as e:
        fold = len(history.read_text().splitlines()) if history.is_file() else 0  # one line per finished fold
        with open(history, "a") as f:
            f.write(json.dumps(e.epochs) + "\n")
        status, error = "diverged", f"fold {fold}: {e}"
        log.warning(f"diverged: {error}")
    except Exception as e:  # any failure of this grid point: recorded, and the sweep goes on
        status, error = "failed", f"{type(e).__name__}: {e}".strip().splitlines()[0]
        results.atomic_write(job_dir / results.ERROR_LOG, traceback.format_exc())
        log.error(f"failed: {error} (traceback in {job_dir / results.ERROR_LOG})")
    if status != "ok":
        metrics = list(search.scoring)
        job = results.job_results(results.unscored_results(search.param_grid, search.cv.get_n_splits(), metrics), extras, status, error)
    job = results.rank(job)
    results.write_cv_results(job, job_dir)
    results.write_json(job_dir / results.HISTORY, results.fold_histories(history, job["params"][0]))
    history.unlink(missing_ok=True)
    results.write_json(job_dir / results.ENVIRONMENT, results.environment(search.estimator.device, identity["seed"]))
    results.write_json(job_dir / results.JOB, {"status": status, "error": error, "overrides": overrides, "config": identity})
    return status


# Overrides that map onto the estimator's own parameters (skorch's `__` routing); the rest of a job's
# overrides (seed, dataset.*, cv.*, group choices) are job-level params with their own columns.
ESTIMATOR_PARAMS = {"train.max_epochs": "max_epochs", "train.batch_size": "batch_size", "train.shuffle": "iterator_train__shuffle"}
NOT_PARAMS = {"train.verbose", "resume", "sweeps"}  # presentation, resuming, and the named-sweep group itself


def swept_params(task_overrides: list[str], settings: dict, choices: dict) -> tuple[dict[str, list], dict]:
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
    return grid, extras


@contextlib.contextmanager
def user_errors():
    """A configuration mistake ends the command with one line and exit status 2 (full trace with HYDRA_FULL_ERROR=1)."""
    try:
        yield
    except (ValueError, TypeError, InstantiationException) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ else e
        print(f"Error: {cause}", file=sys.stderr)
        sys.exit(2)


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM. A BaseException, so that neither skorch (which swallows KeyboardInterrupt
    to end one fit early) nor scikit-learn's error handling keeps the sweep going."""


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def cli() -> None:
    """Check every job's config, then run Hydra; an interruption leaves only complete files behind."""
    with user_errors():
        config.preflight(sys.argv[1:])
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        main()
    except Interrupted as e:
        print(f"\nInterrupted ({e}). Finished jobs and their files are complete; run the same command with the "
              "same hydra.sweep.dir to resume.", file=sys.stderr)
        sys.exit(130 if str(e) == "SIGINT" else 143)


if __name__ == "__main__":
    cli()
