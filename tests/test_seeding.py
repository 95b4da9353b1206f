import numpy as np
import torch
from sklearn.model_selection import PredefinedSplit, StratifiedKFold

from src.seeding import fit_generator, fold_of, split_test_fold


def test_test_fold_reproduces_the_splitters_folds():
    """scikit-learn's PredefinedSplit over our test_fold gives back the splitter's own folds, in order."""
    y = np.arange(60) % 4
    X = np.zeros((60, 1))
    cv = StratifiedKFold(3, shuffle=True, random_state=5)
    for (train_a, test_a), (train_b, test_b) in zip(cv.split(X, y), PredefinedSplit(split_test_fold(cv, X, y)).split()):
        np.testing.assert_array_equal(train_a, train_b)
        np.testing.assert_array_equal(test_a, test_b)


def test_fold_of_a_training_set_is_the_fold_it_leaves_out():
    y = np.arange(90) % 3
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    test_fold = split_test_fold(cv, np.zeros((90, 1)), y)
    for k, (train, _) in enumerate(cv.split(np.zeros((90, 1)), y)):
        assert fold_of(test_fold[train]) == k
    assert fold_of(test_fold) == 5  # all the data: GridSearchCV's refit


def test_generators_are_independent_per_fold_and_repeatable():
    draw = lambda seed, fold: torch.rand(5, generator=fit_generator(seed, fold))  # noqa: E731
    assert torch.equal(draw(0, 1), draw(0, 1))
    assert not torch.equal(draw(0, 0), draw(0, 1)) and not torch.equal(draw(0, 0), draw(1, 0))
    assert not torch.equal(draw(0, None), draw(0, 0))
