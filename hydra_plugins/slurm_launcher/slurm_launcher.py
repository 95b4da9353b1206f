"""Hydra launcher `slurm` (hydra/launcher=slurm): hydra-submitit-launcher's `submitit_slurm`, with all its keys, and a
bounded wait. A task that ends without a result (scancel, a lost node, out of memory or time) costs one line each;
the other jobs' results are kept and aggregated, and the command exits 1 saying how to resume. `submitit_slurm`
instead raises a traceback there when the cluster has accounting, and waits forever when it has none.

Hydra finds launchers only in the top-level `hydra_plugins` package; this file is the front (its config,
registered in Hydra's ConfigStore, and the Launcher class); src/launchers.py does the waiting.
"""
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides

try:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:  # no cluster extra: then hydra/launcher=slurm is not registered, and says what to install
    SlurmQueueConf = SubmititSlurmLauncher = object

log = logging.getLogger(__name__)

@dataclass
class SlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.slurm_launcher.slurm_launcher.SlurmLauncher"
    # Seconds a task may be out of SLURM's queue with no result before it counts as lost (a shared file system
    # can show a finished task's result late). The queue is asked every 5 s.
    lost_after_s: int = 60


if SubmititSlurmLauncher is not object:
    ConfigStore.instance().store(group="hydra/launcher", name="slurm", node=SlurmConf, provider="mlp-sweep")


class SlurmLauncher(SubmititSlurmLauncher):
    """submitit_slurm's launcher: the same job array, the same jobs; its own wait for them."""

    def __init__(self, lost_after_s: int = 60, **params) -> None:
        super().__init__(**params)
        self.lost_after_s = lost_after_s

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from src import launchers, refresh

        jobs = self.submit(job_overrides, initial_job_idx)
        try:
            ended = launchers.wait_for_tasks(jobs, self.lost_after_s)
        except BaseException:  # Ctrl-C or SIGTERM: the tasks would otherwise run on without the command
            for job in jobs:
                if not launchers.has_results(job):
                    job.cancel(check=False)
            raise
        returns, lost = [], []
        for num, job, overrides, state in zip(range(initial_job_idx, initial_job_idx + len(jobs)), jobs, job_overrides, ended):
            if state is None:
                try:
                    returns.append(job.results()[0])
                    continue
                except Exception as e:  # the task raised outside the job's own error handling
                    state = f"FAILED ({type(e).__name__}: see {job.paths.stderr})"
            lost.append(f"lost: job {num} ({' '.join(filter_overrides(overrides))}): SLURM task {job.job_id} {state}, no result")
        if lost:
            sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
            refresh.refresh(sweep_dir)
            print("\n".join(lost), file=sys.stderr)
            print(f"{len(lost)} of {len(jobs)} jobs lost; {sweep_dir} holds the others' results. Resume: the same command "
                  f"with hydra.sweep.dir={sweep_dir} (finished jobs are not trained again).", file=sys.stderr)
            sys.exit(1)
        return returns

    def submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        """Submit the jobs as one job array, with the executor and job arguments of submitit_slurm's own launch."""
        import submitit
        from omegaconf import OmegaConf

        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        shared = set(OmegaConf.structured(BaseQueueConf).keys())  # keys without the "slurm_" prefix
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in self.params.items() if k not in init_keys})
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        nums = range(initial_job_idx, initial_job_idx + len(job_overrides))
        for n, overrides in zip(nums, job_overrides):
            log.info(f"\t#{n} : {' '.join(filter_overrides(overrides))}")
        calls = [(list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state()) for n, o in zip(nums, job_overrides)]
        return executor.map_array(self, *zip(*calls))
