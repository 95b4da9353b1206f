"""Hydra callbacks, run by the process that launched a multirun: at its end, rebuild the sweep's aggregate
once more, then print its ranked table and any failures."""
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src import refresh, report, results


class RebuildAggregate(Callback):
    """Rebuilds the aggregate and report from every finished job folder, after the last job returned.

    The jobs rebuild them as they finish (src.refresh), but a job killed while it rebuilt, or one that
    finished on another machine as the last rebuild listed the folder, could leave them a job short.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        # Only another run still writing into this folder can keep it changing; that run rebuilds it at its end.
        refresh.refresh(Path(config.hydra.sweep.dir))


class PrintRankedTable(Callback):
    """Prints the aggregate, best candidate first, then a paragraph on failed jobs, and then exits with
    status 1 if any failed.

    Jobs record their own failures instead of raising (Hydra's sweeper would stop at the first
    raise and skip this hook).
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if (sweep_dir / f"{results.CV_RESULTS}.json").is_file() and report.print_outcome(sweep_dir):
            sys.exit(1)
