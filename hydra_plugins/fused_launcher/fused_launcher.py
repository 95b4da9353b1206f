"""Hydra launcher `fused` (hydra/launcher=fused, this project's default): runs a multirun's jobs in this process,
one after another as Hydra's basic launcher does, except that it first trains each group of this project's jobs
that the fused engine can train together as one batched program (src.fused), so that each job only records.

Hydra finds launchers only in the top-level `hydra_plugins` package. This file is the front, on Hydra's public
Launcher interface; config.py is its config, and _core.py does the work (imported only when a sweep launches:
Hydra imports every module here that is not private whenever it looks for plugins, `--help` included).
"""
from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class FusedLauncher(Launcher):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from ._configs import reusing

        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context
        reusing(hydra_context)  # the sweeper holds this context too: its check of each job composes the config the launch takes

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _core

        return _core.launch(self, job_overrides, initial_job_idx)
