"""Failed, diverged and interrupted jobs, and resuming, through the command line (src/sweep.py, src/results.py): in this
process, and in processes of their own for signals to a process group and for two commands at once."""
import errno
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import BROKEN, ROOT, TINY, TINY_SWEEP, run_here
from src import locks, store

FAIL = True
SLOW = ["module.num_units=8,16,32,64", "dataset.limit=1500", "train.max_epochs=4", "train.verbose=quiet"]


def test_failed_and_diverged_jobs_are_recorded_and_the_rest_still_run(broken_sweep):
    sweep_dir, proc = broken_sweep
    agg = store.read_cv_results(sweep_dir)
    by_point = {(r["param_optimizer__fail"], r["param_optimizer__lr"]): r for r in agg.to_dict(orient="records")}
    assert {k: r["status"] for k, r in by_point.items()} == {
        (False, 0.01): "ok", (False, 1e30): "diverged", (FAIL, 0.01): "failed", (FAIL, 1e30): "failed"}
    assert math.isfinite(by_point[False, 0.01]["mean_test_accuracy"]) and by_point[False, 0.01]["rank_test_accuracy"] == 1
    for key in [(False, 1e30), (FAIL, 0.01), (FAIL, 1e30)]:
        assert math.isnan(by_point[key]["mean_test_accuracy"]) and math.isnan(by_point[key]["split0_test_accuracy"])
        assert by_point[key]["rank_test_accuracy"] == 2  # NaN ranks last, as in scikit-learn
    assert "can't allocate memory" in by_point[FAIL, 0.01]["error"]
    assert "training loss became" in by_point[False, 1e30]["error"]
    for job in ("2", "3"):
        assert "Traceback" in (sweep_dir / job / "error.log").read_text()
    assert not (sweep_dir / "0" / "error.log").exists() and not (sweep_dir / "1" / "error.log").exists()
    assert (sweep_dir / "hiplot.html").is_file()


def test_failures_exit_non_zero_with_a_summary(broken_sweep):
    sweep_dir, proc = broken_sweep
    assert proc.returncode == 1
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary.startswith("2 of 4 jobs failed: job 2 (optimizer._target_=failing_optimizer.FailingSGD +optimizer.fail=True optimizer.lr=0.01")
    assert str(sweep_dir / "2" / "error.log") in summary and str(sweep_dir / "3" / "error.log") in summary
    assert "Traceback" not in proc.stderr


def test_divergence_stops_the_fold_at_the_first_non_finite_loss(broken_sweep):
    sweep_dir, _ = broken_sweep
    history = json.loads((sweep_dir / "1" / "history.json").read_text())
    assert len(history) == 1  # the first fold diverged; the candidate stops there
    losses = [e["train_loss"] for e in history[0]["epochs"]]
    assert losses[-1] is None and all(math.isfinite(x) for x in losses[:-1])  # stopped after the first non-finite epoch
    assert len(losses) < 3


def valid_files(sweep_dir):
    """Every results file under the folder parses completely."""
    for path in sweep_dir.rglob("*.json"):
        json.loads(path.read_text())
    for path in sweep_dir.rglob("cv_results.csv"):
        pd.read_csv(path)
    for path in sweep_dir.rglob("cv_results.pt"):
        torch.load(path, weights_only=True)


