"""Is the best candidate really better? Paired statistics on the per-split scores of cross-validation.

Every candidate of a sweep is scored on the same splits, so the comparison of two candidates is
paired: their per-split differences. Training sets overlap between splits, which makes a naive
paired t-test over-confident; Nadeau and Bengio's correction widens its variance by n_test/n_train.
Two views of the same corrected statistics, as in scikit-learn's example "Statistical comparison of
models using grid search" (examples/model_selection/plot_grid_search_stats.py):

- the corrected resampled t-test: one-sided p that the best is better than the other, Holm-corrected
  over the comparisons;
- the Bayesian correlated t-test (Benavoli et al., JMLR 2017; the `baycomp` package's
  CorrelatedTTest): the posterior of the mean difference is a Student t with k*r - 1 degrees of
  freedom, the observed mean as location and the corrected standard deviation as scale. It gives
  P(best better), P(practically equivalent: within +-rope) and P(other better).

The verdict, at `confidence`: `worse` when P(best better) >= confidence, `equivalent` when
P(within rope) >= confidence, else `undecided`. For an undecided pair, the hint is the smallest
cv.repeats at which the same observed mean and variance would decide it; the correction's n_test/n_train
term does not shrink with repeats, so some pairs no number of repeats can decide.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from src import results

DEFAULTS = {"rope": 0.01, "confidence": 0.95}  # conf/compare/paired.yaml holds the same (tests/test_compare.py checks)
MOST_REPEATS = 100  # the largest cv.repeats the hint considers
# The keys of a job's config that decide its splits: candidates that agree on them were tested on the same rows.
SPLIT_KEYS = ("dataset", "data_fingerprint", "seed", "cv.folds", "cv.repeats", "cv.shuffle")


def corrected_std(differences: np.ndarray, ratio: float) -> np.ndarray | float:
    """Nadeau and Bengio's corrected standard deviation of the mean of k*r paired differences (the last axis);
    `ratio` is n_test / n_train of a split (1 / (k - 1) for k folds)."""
    d = np.asarray(differences, dtype=float)
    return np.sqrt(np.var(d, axis=-1, ddof=1) * (1 / d.shape[-1] + ratio))


def corrected_ttest(differences: np.ndarray, ratio: float) -> tuple[float, float]:
    """(t, p): the corrected resampled t-statistic of the differences (first minus second) and its
    one-sided p-value that the first is better, with k*r - 1 degrees of freedom."""
    row = _statistics(np.asarray(differences, dtype=float)[None, :], ratio, rope=0.0)[0]
    return float(row[3]), float(row[4])


def probabilities(differences: np.ndarray, ratio: float, rope: float) -> tuple[float, float, float]:
    """(P(first better), P(equivalent within +-rope), P(second better)) under the Bayesian correlated
    t-test's posterior of the mean difference (baycomp's convention: better means by more than rope)."""
    row = _statistics(np.asarray(differences, dtype=float)[None, :], ratio, rope)[0]
    return float(row[6]), float(row[7]), float(row[8])


def interval(differences: np.ndarray, ratio: float) -> tuple[float, float]:
    """The central 95% interval of the mean difference (the posterior's credible interval, which is also the
    corrected t-test's confidence interval)."""
    row = _statistics(np.asarray(differences, dtype=float)[None, :], ratio, rope=0.0)[0]
    return float(row[1]), float(row[2])


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (as statsmodels' multipletests(method="holm") gives them)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def verdict(p_best_better: float, p_equivalent: float, confidence: float) -> str:
    """worse | equivalent | undecided, for a candidate compared with the best."""
    if p_best_better >= confidence:
        return "worse"
    if p_equivalent >= confidence:
        return "equivalent"
    return "undecided"


def repeats_to_decide(differences: np.ndarray, folds: int, rope: float, confidence: float) -> int | None:
    """The smallest cv.repeats with which the observed mean and variance of the differences would give a
    verdict, or None if no number up to MOST_REPEATS would (the corrected variance keeps its n_test/n_train
    term however many repeats: more folds or more data are then the way)."""
    mean, var = float(np.mean(differences)), float(np.var(differences, ddof=1))
    repeats = np.arange(1, MOST_REPEATS + 1)
    repeats = repeats[folds * repeats >= 2]
    if var == 0:
        return int(repeats[0])
    n = folds * repeats  # every candidate number of repeats at once: one scipy call each, not 3 per repeat (40 s for 500 candidates)
    scale = np.sqrt(var * (1 / n + 1 / (folds - 1)))
    better = stats.t.sf(rope, n - 1, loc=mean, scale=scale)
    within = stats.t.cdf(rope, n - 1, loc=mean, scale=scale) - stats.t.cdf(-rope, n - 1, loc=mean, scale=scale)
    decided = (better >= confidence) | (within >= confidence)  # verdict() is not undecided
    return int(repeats[np.argmax(decided)]) if decided.any() else None


def _statistics(d: np.ndarray, ratio: float, rope: float) -> np.ndarray:
    """The statistics of each row of differences d (candidates, splits), at once: columns mean_difference,
    ci_low, ci_high (95%), t, p (corrected t-test, one-sided), p_holm (NaN: filled in by the caller),
    P(best better), P(equivalent), P(other better) (Bayesian correlated t-test). Where every split differs by
    the same amount the posterior is a point: certain, or (all zero) no evidence either way (as baycomp has it)."""
    n = d.shape[1]
    mean = d.mean(axis=1)
    scale = corrected_std(d, ratio)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(scale > 0, mean / scale, np.where(mean == 0, 0.0, np.copysign(np.inf, mean)))
    p = stats.t.sf(t, n - 1)
    spread = np.where(scale > 0, scale, 1.0)  # scipy wants a positive scale; the rows without spread are set below
    low, high = stats.t.interval(0.95, n - 1, loc=mean, scale=spread)
    first, second = stats.t.sf(rope, n - 1, loc=mean, scale=spread), stats.t.cdf(-rope, n - 1, loc=mean, scale=spread)
    still = scale == 0
    low, high = np.where(still, mean, low), np.where(still, mean, high)
    first, second = np.where(still, (mean > rope).astype(float), first), np.where(still, (mean < -rope).astype(float), second)
    return np.column_stack([mean, low, high, t, p, np.full(len(d), np.nan), first, 1.0 - first - second, second])


def split_key(config: dict) -> str | None:
    """What decides a job's splits (SPLIT_KEYS of its resolved config), as a string; None without a config."""
    if not config:
        return None
    values = {}
    for key in SPLIT_KEYS:
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values[key] = node
    return json.dumps(values, sort_keys=True, default=str)


def compare(df: pd.DataFrame, rope: float = DEFAULTS["rope"], confidence: float = DEFAULTS["confidence"],
            configs: list[dict] | None = None, folds: int | None = None) -> pd.DataFrame:
    """One row per row of `df` (cv_results_ form): each scored candidate against the best on the first metric.

    `configs`: each row's resolved config (job.json's), which tells its splits (split_key) and folds; without
    them every row counts as tested on the same splits. `folds`: the k of the k-fold split (default: the
    best's cv.folds, else the number of split columns: no repeats). Only candidates
    tested on the best's splits are compared; unscored ones (failed, diverged) and ones on other splits get
    no verdict.
    """
    df = df.reset_index(drop=True)
    metric = results.metric_names(df)[0]
    mean, rank = f"mean_test_{metric}", f"rank_test_{metric}"
    columns = [c for c in df.columns if c.startswith("split") and c.endswith(f"_test_{metric}")]
    scores = df[columns].to_numpy(dtype=float)
    status = df["status"].tolist() if "status" in df else ["ok"] * len(df)
    scored = [i for i in range(len(df)) if status[i] == "ok" and np.isfinite(df[mean].iloc[i])]
    out = pd.DataFrame({"params": df["params"].tolist()})
    if "sweep" in df:
        out["sweep"] = df["sweep"].tolist()
    out[mean], out[rank], out["status"] = df[mean].to_numpy(dtype=float), df[rank].tolist(), status
    stat_columns = ["mean_difference", "ci_low", "ci_high", "t", "p", "p_holm", "p_best_better", "p_equivalent", "p_other_better"]
    for c in stat_columns:
        out[c] = np.nan
    out["verdict"], out["repeats_to_decide"], out["note"] = None, None, None
    out["metric"], out["rope"], out["confidence"] = metric, rope, confidence
    if not scored:
        return out
    best = min(scored, key=lambda i: (df[rank].iloc[i], i))  # GridSearchCV's best_index_: the first of the best rank
    keys = [split_key(c) for c in configs] if configs is not None else [None] * len(df)
    on_best = [i for i in scored if keys[i] == keys[best]]
    used = np.isfinite(scores[best])  # a merge of sweeps with other fold counts leaves NaN columns
    if folds is None and configs is not None:
        folds = ((configs[best] or {}).get("cv") or {}).get("folds")
    folds = folds or int(used.sum())
    ratio = 1 / (folds - 1)  # n_test / n_train of a k-fold split, as baycomp's CorrelatedTTest has it
    out.loc[best, ["mean_difference", "ci_low", "ci_high"]] = 0.0
    out.at[best, "verdict"] = "best"
    others = [i for i in on_best if i != best]
    if others:
        d = scores[best, used] - scores[others][:, used]  # (candidates, splits): the best minus each
        out.loc[others, stat_columns] = _statistics(d, ratio, rope)
        out.loc[others, "p_holm"] = holm(out.loc[others, "p"].to_numpy())
        for row, i in enumerate(others):
            out.at[i, "verdict"] = verdict(out.at[i, "p_best_better"], out.at[i, "p_equivalent"], confidence)
            if out.at[i, "verdict"] == "undecided":
                out.at[i, "repeats_to_decide"] = repeats_to_decide(d[row], folds, rope, confidence)
    for i in sorted(set(scored) - set(on_best)):
        out.at[i, "note"] = "cross-validated on other splits than the best (seed, data, folds or repeats differ): no verdict"
    for i in sorted(set(range(len(df))) - set(scored)):
        out.at[i, "note"] = f"{status[i]}: no scores, no verdict"
    return out


def verdict_line(comparison: pd.DataFrame) -> str:
    """One plain line for under the ranked table: the best, then who is equivalent, worse or undecided
    (each named by its `candidate` label)."""
    labels = comparison["candidate"].tolist() if "candidate" in comparison else [f"candidate {i}" for i in range(len(comparison))]
    metric = comparison["metric"].iloc[0] if len(comparison) else "score"
    best = comparison.index[comparison["verdict"] == "best"]
    if not len(best):
        return "No comparison: no candidate was scored."
    b = best[0]
    line = f"Best {labels[b]} {comparison.at[b, f'mean_test_{metric}']:.4f}"
    compared = comparison[comparison["verdict"].isin(["worse", "equivalent", "undecided"])]
    if compared.empty:
        return line + " · no other candidate was scored on the same splits: no comparison"
    rope = comparison["rope"].iloc[0]
    parts = {
        "equivalent": (f"equivalent within ±{rope:g}", "p_equivalent"),
        "worse": ("worse", "p_best_better"),
    }
    for name, (title, prob) in parts.items():
        rows = compared[compared["verdict"] == name]
        if len(rows):
            line += f" · {title}: " + ", ".join(f"{labels[i]} (P={rows.at[i, prob]:.2f})" for i in rows.index)
    undecided = compared[compared["verdict"] == "undecided"]
    if len(undecided):
        names = ", ".join(labels[i] for i in undecided.index)
        needed = [r for r in undecided["repeats_to_decide"] if r is not None and not pd.isna(r)]
        unreachable = len(needed) < len(undecided)
        hint = f"run cv.repeats={int(max(needed))} to decide" if needed else ""
        if unreachable:
            hint += ("; " if hint else "") + "more repeats alone cannot decide " + ("some" if needed else "them") + \
                    ": more folds or more data, or a wider compare.rope"
        line += f" · undecided: {names} ({hint})"
    skipped = comparison["note"].dropna()
    other = [i for i in skipped.index if "other splits" in skipped[i]]
    if other:
        line += f" · no verdict for {len(other)} candidate{'s' * (len(other) != 1)} on other splits"
    return line


def settings(results_dir: Path) -> dict:
    """The `compare` settings a results folder was run with (its multirun.yaml, or a run's .hydra/config.yaml),
    else DEFAULTS."""
    results_dir = Path(results_dir)
    for path in (results_dir / "multirun.yaml", results_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            try:
                node = (yaml.safe_load(path.read_text()) or {}).get("compare")
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(node, dict):
                return {k: float(node.get(k, v)) for k, v in DEFAULTS.items()}
    return dict(DEFAULTS)
