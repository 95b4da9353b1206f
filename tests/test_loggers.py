"""+logger=tensorboard and +logger=mlflow (src/loggers.py): skorch's callbacks with their real packages, both engines."""
import sys

import pytest

from conftest import TINY, run_here

ARGS = ["module.num_units=8", *TINY, "cv.refit=false"]


def train_losses(sweep_dir, fold):
    """The train_loss curve of a fit, read back from its TensorBoard event file with tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(sweep_dir / "0" / "tensorboard" / f"fold{fold}"))
    events.Reload()
    return [s.value for s in events.Scalars("Loss/train_loss")]


@pytest.mark.parametrize("engine", ["gridsearch", "fused"])
def test_tensorboard_gets_every_fits_curve(tmp_path, engine):
    proc = run_here(*ARGS, "+logger=tensorboard", f"engine={engine}", f"hydra.sweep.dir={tmp_path}", "-m")
    assert proc.returncode == 0, proc.stderr
    import json

    history = json.loads((tmp_path / "0" / "history.json").read_text())
    for fold in range(3):
        assert train_losses(tmp_path, fold) == pytest.approx([e["train_loss"] for e in history[fold]["epochs"]])


@pytest.mark.parametrize("engine", ["gridsearch", "fused"])
def test_mlflow_records_a_run_per_fit_in_a_local_store(tmp_path, monkeypatch, engine):
    monkeypatch.chdir(tmp_path)
    proc = run_here(*ARGS, "+logger=mlflow", f"engine={engine}", f"hydra.sweep.dir={tmp_path / 's'}", "-m")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs", "s"]  # nothing written into the current folder itself
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["mlp-sweep"])
    assert sorted(runs["tags.mlflow.runName"]) == [f"s/0/fold{k}" for k in range(3)]
    assert (runs["status"] == "FINISHED").all() and runs["metrics.train_loss"].notna().all()
    # skorch's artifacts; a fit the fused engine trained has no skorch optimizer to save
    client = mlflow.MlflowClient()
    expected = ["criterion.pth", "history.json", *(["optimizer.pth"] if engine == "gridsearch" else []), "params.pth"]
    for run_id in runs["run_id"]:
        assert sorted(a.path for a in client.list_artifacts(run_id)) == expected


@pytest.mark.parametrize("name", ["tensorboard", "mlflow"])
def test_a_logger_whose_package_is_not_installed_is_refused_before_anything_runs(tmp_path, name, monkeypatch):
    """A fresh `pip install .` lacks the optional extras: the command names the extra instead of failing in a fit."""
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importlib finds no spec
    proc = run_here(*ARGS, f"+logger={name}", f"hydra.sweep.dir={tmp_path / 's'}", "-m")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"Error: logger.name={name!r}: needs the {name} package: pip install \".[{name}]\""]
    assert not (tmp_path / "s").exists()
