"""Each job's device and threads under Hydra's launchers (src/devices.py), on a faked machine of several GPUs."""
import pytest
import torch

from src import devices

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 4}
LOCAL = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "tasks_per_node": 1}
SLURM = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", "tasks_per_node": 1}
RAY = {"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", "ray": {"init": {"address": None}, "remote": {}}}
BASIC = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
FUSED = {"_target_": "hydra_plugins.fused_launcher.fused_launcher.FusedLauncher"}


@pytest.fixture
def gpus(monkeypatch):
    """gpus(n): torch sees n GPUs (none of them touched: only the count is asked)."""
    def fake(n: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(devices, "_ray_gpu_ids", lambda: [])
    return fake


def job_devices(launcher, n_jobs, env, device="auto"):
    return [devices.place(device, None, launcher, rank, n_jobs, env=env).device for rank in range(n_jobs)]


def test_parallel_jobs_take_the_gpus_in_turn(gpus):
    gpus(4)
    assert job_devices(JOBLIB, 6, {}) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert job_devices(LOCAL, 3, {}) == ["cuda:0", "cuda:1", "cuda:2"]
    assert job_devices(JOBLIB, 3, {}, device="cuda") == ["cuda:0", "cuda:1", "cuda:2"]


def test_one_job_at_a_time_keeps_gpu_0_and_explicit_devices_are_kept(gpus):
    gpus(4)
    for launcher in (BASIC, FUSED):
        assert job_devices(launcher, 3, {}) == ["cuda"] * 3
    assert job_devices(JOBLIB, 3, {}, device="cuda:2") == ["cuda:2"] * 3
    assert job_devices(JOBLIB, 3, {}, device="cpu") == ["cpu"] * 3


def test_cuda_visible_devices_decides_which_gpus_a_job_sees(gpus):
    gpus(1)  # a launcher or scheduler gave each job one GPU (CUDA_VISIBLE_DEVICES=<its GPU>): that one is the job's
    assert job_devices(JOBLIB, 3, {"CUDA_VISIBLE_DEVICES": "5"}) == ["cuda"] * 3
    gpus(2)  # two of the machine's GPUs, set by hand for the whole sweep: the jobs take turns on them
    assert job_devices(JOBLIB, 3, {"CUDA_VISIBLE_DEVICES": "6,7"}) == ["cuda:0", "cuda:1", "cuda:0"]
    assert devices.visible_gpus(2, {"CUDA_VISIBLE_DEVICES": "6,7"}) == ["6", "7"]
    assert devices.visible_gpus(2, {}) == ["0", "1"]


def test_slurm_tasks_take_the_gpu_of_their_local_id(gpus):
    gpus(4)
    task = {"SLURM_LOCALID": "2", "SLURM_NTASKS": "4"}
    assert job_devices(SLURM, 3, task) == ["cuda:2"] * 3   # every job this task runs: its own GPU, whatever the job number
    one_task = {"SLURM_LOCALID": "0", "SLURM_NTASKS": "1"}  # one task per job says nothing: the job number decides
    assert job_devices(JOBLIB, 3, one_task) == ["cuda:0", "cuda:1", "cuda:2"]


def test_ray_gpu_ids_are_honoured(gpus, monkeypatch):
    gpus(8)  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: Ray names the task's GPU but leaves every GPU visible
    monkeypatch.setattr(devices, "_ray_gpu_ids", lambda: [5])
    assert job_devices(RAY, 3, {}) == ["cuda:5"] * 3
    assert devices.gpu_index(0, 2, {"CUDA_VISIBLE_DEVICES": "4,5"}, ray_gpu_ids=[5]) == 1
    assert devices.gpu_index(3, 2, {"CUDA_VISIBLE_DEVICES": "4,5"}, ray_gpu_ids=[]) == 1


def test_no_gpu_means_the_cpu_and_cuda_is_refused(gpus):
    gpus(0)
    assert job_devices(JOBLIB, 2, {}) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="no CUDA device"):
        devices.place("cuda", None, JOBLIB, 0, 2, env={})


def test_each_parallel_job_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(devices, "cores", lambda: 8)
    def threads(launcher, n_jobs, threads=None):
        return devices.place("cpu", threads, launcher, 0, n_jobs, env={}).threads
    assert threads(BASIC, 4) is None and threads(FUSED, 4) is None  # one job at a time: torch's own choice
    assert threads({**JOBLIB, "n_jobs": 2}, 4) == 4
    assert threads({**JOBLIB, "n_jobs": -1}, 4) == 2   # joblib's -1 is a worker per core, but only 4 jobs run
    assert threads({**JOBLIB, "n_jobs": -2}, 16) == 1  # 7 workers
    assert threads({**JOBLIB, "n_jobs": 3}, None) == 2  # a sweeper that draws its own points: n_jobs workers
    assert threads(LOCAL, 4) == 2 and threads({**LOCAL, "tasks_per_node": 2}, 4) == 1  # every job (and task) at once
    assert threads(SLURM, 40) == 8                      # a job per allocation: all of its cores
    assert threads(RAY, 4) == 1                         # Ray reserves num_cpus per job (default 1)
    assert threads({**RAY, "ray": {"remote": {"num_cpus": 3}}}, 4) == 3
    assert threads({**JOBLIB, "n_jobs": 2}, 4, threads=5) == 5  # train.threads wins


def test_the_fused_launcher_trains_on_every_gpu(gpus):
    gpus(4)
    assert devices.fused_devices("auto") == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert devices.fused_devices("cuda:1") == ["cuda:1"]
    gpus(1)
    assert devices.fused_devices("auto") == ["cuda"]
    gpus(0)
    assert devices.fused_devices("auto") == ["cpu"]


def test_threads_follow_the_cpus_slurm_granted_whatever_its_task_plugin(monkeypatch):
    """SLURM's task/none leaves all the node's cores in a task's CPU mask: its grant, not the mask, is the job's share."""
    monkeypatch.setattr(devices, "cores", lambda: 8)  # the whole node, as task/none shows it
    def threads(launcher, env, n_jobs=4, threads=None):
        return devices.place("cpu", threads, launcher, 0, n_jobs, env=env).threads
    granted = {"SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "2", "SLURM_NTASKS_PER_NODE": "2"}
    assert threads(SLURM, granted) == 1
    assert threads({**SLURM, "tasks_per_node": 2}, granted) == 1          # the grant is per task already
    assert threads(SLURM, {"SLURM_CPUS_ON_NODE": "6", "SLURM_NTASKS_PER_NODE": "2"}) == 3  # no --cpus-per-task
    assert threads(SLURM, {}) == 8                                        # outside SLURM: the mask
    assert threads(BASIC, {"SLURM_CPUS_PER_TASK": "3"}) == 3              # a sequential sweep inside an sbatch job
    assert threads(BASIC, {}) is None                                     # ... and outside one: torch's choice
    assert threads({**JOBLIB, "n_jobs": 2}, {"SLURM_CPUS_PER_TASK": "4"}) == 2  # workers share the job's grant
    assert threads(SLURM, granted, threads=2) == 2                        # train.threads still wins
    assert devices.granted_cpus({}) is None
