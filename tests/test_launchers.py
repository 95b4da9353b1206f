"""Hydra's launchers through the command line: basic (in process), and (slow) joblib, submitit (a process per job) and
Ray (a local instance) give the sequential run's aggregate; their settings are checked before anything starts (src/launchers.py)."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, TINY, run_cli, run_here, same_aggregate
from src import devices, launchers, store

GRID = "module.num_units=8,16,32"  # with TINY and engine=gridsearch: the tiny_sweep fixture's command


def environments(sweep_dir):
    return [json.loads((d / store.ENVIRONMENT).read_text()) for d in store.job_dirs(sweep_dir)]


def test_the_basic_launcher_gives_the_same_aggregate(tiny_sweep, tmp_path):
    """Hydra's own launcher, one job after another, each job rebuilding the aggregate (src.refresh) and the callback once more."""
    proc = run_here(GRID, *TINY, "engine=gridsearch", "hydra/launcher=basic", f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 0, proc.stderr
    assert "fused engine" not in proc.stdout + proc.stderr
    same_aggregate(tmp_path, tiny_sweep)


@pytest.mark.slow
def test_joblib_runs_the_jobs_in_worker_processes_and_gives_the_same_aggregate(tiny_sweep, tmp_path):
    proc = run_cli(GRID, *TINY, "engine=gridsearch", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 0, proc.stderr
    same_aggregate(tmp_path, tiny_sweep)
    assert [e["torch_threads"] for e in environments(tmp_path)] == [max(1, devices.cores() // 2)] * 3  # two workers share the cores


@pytest.mark.slow
def test_submitit_local_runs_each_job_in_its_own_process_and_gives_the_same_aggregate(tiny_sweep, tmp_path):
    proc = run_here(GRID, *TINY, "engine=gridsearch", "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 0, proc.stderr
    same_aggregate(tmp_path, tiny_sweep)
    assert len(list(tmp_path.glob(".submitit/*/*_result.pkl"))) == 3  # three separate jobs, each with its own result
    # all three run at once on this machine, so each gets a third of the cores
    assert [e["torch_threads"] for e in environments(tmp_path)] == [max(1, devices.cores() // 3)] * 3


@pytest.mark.slow
def test_ray_runs_the_jobs_on_a_local_instance_and_gives_the_same_aggregate(tiny_sweep, tmp_path):
    proc = run_here(GRID, *TINY, "engine=gridsearch", "hydra/launcher=ray", f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 0, proc.stderr
    assert "Started a local Ray instance" in proc.stderr + proc.stdout
    same_aggregate(tmp_path, tiny_sweep)
    assert [e["torch_threads"] for e in environments(tmp_path)] == [1] * 3  # Ray's default reservation: one core per job


@pytest.mark.parametrize("override, message", [
    ("hydra/launcher=submitit_slurm hydra.launcher.partiton=gpu", "Could not override 'hydra.launcher.partiton'"),
    ("hydra/launcher=joblib hydra.launcher.n_jobs=0", "hydra.launcher.n_jobs=0: give the number of jobs"),
    ("hydra/launcher=ray +hydra.launcher.ray.remote.num_cpus=100000", "hydra.launcher.ray.remote.num_cpus=100000: this machine has"),
    ("hydra/launcher=rayy", "hydra/launcher=rayy is not known; choose one of basic, fused, fused_slurm, fused_submitit_local, joblib, ray"),
])
def test_bad_launcher_settings_are_one_line_before_anything_runs(tmp_path, override, message):
    proc = run_here(GRID, *TINY, *override.split(), f"hydra.sweep.dir={tmp_path / 's'}", "-m")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert not (tmp_path / "s").exists()  # refused before Hydra made the sweep folder


def test_the_launchers_this_project_documents_name_their_extra():
    assert launchers.missing("ray") == 'hydra/launcher=ray needs its Hydra plugin: pip install ".[ray]"'
    assert launchers.missing("submitit_slurm") == 'hydra/launcher=submitit_slurm needs its Hydra plugin: pip install ".[cluster]"'
    assert launchers.missing("rayy") is None


@pytest.mark.slow  # a fresh process (Hydra has found its plugins in this one): the message itself is checked above
def test_a_launcher_whose_plugin_is_not_installed_names_the_extra(tmp_path):
    """Without hydra-ray-launcher (hidden from this process), hydra/launcher=ray says what to install."""
    hide_ray = ("import sys; sys.modules['hydra_plugins.hydra_ray_launcher'] = None; "
                "from src.sweep import cli; sys.argv[0] = 'src.sweep'; cli()")
    proc = subprocess.run([sys.executable, "-c", hide_ray, GRID, *TINY, "engine=gridsearch", "hydra/launcher=ray", f"hydra.sweep.dir={tmp_path}", "-m"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == 'Error: hydra/launcher=ray needs its Hydra plugin: pip install ".[ray]"'


def test_ray_asking_for_more_gpus_than_a_local_instance_has_is_refused():
    ray = {"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher", "ray": {"init": {"address": None}, "remote": {"num_gpus": 1}}}
    with pytest.raises(ValueError, match="num_gpus=1: this machine has 0 GPU"):
        launchers.check(ray, gpus=0, n_cores=8)
    launchers.check(ray, gpus=2, n_cores=8)
    launchers.check({**ray, "ray": {**ray["ray"], "init": {"address": "auto"}}}, gpus=0, n_cores=8)  # a cluster has its own
