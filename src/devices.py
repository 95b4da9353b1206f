"""Where a job runs when a launcher runs several at once: its GPU, and its share of the CPU cores.

Hydra's parallel launchers (joblib on one machine, submitit on SLURM, Ray on a cluster) start jobs
side by side. With device=auto, each job then takes its own GPU: the one its scheduler assigned
(Ray's GPU ids; SLURM's node-local task id when a job has several tasks), else the GPU numbered
(job number mod the GPUs it sees). CUDA_VISIBLE_DEVICES, set by a launcher or by hand, decides which
GPUs it sees; when it shows one, that one is the job's. On the CPU, each job gets the cores divided
by the number of jobs that run at once on its machine (train.threads overrides it). Under a scheduler
that grants CPUs (SLURM, also through submitit), the grant replaces the cores: SLURM's task/none
plugin leaves every core of the node in a task's CPU mask, and a job that took them all would compete
with the node's other jobs.

Launchers that run one job at a time (basic, fused) change nothing: auto stays "cuda" (GPU 0) and torch
keeps its own threads (a SLURM grant's, inside a SLURM job). The fused launcher trains each group over every visible GPU instead (fused_devices).
"""
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from src import launchers


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; a CUDA device with no GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device}: no CUDA device is available here; use device=auto or device=cpu")
        return device
    if device in ("cpu", "mps"):
        return device
    raise ValueError(f"device={device!r} is not known; choose auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class Placement:
    """Where one job trains."""
    device: str           # "cpu", "cuda", "cuda:1": what the estimator and the fused engine are given
    threads: int | None   # torch.set_num_threads for the job; None leaves torch's choice


def visible_gpus(count: int, env: Mapping[str, str]) -> list[str]:
    """The ids of the GPUs torch numbers 0..count-1: CUDA_VISIBLE_DEVICES's entries, or 0..count-1."""
    listed = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if len(listed) >= count else [str(i) for i in range(count)]


def gpu_index(rank: int, count: int, env: Mapping[str, str], ray_gpu_ids: Sequence = ()) -> int:
    """Which of the `count` GPUs this process sees job number `rank` of a parallel sweep uses (0..count-1)."""
    if ray_gpu_ids:  # Ray gave this task its GPUs; it normally also made them the only visible ones
        visible = visible_gpus(count, env)
        if str(ray_gpu_ids[0]) in visible:
            return visible.index(str(ray_gpu_ids[0]))
    # A SLURM job with several tasks: each task is one worker, numbered on its node by SLURM_LOCALID.
    # (With one task, SLURM_LOCALID is always 0 and says nothing: the jobs inside it spread by rank.)
    if "SLURM_LOCALID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_LOCALID"]) % count
    return rank % count


def cores() -> int:
    """The CPU cores this process may run on (a SLURM allocation or taskset narrows them)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def granted_cpus(env: Mapping[str, str]) -> int | None:
    """The CPUs a SLURM task was granted (SLURM_CPUS_PER_TASK, else its node's CPUs over its tasks there), or None outside SLURM."""
    if env.get("SLURM_CPUS_PER_TASK"):
        return int(env["SLURM_CPUS_PER_TASK"])
    if env.get("SLURM_CPUS_ON_NODE"):  # no --cpus-per-task: the job's CPUs on this node, shared by its tasks there
        return max(1, int(env["SLURM_CPUS_ON_NODE"]) // int(env.get("SLURM_NTASKS_PER_NODE") or 1))
    return None


def job_threads(launcher: Mapping, n_jobs: int | None, n_cores: int, granted: int | None = None) -> int | None:
    """torch threads for one job: its share of the cores (or of a scheduler's `granted` CPUs) under a parallel
    launcher; one job at a time: the grant, else None (torch's choice)."""
    kind = launchers.name(launcher)
    if kind == "SlurmLauncher" and granted:  # the job is the SLURM task the grant is for
        return granted
    if kind == "RayLauncher":  # Ray reserved num_cpus (default 1) per job, and set OMP_NUM_THREADS to it
        return max(1, int(float(launchers.ray_remote(launcher).get("num_cpus") or 1)))
    if not launchers.is_parallel(launcher):
        return granted
    n_cores = granted or n_cores  # joblib or submitit's local executor inside a SLURM allocation share its grant
    return max(1, n_cores // launchers.concurrent_jobs(launcher, n_jobs, n_cores))


def place(device: str, threads: int | None, launcher: Mapping, rank: int, n_jobs: int | None = None,
          env: Mapping[str, str] | None = None) -> Placement:
    """The device and torch threads of job number `rank` of a sweep of `n_jobs` jobs under `launcher` (its config).

    An explicit device (cpu, cuda:N) and train.threads are kept; "auto" and "cuda" become the job's own
    GPU under a parallel launcher. Raises ValueError for a CUDA device where there is none.
    """
    env = os.environ if env is None else env
    resolved = resolve_device(device)
    if resolved == "cuda" and launchers.is_parallel(launcher) and torch.cuda.device_count() > 1:
        resolved = f"cuda:{gpu_index(rank, torch.cuda.device_count(), env, _ray_gpu_ids())}"
    return Placement(resolved, threads or job_threads(launcher, n_jobs, cores(), granted_cpus(env)))


def fused_devices(device: str) -> list[str]:
    """The devices the fused launcher (one process) trains a group on: every visible GPU for auto or cuda."""
    resolved = resolve_device(device)
    if resolved == "cuda" and torch.cuda.device_count() > 1:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [resolved]


def _ray_gpu_ids() -> list:
    """The GPU ids Ray assigned to this task, when it runs inside a Ray worker; else none."""
    ray = sys.modules.get("ray")  # imported by Hydra's Ray launcher in its workers; never imported here
    if ray is None or not ray.is_initialized():
        return []
    return list(ray.get_gpu_ids())
