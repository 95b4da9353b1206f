"""Hydra callbacks: at the end of a multirun, print the sweep's ranked table."""
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src import results


class PrintRankedTable(Callback):
    """Prints the aggregate that the jobs kept up to date, best candidate first.

    Hydra skips on_multirun_end when a job raises, which is why the jobs themselves, not this
    hook, write the aggregate.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if (sweep_dir / f"{results.CV_RESULTS}.json").is_file():
            df = results.read_cv_results(sweep_dir)
            print(f"\n{len(df)} candidates, ranked ({sweep_dir}):\n{results.ranked_table(df)}")
            print(f"report: {sweep_dir / 'hiplot.html'}")
