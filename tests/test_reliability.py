"""Failed, diverged and interrupted jobs, and resuming, through the real CLI (src/sweep.py, src/results.py)."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import ROOT, TINY, run_cli
from src import results

HUGE = 10**12  # a first weight of 784 x 10**12 floats: more than any address space, so allocation fails

# Long enough per job (about a second) that a kill lands between jobs.
BROKEN = [f"module.num_units=8,{HUGE}", "optimizer.lr=0.01,1e30", *TINY, "train.max_epochs=3"]
SLOW = ["module.num_units=8,16,32,64", "dataset.limit=1500", "train.max_epochs=4", "train.verbose=quiet"]


@pytest.fixture(scope="module")
def broken_sweep(tmp_path_factory):
    """A sweep where num_units=10**12 runs out of memory (3.1 PB for one weight) and lr=1e30 diverges."""
    sweep_dir = tmp_path_factory.mktemp("broken") / "s"
    proc = run_cli(*BROKEN, f"hydra.sweep.dir={sweep_dir}", "-m")
    return sweep_dir, proc


def test_failed_and_diverged_jobs_are_recorded_and_the_rest_still_run(broken_sweep):
    sweep_dir, proc = broken_sweep
    agg = results.read_cv_results(sweep_dir)
    by_point = {(r["param_module__num_units"], r["param_optimizer__lr"]): r for r in agg.to_dict(orient="records")}
    assert {k: r["status"] for k, r in by_point.items()} == {
        (8, 0.01): "ok", (8, 1e30): "diverged", (HUGE, 0.01): "failed", (HUGE, 1e30): "failed"}
    assert math.isfinite(by_point[8, 0.01]["mean_test_accuracy"]) and by_point[8, 0.01]["rank_test_accuracy"] == 1
    for key in [(8, 1e30), (HUGE, 0.01), (HUGE, 1e30)]:
        assert math.isnan(by_point[key]["mean_test_accuracy"]) and math.isnan(by_point[key]["split0_test_accuracy"])
        assert by_point[key]["rank_test_accuracy"] == 2  # NaN ranks last, as in scikit-learn
    assert "can't allocate memory" in by_point[HUGE, 0.01]["error"]
    assert "training loss became" in by_point[8, 1e30]["error"]
    for job in ("2", "3"):
        assert "Traceback" in (sweep_dir / job / "error.log").read_text()
    assert not (sweep_dir / "0" / "error.log").exists() and not (sweep_dir / "1" / "error.log").exists()
    assert (sweep_dir / "hiplot.html").is_file()


def test_failures_exit_non_zero_with_a_summary(broken_sweep):
    sweep_dir, proc = broken_sweep
    assert proc.returncode == 1
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"2 of 4 jobs failed: job 2 (module.num_units={HUGE} optimizer.lr=0.01")
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
    df = results.read_cv_results(sweep_dir).sort_values("param_module__num_units").reset_index(drop=True)
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
    wait_for(sweep_dir / "0" / results.JOB, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (sweep_dir / "3" / results.JOB).exists(), "the sweep finished before the kill"
    valid_files(sweep_dir)
    first_fit = results.read_cv_results(sweep_dir / "0")["mean_fit_time"][0]

    again = run_cli(*SLOW, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert again.returncode == 0, again.stderr
    assert "job 0 (module.num_units=8" in again.stdout and "not trained again" in again.stdout
    pd.testing.assert_frame_equal(comparable(sweep_dir), comparable(uninterrupted))
    assert results.read_cv_results(sweep_dir / "0")["mean_fit_time"][0] == first_fit  # reused, not retrained
    assert not list(sweep_dir.rglob("*.tmp")) and not list(sweep_dir.rglob("history.jsonl"))


def test_ctrl_c_stops_the_whole_sweep_and_leaves_complete_files(tmp_path):
    sweep_dir = tmp_path / "s"
    proc = start(SLOW, sweep_dir)
    wait_for(sweep_dir / "0" / results.JOB, proc)
    os.killpg(proc.pid, signal.SIGINT)  # skorch alone would swallow this and go on to the next fold
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Interrupted (SIGINT)" in stderr and "to resume" in stderr
    assert not (sweep_dir / "3" / results.JOB).exists()
    valid_files(sweep_dir)


def test_resume_false_retrains(tmp_path):
    args = ["module.num_units=8,16", *TINY, f"hydra.sweep.dir={tmp_path}"]
    assert run_cli(*args, "-m").returncode == 0
    before = (tmp_path / "0" / results.JOB).stat().st_mtime_ns
    resumed = run_cli(*args, "-m")
    assert resumed.stdout.count("not trained again") == 2 and (tmp_path / "0" / results.JOB).stat().st_mtime_ns == before
    fresh = run_cli(*args, "resume=false", "-m")
    assert fresh.returncode == 0 and "not trained again" not in fresh.stdout
    assert (tmp_path / "0" / results.JOB).stat().st_mtime_ns > before


def test_a_failed_job_is_retried_on_resume(broken_sweep, tmp_path):
    sweep_dir, _ = broken_sweep
    again = run_cli(*BROKEN, f"hydra.sweep.dir={sweep_dir}", "-m")
    assert again.stdout.count("not trained again") == 2  # the ok and the diverged job; the failed ones run again
    assert again.returncode == 1


def test_a_grown_shrunk_or_reordered_grid_reuses_every_finished_candidate(tmp_path):
    def fit_times(sweep_dir):
        df = results.read_cv_results(sweep_dir)
        return dict(zip(df["param_module__num_units"], df["mean_fit_time"]))

    assert run_cli("module.num_units=8,32", *TINY, f"hydra.sweep.dir={tmp_path}", "-m").returncode == 0
    first = fit_times(tmp_path)
    grown = run_cli("module.num_units=32,16,8,24", *TINY, f"hydra.sweep.dir={tmp_path}", "-m")  # grown and reordered
    assert grown.returncode == 0, grown.stderr
    assert "resume: finished job 0 (module.num_units=8" in grown.stdout and "is job 2 now" in grown.stdout
    assert grown.stdout.count("not trained again") == 2
    for job, units in enumerate([32, 16, 8, 24]):  # every job folder holds its own configuration's job
        assert results.read_cv_results(tmp_path / str(job))["param_module__num_units"].tolist() == [units]
    assert {k: fit_times(tmp_path)[k] for k in first} == first  # reused, not retrained
    shrunk = run_cli("module.num_units=24", *TINY, f"hydra.sweep.dir={tmp_path}", "-m")
    assert shrunk.returncode == 0 and "not trained again" in shrunk.stdout
    assert sorted(fit_times(tmp_path)) == [8, 16, 24, 32]  # nothing finished is lost; the aggregate keeps them all
    assert results.read_cv_results(tmp_path / "0")["param_module__num_units"].tolist() == [24]


def test_an_interrupted_rearrangement_is_found_again(tmp_path):
    """A finished job left under its staging name by a crash is matched on the next run, not retrained."""
    from src import resume

    assert run_cli("module.num_units=8", *TINY, f"hydra.sweep.dir={tmp_path}", "-m").returncode == 0
    (tmp_path / "0").rename(tmp_path / f"{resume.STAGING}0")
    again = run_cli("module.num_units=16,8", *TINY, f"hydra.sweep.dir={tmp_path}", "-m")
    assert again.returncode == 0 and "is job 1 now" in again.stdout and again.stdout.count("not trained again") == 1
    assert not list(tmp_path.glob(f"{resume.STAGING}*"))


def test_a_sweeper_that_draws_its_own_points_is_not_resumed_from_the_folder(tmp_path, monkeypatch):
    from src import config

    assert run_cli("module.num_units=8", *TINY, f"hydra.sweep.dir={tmp_path}", "-m").returncode == 0
    monkeypatch.setattr(config, "BASIC_SWEEPER", "another.Sweeper")  # as if hydra/sweeper=optuna
    with pytest.raises(config.ConfigError, match="draws its own points, so they cannot be matched"):
        config.preflight(["module.num_units=8", *TINY, f"hydra.sweep.dir={tmp_path}", "-m"])
    config.preflight(["module.num_units=8", *TINY, f"hydra.sweep.dir={tmp_path}", "resume=false", "-m"])
