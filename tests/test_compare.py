"""src.compare against references someone else wrote: scikit-learn's statistics example, baycomp, statsmodels."""
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import t as student_t
from sklearn.datasets import make_moons
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold
from sklearn.svm import SVC

from src import compare, store
from src.config import CONF_DIR


# --- scikit-learn's example "Statistical comparison of models using grid search"
# (examples/model_selection/plot_grid_search_stats.py), its formulas copied as the reference ---
def example_corrected_std(differences, n_train, n_test):
    kr = len(differences)
    corrected_var = np.var(differences, ddof=1) * (1 / kr + n_test / n_train)
    return np.sqrt(corrected_var)


def example_corrected_ttest(differences, df, n_train, n_test):
    mean = np.mean(differences)
    std = example_corrected_std(differences, n_train, n_test)
    t_stat = mean / std
    p_val = student_t.sf(np.abs(t_stat), df)  # right-tailed t-test
    return t_stat, p_val


@pytest.fixture(scope="module")
def example_search():
    """The example's data, grid and 10 x 10 repeated splits, scored by scikit-learn as the example does."""
    X, y = make_moons(noise=0.352, random_state=1, n_samples=100)
    param_grid = [{"kernel": ["linear"]}, {"kernel": ["poly"], "degree": [2, 3]}, {"kernel": ["rbf"]}]
    cv = RepeatedStratifiedKFold(n_splits=10, n_repeats=10, random_state=0)
    search = GridSearchCV(estimator=SVC(random_state=0), param_grid=param_grid, scoring="roc_auc", cv=cv).fit(X, y)
    results_df = pd.DataFrame(search.cv_results_).sort_values(by=["rank_test_score"])
    model_scores = results_df.filter(regex=r"split\d*_test_score").to_numpy()
    train, test = next(cv.split(X, y))
    return search, model_scores, len(train), len(test)


def test_corrected_ttest_reproduces_scikit_learns_example(example_search):
    _, scores, n_train, n_test = example_search
    for other in range(1, len(scores)):
        differences = scores[0] - scores[other]
        t_ref, p_ref = example_corrected_ttest(differences, len(differences) - 1, n_train, n_test)
        t, p = compare.corrected_ttest(differences, n_test / n_train)
        assert t == pytest.approx(t_ref, abs=1e-6) and p == pytest.approx(p_ref, abs=1e-6)


def test_posterior_reproduces_scikit_learns_example(example_search):
    _, scores, n_train, n_test = example_search
    differences = scores[0] - scores[1]
    t_post = student_t(len(differences) - 1, loc=np.mean(differences), scale=example_corrected_std(differences, n_train, n_test))
    better_prob = 1 - t_post.cdf(0)
    rope_prob = t_post.cdf(0.01) - t_post.cdf(-0.01)
    assert compare.probabilities(differences, n_test / n_train, rope=0)[0] == pytest.approx(better_prob, abs=1e-6)
    first, same, second = compare.probabilities(differences, n_test / n_train, rope=0.01)
    assert same == pytest.approx(rope_prob, abs=1e-6)
    assert first == pytest.approx(1 - t_post.cdf(0.01), abs=1e-6) and second == pytest.approx(t_post.cdf(-0.01), abs=1e-6)
    assert compare.interval(differences, n_test / n_train) == pytest.approx(t_post.interval(0.95), abs=1e-6)


def test_compare_on_scikit_learns_cv_results_matches_the_example(example_search):
    """compare() on the example's own cv_results_ (first scorer "score"): the best against each other candidate."""
    search, scores, n_train, n_test = example_search
    df = pd.DataFrame(search.cv_results_)
    out = compare.compare(df, rope=0.01, confidence=0.95, folds=10)
    best = int(np.argmin(df["rank_test_score"]))
    assert out.at[best, "verdict"] == "best"
    for i in range(len(df)):
        if i == best:
            continue
        d = df.filter(regex=r"split\d*_test_score").to_numpy()[best] - df.filter(regex=r"split\d*_test_score").to_numpy()[i]
        t_ref, p_ref = example_corrected_ttest(d, len(d) - 1, n_train, n_test)
        assert out.at[i, "t"] == pytest.approx(t_ref, abs=1e-6) and out.at[i, "p"] == pytest.approx(p_ref, abs=1e-6)


def test_bayesian_probabilities_match_baycomp():
    baycomp = pytest.importorskip("baycomp")
    rng = np.random.default_rng(0)
    for folds, runs, shift, rope in ((3, 1, 0.004, 0.01), (3, 5, 0.02, 0.01), (10, 10, 0.0, 0.02), (5, 2, -0.01, 0.005)):
        best = 0.9 + 0.01 * rng.standard_normal(folds * runs)
        other = best - shift + 0.005 * rng.standard_normal(folds * runs)
        left, rope_p, right = baycomp.two_on_single(other, best, rope=rope, runs=runs)  # baycomp's diff: best - other
        first, same, second = compare.probabilities(best - other, 1 / (folds - 1), rope)
        assert (first, same, second) == pytest.approx((right, rope_p, left), abs=1e-9)


