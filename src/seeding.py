"""Every fit's randomness: one torch.Generator per (seed, repeat, fold), and how a fit knows its split.

A fit draws its initial weights (layer by layer, weight then bias) and then one permutation per
epoch from its own generator, on the CPU. Both engines draw the same numbers in the same order,
so "the same fit" means the same thing in the GridSearchCV path and the fused engine, on any device.

A split is (repeat, fold): cross-validation with cv.repeats > 1 (scikit-learn's
RepeatedStratifiedKFold) tests each sample once per repeat. A fit learns its split from the
`test_fold` of its training rows, which GridSearchCV slices out of the search's fit parameters:
one column per repeat, as scikit-learn's PredefinedSplit has it for one.
"""
import inspect

import numpy as np
import torch


def fit_generator(seed: int, fold: int | None = None, repeat: int | None = None) -> torch.Generator:
    """A CPU generator seeded from (seed, repeat, fold): numpy's SeedSequence with (fold,) as its spawn key for
    repeat 0 (or no repeats), (fold, repeat) for a later repeat, gives independent streams per split (fold None:
    the seed's own stream, for a fit outside a search)."""
    spawn_key = () if fold is None else (fold,) if not repeat else (fold, repeat)
    state = np.random.SeedSequence(seed, spawn_key=spawn_key).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def n_repeats(cv) -> int:
    """How many times the splitter `cv` repeats its k-fold split (scikit-learn's Repeated* splitters; else 1)."""
    return int(getattr(cv, "n_repeats", 1))


def split_test_fold(cv, X, y) -> np.ndarray:
    """The fold that tests each sample (as scikit-learn's PredefinedSplit's `test_fold`), from the splitter `cv`:
    shape (n,) for a splitter without repeats, (n, repeats) for a repeated one (column r: repeat r's folds)."""
    repeats = n_repeats(cv)
    out = np.full((len(y), repeats), -1, dtype=np.int64)
    splits = list(cv.split(X, y))
    folds = len(splits) // repeats
    for s, (_, test) in enumerate(splits):
        out[test, s // folds] = s % folds
    return out[:, 0] if repeats == 1 else out


def split_of(train_test_fold: np.ndarray) -> tuple[int | None, int]:
    """(repeat, fold) of the fit whose training rows have this `test_fold` (repeat None without repeats).

    The training rows of fold k are every fold's test rows but k's, so k is the smallest fold number
    missing among them; a fit on all the data (GridSearchCV's refit) gets K, the number of folds. With
    repeats, the fit's repeat is the first column that misses a fold (two repeats that drew the very
    same fold have the same training rows, hence the same fit).
    """
    test_fold = np.asarray(train_test_fold)
    if test_fold.ndim == 1:
        return None, _missing(set(np.unique(test_fold).tolist()))
    present = [set(np.unique(test_fold[:, r]).tolist()) for r in range(test_fold.shape[1])]
    folds = max(len(p) for p in present)
    for r, p in enumerate(present):
        if len(p) < folds:
            return r, _missing(p)
    return 0, folds  # all the data


def _missing(present: set[int]) -> int:
    return next(k for k in range(len(present) + 1) if k not in present)


def takes_generator(module: type | torch.nn.Module) -> bool:
    """Whether the module class takes a `generator` keyword (NeuralNet's and CNN's: they draw their init from it)."""
    if not isinstance(module, type):
        return False
    try:
        return "generator" in inspect.signature(module).parameters
    except (TypeError, ValueError):  # a signature Python cannot read
        return False
