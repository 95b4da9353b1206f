"""The fused cluster launchers (hydra_plugins/fused_cluster_launcher): a fused group is one cluster task, through
submitit's local executor here and (slow, with `eval "$(.ci/slurm-up)"`) through a real SLURM, and the sweep's
results equal the fused launcher's; a cancelled group task loses its jobs with one line each."""
import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher

from conftest import TINY, cancel_a_running_task, run_cli, run_here, same_aggregate
from hydra_plugins.fused_cluster_launcher.fused_cluster_launcher import FusedLocalLauncher, FusedSlurmLauncher
from src import launchers, store
from test_slurm import MAIN


def test_discovery_and_what_they_share_with_the_fused_launcher():
    found = [x.__name__ for x in Plugins.instance().discover(Launcher)]
    assert {FusedSlurmLauncher.__name__, FusedLocalLauncher.__name__} <= set(found)
    for name in ("fused_slurm", "fused_submitit_local"):
        assert launchers.EXTRAS[name] == "cluster"
    target = {"_target_": launchers.FUSED_CLUSTER[0]}
    assert launchers.aggregates(target) and not launchers.is_parallel(target)  # a task runs its group's jobs one after another


def submitted_tasks(sweep_dir) -> int:
    return len(list(sweep_dir.glob(".submitit/*/*_result.pkl")))


@pytest.mark.slow
def test_fused_submitit_local_trains_the_group_as_one_task_and_gives_the_fused_launchers_aggregate(fused_sweep, tmp_path):
    proc = run_here("module.num_units=8,16,32", *TINY, "engine=fused", "hydra/launcher=fused_submitit_local",
                    f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 0, proc.stderr
    assert "3 jobs in 1 local task: fused 0, 1, 2" in proc.stdout + proc.stderr
    assert submitted_tasks(tmp_path) == 1
    same_aggregate(tmp_path, fused_sweep[0])
    assert len(store.job_dirs(tmp_path)) == 3


@pytest.mark.slow
def test_fused_slurm_submits_one_task_per_group_and_gives_the_default_launchers_aggregate(cluster, tmp_path):
    reference = tmp_path / "reference"
    assert run_cli(*MAIN, f"hydra.sweep.dir={reference}", "-m").returncode == 0
    proc = run_cli(*MAIN, "hydra/launcher=fused_slurm", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={tmp_path / 's'}", "-m")
    assert proc.returncode == 0, proc.stderr
    assert submitted_tasks(tmp_path / "s") == 1  # 4 candidates, 1 group, 1 cluster job
    same_aggregate(tmp_path / "s", reference)


@pytest.mark.slow
def test_a_cancelled_group_task_loses_its_jobs_with_a_line_each_and_the_rerun_completes(cluster, tmp_path):
    # two groups (the optimizers differ): each its own task, one CPU each, both at once on the 2-CPU node
    command = [*MAIN, "optimizer=sgd,adam", "cv.refit=false", "hydra/launcher=fused_slurm", "hydra.launcher.cpus_per_task=1",
               "hydra.launcher.lost_after_s=5", f"hydra.sweep.dir={tmp_path}", "-m"]
    returncode, stderr, cancelled = cancel_a_running_task(command)
    lost = [line for line in stderr.splitlines() if line.startswith("lost: ")]
    assert returncode == 1, stderr
    assert len(lost) == 4 and all(f"SLURM task {cancelled} CANCELLED" in line for line in lost), stderr  # the group's 4 jobs
    assert len(store.read_cv_results(tmp_path)) == 4  # the other group's, kept and aggregated
    rerun = run_cli(*command)
    assert rerun.returncode == 0, rerun.stderr
    assert len(store.read_cv_results(tmp_path)) == 8