def test_holm_matches_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    rng = np.random.default_rng(1)
    for p in (rng.uniform(0, 0.2, 7), np.array([0.01, 0.04, 0.03, 0.5]), np.array([0.2]), np.array([0.02, 0.02, 0.9])):
        assert compare.holm(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-12)


def cv_frame(scores: np.ndarray, status: list[str] | None = None) -> pd.DataFrame:
    """cv_results_ rows for candidates with these per-split scores (rows), ranked as GridSearchCV ranks them."""
    from src.results import rank
    df = pd.DataFrame({"params": [{"c": i} for i in range(len(scores))]})
    for s in range(scores.shape[1]):
        df[f"split{s}_test_accuracy"] = scores[:, s]
    df["mean_test_accuracy"], df["std_test_accuracy"] = scores.mean(axis=1), scores.std(axis=1)
    df["rank_test_accuracy"] = 1
    df["status"] = status or ["ok"] * len(scores)
    return rank(df)


def test_the_same_candidate_twice_is_never_worse():
    """Property: a candidate listed twice (the same scores under two names) is equivalent or undecided, never worse."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = int(rng.choice([3, 6, 15, 30]))
        row = 0.85 + 0.02 * rng.standard_normal(n)
        out = compare.compare(cv_frame(np.stack([row, row])))
        assert sorted(out["verdict"]) == ["best", "equivalent"]  # zero differences: all the posterior on 0
        noisy = np.stack([row, row + 1e-4 * rng.standard_normal(n)])  # the same up to float noise
        assert set(compare.compare(cv_frame(noisy))["verdict"]) <= {"best", "equivalent", "undecided"}


def test_an_obvious_gap_is_worse_and_the_failed_get_no_verdict():
    rng = np.random.default_rng(3)
    good = 0.9 + 0.005 * rng.standard_normal(15)
    bad = 0.3 + 0.005 * rng.standard_normal(15)
    out = compare.compare(cv_frame(np.stack([bad, good, np.full(15, np.nan)]), status=["ok", "ok", "failed"]))
    assert list(out["verdict"]) == ["worse", "best", None]
    assert out.at[0, "p_best_better"] >= 0.99 and out.at[0, "p_holm"] == pytest.approx(out.at[0, "p"])
    assert out.at[0, "mean_difference"] == pytest.approx(np.mean(good - bad)) and out.at[0, "ci_low"] > 0
    assert "failed" in out.at[2, "note"]


def test_other_splits_get_no_verdict():
    rng = np.random.default_rng(4)
    scores = 0.9 + 0.01 * rng.standard_normal((3, 6)) - [[0], [0.001], [0.05]]  # row 0 best, row 2 on other splits
    configs = [{"seed": s, "cv": {"folds": 3, "repeats": 2, "shuffle": True}, "dataset": {"x": 1}} for s in (0, 0, 1)]
    out = compare.compare(cv_frame(scores), configs=configs)
    assert out["verdict"].iloc[2] is None and "other splits" in out.at[2, "note"]
    assert out["verdict"].iloc[:2].notna().all()
    out["candidate"] = ["a", "b", "c"]
    assert "no verdict for 1 candidate on other splits" in compare.verdict_line(out)


def test_hint_names_the_repeats_that_would_decide():
    """An undecided pair gets the smallest cv.repeats at which its observed mean and variance decide it; a pair
    that the n_test/n_train floor of the corrected variance keeps undecided gets none."""
    rng = np.random.default_rng(5)
    folds = 3
    d = 0.03 + 0.01 * rng.standard_normal(folds)  # a clear gap, but only 3 splits
    needed = compare.repeats_to_decide(d, folds, rope=0.01, confidence=0.95)
    assert needed is not None and needed >= 1
    n = folds * needed
    scale = math.sqrt(np.var(d, ddof=1) * (1 / n + 1 / (folds - 1)))
    assert student_t(n - 1, loc=np.mean(d), scale=scale).sf(0.01) >= 0.95
    if needed > 1:
        n = folds * (needed - 1)
        scale = math.sqrt(np.var(d, ddof=1) * (1 / n + 1 / (folds - 1)))
        assert student_t(n - 1, loc=np.mean(d), scale=scale).sf(0.01) < 0.95
    assert compare.repeats_to_decide(np.array([0.0, 0.02, -0.02]), folds, rope=0.01, confidence=0.95) is None


def test_verdict_line_names_each_group():
    rng = np.random.default_rng(6)
    base = 0.9 + 0.003 * rng.standard_normal(15)
    scores = np.stack([base, base - 0.3 + 0.003 * rng.standard_normal(15), base - 0.0005, base - 0.008 + 0.01 * rng.standard_normal(15)])
    out = compare.compare(cv_frame(scores))
    out["candidate"] = ["A", "B", "C", "D"]
    line = compare.verdict_line(out)
    assert line.startswith("Best A 0.9")
    assert "worse: B (P=1.00)" in line and "equivalent within ±0.01: C" in line
    assert list(out["verdict"]) == ["best", "worse", "equivalent", "undecided"] and "undecided: D" in line


def test_defaults_match_the_config_group():
    assert yaml.safe_load((CONF_DIR / "compare" / "paired.yaml").read_text()) == compare.DEFAULTS


def test_a_sweep_prints_verdicts_and_writes_the_comparison_and_the_best_config(tmp_path):
    """Through the CLI: module.num_units=2 against 256 with repeated CV is `worse` with P >= 0.99, shown in the table,
    the line under it, comparison.csv, the HiPlot page and the summary figure; best_config.yaml reruns the best."""
    import json

    from conftest import run_here

    sweep = tmp_path / "s"
    args = ["module.num_units=2,256", "cv.repeats=2", "dataset.limit=600", "train.max_epochs=4", "optimizer=adam",
            "train.verbose=quiet", "cv.refit=false"]
    proc = run_here(*args, f"hydra.sweep.dir={sweep}", "-m")
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout[proc.stdout.index("2 candidates, ranked"):]
    header, best_row, worse_row = table.splitlines()[1:4]
    assert "verdict" in header.split() and "best" in best_row.split() and "worse" in worse_row.split()
    line = next(x for x in table.splitlines() if x.startswith("Best "))
    assert line.startswith("Best 784-256-128-10 0.") and "worse: 784-2-1-10 (P=" in line
    comparison = pd.read_csv(sweep / "comparison.csv")
    worse = comparison[comparison["verdict"] == "worse"].iloc[0]
    assert json.loads(worse["params"]) == {"module__num_units": 2} and worse["p_best_better"] >= 0.99
    assert worse["ci_low"] > 0 and worse["rope"] == 0.01 and worse["confidence"] == 0.95
    assert "verdict" in (sweep / "hiplot.html").read_text() and "difference to the best" in (sweep / "summary.svg").read_text()
    assert list(store.read_cv_results(sweep).columns) == list(store.read_cv_results(sweep / "1").columns)  # the schema unchanged
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"module.num_units": 256} and best["best_job"] == "1"
    rerun = run_here("--config-path", str(sweep), "--config-name", "best_config", f"hydra.run.dir={tmp_path / 'rerun'}")
    assert rerun.returncode == 0, rerun.stderr
    splits = [f"split{s}_test_accuracy" for s in range(6)]
    pd.testing.assert_frame_equal(store.read_cv_results(tmp_path / "rerun")[splits], store.read_cv_results(sweep / "1")[splits])


def test_a_merge_compares_only_sweeps_on_the_same_splits(tiny_sweep, second_sweep, tmp_path):
    """src.report A B: the candidates of a sweep with another seed (other splits) get no verdict, said in one line;
    the same sweep merged with itself is compared across both (a candidate against its own copy: equivalent)."""
    from conftest import run_here

    other = second_sweep
    proc = run_here(str(tiny_sweep), str(other), "-o", str(tmp_path / "ab.html"), module="src.report")
    assert proc.returncode == 0, proc.stderr
    comparison = pd.read_csv(tmp_path / "ab_comparison.csv")
    assert comparison["verdict"].notna().sum() == 3 and comparison["verdict"].isna().sum() == 2
    assert "no verdict for 2 candidates on other splits" in proc.stdout
    same = run_here(str(tiny_sweep), str(tiny_sweep), "-o", str(tmp_path / "same.html"), "--rope", "0.05", module="src.report")
    assert same.returncode == 0, same.stderr
    both = pd.read_csv(tmp_path / "same_comparison.csv")
    assert both["verdict"].notna().all() and (both["rope"] == 0.05).all()
    best = both[both["verdict"] == "best"].iloc[0]
    twin = both[(both["params"] == best["params"]) & (both["verdict"] != "best")].iloc[0]
    assert twin["verdict"] == "equivalent" and twin["mean_difference"] == 0
    bad = run_here(str(tiny_sweep), "--confidence", "1.5", module="src.report")
    assert bad.returncode == 2 and "--confidence 1.5: must be between 0.5 and 1" in bad.stderr and "Traceback" not in bad.stderr


def test_every_candidate_but_one_failed_gives_no_comparison():
    rng = np.random.default_rng(7)
    scores = np.stack([0.9 + 0.01 * rng.standard_normal(3), np.full(3, np.nan), np.full(3, np.nan)])
    out = compare.compare(cv_frame(scores, status=["ok", "failed", "diverged"]))
    assert list(out["verdict"]) == ["best", None, None]
    out["candidate"] = ["A", "B", "C"]
    assert compare.verdict_line(out) == f"Best A {out.at[0, 'mean_test_accuracy']:.4f} · no other candidate was scored on the same splits: no comparison"
    failed = compare.compare(cv_frame(np.full((2, 3), np.nan), status=["failed", "failed"]))
    assert failed["verdict"].isna().all() and compare.verdict_line(failed) == "No comparison: no candidate was scored."
