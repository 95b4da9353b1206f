"""hydra/launcher=submitit_slurm against a real single-node SLURM cluster (start one with `eval "$(.ci/slurm-up)"`):
the main command gives the default launcher's aggregate, and each job's threads follow its SLURM grant."""
import json
import os
import re
import shutil
import subprocess
from datetime import datetime

import pytest

from conftest import run_cli, same_aggregate
from src import store

pytestmark = pytest.mark.slow

# The main command, small: 4 jobs of 600 digits and 2 epochs each.
MAIN = ["module.num_units=32,64,128,256", "dataset.limit=600", "train.max_epochs=2", "train.verbose=quiet"]
# One CPU per job, two jobs at a time (the 2-CPU node of .ci/slurm-up allows no more; a bigger one the array limit).
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.array_parallelism=2",
         "hydra.launcher.timeout_min=10"]


def no_cluster() -> str | None:
    """Why the SLURM tests cannot run here, or None when sinfo answers."""
    if shutil.which("sinfo") is None:
        return 'no SLURM here (sinfo is absent); start a local one with: eval "$(.ci/slurm-up)"'
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout.strip():
        return f'sinfo found no SLURM cluster ({proc.stderr.strip() or "no nodes"}); start one with: eval "$(.ci/slurm-up)"'
    return None


@pytest.fixture(scope="module")
def cluster():
    """A SLURM cluster to submit to: skipped without one, a failure under CI=true (.ci/run starts one)."""
    reason = no_cluster()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm_sweep(cluster, tmp_path_factory):
    """The main command, small, through submitit_slurm: the sweep folder."""
    sweep_dir = tmp_path_factory.mktemp("slurm") / "s"
    proc = run_cli(*MAIN, *SLURM, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    return sweep_dir


def run_times(array_job: str) -> list[tuple[datetime, datetime]]:
    """(start, end) of each task of a finished job array, from the controller (it keeps them MinJobAge, 300 s)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", array_job], capture_output=True, text=True, check=True).stdout
    stamp = lambda key, line: datetime.fromisoformat(re.search(rf"\b{key}=(\S+)", line)[1])  # noqa: E731
    return [(stamp("StartTime", line), stamp("EndTime", line)) for line in out.splitlines()]


def test_the_main_command_through_slurm_gives_the_default_launchers_aggregate(slurm_sweep, tmp_path):
    proc = run_cli(*MAIN, f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 0, proc.stderr
    same_aggregate(slurm_sweep, tmp_path)


def test_four_jobs_run_two_at_a_time_each_on_one_thread(slurm_sweep):
    runs = {path.name.split("_")[0] for path in slurm_sweep.glob(".submitit/[0-9]*_[0-9]*")}
    assert len(runs) == 1  # one job array, a task per job
    times = run_times(runs.pop())
    assert len(times) == 4
    at_once = max(sum(start <= t < end for start, end in times) for t, _ in times)
    assert at_once == 2  # one CPU each, on a node of 2
    threads = [json.loads((d / store.ENVIRONMENT).read_text())["torch_threads"] for d in store.job_dirs(slurm_sweep)]
    assert threads == [1] * 4
