"""Hydra launchers `fused_slurm` and `fused_submitit_local`: the fused launcher's groups (hydra_plugins/fused_launcher)
as cluster jobs. Each group of jobs that the fused engine trains together is submitted as ONE job of a SLURM job
array (or one process of submitit's local executor): it trains the group's fits as one program on its node's
devices, and records each job's folder as the fused launcher does. A job that cannot be fused is a cluster job
of its own. With `submitit_slurm`, by contrast, every job is submitted alone and fuses only its own folds.

Hydra finds launchers only in the top-level `hydra_plugins` package. This file is the front, on submitit's
launchers (their keys, executors and pickling); config.py is the config, and _core.py does the work (imported
only when a sweep launches).
"""
from collections.abc import Sequence

from hydra.core.utils import JobReturn

from hydra_plugins.slurm_launcher.slurm_launcher import SlurmLauncher

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
except ImportError:  # no cluster extra (config.py then registers nothing)
    LocalLauncher = object


class FusedSlurmLauncher(SlurmLauncher):
    """One SLURM array task per fused group, waited for with hydra/launcher=slurm's bound (its lost_after_s)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _core

        return _core.launch(self, job_overrides, initial_job_idx)

    def run_group(self, jobs: list[tuple[int, list[str]]], fuse: bool, singleton_state: dict) -> list[JobReturn]:
        """In the cluster job: run one group's jobs, (number, overrides) each; their JobReturns in that order."""
        from . import _core

        return _core.run_group(self, jobs, fuse, singleton_state)


class FusedLocalLauncher(LocalLauncher):
    """One process of submitit's local executor per fused group (for a workstation, and for CI)."""

    launch = FusedSlurmLauncher.launch
    run_group = FusedSlurmLauncher.run_group
