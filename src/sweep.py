"""Entry point: python -m src.sweep [key=value ...] [-m]

Each Hydra job cross-validates one candidate (src.job), so its row comes straight from scikit-learn's
GridSearchCV, then rebuilds the results folder's aggregate and HiPlot report (src.refresh, without a
lock; the launching process rebuilds them once more at the end). With -m, Hydra's sweeper launches one
job per grid point: the default launcher (hydra/launcher=fused) trains the jobs that fuse as one
program on CUDA, and other launchers run them in parallel or on a cluster, each job on its own GPU
and its share of the cores (src.devices). Before any job starts, every job's configuration is
checked (src.config.preflight).
"""
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src import config, devices, job, launcher, refresh, report, results, resume

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
    sweep = OmegaConf.to_container(OmegaConf.load(results_dir / "multirun.yaml")) if multirun else {}
    settings, launcher_cfg = (OmegaConf.to_container(c, resolve=True) for c in (cfg, hc.launcher))
    with user_errors():  # under a parallel launcher, the job gets its own GPU and its share of the cores
        placement = devices.place(settings["device"], settings["train"]["threads"], launcher_cfg, hc.job.num if multirun else 0,
                                  config.sweep_size(sweep))
        job.run(settings, overrides, dict(hc.runtime.choices), job_dir, label, job.swept_keys(sweep) if multirun else set(), placement)
    if multirun and not launcher.aggregates(hc):  # the fused launcher rebuilds these once per group
        refresh.refresh(results_dir)
    elif not multirun:
        report.write_report([results_dir], results_dir / report.REPORT)

    row = results.read_cv_results(job_dir)
    metric = results.metric_names(row)[0]
    score = row[f"mean_test_{metric}"][0]
    log.info(f"{label}: {row['status'][0]}, mean_test_{metric} {score:.4f} ± {row[f'std_test_{metric}'][0]:.4f}, "
             f"fit {row['mean_fit_time'][0]:.1f} s/fold -> {job_dir}")
    if not multirun and report.print_outcome(job_dir):
        sys.exit(1)
    return float(score)


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
        checked = config.preflight(sys.argv[1:])
    if checked.identities:  # a rerun into a sweep folder: finished jobs go to the numbers of their configurations
        for line in resume.arrange(checked.sweep_dir, checked.identities):
            print(f"resume: {line}")
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
