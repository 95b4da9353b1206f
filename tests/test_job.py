"""One job without Hydra (src/job.py): its search is scikit-learn's, its folder is recorded once, and a rerun reuses it."""
import logging

import numpy as np
import pytest

from conftest import TINY
from src import config, job, store
from src.seeding import split_test_fold


@pytest.fixture
def settings(compose_cfg):
    """The resolved config of `python -m src.sweep module.num_units=8 TINY engine=gridsearch`, as plain Python."""
    def _settings(*overrides: str) -> dict:
        return config.settings_of(compose_cfg("module.num_units=8", *TINY, "engine=gridsearch", *overrides))
    return _settings


def test_a_job_records_gridsearchcvs_own_scores(settings, tmp_path):
    """job.run's row is what GridSearchCV.fit gives for the same search on the same folds; the folder reads back the same."""
    s = settings()
    row = job.run(s, ["module.num_units=8"], {}, tmp_path, "job 0")
    prepared = job.prepare(s, ["module.num_units=8"], {})
    X, y, search = prepared.X, prepared.y, prepared.search
    search.fit(X, y, test_fold=split_test_fold(search.cv, X, y))
    for column in ("split0_test_accuracy", "split1_test_accuracy", "split2_test_accuracy", "mean_test_accuracy", "std_test_accuracy"):
        np.testing.assert_allclose(row[column], search.cv_results_[column], err_msg=column)
    assert row["param_module__num_units"].tolist() == [8] and row["status"].tolist() == ["ok"]
    assert store.job_record(tmp_path)["config"] == config.identity(s)
    np.testing.assert_allclose(store.read_cv_results(tmp_path)["mean_test_accuracy"], row["mean_test_accuracy"])


def test_a_finished_job_is_reused_another_refused_and_resume_false_retrains(settings, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="src.job")
    job.run(settings(), ["module.num_units=8"], {}, tmp_path, "job 0")
    recorded = (tmp_path / store.JOB).read_text()
    with monkeypatch.context() as m:
        m.setattr(job, "prepare", lambda *a, **k: pytest.fail("an identical finished job was trained again"))
        job.run(settings("train.verbose=fold"), ["module.num_units=8"], {}, tmp_path, "job 0")  # verbose changes no result
    assert "identical to the finished job" in caplog.text and (tmp_path / store.JOB).read_text() == recorded
    with pytest.raises(store.OtherJob, match="holds a finished job with another configuration"):  # a ValueError: exit 2
        job.run(settings("module.num_units=16"), ["module.num_units=16"], {}, tmp_path, "job 0")
    job.run(settings("module.num_units=16", "resume=false"), ["module.num_units=16"], {}, tmp_path, "job 0")
    assert store.job_record(tmp_path)["config"]["module"]["num_units"] == 16


def test_the_fused_engine_records_the_same_scores(settings, tmp_path):
    reference = job.run(settings(), ["module.num_units=8"], {}, tmp_path / "g", "job 0")
    fused = job.run(settings("engine=fused"), ["module.num_units=8"], {}, tmp_path / "f", "job 0")
    np.testing.assert_allclose(fused["mean_test_accuracy"], reference["mean_test_accuracy"], rtol=1e-6)


def test_a_failing_grid_point_is_recorded_not_raised(settings, tmp_path):
    s = settings("optimizer._target_=failing_optimizer.FailingSGD", "+optimizer.fail=true")
    row = job.run(s, ["+optimizer.fail=true"], {}, tmp_path, "job 0")
    assert row["status"].tolist() == ["failed"] and np.isnan(row["mean_test_accuracy"][0])
    assert "can't allocate memory" in store.job_record(tmp_path)["error"] and (tmp_path / "error.log").is_file()
