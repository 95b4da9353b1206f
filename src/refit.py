"""GridSearchCV's refit, after a sweep: the best candidate trained on the whole training split, scored on
held-out data it never saw, and saved.

A sweep's jobs each cross-validate one candidate, so the refit runs once at the end (src.callbacks),
as GridSearchCV(refit=True) would: the candidate ranked first by the first metric of cv.scoring is
cloned and fitted on all the cross-validation data (its generator is the (seed, K) one, K the number
of folds: src.seeding), then scored with the same scorers on the held-out set (src.data.load_test).
Beside the sweep's aggregate, write_best() writes, with or without the refit:
- best_config.yaml: the best job's whole composed config, as a Hydra primary config over conf/, so that
  `python -m src.sweep --config-path <sweep folder> --config-name best_config` reruns that candidate;
- optimization_results.yaml: best_params (the swept keys, as overrides), best_value, the job and its
  folder, in the form of Hydra's Optuna sweeper's file of that name.
The refit writes:
- best_model.pt: the fitted NeuralNet's state_dict (skorch's save_params), loadable with
  torch.load(..., weights_only=True);
- test_scores.json: the candidate, its CV and held-out scores, what its NeuralNet needs to be rebuilt, and
  what its inputs need (`data`: scaling, seed, test_size, the data fingerprint, the data set's config);
  src.predict.load_best() reads it back;
- confusion_matrix.png: scikit-learn's ConfusionMatrixDisplay of the held-out predictions.
"""
import hashlib
import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import ConfusionMatrixDisplay, check_scoring

from src import config, data, engine, figures, job, model, results, store
from src.estimator import Diverged
from src.identity import job_key

log = logging.getLogger(__name__)

BEST_MODEL = "best_model.pt"
BEST_CONFIG = "best_config.yaml"
OPTIMIZATION_RESULTS = "optimization_results.yaml"
TEST_SCORES = "test_scores.json"
CONFUSION_MATRIX = "confusion_matrix.png"


def best_job(results_dir: Path) -> tuple[Path, dict, pd.DataFrame] | None:
    """The finished, scored job ranked first by the first metric (GridSearchCV's best_index_): its folder,
    job.json record and cv_results row."""
    results_dir = Path(results_dir)
    best, best_score = None, -np.inf
    for found in store.read_jobs(results_dir):
        if found.record["status"] != "ok":  # failed or diverged: no scores
            continue
        row = store.rows_frame(found.rows)
        score = row[f"mean_test_{results.metric_names(row)[0]}"][0]
        if score > best_score:  # the first of equals, as rank "min" and best_index_ have it
            best, best_score = (found.dir, found.record, row), score
    return best


