"""The cross-validated grid search: scikit-learn's GridSearchCV over the skorch estimator."""
from sklearn.model_selection import GridSearchCV, StratifiedKFold


def build_search(
    estimator,
    param_grid: dict[str, list],
    *,
    folds: int = 3,
    shuffle: bool = True,
    seed: int = 0,
    scoring: list[str] | tuple[str, ...] = ("accuracy",),
    verbose: int = 0,
) -> GridSearchCV:
    """GridSearchCV with stratified, seeded folds and named metrics (columns like split0_test_accuracy).

    refit=False: a sweep compares candidates; it does not need a model trained on all the data.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"cv.folds={folds!r} must be an integer >= 2")
    cv = StratifiedKFold(n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None)
    return GridSearchCV(
        estimator,
        param_grid,
        cv=cv,
        scoring=list(scoring),
        refit=False,
        return_train_score=True,
        error_score="raise",
        verbose=verbose,
    )
