"""The fused cluster launchers' work (fused_cluster_launcher.py is their front).

launch(), in the launching process: compose every job and plan the fused groups as the fused launcher does
(hydra_plugins.fused_launcher._core.plan: a group per set of jobs the fused engine trains together, a group of
one for any other job or a finished one), then submit each group as one task of one submitit job array and wait
for them (hydra_plugins.slurm_launcher._core.finish: bounded under SLURM; a lost task costs one line per job).
run_group(), in each cluster task: compose its jobs again from their overrides and run them as the fused launcher
runs a group: the fits trained as one program on the task's devices, each job recorded as its fits are trained,
and the sweep's aggregate rebuilt (src.refresh, safe with other tasks rebuilding at once on a shared file system).
"""
import logging
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, setup_globals
from omegaconf import open_dict

from hydra_plugins.fused_launcher import _core as fused
from hydra_plugins.slurm_launcher import _core as cluster
from src import refresh

log = logging.getLogger(__name__)


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run every job, a cluster task per fused group; their JobReturns in the order of job_overrides."""
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    jobs = fused.compose(launcher, job_overrides, initial_job_idx)
    groups = fused.plan(jobs) if fused.ours(launcher.config) else [(False, [i]) for i in range(len(jobs))]
    members = [[(initial_job_idx + i, list(job_overrides[i])) for i in group] for _, group in groups]
    log.info(f"{len(jobs)} jobs in {len(groups)} {launcher._EXECUTOR} task{'s' * (len(groups) != 1)}: "
             + "; ".join(f"{'fused' if fuse else 'alone'} {', '.join(str(n) for n, _ in m)}" for (fuse, _), m in zip(groups, members)))
    state = Singleton.get_state()
    tasks = cluster.executor(launcher, launcher._EXECUTOR).map_array(launcher.run_group, members, [fuse for fuse, _ in groups],
                                                                     [state] * len(groups))
    returns = {}
    for (_, group), group_returns in zip(groups, cluster.finish(launcher, tasks, members)):
        returns |= dict(zip(group, group_returns))
    refresh.refresh(sweep_dir)  # a task killed while it rebuilt, or two finishing at once on NFS: the aggregate is set right here
    return [returns[i] for i in range(len(jobs))]


def run_group(launcher, jobs: list[tuple[int, list[str]]], fuse: bool, singleton_state: dict) -> list[JobReturn]:
    """In a cluster task: run one group's jobs, (number, overrides) each, as the fused launcher runs a group."""
    import submitit

    Singleton.set_state(singleton_state)
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    task = submitit.JobEnvironment().job_id
    configs = []
    for num, overrides in jobs:
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = f"{task}_{num}"  # unique: a task runs several jobs
            cfg.hydra.job.num = num
        configs.append(cfg)
    project = fused.ours(launcher.config)
    rebuild = fused.Rebuild(Path(str(launcher.config.hydra.sweep.dir))) if project else None
    returns = fused.run_group(launcher, configs, list(range(len(configs))), fuse, rebuild)
    return [returns[i] for i in range(len(configs))]
