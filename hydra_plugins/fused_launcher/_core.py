"""The fused launcher's work (fused_launcher.py is its front).

launch() composes every job of a multirun, as Hydra's basic launcher does, and puts the jobs that the
fused engine can train together into groups (src.engine.group_key). Each group's fits train as one
program, stack by stack (src.engine.train_jobs); as soon as a job's fits are trained, the job runs
through Hydra's own job runner, which scores them and writes its folder (.hydra/, job.json, its
cv_results row, history.json, environment.json) instead of training, and its fits are freed. So a
sweep holds one stack's fits at a time, however many candidates it has. Jobs that cannot be fused run
one after another through the GridSearchCV path. The sweep's aggregate and report are rebuilt after
each group, and every REBUILD_EVERY_S within a long one (less often where a rebuild takes long: REBUILD_GAP). Another app's jobs (Hydra's launcher test
suites run theirs) run one after another, as under the basic launcher, and nothing is rebuilt.
"""
import functools
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from src import config, devices, engine, job, refresh, schema, store

from . import _configs

log = logging.getLogger(__name__)

REBUILD_EVERY_S = 30.0  # within a long group, the aggregate and report are rebuilt at most this often,
REBUILD_GAP = 4.0       # and after at least this many times as long as the last rebuild took (at most a fifth of the time)


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run every job; returns their JobReturns in the order of job_overrides."""
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info(f"Launching {len(job_overrides)} jobs locally")
    jobs = compose(launcher, job_overrides, initial_job_idx)
    project = ours(launcher.config)
    returns: dict[int, JobReturn] = {}
    rebuild = Rebuild(sweep_dir) if project else None
    for fuse, members in plan(jobs) if project else [(False, [i]) for i in range(len(jobs))]:
        returns |= run_group(launcher, jobs, members, fuse, rebuild)
    return [returns[i] for i in range(len(jobs))]


def compose(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[DictConfig]:
    """Each job's config, as Hydra's basic launcher composes it (numbered from initial_job_idx), with a log line each."""
    jobs, loader = [], _configs.reusing(launcher.hydra_context)  # one composition per shape of overrides
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        cfg = loader.take(launcher.config, list(overrides))  # the config the sweeper's check made
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        jobs.append(cfg)
    return jobs


class Rebuild:
    """Rebuilds a sweep's aggregate and report (src.refresh): after each group (`now`), and within a long group
    at most every REBUILD_EVERY_S and REBUILD_GAP times the last rebuild's time (`due`), but not when no job finished
    since the last rebuild (reused jobs)."""

    def __init__(self, sweep_dir: Path):
        self.sweep_dir, self.last, self.seen, self.took = sweep_dir, time.perf_counter(), None, 0.0

    def due(self) -> None:
        if time.perf_counter() - self.last > max(REBUILD_EVERY_S, REBUILD_GAP * self.took):  # a long group shows its progress;
            self.now()                                                                      # each rebuild reads every job

    def now(self) -> None:
        start = time.perf_counter()
        if refresh.finished_jobs(self.sweep_dir) != self.seen:
            with store.disk_errors():
                refresh.refresh(self.sweep_dir)
            self.seen = refresh.finished_jobs(self.sweep_dir)
        self.last = time.perf_counter()
        self.took = self.last - start


def run_group(launcher, jobs: Sequence[DictConfig], members: list[int], fuse: bool, rebuild: Rebuild | None) -> dict[int, JobReturn]:
    """Run a group of jobs (indices into `jobs`) through Hydra's job runner: a fused group's fits are trained first,
    and each job gets its own fits as soon as they are trained; then the aggregate is rebuilt (`rebuild`, None: not
    this project's app). Returns each member's JobReturn."""
    returns: dict[int, JobReturn] = {}
    swept = job.swept_keys(OmegaConf.to_container(launcher.config)) if rebuild else set()

    def run(i: int, trained: dict | BaseException | None = None, waiting: int = 0) -> None:
        """Run job i; a fused job gets its group's fits for it (`trained`), and how many other jobs' fits are
        trained and not recorded yet (`waiting`, for its progress line)."""
        task = launcher.task_function if trained is None else functools.partial(launcher.task_function, trained=trained, waiting=waiting)
        returns[i] = run_job(hydra_context=launcher.hydra_context, task_function=task, config=jobs[i],
                             job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
        if rebuild:  # this project's job: its configs wait in its folder, not in memory (a sweep's memory does not grow with its jobs)
            returns[i] = FolderReturn.of(returns[i], jobs[i])
            jobs[i] = None
            rebuild.due()

    for i, trained, waiting in train(jobs, members, swept) if fuse else []:  # each job recorded as soon as its fits are trained
        run(i, trained, waiting)
    for i in members:
        if i not in returns:  # not fused, or its preparation failed: the job reports it
            run(i)
    if rebuild:
        rebuild.now()
    return returns


class FolderReturn(JobReturn):
    """A finished job's JobReturn whose configs (cfg, hydra_cfg) are read from the files Hydra's job runner wrote in
    the job's folder (.hydra/config.yaml, hydra.yaml) when asked, rather than held: a 1,024-job sweep would otherwise
    hold two copies of every job's config until it ends."""

    @classmethod
    def of(cls, ret: JobReturn, cfg: DictConfig) -> JobReturn:
        """`ret`, as a FolderReturn where its job saved its configs (hydra.output_subdir set), else as it is."""
        if cfg.hydra.output_subdir is None:
            return ret
        kept = cls.__new__(cls)
        vars(kept).update({k: v for k, v in vars(ret).items() if k not in ("cfg", "hydra_cfg")})
        kept.saved = Path(str(cfg.hydra.runtime.output_dir)) / str(cfg.hydra.output_subdir)
        return kept

    @property
    def cfg(self) -> DictConfig:
        return OmegaConf.load(self.saved / "config.yaml")

    @property
    def hydra_cfg(self) -> DictConfig:
        return OmegaConf.load(self.saved / "hydra.yaml")


def ours(cfg: DictConfig) -> bool:
    """True for a config of this project's app (it has every key the schema requires), whose jobs may fuse."""
    return all(key in cfg for key, field in schema.ConfigSchema.model_fields.items() if field.is_required())


def plan(jobs: list[DictConfig]) -> list[tuple[bool, list[int]]]:
    """(fuse, job indices) groups, in the order of each group's first job: one group per set of jobs that
    the fused engine trains together, and a group of one for each other job (GridSearchCV, or finished)."""
    groups: dict[str, tuple[bool, list[int]]] = {}
    for i, cfg in enumerate(jobs):
        settings = config.settings_of(cfg)
        try:
            finished = settings["resume"] and store.finished_job(_job_dir(cfg), config.identity(settings)) is not None
        except store.OtherJob:  # the job refuses, itself
            finished = False
        fuse = not finished and engine.choose(settings) == "fused"
        groups.setdefault(engine.group_key(settings) if fuse else f"job {i}", (fuse, []))[1].append(i)
    return list(groups.values())


def train(jobs: Sequence[DictConfig], members: list[int], swept: set[str]) -> Iterator[tuple[int, dict | BaseException, int]]:
    """Train a group's fits as one program, stack by stack; yields (job index, its fits, how many other jobs' fits
    are trained and waiting) as soon as a job's fits are trained, so that the job records them and they are freed
    before the next stack. An error that stops the training is yielded in place of the fits of every job not
    trained yet, so that each of them records it as its failure."""
    entries, index = [], []  # the group's jobs to train (src.search.Job), and each one's place in `jobs`
    for i in members:
        settings = config.settings_of(jobs[i])
        try:
            entries.append(job.prepare(settings, list(jobs[i].hydra.overrides.task), dict(jobs[i].hydra.runtime.choices), swept))
        except ValueError:
            continue  # the job itself will report its mistake
        index.append(i)
    if not entries:
        return
    nums = ", ".join(str(jobs[i].hydra.job.num) for i in index)
    on = devices.fused_devices(entries[0].settings["device"])  # every GPU of the machine for device=auto
    seconds, fits, clock = 0.0, 0, time.perf_counter()
    untrained = set(range(len(entries)))
    try:
        for done in engine.train_jobs(entries, devices=on):  # the jobs a stack completed, each with its fits
            seconds += time.perf_counter() - clock
            for n, (j, trained) in enumerate(done.items(), 1):
                fits += len(trained)
                untrained.discard(j)
                yield index[j], trained, len(done) - n
            clock = time.perf_counter()
    except Exception as e:  # out of memory, ...: every job of the group not trained yet records it as its failure
        for j in sorted(untrained):
            yield index[j], e, 0
    log.info(f"fused engine: jobs {nums} ({fits} fits) trained at once in {seconds:.1f} s on {', '.join(on)}")


def _job_dir(cfg: DictConfig) -> Path:
    """The folder a multirun job writes to."""
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
