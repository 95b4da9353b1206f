"""Hydra launcher `slurm` (hydra/launcher=slurm): hydra-submitit-launcher's `submitit_slurm`, with all its keys, and a
bounded wait. A task that ends without a result (scancel, a lost node, out of memory or time) costs one line each;
the other jobs' results are kept and aggregated, and the command exits 1 saying how to resume. `submitit_slurm`
instead raises a traceback there when the cluster has accounting, and waits forever when it has none.

Hydra finds launchers only in the top-level `hydra_plugins` package. This file is the front, on submitit_slurm's
launcher; config.py is its config, and _core.py does the work (imported only when a sweep launches).
"""
from collections.abc import Sequence

from hydra.core.utils import JobReturn

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:  # no cluster extra (config.py then registers nothing)
    SubmititSlurmLauncher = object


class SlurmLauncher(SubmititSlurmLauncher):
    """submitit_slurm's launcher: the same job array of the same jobs; its own wait for them."""

    def __init__(self, lost_after_s: int = 60, **params) -> None:
        super().__init__(**params)
        self.lost_after_s = lost_after_s

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _core

        return _core.launch(self, job_overrides, initial_job_idx)