def start(args, tmp_dir):
    return subprocess.Popen([sys.executable, "-m", "src.sweep", *args, f"hydra.sweep.dir={tmp_dir}", "-m"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(path, proc, timeout=300):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)


def comparable(sweep_dir):
    df = store.read_cv_results(sweep_dir).sort_values("param_module__num_units").reset_index(drop=True)
    return df[[c for c in df.columns if not c.endswith("_time")]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("whole") / "s"
    proc = run_here(*SLOW, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    return sweep_dir


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, uninterrupted):
    sweep_dir = tmp_path / "s"
    proc = start(SLOW, sweep_dir)
    wait_for(sweep_dir / "0" / store.JOB, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (sweep_dir / "3" / store.JOB).exists(), "the sweep finished before the kill"
    assert (sweep_dir / locks.COMMAND_LOCK).exists()  # the killed command's hold on the folder is left behind; it must not block
    valid_files(sweep_dir)
    first_fit = store.read_cv_results(sweep_dir / "0")["mean_fit_time"][0]

    again = run_here(*SLOW, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert again.returncode == 0, again.stderr
    assert "job 0 (module.num_units=8" in again.stdout and "not trained again" in again.stdout
    pd.testing.assert_frame_equal(comparable(sweep_dir), comparable(uninterrupted))
    assert store.read_cv_results(sweep_dir / "0")["mean_fit_time"][0] == first_fit  # reused, not retrained
    assert not list(sweep_dir.rglob("*.tmp")) and not list(sweep_dir.rglob("history.jsonl"))


def test_ctrl_c_stops_the_whole_sweep_and_leaves_complete_files(tmp_path, monkeypatch):
    """In process: Ctrl-C arrives as job 0 is recorded; the command ends with 130 and its finished files complete."""
    record = store.record

    def record_then_ctrl_c(job_dir, *args):
        record(job_dir, *args)
        if job_dir.name == "0":
            os.kill(os.getpid(), signal.SIGINT)  # the sweep's own handler (src.sweep.cli) turns it into Interrupted

    monkeypatch.setattr(store, "record", record_then_ctrl_c)
    proc = run_here("module.num_units=8,16,32", *TINY, "engine=gridsearch", f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 130 and "Interrupted (SIGINT)" in proc.stderr and "to resume" in proc.stderr
    assert (tmp_path / "0" / store.JOB).exists() and not (tmp_path / "1" / store.JOB).exists()
    valid_files(tmp_path)


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_stops_the_whole_sweep(tmp_path):
    """The same through a real process group, as a terminal delivers Ctrl-C to the command and its workers."""
    sweep_dir = tmp_path / "s"
    proc = start(SLOW, sweep_dir)
    wait_for(sweep_dir / "0" / store.JOB, proc)
    os.killpg(proc.pid, signal.SIGINT)  # skorch alone would swallow this and go on to the next fold
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Interrupted (SIGINT)" in stderr and "to resume" in stderr
    assert not (sweep_dir / "3" / store.JOB).exists()
    valid_files(sweep_dir)


@pytest.mark.slow  # in process: tests/test_job.py (a job) and tests/test_resume.py (a folder)
def test_resume_false_retrains(tmp_path):
    args = ["module.num_units=8", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path}"]
    assert run_here(*args, "-m").returncode == 0
    before = (tmp_path / "0" / store.JOB).stat().st_mtime_ns
    resumed = run_here(*args, "-m")
    assert resumed.stdout.count("not trained again") == 1 and (tmp_path / "0" / store.JOB).stat().st_mtime_ns == before
    fresh = run_here(*args, "resume=false", "-m")
    assert fresh.returncode == 0 and "not trained again" not in fresh.stdout
    assert (tmp_path / "0" / store.JOB).stat().st_mtime_ns > before


@pytest.mark.slow  # in process, on the folders alone: tests/test_resume.py
def test_a_grown_shrunk_or_reordered_grid_reuses_every_finished_candidate(tmp_path):
    def fit_times(sweep_dir):
        df = store.read_cv_results(sweep_dir)
        return dict(zip(df["param_module__num_units"], df["mean_fit_time"]))

    assert run_here("module.num_units=8,32", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path}", "-m").returncode == 0
    first = fit_times(tmp_path)
    grown = run_here("module.num_units=32,16,8,24", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path}", "-m")  # grown and reordered
    assert grown.returncode == 0, grown.stderr
    assert "resume: finished job 0 (module.num_units=8" in grown.stdout and "is job 2 now" in grown.stdout
    assert grown.stdout.count("not trained again") == 2
    for job, units in enumerate([32, 16, 8, 24]):  # every job folder holds its own configuration's job
        assert store.read_cv_results(tmp_path / str(job))["param_module__num_units"].tolist() == [units]
    assert {k: fit_times(tmp_path)[k] for k in first} == first  # reused, not retrained
    shrunk = run_here("module.num_units=24", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path}", "-m")
    assert shrunk.returncode == 0 and "not trained again" in shrunk.stdout
    assert sorted(fit_times(tmp_path)) == [8, 16, 24, 32]  # nothing finished is lost; the aggregate keeps them all
    assert store.read_cv_results(tmp_path / "0")["param_module__num_units"].tolist() == [24]


def test_a_sweeper_that_draws_its_own_points_is_not_resumed_from_the_folder(tiny_sweep, tmp_path, monkeypatch):
    from src import config, resume

    tmp_path = tmp_path / "s"
    shutil.copytree(tiny_sweep, tmp_path)  # finished jobs
    monkeypatch.setattr(config, "BASIC_SWEEPER", "another.Sweeper")  # as if hydra/sweeper=optuna
    with pytest.raises(config.ConfigError, match="draws its own points, so they cannot be matched"):
        resume.prepare_folder(config.preflight(["module.num_units=8", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path}", "-m"]))
    resume.prepare_folder(config.preflight(["module.num_units=8", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path}", "resume=false", "-m"]))


# ---- Reliability, round two -------------------------------------------------------------------------

QUICK = ["dataset.limit=300", "train.max_epochs=1", "train.verbose=quiet"]  # the reproduction, quietly
SCORE_LINE = re.compile(r"module\.num_units=(\d+)[^\n]*\): ok, mean_test_accuracy ([\d.]+) ±")


def start_both(first, second, sweep_dir):
    """Two commands into one sweep folder at the same moment; returns their CompletedProcess-like results."""
    procs = [start([*grid, *QUICK], sweep_dir) for grid in (first, second)]
    outs = [p.communicate(timeout=600) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def assert_attributed_right(sweep_dir, logs):
    """Every job folder holds one configuration throughout (record, rows, Hydra's overrides, all folds), and
    every score a command logged as a candidate's is that candidate's score in the aggregate."""
    agg = store.read_cv_results(sweep_dir)
    score = dict(zip(agg["param_module__num_units"], agg["mean_test_accuracy"]))
    for job_dir in store.job_dirs(sweep_dir):
        units = store.job_record(job_dir)["config"]["module"]["num_units"]
        assert store.read_cv_results(job_dir)["param_module__num_units"].tolist() == [units]
        assert f"module.num_units={units}" in (job_dir / ".hydra" / "overrides.yaml").read_text()
        history = json.loads((job_dir / store.HISTORY).read_text())
        assert [h["fold"] for h in history] == [0, 1, 2] and all(h["params"]["module__num_units"] == units for h in history)
    logged = [(int(u), float(s)) for log in logs for u, s in SCORE_LINE.findall(log)]
    assert logged and all(abs(score[u] - s) < 1e-4 for u, s in logged)
    return agg


# slow: two real commands at once (about 18 s)
@pytest.mark.slow
def test_two_commands_into_one_sweep_folder_keep_the_union_of_their_grids(tmp_path):
    (rc1, out1, err1), (rc2, out2, err2) = start_both(["module.num_units=32,64,96"], ["module.num_units=128,256,512"], tmp_path)
    assert rc1 == rc2 == 0, err1 + err2
    agg = assert_attributed_right(tmp_path, [out1, out2])
    assert sorted(agg["param_module__num_units"]) == [32, 64, 96, 128, 256, 512] and set(agg["status"]) == {"ok"}
    assert len(store.job_dirs(tmp_path)) == 6
    assert not list(tmp_path.rglob(locks.COMMAND_LOCK)) and not list(tmp_path.rglob(locks.JOB_LOCK))  # every hold let go


@pytest.mark.slow  # two commands into one folder at once are also in the default run, with different grids
def test_the_same_command_twice_at_once_trains_each_job_once(tmp_path):
    (rc1, out1, err1), (rc2, out2, err2) = start_both(["module.num_units=32,64,96"], ["module.num_units=32,64,96"], tmp_path)
    assert rc1 == rc2 == 0, err1 + err2
    assert (out1 + out2).count("not trained again") == 3 and (out1 + out2).count("trained by the") == 3
    agg = assert_attributed_right(tmp_path, [out1, out2])
    assert sorted(agg["param_module__num_units"]) == [32, 64, 96]


# slow: a second real process holding a job folder (about 17 s)
@pytest.mark.slow
def test_resume_waits_for_a_job_folder_another_process_is_writing(tmp_path):
    """A straggling job (here this test) holds job folder 0 while the rerun starts: nothing is moved or
    trained there until it lets go, and then its finished job is matched like any other."""
    from src import locks

    assert run_here("module.num_units=8", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path}", "-m").returncode == 0
    record = tmp_path / "0" / store.JOB
    written = record.read_bytes()
    record.unlink()  # job 0 as it is before its last write
    with locks.job(tmp_path / "0"):
        rerun = start(["module.num_units=16,8", *TINY, "cv.refit=false"], tmp_path)
        for line in rerun.stderr:
            if "waiting for pid" in line:
                break
        assert rerun.poll() is None, "the rerun did not wait for the job folder"
        record.write_bytes(written)  # the straggler finishes its job
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "finished job 0 (module.num_units=8" in out and "is job 1 now" in out and out.count("not trained again") == 1


def test_damaged_job_folders_count_as_unfinished_and_are_retrained(tiny_sweep, tmp_path):
    tmp_path = tmp_path / "s"
    shutil.copytree(tiny_sweep, tmp_path)
    grid = [*TINY_SWEEP, "cv.refit=false", f"hydra.sweep.dir={tmp_path}", "-m"]
    (tmp_path / "0" / store.JOB).write_text((tmp_path / "0" / store.JOB).read_text()[:40])  # truncated
    (tmp_path / "1" / store.JOB).write_text('{"status": "ok"}')  # incomplete
    (tmp_path / "2" / "cv_results.json").unlink()
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / store.JOB).write_text("{")  # outside the rerun's grid
    again = run_here(*grid)
    assert again.returncode == 0 and "Traceback" not in again.stderr + again.stdout, again.stderr
    assert "not trained again" not in again.stdout and again.stdout.count("trained by the") == 3
    for job, damaged in [("0", store.JOB), ("1", store.JOB), ("2", "cv_results.json")]:
        named = [line for line in again.stdout.splitlines() if str(tmp_path / job / damaged) in line]
        assert len(named) == 1 and "runs again" in named[0]
    assert f"resume: {tmp_path / '7' / store.JOB} cannot be read" in again.stdout
    assert sorted(store.read_cv_results(tmp_path)["param_module__num_units"]) == [8, 16, 32]


def test_a_failed_job_is_retried_on_resume_and_a_damaged_folder_does_not_swallow_the_summary(broken_sweep, tmp_path):
    sweep_dir = tmp_path / "s"
    shutil.copytree(broken_sweep[0], sweep_dir)
    (sweep_dir / "9").mkdir()
    (sweep_dir / "9" / store.JOB).write_text('{"status": "failed"')
    again = run_here(*BROKEN, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert again.stdout.count("not trained again") == 2  # the ok and the diverged job; the failed ones run again
    assert again.returncode == 1 and again.stderr.strip().splitlines()[-1].startswith("2 of 4 jobs failed: job 2")


def test_a_full_disk_is_one_line_and_what_was_written_stays_intact(tmp_path, monkeypatch):
    args = ["module.num_units=8,16", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path}", "-m"]
    fsync = os.fsync

    def full(fd):  # the disk fills up once job 0 is recorded
        if (tmp_path / "0" / store.JOB).exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        proc = run_here(*args)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"Error: {tmp_path}") and "No space left on device" in proc.stderr
    assert "The files written before are intact" in proc.stderr and not list(tmp_path.rglob("*.tmp"))
    valid_files(tmp_path)
    again = run_here(*args)  # space freed: the rerun resumes
    assert again.returncode == 0 and again.stdout.count("not trained again") == 1


def test_ctrl_c_while_the_grid_is_checked_is_one_line(tmp_path, monkeypatch):
    """In process: Ctrl-C arrives while the first job's configuration is checked."""
    from src import config

    check = config.check

    def check_then_ctrl_c(settings):
        check(settings)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(config, "check", check_then_ctrl_c)
    proc = run_here("module.num_units=8,16", *TINY, f"hydra.sweep.dir={tmp_path / 's'}", "-m")
    assert proc.returncode == 130 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "Interrupted (SIGINT) while checking the configuration; nothing was written."
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_ctrl_c_while_a_large_grid_is_checked_is_one_line(tmp_path):
    grid = "module.num_units=" + ",".join(str(n) for n in range(2, 4000))
    proc = start([grid], tmp_path / "s")
    for line in proc.stderr:  # the check shows its progress
        if line.startswith("checking the configuration of every job:"):
            break
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "Interrupted (SIGINT) while checking the configuration; nothing was written."
    assert not (tmp_path / "s").exists()


def test_a_single_run_into_a_finished_run_of_another_configuration_is_refused(tmp_path):
    run = [*TINY, f"hydra.run.dir={tmp_path}"]
    assert run_here("module.num_units=8", *run).returncode == 0
    before = (tmp_path / store.JOB).read_text()
    other = run_here("module.num_units=16", *run)
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert other.stderr.startswith(f"Error: hydra.run.dir={tmp_path}: holds a finished run with another configuration (module.num_units=8")
    assert (tmp_path / store.JOB).read_text() == before
    same = run_here("module.num_units=8", *run)
    assert same.returncode == 0 and "not trained again" in same.stdout


def test_a_changed_data_file_is_not_resumed_from(tmp_path):
    import numpy as np

    def write(shift):
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "d.npz", X=rng.normal(size=(90, 20)) + shift, y=np.arange(90) % 3)

    write(0)
    args = ["dataset=file", f"dataset.path={tmp_path / 'd.npz'}", "module.input_dim=20", "module.num_classes=3",
            "module.num_units=8", "train.max_epochs=1", "train.verbose=quiet", "cv.refit=false", f"hydra.sweep.dir={tmp_path / 's'}"]
    assert run_here(*args, "-m").returncode == 0
    assert run_here(*args, "-m").stdout.count("not trained again") == 1
    write(5)  # the same file name, other data
    changed = run_here(*args, "-m")
    assert changed.returncode == 2 and changed.stderr.startswith("Error: dataset=from_file: its data have changed since")
    fresh = run_here(*args, "resume=false", "-m")
    assert fresh.returncode == 0 and "not trained again" not in fresh.stdout
    assert run_here(*args, "-m").stdout.count("not trained again") == 1  # and the new results are resumed from


def test_nested_job_folders(tmp_path):
    proc = run_here("module.num_units=8,16", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=n/${hydra.job.num}", "-m")
    assert proc.returncode == 0, proc.stderr
    assert [d.relative_to(tmp_path).as_posix() for d in store.job_dirs(tmp_path)] == ["n/0", "n/1"]
    assert sorted(store.read_cv_results(tmp_path)["param_module__num_units"]) == [8, 16]
