"""The fused launcher's work (hydra_plugins/fused_launcher is its front).

launch() composes every job of a multirun, as Hydra's basic launcher does, and puts the jobs that the
fused engine can train together into groups (src.engine.group_key). Each group's fits train as one
program (src.engine.train_group); then every job of the group runs through Hydra's own job runner,
which writes its folder (.hydra/, job.json, its cv_results row, history.json, environment.json) from
the fits instead of training. Jobs that cannot be fused run one after another through the
GridSearchCV path. The sweep's aggregate and report are rebuilt once per group.
"""
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from src import config, devices, engine, job, refresh, results

log = logging.getLogger(__name__)

TARGET = "hydra_plugins.fused_launcher.fused_launcher.FusedLauncher"


def aggregates(hydra_config) -> bool:
    """True when the fused launcher runs this multirun: it, not each job, rebuilds the aggregate."""
    return hydra_config.launcher.get("_target_") == TARGET


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run every job; returns their JobReturns in the order of job_overrides."""
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info(f"Launching {len(job_overrides)} jobs locally")
    jobs = []
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        jobs.append(cfg)
    returns: dict[int, JobReturn] = {}
    swept = job.swept_keys(OmegaConf.to_container(launcher.config))
    rebuilt_from = None  # the finished jobs the last rebuild saw: a group of reused jobs adds none, and needs no rebuild of its own
    for fuse, members in plan(jobs):
        if fuse:
            train(jobs, members, swept)
        for i in members:
            returns[i] = run_job(hydra_context=launcher.hydra_context, task_function=launcher.task_function, config=jobs[i],
                                 job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
        if refresh.finished_jobs(sweep_dir) != rebuilt_from:
            with results.disk_errors():
                refresh.refresh(sweep_dir)
            rebuilt_from = refresh.finished_jobs(sweep_dir)
    return [returns[i] for i in range(len(jobs))]


def plan(jobs: list[DictConfig]) -> list[tuple[bool, list[int]]]:
    """(fuse, job indices) groups, in the order of each group's first job: one group per set of jobs that
    the fused engine trains together, and a group of one for each other job (GridSearchCV, or finished)."""
    groups: dict[str, tuple[bool, list[int]]] = {}
    for i, cfg in enumerate(jobs):
        settings = config.settings_of(cfg)
        finished = settings["resume"] and (results.finished_job(_job_dir(cfg)) or {}).get("config") == config.identity(settings)
        fuse = not finished and engine.choose(settings) == "fused"
        groups.setdefault(engine.group_key(settings) if fuse else f"job {i}", (fuse, []))[1].append(i)
    return list(groups.values())


def train(jobs: list[DictConfig], members: list[int], swept: set[str]) -> None:
    """Train a group's fits as one program and keep them for its jobs; an error that stops the training
    is kept in their place, so that each job records it as its failure."""
    entries, nums = [], []
    for i in members:
        settings = config.settings_of(jobs[i])
        try:
            X, y, search, _ = job.prepare(settings, list(jobs[i].hydra.overrides.task), dict(jobs[i].hydra.runtime.choices), swept)
        except ValueError:
            continue  # the job itself will report its mistake
        entries.append((settings, config.identity(settings), search))
        nums.append(str(jobs[i].hydra.job.num))
    if not entries:
        return
    start = time.perf_counter()
    on = devices.fused_devices(entries[0][0]["device"])  # every GPU of the machine for device=auto
    try:
        fits = engine.train_group(entries, X, y, devices=on)
    except Exception as e:  # out of memory, ...: every job of the group records it as its failure
        fits = {results.job_key(identity): e for _, identity, _ in entries}
    engine.keep_fits(fits)
    log.info(f"fused engine: jobs {', '.join(nums)} ({sum(len(f) for f in fits.values() if isinstance(f, dict))} fits) "
             f"trained at once in {time.perf_counter() - start:.1f} s on {', '.join(on)}")


def _job_dir(cfg: DictConfig) -> Path:
    """The folder a multirun job writes to."""
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
