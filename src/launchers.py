"""Hydra's launcher plugins as this project runs them: which run jobs side by side, how many at once,
which pip extra installs each, the checks of their settings that Hydra's own composition does not make,
and how the `slurm` launcher (hydra_plugins/slurm_launcher) waits for its SLURM tasks.

Each function takes a launcher's config (hydra.launcher) as plain Python, or submitit's job objects;
none imports a plugin.
"""
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

# Launchers, by class name, that run jobs one after another in a process: every job in the launching process, or
# (the fused cluster launchers) each fused group's jobs in its own cluster task, with all of that task's CPUs and GPUs.
SEQUENTIAL = ("BasicLauncher", "FusedLauncher", "FusedSlurmLauncher", "FusedLocalLauncher")
FUSED = "hydra_plugins.fused_launcher.fused_launcher.FusedLauncher"  # hydra/launcher=fused, the default
FUSED_CLUSTER = tuple(f"hydra_plugins.fused_cluster_launcher.fused_cluster_launcher.{kind}" for kind in ("FusedSlurmLauncher", "FusedLocalLauncher"))
# hydra/launcher choices this project documents, and the pip extra that installs each plugin.
EXTRAS = {"joblib": "cluster", "submitit_local": "cluster", "submitit_slurm": "cluster", "slurm": "cluster", "fused_slurm": "cluster",
          "fused_submitit_local": "cluster", "ray": "ray"}


def name(launcher: Mapping) -> str:
    """A launcher config's class name (JoblibLauncher, LocalLauncher, SlurmLauncher, RayLauncher ...)."""
    return str(launcher.get("_target_", "")).rsplit(".", 1)[-1]


def aggregates(launcher: Mapping) -> bool:
    """True for the fused launchers: they, not each job, rebuild a multirun's aggregate (after each group of jobs, and
    the cluster ones once more when every task has ended)."""
    return launcher.get("_target_") in (FUSED, *FUSED_CLUSTER)


def is_parallel(launcher: Mapping) -> bool:
    """True for a launcher that may run several jobs at once (any but basic and fused)."""
    return name(launcher) not in SEQUENTIAL


def ray_remote(launcher: Mapping) -> dict:
    """The resources Hydra's Ray launcher asks for each job (ray.remote's arguments: num_cpus, num_gpus ...)."""
    return dict((launcher.get("ray") or {}).get("remote") or {})


def concurrent_jobs(launcher: Mapping, n_jobs: int | None, n_cores: int) -> int:
    """How many jobs of a sweep of `n_jobs` (None: unknown) a parallel launcher runs at once on one machine of `n_cores` cores."""
    kind, tasks = name(launcher), int(launcher.get("tasks_per_node") or 1)
    if kind == "SlurmLauncher":  # each job has its own allocation, shared by its tasks
        return tasks
    if kind == "LocalLauncher":  # submitit's local executor starts every job of the sweep at once
        return max(1, (n_jobs or n_cores) * tasks)
    if kind == "JoblibLauncher":
        workers = int(launcher.get("n_jobs", -1))
        workers = workers if workers > 0 else n_cores + 1 + workers  # joblib's -1: all cores, -2: all but one
    else:  # another parallel launcher: as many jobs as cores, at most
        workers = n_cores
    return max(1, min(workers, n_jobs or workers))


def check(launcher: Mapping, gpus: int, n_cores: int) -> None:
    """Raise ValueError, in one line, on a launcher setting that would fail or hang after the sweep started."""
    kind = name(launcher)
    if kind == "JoblibLauncher" and launcher.get("n_jobs") == 0:
        raise ValueError("hydra.launcher.n_jobs=0: give the number of jobs to run at once, or -1 for one per core")
    if kind == "RayLauncher" and ((launcher.get("ray") or {}).get("init") or {}).get("address") is None:
        remote = ray_remote(launcher)  # a local Ray instance never gets more than this machine has: its jobs would wait forever
        if float(remote.get("num_gpus") or 0) > gpus:
            raise ValueError(f"hydra.launcher.ray.remote.num_gpus={remote['num_gpus']}: this machine has {gpus} GPU(s) for the "
                             "local Ray instance; join a cluster with hydra.launcher.ray.init.address=auto, or ask for fewer")
        if float(remote.get("num_cpus") or 0) > n_cores:
            raise ValueError(f"hydra.launcher.ray.remote.num_cpus={remote['num_cpus']}: this machine has {n_cores} cores "
                             "for the local Ray instance; ask for fewer")


def missing(choice: str) -> str | None:
    """What to install for a hydra/launcher choice that Hydra did not find, if it is one this project documents."""
    extra = EXTRAS.get(choice)
    return f"hydra/launcher={choice} needs its Hydra plugin: pip install \".[{extra}]\"" if extra else None


def slurm_queue() -> set[str] | None:
    """This user's SLURM tasks still pending or running, one id per array task ("35_2"); None when squeue fails."""
    proc = subprocess.run(["squeue", "--me", "--array", "--noheader", "--format=%i"], capture_output=True, text=True)
    return set(proc.stdout.split()) if proc.returncode == 0 else None


def slurm_state(task_id: str) -> str:
    """How a SLURM task ended ("CANCELLED", "TIMEOUT", "OUT_OF_MEMORY" ...), as the controller still knows it
    (for MinJobAge, 300 s by default, with or without accounting)."""
    proc = subprocess.run(["scontrol", "--oneliner", "show", "job", task_id], capture_output=True, text=True)
    found = re.search(r"\bJobState=(\S+)", proc.stdout)
    return found[1] if found else "no longer known to SLURM"


def has_results(job) -> bool:
    """Whether every task of a submitit job has written its result."""
    return all(job.task(k).paths.result_pickle.exists() for k in range(job.num_tasks))


def wait_for_tasks(jobs: Sequence, lost_after_s: float, poll_s: float = 5.0, queue: Callable = slurm_queue,
                   state: Callable = slurm_state, sleep: Callable = time.sleep, clock: Callable = time.monotonic) -> list[str | None]:
    """Wait until each submitit job (`job_id`, `num_tasks`, `task(i).paths.result_pickle`) has left its results, or is
    lost: out of SLURM's queue, with a result missing, for `lost_after_s` (a shared file system can show a
    result late). Returns, job by job, None (its results are there) or the state the lost job ended in.

    submitit itself asks sacct, which a cluster without accounting does not answer: it would wait forever.
    """
    outcome: dict[int, str | None] = {}
    gone_since: dict[int, float] = {}
    while len(outcome) < len(jobs):
        queued, now = queue(), clock()
        for i, job in enumerate(jobs):
            if i in outcome:
                continue
            if has_results(job):
                outcome[i] = None
            elif queued is None:  # the controller did not answer: no news
                continue
            elif job.job_id in queued:
                gone_since.pop(i, None)
            elif now - gone_since.setdefault(i, now) >= lost_after_s:
                outcome[i] = state(job.job_id)
        if len(outcome) < len(jobs):
            sleep(poll_s)
    return [outcome[i] for i in range(len(jobs))]
