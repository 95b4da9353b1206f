"""Failed, diverged and interrupted jobs, and resuming, through the real CLI (src/sweep.py, src/results.py)."""
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

from conftest import ROOT, TINY, run_cli
from src import locks, store

# +optimizer.fail=true: the first step raises (tests/failing_optimizer.py), as a job that runs out of memory does.
# Long enough per job (about a second) that a kill lands between jobs.
BROKEN = ["optimizer._target_=failing_optimizer.FailingSGD", "+optimizer.fail=false,true", "optimizer.lr=0.01,1e30", *TINY,
          "train.max_epochs=3"]
FAIL = True
SLOW = ["module.num_units=8,16,32,64", "dataset.limit=1500", "train.max_epochs=4", "train.verbose=quiet"]


@pytest.fixture(scope="module")
def broken_sweep(tmp_path_factory):
    """A sweep where +optimizer.fail=true fails at its first step and lr=1e30 diverges."""
    sweep_dir = tmp_path_factory.mktemp("broken") / "s"
    proc = run_cli(*BROKEN, f"hydra.sweep.dir={sweep_dir}", "-m")
    return sweep_dir, proc


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
    proc = run_cli(*SLOW, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    return sweep_dir


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

    again = run_cli(*SLOW, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert again.returncode == 0, again.stderr
    assert "job 0 (module.num_units=8" in again.stdout and "not trained again" in again.stdout
    pd.testing.assert_frame_equal(comparable(sweep_dir), comparable(uninterrupted))
    assert store.read_cv_results(sweep_dir / "0")["mean_fit_time"][0] == first_fit  # reused, not retrained
    assert not list(sweep_dir.rglob("*.tmp")) and not list(sweep_dir.rglob("history.jsonl"))


def test_ctrl_c_stops_the_whole_sweep_and_leaves_complete_files(tmp_path):
    sweep_dir = tmp_path / "s"
    proc = start(SLOW, sweep_dir)
    wait_for(sweep_dir / "0" / store.JOB, proc)
    os.killpg(proc.pid, signal.SIGINT)  # skorch alone would swallow this and go on to the next fold
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Interrupted (SIGINT)" in stderr and "to resume" in stderr
    assert not (sweep_dir / "3" / store.JOB).exists()
    valid_files(sweep_dir)


def test_resume_false_retrains(tmp_path):
    args = ["module.num_units=8,16", *TINY, f"hydra.sweep.dir={tmp_path}"]
    assert run_cli(*args, "-m").returncode == 0
    before = (tmp_path / "0" / store.JOB).stat().st_mtime_ns
    resumed = run_cli(*args, "-m")
    assert resumed.stdout.count("not trained again") == 2 and (tmp_path / "0" / store.JOB).stat().st_mtime_ns == before
    fresh = run_cli(*args, "resume=false", "-m")
    assert fresh.returncode == 0 and "not trained again" not in fresh.stdout
    assert (tmp_path / "0" / store.JOB).stat().st_mtime_ns > before


def test_a_failed_job_is_retried_on_resume(broken_sweep, tmp_path):
    sweep_dir, _ = broken_sweep
    again = run_cli(*BROKEN, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert again.stdout.count("not trained again") == 2  # the ok and the diverged job; the failed ones run again
    assert again.returncode == 1


def test_a_grown_shrunk_or_reordered_grid_reuses_every_finished_candidate(tmp_path):
    def fit_times(sweep_dir):
        df = store.read_cv_results(sweep_dir)
        return dict(zip(df["param_module__num_units"], df["mean_fit_time"]))

    assert run_cli("module.num_units=8,32", *TINY, f"hydra.sweep.dir={tmp_path}", "-m").returncode == 0
    first = fit_times(tmp_path)
    grown = run_cli("module.num_units=32,16,8,24", *TINY, f"hydra.sweep.dir={tmp_path}", "-m")  # grown and reordered
    assert grown.returncode == 0, grown.stderr
    assert "resume: finished job 0 (module.num_units=8" in grown.stdout and "is job 2 now" in grown.stdout
    assert grown.stdout.count("not trained again") == 2
    for job, units in enumerate([32, 16, 8, 24]):  # every job folder holds its own configuration's job
        assert store.read_cv_results(tmp_path / str(job))["param_module__num_units"].tolist() == [units]
    assert {k: fit_times(tmp_path)[k] for k in first} == first  # reused, not retrained
    shrunk = run_cli("module.num_units=24", *TINY, f"hydra.sweep.dir={tmp_path}", "-m")
    assert shrunk.returncode == 0 and "not trained again" in shrunk.stdout
    assert sorted(fit_times(tmp_path)) == [8, 16, 24, 32]  # nothing finished is lost; the aggregate keeps them all
    assert store.read_cv_results(tmp_path / "0")["param_module__num_units"].tolist() == [24]


def test_an_interrupted_rearrangement_is_found_again(tmp_path):
    """A finished job left under its staging name by a crash is matched on the next run, not retrained."""
    from src import resume

    assert run_cli("module.num_units=8", *TINY, f"hydra.sweep.dir={tmp_path}", "-m").returncode == 0
    (tmp_path / "0").rename(tmp_path / f"{resume.STAGING}0")
    again = run_cli("module.num_units=16,8", *TINY, f"hydra.sweep.dir={tmp_path}", "-m")
    assert again.returncode == 0 and "is job 1 now" in again.stdout and again.stdout.count("not trained again") == 1
    assert not list(tmp_path.glob(f"{resume.STAGING}*"))


def test_a_sweeper_that_draws_its_own_points_is_not_resumed_from_the_folder(tmp_path, monkeypatch):
    from src import config, resume

    assert run_cli("module.num_units=8", *TINY, f"hydra.sweep.dir={tmp_path}", "-m").returncode == 0
    monkeypatch.setattr(config, "BASIC_SWEEPER", "another.Sweeper")  # as if hydra/sweeper=optuna
    with pytest.raises(config.ConfigError, match="draws its own points, so they cannot be matched"):
        resume.prepare_folder(config.preflight(["module.num_units=8", *TINY, f"hydra.sweep.dir={tmp_path}", "-m"]))
    resume.prepare_folder(config.preflight(["module.num_units=8", *TINY, f"hydra.sweep.dir={tmp_path}", "resume=false", "-m"]))


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


def test_two_commands_into_one_sweep_folder_keep_the_union_of_their_grids(tmp_path):
    (rc1, out1, err1), (rc2, out2, err2) = start_both(["module.num_units=32,64,96"], ["module.num_units=128,256,512"], tmp_path)
    assert rc1 == rc2 == 0, err1 + err2
    agg = assert_attributed_right(tmp_path, [out1, out2])
    assert sorted(agg["param_module__num_units"]) == [32, 64, 96, 128, 256, 512] and set(agg["status"]) == {"ok"}
    assert len(store.job_dirs(tmp_path)) == 6
    assert not list(tmp_path.rglob(locks.COMMAND_LOCK)) and not list(tmp_path.rglob(locks.JOB_LOCK))  # every hold let go


def test_the_same_command_twice_at_once_trains_each_job_once(tmp_path):
    (rc1, out1, err1), (rc2, out2, err2) = start_both(["module.num_units=32,64,96"], ["module.num_units=32,64,96"], tmp_path)
    assert rc1 == rc2 == 0, err1 + err2
    assert (out1 + out2).count("not trained again") == 3 and (out1 + out2).count("trained by the") == 3
    agg = assert_attributed_right(tmp_path, [out1, out2])
    assert sorted(agg["param_module__num_units"]) == [32, 64, 96]


def test_resume_waits_for_a_job_folder_another_process_is_writing(tmp_path):
    """A straggling job (here this test) holds job folder 0 while the rerun starts: nothing is moved or
    trained there until it lets go, and then its finished job is matched like any other."""
    from src import locks

    assert run_cli("module.num_units=8", *TINY, f"hydra.sweep.dir={tmp_path}", "-m").returncode == 0
    record = tmp_path / "0" / store.JOB
    written = record.read_bytes()
    record.unlink()  # job 0 as it is before its last write
    with locks.job(tmp_path / "0"):
        rerun = start(["module.num_units=16,8", *TINY], tmp_path)
        for line in rerun.stderr:
            if "waiting for pid" in line:
                break
        assert rerun.poll() is None, "the rerun did not wait for the job folder"
        record.write_bytes(written)  # the straggler finishes its job
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "finished job 0 (module.num_units=8" in out and "is job 1 now" in out and out.count("not trained again") == 1


def test_damaged_job_folders_count_as_unfinished_and_are_retrained(tmp_path):
    grid = ["module.num_units=8,16,24", *TINY, f"hydra.sweep.dir={tmp_path}", "-m"]
    assert run_cli(*grid).returncode == 0
    (tmp_path / "0" / store.JOB).write_text((tmp_path / "0" / store.JOB).read_text()[:40])  # truncated
    (tmp_path / "1" / store.JOB).write_text('{"status": "ok"}')  # incomplete
    (tmp_path / "2" / "cv_results.json").unlink()
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / store.JOB).write_text("{")  # outside the rerun's grid
    again = run_cli(*grid)
    assert again.returncode == 0 and "Traceback" not in again.stderr + again.stdout, again.stderr
    assert "not trained again" not in again.stdout and again.stdout.count("trained by the") == 3
    for job, damaged in [("0", store.JOB), ("1", store.JOB), ("2", "cv_results.json")]:
        named = [line for line in again.stdout.splitlines() if str(tmp_path / job / damaged) in line]
        assert len(named) == 1 and "runs again" in named[0]
    assert f"resume: {tmp_path / '7' / store.JOB} cannot be read" in again.stdout
    assert sorted(store.read_cv_results(tmp_path)["param_module__num_units"]) == [8, 16, 24]


def test_damaged_job_folder_does_not_swallow_the_failure_summary(broken_sweep, tmp_path):
    sweep_dir = tmp_path / "s"
    shutil.copytree(broken_sweep[0], sweep_dir)
    (sweep_dir / "9").mkdir()
    (sweep_dir / "9" / store.JOB).write_text('{"status": "failed"')
    again = run_cli(*BROKEN, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert again.returncode == 1 and again.stderr.strip().splitlines()[-1].startswith("2 of 4 jobs failed: job 2")


FULL_DISK = """import errno, os, runpy, sys
from pathlib import Path
fsync = os.fsync
def full(fd):  # the disk fills up once job 0 is recorded
    if (Path(os.environ["SWEEP_DIR"]) / "0" / "job.json").exists():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    fsync(fd)
os.fsync = full
runpy.run_module("src.sweep", run_name="__main__", alter_sys=True)
"""


def test_a_full_disk_is_one_line_and_what_was_written_stays_intact(tmp_path):
    args = ["module.num_units=8,16", *TINY, f"hydra.sweep.dir={tmp_path}", "-m"]
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SWEEP_DIR": str(tmp_path), "HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"Error: {tmp_path}") and "No space left on device" in proc.stderr
    assert "The files written before are intact" in proc.stderr and not list(tmp_path.rglob("*.tmp"))
    valid_files(tmp_path)
    again = run_cli(*args)  # space freed: the rerun resumes
    assert again.returncode == 0 and again.stdout.count("not trained again") == 1


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
    assert run_cli("module.num_units=8", *run).returncode == 0
    before = (tmp_path / store.JOB).read_text()
    other = run_cli("module.num_units=16", *run)
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert other.stderr.startswith(f"Error: hydra.run.dir={tmp_path}: holds a finished run with another configuration (module.num_units=8")
    assert (tmp_path / store.JOB).read_text() == before
    same = run_cli("module.num_units=8", *run)
    assert same.returncode == 0 and "not trained again" in same.stdout


def test_a_changed_data_file_is_not_resumed_from(tmp_path):
    import numpy as np

    def write(shift):
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "d.npz", X=rng.normal(size=(90, 20)) + shift, y=np.arange(90) % 3)

    write(0)
    args = ["dataset=file", f"dataset.path={tmp_path / 'd.npz'}", "module.input_dim=20", "module.num_classes=3",
            "module.num_units=8,16", "train.max_epochs=1", "train.verbose=quiet", f"hydra.sweep.dir={tmp_path / 's'}"]
    assert run_cli(*args, "-m").returncode == 0
    assert run_cli(*args, "-m").stdout.count("not trained again") == 2
    write(5)  # the same file name, other data
    changed = run_cli(*args, "-m")
    assert changed.returncode == 2 and changed.stderr.startswith("Error: dataset=from_file: its data have changed since")
    fresh = run_cli(*args, "resume=false", "-m")
    assert fresh.returncode == 0 and "not trained again" not in fresh.stdout
    assert run_cli(*args, "-m").stdout.count("not trained again") == 2  # and the new results are resumed from


def test_nested_job_folders(tmp_path):
    proc = run_cli("module.num_units=8,16", *TINY, f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=n/${hydra.job.num}", "-m")
    assert proc.returncode == 0, proc.stderr
    assert [d.relative_to(tmp_path).as_posix() for d in store.job_dirs(tmp_path)] == ["n/0", "n/1"]
    assert sorted(store.read_cv_results(tmp_path)["param_module__num_units"]) == [8, 16]
