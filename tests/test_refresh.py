"""The aggregate rebuilt without a lock (src/refresh.py): a writer whose listing went stale writes again, a
writer killed midway leaves only whole files, and two sweeps writing into one folder both land in it."""
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from conftest import ROOT, TINY, run_here, same_aggregate
from src import refresh, results, store


@pytest.fixture(scope="module")
def rows():
    """One-candidate cv_results_ of scikit-learn's own GridSearchCV, for fake jobs."""
    X, y = load_iris(return_X_y=True)
    search = GridSearchCV(LogisticRegression(max_iter=500), {"C": [0.01, 0.1, 1.0]}, cv=3, return_train_score=True).fit(X, y)
    return [{key: vals[i : i + 1] for key, vals in search.cv_results_.items()} for i in range(3)]


def finish_job(sweep_dir, k, rows):
    """A fake job k finishes: its rows, then its job.json (last, as src.store.record writes them)."""
    job_dir = sweep_dir / str(k)
    job_dir.mkdir()
    store.write_cv_results(results.rank(results.job_results(rows[k % len(rows)], {"job": k})), job_dir)
    store.write_json(job_dir / store.JOB, {"status": "ok", "error": None, "overrides": [], "config": {}})


def aggregated_jobs(sweep_dir) -> list[int]:
    return sorted(store.read_cv_results(sweep_dir)["param_job"])


def test_a_writer_whose_listing_went_stale_rebuilds(tmp_path, rows, monkeypatch):
    """Job 2 finishes, and its rebuild completes, while a slower writer is about to write jobs 0 and 1 only."""
    for k in (0, 1):
        finish_job(tmp_path, k, rows)
    real_write, writes = store.write_cv_results, []

    def write(df, directory):
        if directory == tmp_path and not writes:
            writes.append("stale")
            finish_job(tmp_path, 2, rows)
            refresh.refresh(tmp_path)   # job 2's own rebuild: 0, 1, 2
        real_write(df, directory)       # then the slower writer's stale one: 0, 1
    monkeypatch.setattr(store, "write_cv_results", write)
    assert refresh.refresh(tmp_path)
    assert aggregated_jobs(tmp_path) == [0, 1, 2]
    assert json.loads((tmp_path / "cv_results.json").read_text())["param_job"] == [0, 1, 2]


def test_one_rebuild_reads_each_file_once(tmp_path, rows, monkeypatch):
    """The aggregate and the report of one rebuild share one reading of every job's files (store.read_jobs), and
    the report reads the aggregate it was rebuilt from once."""
    for k in range(3):
        finish_job(tmp_path, k, rows)
        store.write_json(tmp_path / str(k) / store.HISTORY, [])
    reads, read_json, read_cv_results = collections.Counter(), store.read_json, store.read_cv_results

    def counted(read, name):
        def read_counting(path):
            reads[Path(path) / name if name else Path(path)] += 1
            return read(path)
        return read_counting
    monkeypatch.setattr(store, "read_json", counted(read_json, None))
    monkeypatch.setattr(store, "read_cv_results", counted(read_cv_results, "cv_results.json"))
    assert refresh.refresh(tmp_path)
    files = [tmp_path / str(k) / name for k in range(3) for name in (store.JOB, "cv_results.json", store.HISTORY)]
    assert {f: reads[f] for f in files} == {f: 1 for f in files}
    assert reads[tmp_path / "cv_results.json"] == 1 and sum(reads.values()) == len(files) + 1


REBUILD_FOREVER = "import sys; from src import refresh\nwhile True: refresh.refresh(sys.argv[1])"


@pytest.mark.parametrize("delays", [(0.05,), pytest.param((0.0, 0.1, 0.2, 0.35), marks=pytest.mark.slow)])  # a new process each
def test_a_rebuild_killed_midway_leaves_whole_files_and_the_next_one_is_right(tmp_path, rows, delays):
    for k in range(30):
        finish_job(tmp_path, k, rows)
    for attempt, delay in enumerate(delays):
        start = time.time()
        writer = subprocess.Popen([sys.executable, "-c", REBUILD_FOREVER, str(tmp_path)], cwd=ROOT)
        while not (tmp_path / "hiplot.html").is_file() or (tmp_path / "hiplot.html").stat().st_mtime < start:
            time.sleep(0.01)  # until it has rebuilt once, so that the kill lands inside a rebuild loop
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        as_json = json.loads((tmp_path / "cv_results.json").read_text())   # each file whole, from some rebuild
        as_csv = pd.read_csv(tmp_path / "cv_results.csv")
        as_pt = torch.load(tmp_path / "cv_results.pt", weights_only=True)
        for table in (as_json, as_csv, as_pt):
            assert sorted(table["param_job"]) == list(range(len(table["param_job"])))
        finish_job(tmp_path, 30 + attempt, rows)  # and a job finishes while nobody rebuilds
    for tmp in tmp_path.glob(".*.tmp"):  # what the killed writers left: old enough now to be known dead
        os.utime(tmp, (time.time() - 2 * store.STALE_TMP_S,) * 2)
    assert refresh.refresh(tmp_path)  # the rebuild at the end of the sweep
    assert aggregated_jobs(tmp_path) == list(range(30 + len(delays)))
    assert not list(tmp_path.glob(".cv_results.*.tmp"))
    by_job = store.read_cv_results(tmp_path).sort_values("param_job")
    np.testing.assert_allclose(by_job["mean_test_score"], [rows[k % 3]["mean_test_score"][0] for k in range(30 + len(delays))])


@pytest.mark.slow
def test_two_sweeps_writing_into_one_folder_at_once_both_land(tmp_path):
    """Two commands sweep halves of the grid into one folder (their own job subfolders) at the same time."""
    grid = ["engine=gridsearch", "cv.refit=false", *TINY]
    sweeps = [subprocess.Popen([sys.executable, "-m", "src.sweep", half, *grid, f"hydra.sweep.dir={tmp_path / 's'}",
                                f"hydra.sweep.subdir={name}${{hydra.job.num}}", "-m"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for name, half in (("a", "module.num_units=8,16"), ("b", "module.num_units=32,64"))]
    for sweep in sweeps:
        _, err = sweep.communicate(timeout=600)
        assert sweep.returncode == 0, err
    assert sorted(d.name for d in store.job_dirs(tmp_path / "s")) == ["a0", "a1", "b0", "b1"]
    reference = run_here("module.num_units=8,16,32,64", *grid, f"hydra.sweep.dir={tmp_path / 'whole'}", "-m")
    assert reference.returncode == 0, reference.stderr
    same_aggregate(tmp_path / "s", tmp_path / "whole")
