import json
import multiprocessing
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

from conftest import fake_job
from src import refresh, results, store


@pytest.fixture(scope="module")
def search():
    """scikit-learn's own cv_results_, with a failing candidate (C<0) that gets NaN scores."""
    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.01, 0.1, 1.0, -1.0, 10.0]}
    with pytest.warns(Warning):
        return GridSearchCV(LogisticRegression(max_iter=500), grid, cv=3, scoring=["accuracy", "f1_macro"],
                            refit=False, return_train_score=True, error_score=np.nan).fit(X, y)


def test_rank_recomputes_sklearns_ranks(search):
    df = results.job_results(search.cv_results_)
    shuffled = df.sample(frac=1, random_state=0).assign(rank_test_accuracy=0, rank_test_f1_macro=0)
    ranked = results.rank(shuffled).sort_index()
    for metric in ("accuracy", "f1_macro"):
        assert ranked[f"rank_test_{metric}"].tolist() == search.cv_results_[f"rank_test_{metric}"].tolist()


def test_files_keep_the_schema_and_values(search, tmp_path):
    df = results.rank(results.job_results(search.cv_results_, {"seed": 3}))
    store.write_cv_results(df, tmp_path)
    expected = set(search.cv_results_) | {"param_seed", "status", "error"}
    as_json = json.loads((tmp_path / "cv_results.json").read_text())
    as_pt = torch.load(tmp_path / "cv_results.pt", weights_only=True)
    as_csv = pd.read_csv(tmp_path / "cv_results.csv")
    assert set(as_json) == set(as_pt) == set(as_csv.columns) == expected
    assert as_json["params"][0] == {"C": 0.01, "seed": 3}
    assert as_json["mean_test_accuracy"][3] is None and math.isnan(as_pt["mean_test_accuracy"][3])
    np.testing.assert_allclose(as_pt["mean_test_accuracy"], search.cv_results_["mean_test_accuracy"])
    np.testing.assert_allclose(as_csv["split1_test_f1_macro"], search.cv_results_["split1_test_f1_macro"])
    assert store.read_cv_results(tmp_path)["rank_test_accuracy"].tolist() == search.cv_results_["rank_test_accuracy"].tolist()


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    store.atomic_write(target, "old")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", no_space)
    with pytest.raises(OSError):
        store.atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def _job(args):
    """One fake job: write its own rows, then update the shared aggregate, without a lock (as sweep.main does)."""
    sweep_dir, k, cv_results = args
    job_dir = sweep_dir / str(k)
    job_dir.mkdir()
    store.write_cv_results(results.rank(results.job_results(cv_results, {"job": k})), job_dir)
    store.write_json(job_dir / store.JOB, {"status": "ok", "error": None, "overrides": [], "config": {}})
    refresh.refresh(sweep_dir)


@pytest.mark.parametrize("workers, jobs", [(2, 6), pytest.param(4, 12, marks=pytest.mark.slow)])
def test_concurrent_jobs_all_land_in_the_aggregate(search, tmp_path, workers, jobs):
    rows = [{key: vals[i : i + 1] for key, vals in search.cv_results_.items()} for i in range(5)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_job, [(tmp_path, k, rows[k % 5]) for k in range(jobs)], chunksize=1)
    agg = store.read_cv_results(tmp_path)
    assert sorted(agg["param_job"]) == list(range(jobs))
    by_job = agg.sort_values("param_job")
    expected = [search.cv_results_["mean_test_accuracy"][k % 5] for k in range(jobs)]
    np.testing.assert_allclose(by_job["mean_test_accuracy"], expected)  # each job's own row, once
    best = np.nanmax(expected)
    assert set(by_job.loc[by_job["mean_test_accuracy"] == best, "rank_test_accuracy"]) == {1}
    assert not list(tmp_path.glob(".*.tmp"))


def test_unscored_results_have_gridsearchcvs_keys_in_its_order(search):
    unscored = results.unscored_results({"C": [0.5]}, 3, ["accuracy", "f1_macro"])
    assert list(unscored) == list(search.cv_results_)
    assert unscored["params"] == [{"C": 0.5}] and math.isnan(unscored["mean_test_f1_macro"][0])


def test_failed_candidates_rank_last_like_sklearns_nan(search):
    ok = results.job_results(search.cv_results_)
    failed = results.job_results(results.unscored_results({"C": [7.0]}, 3, ["accuracy", "f1_macro"]), status="failed", error="boom")
    ranked = results.rank(pd.concat([ok, failed], ignore_index=True))
    assert ranked["rank_test_accuracy"].iloc[-1] == ranked["rank_test_accuracy"].max()
    assert ranked["status"].tolist()[-1] == "failed" and ranked["error"].tolist()[-1] == "boom"


def test_ranked_table_prints_params_with_g_and_scores_with_4_decimals(search):
    df = results.rank(results.job_results(search.cv_results_))
    df["param_C"] = [1e-5, 5e-5, 1e30, 0.01, 2.5]
    table = results.ranked_table(df)
    assert "1e-05" in table and "5e-05" in table and "1e+30" in table and "0.01" in table
    best = df.sort_values("rank_test_accuracy").iloc[0]
    assert f"{best['mean_test_accuracy']:.4f}" in table.splitlines()[1]


@pytest.mark.parametrize("drop", [("status",), ("error",), ("mean_test_accuracy",)])
def test_job_rows_without_status_error_or_the_row_metric_are_a_damaged_record(tmp_path, drop):
    """Issue 18 item 10: such a job folder counts as unfinished (its job is retrained) and stays out of the aggregate."""
    config = {"cv": {"scoring": ["accuracy"]}}
    fake_job(tmp_path / "0", config)
    fake_job(tmp_path / "1", config, drop=drop, units=16)
    with pytest.raises(store.DamagedJob, match=f"cv_results.json is incomplete .no {drop[0]} column"):
        store.job_record(tmp_path / "1")
    assert store.finished_job(tmp_path / "1") is None
    assert store.aggregate(tmp_path)["param_module__num_units"].tolist() == [8]


def test_progress_knows_that_fused_jobs_are_already_trained(tmp_path):
    """A fused group of 4 jobs trained in 200 s, then the first recorded: the other 3 need no time, only the rest does."""
    import os
    import time as clock

    start = clock.time() - 200
    (tmp_path / "multirun.yaml").write_text("{}")
    os.utime(tmp_path / "multirun.yaml", (start, start))
    job = tmp_path / "0"
    job.mkdir()
    (job / f"{store.CV_RESULTS}.json").write_text(json.dumps({"params": [{}], "mean_test_accuracy": [0.5], "status": ["ok"], "error": [None]}))
    (job / store.JOB).write_text(json.dumps({"status": "ok", "error": None, "overrides": [], "config": {}}))
    os.utime(job / store.JOB, (start + 200, start + 200))
    assert store.progress(tmp_path, 4, trained=3) == "1 of 4 jobs done, the other 3 already trained"
    # 200 s trained 4 jobs' fits: 50 s a job, for the 4 of 8 not trained yet (without `trained`: 200 s x 7 left)
    assert store.progress(tmp_path, 8, trained=3) == "1 of 8 jobs done, about 0:03:20 left"
    assert store.progress(tmp_path, 8) == "1 of 8 jobs done, about 0:23:20 left"
