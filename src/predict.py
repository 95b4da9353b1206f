"""Predictions from a sweep's refit best model.

    python -m src.predict SWEEP_DIR INPUT [-o predictions.csv]

INPUT holds raw features, as the data set had them before scaling (0..255 pixels for the image sets):
an .npy array (n, features) or (n, 28, 28); an .npz archive (its array X, or its one array); a .csv of
feature columns (a label column named as in the data set's config, default `label`, is dropped); or an
IDX image file (MNIST's raw *-images-idx3-ubyte, .gz too). The output has one row per sample: the
predicted class, then each class's probability. load_best() is the same as a function.
"""
import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from src import data, refit, store
from src.estimator import build_estimator


class PredictError(ValueError):
    """A sweep folder or an input that cannot be predicted from; the message names it and what is expected."""


def load_best(sweep_dir: str | Path) -> Pipeline:
    """The sweep's refit best model, ready to predict raw features: a scikit-learn Pipeline of the training's
    scaling (test_scores.json's data.scaling) and the fitted skorch net, on the CPU.

    model.predict(X) -> (n,) class labels; model.predict_proba(X) -> (n, num_classes), for X (n, input_dim).
    """
    saved = best_model_record(sweep_dir)
    net = build_estimator(saved["module"], torch.optim.SGD, {}, verbose="quiet", device="cpu")
    net.initialize()
    # skorch's own parameter (fit() would learn them from y): as many as the module has logits (your own module may
    # have no num_classes key), read from a batch of one sample
    n_classes = saved["module"].get("num_classes") or net.module_.eval()(torch.zeros(1, n_features(saved))).shape[1]
    net.set_params(classes=np.arange(n_classes))
    # weights_only: a state_dict of tensors, so loading runs no pickled code
    net.module_.load_state_dict(torch.load(Path(sweep_dir) / refit.BEST_MODEL, weights_only=True, map_location="cpu"))
    scaling = FunctionTransformer(data.scale_pixels, kw_args={"scaling": saved["data"]["scaling"]})
    return Pipeline([("scaling", scaling), ("net", net)])


def n_features(saved: dict) -> int:
    """How many raw features a sample of the saved model's data has (test_scores.json's, or its module's)."""
    return saved["data"].get("n_features") or saved["module"]["input_dim"]


def best_model_record(sweep_dir: str | Path) -> dict:
    """test_scores.json of a sweep folder whose refit saved best_model.pt; PredictError naming what is missing."""
    sweep_dir = Path(sweep_dir)
    scores, model = sweep_dir / refit.TEST_SCORES, sweep_dir / refit.BEST_MODEL
    if not sweep_dir.is_dir():
        raise PredictError(f"{sweep_dir}: no such sweep folder")
    if not scores.is_file() or not model.is_file():
        raise PredictError(f"{sweep_dir}: has no {refit.BEST_MODEL} and {refit.TEST_SCORES}; they are written by a multirun's refit (cv.refit=true)")
    try:
        saved = json.loads(scores.read_text())
    except (OSError, ValueError) as e:
        raise PredictError(f"{scores}: cannot be read ({e})") from None
    if saved.get("refit", {}).get("status") != "ok":
        raise PredictError(f"{scores}: the refit did not finish ({saved.get('refit', {}).get('error', 'no status')}), so there is no model")
    if "data" not in saved:  # written before test_scores.json recorded the data: the best job's own config has it
        saved["data"] = {"scaling": _scaling_of(sweep_dir / refit.BEST_CONFIG), "dataset": {}}
    return saved


def _scaling_of(best_config: Path) -> str:
    try:
        dataset = yaml.safe_load(best_config.read_text())["dataset"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PredictError(f"{best_config}: cannot tell the training's scaling ({e})") from None
    return dataset.get("scaling", "none")


def read_input(path: str | Path, n_features: int, label_column: str = "label") -> np.ndarray:
    """Raw features (n, n_features) from an .npy, .npz, .csv or IDX image file; PredictError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    try:
        X = _read(path, label_column)
    except (OSError, ValueError, EOFError, KeyError) as e:
        if isinstance(e, PredictError):
            raise
        raise PredictError(f"{path}: cannot be read ({e})") from None
    X = np.asarray(X)
    if X.ndim == 1 and X.size == n_features:
        X = X[None, :]  # one sample
    elif X.ndim >= 3:
        X = X.reshape(len(X), -1)  # images (n, 28, 28) -> (n, 784)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise PredictError(f"{path}: holds an array of shape {X.shape}; the model takes (n, {n_features}) raw features")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise PredictError(f"{path}: features must be real numbers; got {X.dtype}")
    if len(X) == 0:
        raise PredictError(f"{path}: holds no samples")
    if not np.isfinite(X).all():
        raise PredictError(f"{path}: {int((~np.isfinite(X)).sum())} features are NaN or infinite")
    return X


def _read(path: Path, label_column: str) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        head = f.read(4)
    if int.from_bytes(head, "big") == data.IDX_MAGIC[3]:  # MNIST's raw image format
        with opener(path, "rb") as f:
            raw = f.read()
        dims = np.frombuffer(raw[4:16], dtype=">u4").astype(int)
        if len(raw) != 16 + int(np.prod(dims)):
            raise PredictError(f"{path}: {len(raw)} bytes, but its IDX header promises {16 + int(np.prod(dims))}; the file is truncated or corrupted")
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(dims)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            if "X" in arrays.files:
                return arrays["X"]
            if len(arrays.files) == 1:
                return arrays[arrays.files[0]]
            raise PredictError(f"{path}: has arrays {', '.join(arrays.files) or 'none'}; expected X, or a single array")
    if path.suffix == ".csv":
        table = pd.read_csv(path, header=None)
        try:  # a header row, or the first sample?
            table.iloc[0].astype(float)
        except ValueError:
            table = pd.read_csv(path)
        return table.drop(columns=[label_column], errors="ignore").to_numpy()
    raise PredictError(f"{path}: use an .npy, .npz or .csv file of raw features, or an IDX image file (*-images-idx3-ubyte[.gz])")


def predictions(model: Pipeline, X: np.ndarray) -> pd.DataFrame:
    """One row per sample: `prediction`, then `p_<class>` for each class."""
    proba = model.predict_proba(X)  # (n, num_classes)
    classes = model.named_steps["net"].classes_
    table = pd.DataFrame(proba, columns=[f"p_{c}" for c in classes])
    table.insert(0, "prediction", classes[proba.argmax(1)])
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder whose refit wrote best_model.pt and test_scores.json")
    parser.add_argument("input", type=Path, help="raw features: .npy, .npz, .csv, or an IDX image file")
    parser.add_argument("-o", "--output", type=Path, help="write the predictions to this .csv file (default: print them)")
    args = parser.parse_args(argv)
    try:
        if args.output is not None and args.output.suffix != ".csv":
            raise PredictError(f"-o {args.output}: give a file name ending in .csv")
        if args.output is not None and args.output.resolve() == args.input.resolve():
            raise PredictError(f"-o {args.output}: is the input; give another file")
        saved = best_model_record(args.sweep_dir)
        X = read_input(args.input, n_features(saved), saved["data"].get("dataset", {}).get("label_column", "label"))
        table = predictions(load_best(args.sweep_dir), X)
        if args.output is None:
            print(table.to_csv(index=False, float_format="%.4f"), end="")
        else:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            store.atomic_write(args.output, table.to_csv(index=False, float_format="%.6g"))
            print(f"{len(table)} predictions -> {args.output}")
    except PredictError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"Error: {e.filename or args.output}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
