"""Hydra launcher `fused` (hydra/launcher=fused, this project's default): trains each group of jobs that
can be fused as one batched program (src.fused), then runs every job through Hydra's own job runner.

Hydra finds launchers only in the top-level `hydra_plugins` package; this file is the front (its
config, registered in Hydra's ConfigStore, and the Launcher class); src/launcher.py does the work.
"""
from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import JobReturn


@dataclass
class FusedLauncherConf:
    # Which jobs fuse, and on which engine, is the app's `engine` key (auto | fused | gridsearch).
    _target_: str = "hydra_plugins.fused_launcher.fused_launcher.FusedLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="mlp-sweep")


class FusedLauncher(BasicLauncher):
    """Runs a multirun's jobs in this process: fused groups trained at once, the rest one after another
    (Hydra's BasicLauncher, with its own launch)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from src import launcher

        return launcher.launch(self, job_overrides, initial_job_idx)
