import numpy as np
import pytest
import torch
from sklearn.model_selection import PredefinedSplit, RepeatedStratifiedKFold, StratifiedKFold

from src.seeding import fit_generator, split_of, split_test_fold


def test_test_fold_reproduces_the_splitters_folds():
    """scikit-learn's PredefinedSplit over our test_fold gives back the splitter's own folds, in order."""
    y = np.arange(60) % 4
    X = np.zeros((60, 1))
    cv = StratifiedKFold(3, shuffle=True, random_state=5)
    for (train_a, test_a), (train_b, test_b) in zip(cv.split(X, y), PredefinedSplit(split_test_fold(cv, X, y)).split()):
        np.testing.assert_array_equal(train_a, train_b)
        np.testing.assert_array_equal(test_a, test_b)


def test_split_of_a_training_set_is_the_fold_it_leaves_out():
    y = np.arange(90) % 3
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    test_fold = split_test_fold(cv, np.zeros((90, 1)), y)
    for k, (train, _) in enumerate(cv.split(np.zeros((90, 1)), y)):
        assert split_of(test_fold[train]) == (None, k)
    assert split_of(test_fold) == (None, 5)  # all the data: GridSearchCV's refit


def test_repeated_splits_are_named_by_repeat_and_fold():
    """Under scikit-learn's RepeatedStratifiedKFold, split s is (repeat s // k, fold s % k), each column of test_fold
    is one repeat's PredefinedSplit, and all the data is the refit's fit K."""
    y = np.arange(90) % 3
    X = np.zeros((90, 1))
    cv = RepeatedStratifiedKFold(n_splits=3, n_repeats=4, random_state=0)
    test_fold = split_test_fold(cv, X, y)
    assert test_fold.shape == (90, 4)
    for s, (train, test) in enumerate(cv.split(X, y)):
        assert split_of(test_fold[train]) == (s // 3, s % 3)
        assert set(test_fold[test, s // 3]) == {s % 3}
    assert split_of(test_fold) == (0, 3)
    first = split_test_fold(StratifiedKFold(3, shuffle=True, random_state=0), X, y)
    np.testing.assert_array_equal(test_fold[:, 0], first)  # repeat 0 is the split of cv.repeats=1


def test_generators_are_independent_per_split_and_repeatable():
    def draw(seed, fold, repeat=None):
        return torch.rand(5, generator=fit_generator(seed, fold, repeat))

    assert torch.equal(draw(0, 1), draw(0, 1))
    assert not torch.equal(draw(0, 0), draw(0, 1))
    assert not torch.equal(draw(0, 0), draw(1, 0))
    assert not torch.equal(draw(0, None), draw(0, 0))
    assert torch.equal(draw(0, 1, 0), draw(0, 1)) and torch.equal(draw(0, 1, None), draw(0, 1))  # repeat 0: today's streams
    assert not torch.equal(draw(0, 1, 1), draw(0, 1)) and not torch.equal(draw(0, 1, 1), draw(0, 1, 2))


@pytest.mark.parametrize("seed", [0, 3])
def test_fold_keeps_its_stream_under_repeats(seed):
    """With cv.repeats=1 a fit's numbers are today's, bit for bit: the same (seed, fold) SeedSequence."""
    state = np.random.SeedSequence(seed, spawn_key=(2,)).generate_state(2, dtype=np.uint32)
    reference = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    assert torch.equal(torch.rand(4, generator=fit_generator(seed, 2, 0)), torch.rand(4, generator=reference))