def write_best(results_dir: Path) -> Path | None:
    """Write best_config.yaml and optimization_results.yaml for the best job of a sweep folder; returns the
    best job's folder (None, writing nothing, when no job finished with scores)."""
    results_dir = Path(results_dir)
    found = best_job(results_dir)
    if found is None or found[0] == results_dir:
        return None
    best, record, row = found
    try:
        composed = yaml.safe_load((best / ".hydra" / "config.yaml").read_text())  # the job's own config, as Hydra composed it
        choices = yaml.safe_load((best / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        log.warning(f"best config: {best / '.hydra'} cannot be read ({type(e).__name__}: {e}); no {BEST_CONFIG} written")
        return None
    # conf/config.yaml's own groups are overridden to the job's choices (else the default option's keys would
    # merge with the job's); groups the job added (+logger=...) need no entry: their values are in the config
    groups = [next(iter(d)) for d in yaml.safe_load((config.CONF_DIR / "config.yaml").read_text())["defaults"]
              if isinstance(d, dict) and "/" not in next(iter(d)) and not next(iter(d)).startswith("override")]
    defaults = ["config", *({f"override {g}": choices[g]} for g in groups if choices.get(g)), "_self_"]
    best_config = {"defaults": defaults, "hydra": {"searchpath": [f"file://{config.CONF_DIR}"]}, **composed}
    header = (f"# The best candidate of {results_dir} (job {best.name}), as a Hydra config over this project's conf/. Rerun it with\n"
              f"#   python -m src.sweep --config-path {results_dir.absolute()} --config-name {Path(BEST_CONFIG).stem}\n")
    store.atomic_write(results_dir / BEST_CONFIG, header + yaml.safe_dump(best_config, sort_keys=False))
    swept, _ = job.multirun_facts(results_dir / "multirun.yaml") if (results_dir / "multirun.yaml").is_file() else (frozenset(), None)
    metric = results.metric_names(row)[0]
    best_params = {}
    for key in sorted(swept):
        if key in choices:
            best_params[key] = choices[key]
            continue
        node = record["config"]
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        best_params[key] = node
    optimization = {"name": "mlp-sweep", "best_params": best_params, "best_value": float(row[f"mean_test_{metric}"][0]),
                    "metric": f"mean_test_{metric}", "best_job": best.name, "best_job_dir": str(best)}
    store.atomic_write(results_dir / OPTIMIZATION_RESULTS, yaml.safe_dump(optimization, sort_keys=False))
    return best


def refit_best(results_dir: Path, engine_name: str = "auto") -> dict | None:
    """Refit the best candidate of a results folder with `engine_name` (engine=), score it on the held-out set
    and save it; returns what test_scores.json holds."""
    results_dir = Path(results_dir)
    found = best_job(results_dir)
    if found is None:
        log.warning(f"refit: no candidate in {results_dir} finished with scores; nothing to refit")
        return None
    best, record, row = found
    candidate = hashlib.sha256(job_key(record["config"]).encode()).hexdigest()[:16]  # its config and data fingerprint
    # the job's identity, and the keys of it that the refit needs back
    settings = {**record["config"], "engine": engine_name, "train": {**record["config"]["train"], "verbose": "quiet"}}
    name = engine.choose(settings)
    reused = reusable(results_dir, candidate, name)
    if reused is not None:
        return reused
    refit_job = job.prepare(settings, [], {}, swept=set())
    held_out = data.load_test(settings)
    start = time.perf_counter()
    out = {"job": best.name if best != results_dir else None, "params": row["params"][0], "module": settings["module"],
           "cv": {c: float(row[c][0]) for c in row.columns if c.startswith("mean_test_")}, "refit": {"engine": name, "candidate": candidate}, "test": None,
           "data": data_record(settings, record["config"].get("data_fingerprint"), refit_job.X.shape[1])}
    try:
        engine.fit_all(refit_job, name)
    except Diverged as e:
        out["refit"].update(status="diverged", error=str(e))
        store.write_json(results_dir / TEST_SCORES, out)
        log.warning(f"refit: the best candidate ({best.name}) diverged when refit on all the training data: {e}")
        return out
    out["refit"].update(status="ok", seconds=time.perf_counter() - start, n_samples=len(refit_job.y))
    net = refit_job.search.estimator  # fit_all's net (the fused engine's predicts only)
    buffer = io.BytesIO()
    net.save_params(f_params=buffer)  # the module's state_dict
    store.atomic_write(results_dir / BEST_MODEL, buffer.getvalue())
    out["refit"]["model_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    if held_out is not None:
        X_test, y_test = held_out
        scores = check_scoring(net, scoring=list(settings["cv"]["scoring"]))(net, X_test, y_test)
        out["test"] = {"n_samples": len(y_test), **{k: float(v) for k, v in scores.items()}}
        _confusion_matrix(y_test, net.predict(X_test), results_dir / CONFUSION_MATRIX, matrix_title(out))
    store.write_json(results_dir / TEST_SCORES, out)
    return out


def reusable(results_dir: Path, candidate: str, engine_name: str) -> dict | None:
    """test_scores.json, marked reused, when its refit is of this candidate (the hash of its config and data
    fingerprint) by this engine and best_model.pt is the file it wrote (its SHA-256); else None: refit again."""
    try:
        saved = json.loads((results_dir / TEST_SCORES).read_text())
        model = (results_dir / BEST_MODEL).read_bytes()
    except (OSError, ValueError):
        return None
    refit = saved.get("refit") if isinstance(saved, dict) else None
    if not isinstance(refit, dict) or refit.get("status") != "ok" or refit.get("candidate") != candidate or refit.get("engine") != engine_name:
        return None
    if refit.get("model_sha256") != hashlib.sha256(model).hexdigest():
        return None
    if saved.get("test") is not None and not (results_dir / CONFUSION_MATRIX).is_file():
        return None
    return {**saved, "reused": True}


def data_record(settings: dict, data_fingerprint: str | None, n_features: int) -> dict:
    """What rebuilds the model's inputs: the raw features' scaling and number, and the data set, its seed, its held-out
    share and its content hash (src.data.fingerprint), so that the held-out set can be drawn again."""
    dataset = settings["dataset"]
    return {"scaling": dataset.get("scaling", "none"),  # synthetic data have no pixels to scale
            "seed": settings["seed"], "test_size": dataset.get("test_size"), "fingerprint": data_fingerprint,
            "n_features": n_features, "dataset": dataset}


def matrix_title(out: dict) -> str:
    """The confusion matrix's title: the candidate as the report names it (its architecture, and its other params),
    and its held-out scores."""
    module = out["module"]
    name = figures.module_architecture(module) or ""  # 784-256-128-10, cnn 1-8-16-10 k3, TinyNet
    # it names the MLP's and the CNN's layer params and the module; your own module's keywords (channels too) keep their own
    named = results.NAMED_BY_ARCHITECTURE if model.module_sizes(module) or module.get("_target_") == figures.CNN_TARGET else ("param_module",)
    others = {k: v for k, v in out["params"].items() if f"param_{k}" not in named}
    name += f" ({_label(others)})" if others else ""
    scores = ", ".join(f"{k} {v:.4f}" for k, v in out["test"].items() if k != "n_samples")
    return f"best candidate {name}\nheld-out {scores} on {out['test']['n_samples']} samples"


def _label(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def _confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str) -> None:
    """scikit-learn's ConfusionMatrixDisplay of the predictions, saved as a PNG (matplotlib's Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    display = ConfusionMatrixDisplay.from_predictions(y_true, y_pred, colorbar=False)
    display.ax_.set_title(title, fontsize=9)
    display.figure_.tight_layout()
    buffer = io.BytesIO()
    display.figure_.savefig(buffer, format="png", dpi=120)
    plt.close(display.figure_)
    store.atomic_write(path, buffer.getvalue())


def summary(out: dict) -> str:
    """One line for the end of a sweep: which candidate was refit and how it scored on the held-out set."""
    if out["refit"]["status"] != "ok":
        return f"refit: {_label(out['params'])} diverged on all the training data ({out['refit']['error']})"
    where = f"job {out['job']} " if out["job"] is not None else ""
    if out.get("reused"):
        scores = ", ".join(f"{k} {v:.4f}" for k, v in (out["test"] or {}).items() if k != "n_samples")
        held_out = f"; held-out {scores} on {out['test']['n_samples']} samples" if out["test"] else ""
        return (f"refit: reused {BEST_MODEL} of {where}({_label(out['params'])}): the best candidate and its data are unchanged and "
                f"the file is intact, so nothing was trained{held_out} (delete {BEST_MODEL} to refit)")
    if out["test"] is None:
        return f"refit: {where}({_label(out['params'])}) on {out['refit']['n_samples']} samples -> {BEST_MODEL}; no held-out set"
    scores = ", ".join(f"{k} {v:.4f}" for k, v in out["test"].items() if k != "n_samples")
    return (f"refit: {where}({_label(out['params'])}) on {out['refit']['n_samples']} samples; held-out {scores} "
            f"on {out['test']['n_samples']} samples -> {BEST_MODEL}, {TEST_SCORES}, {CONFUSION_MATRIX}")

