"""Hydra callbacks: at the end of a multirun, print the sweep's ranked table and any failures."""
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src import report, results


class PrintRankedTable(Callback):
    """Prints the aggregate that the jobs kept up to date, best candidate first, then a paragraph on
    failed jobs, and then exits with status 1 if any failed.

    Jobs record their own failures instead of raising (Hydra's sweeper would stop at the first
    raise and skip this hook); this hook is also not the only writer of the aggregate: every job is.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if (sweep_dir / f"{results.CV_RESULTS}.json").is_file() and report.print_outcome(sweep_dir):
            sys.exit(1)
