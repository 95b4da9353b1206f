"""Every fit's randomness: one torch.Generator per (seed, fold), and how a fit knows its fold.

A fit draws its initial weights (layer by layer, weight then bias) and then one permutation per
epoch from its own generator, on the CPU. Both engines draw the same numbers in the same order,
so "the same fit" means the same thing in the GridSearchCV path and the fused engine, on any device.
"""
import numpy as np
import torch


def fit_generator(seed: int, fold: int | None = None) -> torch.Generator:
    """A CPU generator seeded from (seed, fold): numpy's SeedSequence with the fold as its spawn key gives
    independent streams per fold (fold None: the seed's own stream, for a fit outside a search)."""
    spawn_key = () if fold is None else (fold,)
    state = np.random.SeedSequence(seed, spawn_key=spawn_key).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def split_test_fold(cv, X, y) -> np.ndarray:
    """The fold that tests each sample (as scikit-learn's PredefinedSplit's `test_fold`), from the splitter `cv`."""
    out = np.full(len(y), -1, dtype=np.int64)
    for k, (_, test) in enumerate(cv.split(X, y)):
        out[test] = k
    return out


def fold_of(train_test_fold: np.ndarray) -> int:
    """Which fit a training set belongs to, from the `test_fold` of its rows.

    The training rows of fold k are every fold's test rows but k's, so k is the smallest fold number
    missing among them; a fit on all the data (GridSearchCV's refit) gets K, the number of folds.
    """
    present = set(np.unique(np.asarray(train_test_fold)).tolist())
    return next(k for k in range(len(present) + 1) if k not in present)
