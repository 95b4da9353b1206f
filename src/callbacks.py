"""Hydra callbacks, run by the process that launched a multirun: at its end, rebuild the sweep's aggregate
once more, print its ranked table and verdicts, write the best candidate's config, refit it (cv.refit), and report
any failures."""
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src import launchers, refit, refresh, report

log = logging.getLogger(__name__)


class RebuildAggregate(Callback):
    """Rebuilds the aggregate and report from every finished job folder, after the last job returned.

    The jobs rebuild them as they finish (src.refresh), but a job killed while it rebuilt, or one that
    finished on another machine as the last rebuild listed the folder, could leave them a job short.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if launchers.aggregates(config.hydra.launcher):  # the fused launcher ran every job here, and rebuilt after its last group
            return
        refresh.refresh(Path(config.hydra.sweep.dir))


class PrintRankedTable(Callback):
    """Prints the aggregate that the jobs kept up to date, best candidate first; with cv.refit, refits the
    best candidate on all the training data and scores it on the held-out set (src.refit); then a paragraph
    on failed jobs, and exits with status 1 if any failed.

    Jobs record their own failures instead of raising (Hydra's sweeper would stop at the first raise
    and skip this hook), so it runs, refit included, when some jobs failed.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = report.print_outcome(sweep_dir)
        if failed is None:  # no job finished: nothing to rank, nothing to refit
            return
        if refit.write_best(sweep_dir) is not None:
            print(f"best config: {sweep_dir / refit.BEST_CONFIG} (rerun it with python -m src.sweep --config-path "
                  f"{sweep_dir.absolute()} --config-name {Path(refit.BEST_CONFIG).stem}), {refit.OPTIMIZATION_RESULTS}")
        if config.cv.get("refit", False):
            try:
                out = refit.refit_best(sweep_dir, config.get("engine", "auto"))
            except Exception as e:  # the sweep's results stand; say what went wrong with the refit
                log.error(f"refit failed: {type(e).__name__}: {e}")
                failed = True
            else:
                if out is not None:
                    print(refit.summary(out))
        if failed:
            sys.exit(1)
