"""The slurm launcher's work (slurm_launcher.py is its front): submit the jobs as submitit_slurm does, wait for
them with a bound (src.launchers.wait_for_tasks), and end with one line per lost job. The fused cluster
launchers (hydra_plugins/fused_cluster_launcher) submit and wait through the same two functions."""
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
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    nums = range(initial_job_idx, initial_job_idx + len(job_overrides))
    for n, overrides in zip(nums, job_overrides):
        log.info(f"\t#{n} : {' '.join(filter_overrides(overrides))}")
    calls = [(list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state()) for n, o in zip(nums, job_overrides)]
    tasks = executor(launcher, "slurm").map_array(launcher, *zip(*calls))
    return finish(launcher, tasks, [[(n, o)] for n, o in zip(nums, job_overrides)])  # a JobReturn per task


def executor(launcher, cluster: str):
    """submitit's executor for `cluster` ("slurm" or "local") with the launcher's parameters, as submitit's launchers build it."""
    import submitit  # the cluster extra's, as hydra_plugins.hydra_submitit_launcher is

    params = launcher.params
    init_keys = {"submitit_folder", "max_num_timeout"}
    built = submitit.AutoExecutor(cluster=cluster, folder=params["submitit_folder"],
                                  **{f"{cluster}_max_num_timeout": params["max_num_timeout"]} if "max_num_timeout" in params else {})
    shared = set(OmegaConf.structured(BaseQueueConf).keys())  # keys without the executor's prefix
    built.update_parameters(**{k if k in shared else f"{cluster}_{k}": v for k, v in params.items() if k not in init_keys})
    return built


def finish(launcher, tasks: list, jobs_of: list[list[tuple[int, Sequence[str]]]]) -> list:
    """Each submitit task's result, once every task has one; `jobs_of[k]` are task k's jobs, (number, overrides).

    The wait is bounded (launcher.lost_after_s; None: submitit's own wait, for its local executor). A task that
    ends without a result loses its jobs: one line each, the other jobs' results aggregated, and exit 1 saying how
    to resume.
    """
    bound = getattr(launcher, "lost_after_s", None)
    try:
        ended = launchers.wait_for_tasks(tasks, bound) if bound is not None else [None] * len(tasks)
    except BaseException:  # Ctrl-C or SIGTERM: the tasks would otherwise run on without the command
        for task in tasks:
            if not launchers.has_results(task):
                task.cancel(check=False)
        raise
    results, lost, kind = [], [], "SLURM" if launcher._EXECUTOR == "slurm" else "local"
    for task, jobs, state in zip(tasks, jobs_of, ended):
        if state is None:
            try:
                results.append(task.results()[0])
                continue
            except Exception as e:  # the task raised outside the jobs' own error handling, or (local) was killed
                state = f"FAILED ({type(e).__name__}: see {task.paths.stderr})"
        lost += [f"lost: job {num} ({' '.join(filter_overrides(overrides))}): {kind} task {task.job_id} {state}, no result" for num, overrides in jobs]
    if lost:
        sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).absolute()
        refresh.refresh(sweep_dir)
        print("\n".join(lost), file=sys.stderr)
        print(f"{len(lost)} of {sum(map(len, jobs_of))} jobs lost; {sweep_dir} holds the others' results. Resume: the same "
              f"command with hydra.sweep.dir={sweep_dir} (finished jobs are not trained again).", file=sys.stderr)
        sys.exit(1)
    return results
