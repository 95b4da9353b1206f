"""SLURM launchers against a real single-node SLURM cluster (start one with `eval "$(.ci/slurm-up)"`): the main
command through submitit_slurm gives the default launcher's aggregate, each job's threads follow its SLURM grant,
and hydra/launcher=slurm ends a sweep that lost a task with one line per lost job (src.launchers.wait_for_tasks)."""
import json
import re
import subprocess
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import cancel_a_running_task, run_cli, same_aggregate
from src import launchers, store

# The main command, small: 4 jobs of 600 digits and 2 epochs each.
MAIN = ["module.num_units=32,64,128,256", "dataset.limit=600", "train.max_epochs=2", "train.verbose=quiet"]
# One CPU per job, two jobs at a time (the 2-CPU node of .ci/slurm-up allows no more; a bigger one the array limit).
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.array_parallelism=2",
         "hydra.launcher.timeout_min=10"]


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


@pytest.mark.slow
def test_the_main_command_through_slurm_gives_the_default_launchers_aggregate(slurm_sweep, tmp_path):
    proc = run_cli(*MAIN, f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 0, proc.stderr
    same_aggregate(slurm_sweep, tmp_path)


@pytest.mark.slow
def test_the_cluster_keeps_accounting_and_the_launcher_does_not_need_it(slurm_sweep):
    """.ci/slurm-up starts slurmdbd: sacct knows the sweep's tasks (SLURM_UP_ACCOUNTING=0 starts a cluster without, where
    hydra/launcher=slurm works the same: it asks squeue and scontrol, never sacct)."""
    array = {path.name.split("_")[0] for path in slurm_sweep.glob(".submitit/[0-9]*_[0-9]*")}.pop()
    states = subprocess.run(["sacct", "-n", "-X", "-j", array, "-o", "State"], capture_output=True, text=True, check=True).stdout.split()
    assert states == ["COMPLETED"] * 4


@pytest.mark.slow
def test_four_jobs_run_two_at_a_time_each_on_one_thread(slurm_sweep):
    runs = {path.name.split("_")[0] for path in slurm_sweep.glob(".submitit/[0-9]*_[0-9]*")}
    assert len(runs) == 1  # one job array, a task per job
    times = run_times(runs.pop())
    assert len(times) == 4
    at_once = max(sum(start <= t < end for start, end in times) for t, _ in times)
    assert at_once == 2  # one CPU each, on a node of 2
    threads = [json.loads((d / store.ENVIRONMENT).read_text())["torch_threads"] for d in store.job_dirs(slurm_sweep)]
    assert threads == [1] * 4


@pytest.mark.slow
def test_a_cancelled_task_costs_one_line_and_exit_1_and_the_rerun_completes_the_sweep(cluster, tmp_path):
    command = [*MAIN, "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.lost_after_s=5",
               f"hydra.sweep.dir={tmp_path}", "-m"]
    returncode, stderr, cancelled = cancel_a_running_task(command)
    lost = [line for line in stderr.splitlines() if line.startswith("lost: ")]
    assert returncode == 1, stderr
    assert len(lost) == 1 and f"SLURM task {cancelled} CANCELLED" in lost[0], stderr
    assert len(store.job_dirs(tmp_path)) == 3 and len(store.read_cv_results(tmp_path)) == 3  # the others kept, aggregated
    assert f"hydra.sweep.dir={tmp_path}" in stderr.splitlines()[-1]

    rerun = run_cli(*command)
    assert rerun.returncode == 0, rerun.stderr
    assert len(store.read_cv_results(tmp_path)) == 4
    logs = "".join(p.read_text() for p in tmp_path.glob(".submitit/*/*_log.out"))
    assert logs.count("not trained again") == 3


def fake_job(tmp_path: Path, job_id: str) -> SimpleNamespace:
    """A submitit job of one task, as wait_for_tasks sees it: its id and where its result lands."""
    task = SimpleNamespace(paths=SimpleNamespace(result_pickle=tmp_path / f"{job_id}_result.pkl"))
    return SimpleNamespace(job_id=job_id, num_tasks=1, task=lambda k: task)


def test_a_task_out_of_the_queue_without_a_result_is_lost_after_the_bounded_wait(tmp_path):
    done, killed, late, running = (fake_job(tmp_path, f"7_{k}") for k in range(4))
    done.task(0).paths.result_pickle.touch()
    polls = iter([{"7_2", "7_3"}, {"7_3"}, None] + [set()] * 10)  # what squeue lists at each poll (None: it failed)
    now = [-5]
    def clock():  # a poll every 5 s: 0, 5, 10 ...
        now[0] += 5
        return now[0]
    def sleep(_):
        if now[0] == 10:
            late.task(0).paths.result_pickle.touch()  # its result shows up 5 s after it left the queue
    ended = launchers.wait_for_tasks([done, killed, late, running], lost_after_s=12, queue=lambda: next(polls),
                                     state=lambda job_id: f"CANCELLED, lost at {now[0]} s", sleep=sleep, clock=clock)
    # gone at 0 s, lost at the first poll 12 s later; gone at 15 s, lost at 30 s
    assert ended == [None, "CANCELLED, lost at 15 s", None, "CANCELLED, lost at 30 s"]
