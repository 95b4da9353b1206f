"""The refit after a sweep (src/refit.py): GridSearchCV's refit=True semantics, a held-out score, a saved model."""
import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from sklearn.metrics import accuracy_score

from conftest import ROOT, TINY, TINY_SWEEP, run_here
from src import config, data, refit
from src.job import prepare
from src.model import NeuralNet
from src.seeding import split_test_fold


def settings_for(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return config.settings_of(compose("config", overrides=list(overrides), return_hydra_config=True))


def test_the_refit_is_gridsearchcvs_refit_of_the_best_candidate(tiny_sweep):
    """scikit-learn's GridSearchCV(refit=True) over the same grid refits the same candidate to the same weights."""
    saved = json.loads((tiny_sweep / refit.TEST_SCORES).read_text())
    settings = settings_for(*TINY)
    j = prepare(settings, [], {}, swept=set())
    X, y, search = j.X, j.y, j.search
    search.set_params(param_grid={"module__num_units": [8, 16, 32]}, refit="accuracy")
    search.fit(X, y, test_fold=split_test_fold(search.cv, X, y))
    assert saved["params"] == search.best_params_ and saved["job"] == str([8, 16, 32].index(search.best_params_["module__num_units"]))
    mine = torch.load(tiny_sweep / refit.BEST_MODEL, weights_only=True)
    for name, value in search.best_estimator_.module_.state_dict().items():
        torch.testing.assert_close(mine[name], value, rtol=0, atol=0)


def test_reloading_the_saved_model_reproduces_the_held_out_score(tiny_sweep):
    saved = json.loads((tiny_sweep / refit.TEST_SCORES).read_text())
    X_test, y_test = data.load_test(settings_for(*TINY))
    net = NeuralNet(**saved["module"])
    net.load_state_dict(torch.load(tiny_sweep / refit.BEST_MODEL, weights_only=True))
    with torch.no_grad():
        predicted = net(torch.as_tensor(X_test.copy())).argmax(1).numpy()  # the cached arrays are read-only
    assert saved["test"]["n_samples"] == len(y_test) == 30  # dataset.test_size=0.2 of dataset.limit=150
    assert saved["test"]["accuracy"] == pytest.approx(accuracy_score(y_test, predicted))
    assert set(saved["cv"]) == {"mean_test_accuracy"} and saved["refit"]["n_samples"] == 120
    png = (tiny_sweep / refit.CONFUSION_MATRIX).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert "refit: job" in (tiny_sweep / "stdout.txt").read_text()
    title = refit.matrix_title(saved)  # the confusion matrix's: the architecture and the held-out score, as the report names them
    units = saved["module"]["num_units"]
    assert title == f"best candidate 784-{units}-{units // 2}-10\nheld-out accuracy {saved['test']['accuracy']:.4f} on 30 samples"


def test_the_refit_runs_when_some_jobs_failed(broken_sweep):
    sweep_dir, proc = broken_sweep  # +optimizer.fail=true: that job's first step raises (tests/failing_optimizer.py)
    assert proc.returncode == 1 and "2 of 4 jobs failed" in proc.stderr
    saved = json.loads((sweep_dir / refit.TEST_SCORES).read_text())
    assert saved["params"] == {"optimizer__fail": False, "optimizer__lr": 0.01} and saved["refit"]["status"] == "ok"
    assert (sweep_dir / refit.BEST_MODEL).is_file()


def test_no_refit_when_turned_off_and_the_fused_engine_refits_the_same_model(tmp_path, tiny_sweep, fused_sweep):
    off = run_here("module.num_units=8,16", *TINY, "cv.refit=false", f"hydra.sweep.dir={tmp_path / 'off'}", "-m")
    assert off.returncode == 0 and not (tmp_path / "off" / refit.BEST_MODEL).exists() and "refit:" not in off.stdout
    fused = fused_sweep[0]
    mine = torch.load(fused / refit.BEST_MODEL, weights_only=True)
    theirs = torch.load(tiny_sweep / refit.BEST_MODEL, weights_only=True)
    for name in theirs:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-4, atol=1e-5)
    assert json.loads((fused / refit.TEST_SCORES).read_text())["refit"]["engine"] == "fused"
    assert np.isclose(json.loads((fused / refit.TEST_SCORES).read_text())["test"]["accuracy"],
                      json.loads((tiny_sweep / refit.TEST_SCORES).read_text())["test"]["accuracy"])


def test_a_rerun_with_the_same_best_candidate_reuses_the_intact_model(tiny_sweep, tmp_path, monkeypatch):
    """Same best candidate, same data, best_model.pt intact: nothing is trained and the files stay; a damaged
    best_model.pt is refit, to the same bytes."""
    import shutil

    from src import job

    sweep = tmp_path / "s"
    shutil.copytree(tiny_sweep, sweep)
    model = (sweep / refit.BEST_MODEL).read_bytes()
    scores = (sweep / refit.TEST_SCORES).read_text()
    with monkeypatch.context() as m:
        m.setattr(job, "prepare", lambda *a, **k: pytest.fail("the refit trained again"))
        out = refit.refit_best(sweep, "gridsearch")
    assert out["reused"] and out["test"] == json.loads(scores)["test"]
    assert (sweep / refit.BEST_MODEL).read_bytes() == model and (sweep / refit.TEST_SCORES).read_text() == scores
    assert refit.summary(out).startswith(f"refit: reused best_model.pt of job {out['job']} ")
    (sweep / refit.BEST_MODEL).write_bytes(model[:-10])  # damaged: refit
    again = refit.refit_best(sweep, "gridsearch")
    assert "reused" not in again and (sweep / refit.BEST_MODEL).read_bytes() == model


def test_a_rerun_with_nothing_new_trains_nothing_and_says_so(tiny_sweep, tmp_path):
    import shutil

    sweep = tmp_path / "s"
    shutil.copytree(tiny_sweep, sweep)
    model = (sweep / refit.BEST_MODEL).read_bytes()
    again = run_here(*TINY_SWEEP, f"hydra.sweep.dir={sweep}", "-m")
    assert again.returncode == 0, again.stderr
    said = again.stdout + again.stderr
    assert said.count("not trained again") == 3 and "trained by the" not in said
    assert "refit: reused best_model.pt of job" in again.stdout and (sweep / refit.BEST_MODEL).read_bytes() == model


def test_the_best_config_reruns_the_best_job_and_a_damaged_record_is_a_warning(tiny_sweep, tmp_path, caplog):
    import shutil

    import yaml

    sweep = tmp_path / "s"
    shutil.copytree(tiny_sweep, sweep)
    best = refit.write_best(sweep)
    config = yaml.safe_load((sweep / refit.BEST_CONFIG).read_text())
    assert config["defaults"][0] == "config" and config["defaults"][-1] == "_self_"
    assert config["module"] == yaml.safe_load((best / ".hydra" / "config.yaml").read_text())["module"]
    assert yaml.safe_load((sweep / refit.OPTIMIZATION_RESULTS).read_text())["best_job_dir"] == str(best)
    shutil.rmtree(best / ".hydra")
    (sweep / refit.BEST_CONFIG).unlink()
    assert refit.write_best(sweep) is None and not (sweep / refit.BEST_CONFIG).exists()
    assert "cannot be read" in caplog.text
