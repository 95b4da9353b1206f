"""The slurm launcher's work (slurm_launcher.py is its front): submit the jobs as submitit_slurm does, wait for
them with a bound (src.launchers.wait_for_tasks), and end with one line per lost job."""
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from src import launchers, refresh

log = logging.getLogger(__name__)


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run every job as a task of one SLURM job array; their JobReturns, or exit 1 naming the jobs lost."""
    jobs = submit(launcher, job_overrides, initial_job_idx)
    try:
        ended = launchers.wait_for_tasks(jobs, launcher.lost_after_s)
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
        sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).absolute()
        refresh.refresh(sweep_dir)
        print("\n".join(lost), file=sys.stderr)
        print(f"{len(lost)} of {len(jobs)} jobs lost; {sweep_dir} holds the others' results. Resume: the same command "
              f"with hydra.sweep.dir={sweep_dir} (finished jobs are not trained again).", file=sys.stderr)
        sys.exit(1)
    return returns


def submit(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    """Submit the jobs as one job array, with the executor and job arguments of submitit_slurm's own launch;
    returns submitit's jobs."""
    import submitit  # the cluster extra's, as hydra_plugins.hydra_submitit_launcher is

    params = launcher.params
    init_keys = {"submitit_folder", "max_num_timeout"}
    executor = submitit.AutoExecutor(cluster="slurm", folder=params["submitit_folder"], slurm_max_num_timeout=params["max_num_timeout"])
    shared = set(OmegaConf.structured(BaseQueueConf).keys())  # keys without the "slurm_" prefix
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items() if k not in init_keys})
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    nums = range(initial_job_idx, initial_job_idx + len(job_overrides))
    for n, overrides in zip(nums, job_overrides):
        log.info(f"\t#{n} : {' '.join(filter_overrides(overrides))}")
    calls = [(list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state()) for n, o in zip(nums, job_overrides)]
    return executor.map_array(launcher, *zip(*calls))
