"""src/store.py's one rule for a finished job (finished_job), which the job, the launcher, resume and the refit all ask."""
import pytest

from conftest import fake_job
from src import store
from src.identity import job_key

CONFIG = {"seed": 0, "module": {"num_units": 8}, "optimizer": {"lr": 0.01}, "cv": {"scoring": ["accuracy"]}}


def test_a_complete_job_with_a_result_is_finished(tmp_path):
    fake_job(tmp_path / "ok", CONFIG)
    fake_job(tmp_path / "diverged", CONFIG, status="diverged")
    assert store.finished_job(tmp_path / "ok")["config"] == CONFIG
    assert store.finished_job(tmp_path / "diverged")["status"] == "diverged"  # a result (NaN scores): not trained again


def test_a_failed_missing_or_damaged_job_is_not_finished(tmp_path):
    fake_job(tmp_path / "failed", CONFIG, status="failed")
    fake_job(tmp_path / "damaged", CONFIG)
    (tmp_path / "damaged" / "cv_results.json").write_text('{"params": [')  # a killed writer's half file
    (tmp_path / "never").mkdir()
    assert store.finished_job(tmp_path / "failed") is None  # runs again
    assert store.finished_job(tmp_path / "never") is None
    assert store.finished_job(tmp_path / "damaged") is None
    with pytest.raises(store.DamagedJob, match="cv_results.json cannot be read"):  # for a caller that says why it runs again
        store.finished_job(tmp_path / "damaged", damaged_ok=False)


def test_with_an_identity_only_that_configuration_is_finished(tmp_path):
    job = fake_job(tmp_path / "0", CONFIG)
    assert store.finished_job(job, {**CONFIG, "optimizer": {"lr": 0.010}}) is not None  # one value, however written
    other = {**CONFIG, "module": {"num_units": 16}}
    with pytest.raises(store.OtherJob, match="holds a finished job with another configuration .module.num_units=8.") as refused:
        store.finished_job(job, other)
    assert job_key(refused.value.record["config"]) == job_key(CONFIG) and isinstance(refused.value, ValueError)
    fake_job(tmp_path / "1", CONFIG, status="failed")
    assert store.finished_job(tmp_path / "1", other) is None  # a failed job of another configuration is simply retrained
