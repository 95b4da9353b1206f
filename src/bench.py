"""python -m src.bench: time one epoch of the sweep's workload four ways, in one process, on one device.

    (a) plain_nn_linear      a hand-written PyTorch loop over torch.nn.Linear, data resident on the device
    (b) plain_custom_linear  the same loop over this project's NeuralNet (src.layers.Linear)
    (c) skorch_project       this project's skorch estimator, exactly as the sweep builds it
    (d) skorch_seed_way      skorch as the original tutorial used it: default DataLoader over numpy,
                             no shuffling, 20% internal validation split scored every epoch

Each figure is the median seconds per epoch after one warm-up epoch, with the ratio to (a). A
micro-benchmark compares LinearFunction's forward + backward with torch.nn.functional.linear.

    python -m src.bench --grid [--grid-size default|full|both|cnn] [--engines gridsearch,fused]

times the whole grid num_units=32,64,128,256 x 3 folds through both engines in one process: the
default sweep (the bundled 5,000 digits, 25 epochs) and the original grid at full size (70,000
synthetic MNIST-shaped samples, 25 epochs); `cnn`: module=cnn on the bundled digits, one candidate's
3 folds and 3 learning rates x 3 folds (the fused engine trains it through src.vmapped). Each engine's figure is its wall time from the prepared
jobs to their scored cv_results_ rows (training and scoring; the data are loaded before).
    python -m src.bench --repeated [--runs 3] [--overrides key=value ...]

times two whole commands in turn, each in its own process, `--runs` times: the main command as it
runs today (module.num_units=32,64,128,256, cv.repeats=1, engine=gridsearch) and the same with
repeated cross-validation on the fused engine (cv.repeats=5 engine=fused, five times the fits). It
prints each one's median wall time and the median of the per-pair ratios.
    python -m src.bench --vs-handwritten [--runs 3]

times the main command (module.num_units=32,64,128,256 -m, defaults and all) against the same job written
by hand as a user would (src.handwritten: skorch + GridSearchCV(cv=3, refit=True)), whole processes in turn,
and prints the medians and the median of the per-pair ratios.
    python -m src.bench --mlp-paths [--grid-epochs N] [--runs 2]

times the default grid's 12 MLP fits through the fused engine's two ways in turn: src.fused's hand-written
step and src.vmapped's torch.func (the way any other module trains).
It measures and prints; it asserts nothing about time.
"""
import argparse
import cProfile
import io
import json
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn
from torch.utils import benchmark

from src import config, engine, fused, job, vmapped
from src.data import synthetic
from src.devices import resolve_device
from src.estimator import build_estimator
from src.layers import LinearFunction
from src.model import NeuralNet

LR = 0.01


def torch_mlp(num_units: int, input_dim: int = 784, num_classes: int = 10) -> nn.Module:
    """The same architecture as NeuralNet, over torch.nn.Linear: the reference."""
    return nn.Sequential(nn.Linear(input_dim, num_units), nn.ReLU(), nn.Linear(num_units, num_units // 2), nn.ReLU(),
                         nn.Linear(num_units // 2, num_classes))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def plain_loop(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int, shuffle: bool = True) -> list[float]:
    """Train with a hand-written loop over tensors already on the device; seconds per epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        sync(str(X.device))
        start = time.perf_counter()
        order = torch.randperm(len(X), device=X.device) if shuffle else torch.arange(len(X), device=X.device)
        for i in range(0, len(X), batch_size):
            idx = order[i : i + batch_size]
            optimizer.zero_grad()
            criterion(model(X[idx]), y[idx]).backward()
            optimizer.step()
        sync(str(X.device))
        times.append(time.perf_counter() - start)
    return times


def skorch_epochs(net: NeuralNetClassifier, X: np.ndarray, y: np.ndarray) -> list[float]:
    """Fit the skorch net; seconds per epoch from skorch's own EpochTimer."""
    net.fit(X, y)
    return [row["dur"] for row in net.history]


def tutorial_net(num_units: int, epochs: int, batch_size: int, device: str) -> NeuralNetClassifier:
    """skorch as the original tutorial used it: library defaults (ValidSplit(5), no shuffling, DataLoader)."""
    return NeuralNetClassifier(NeuralNet, module__num_units=num_units, module__init="randn", criterion=nn.CrossEntropyLoss,
                               optimizer=torch.optim.SGD, lr=LR, max_epochs=epochs, batch_size=batch_size, device=device, verbose=0)


def linear_vs_F_linear(device: str, batch: int, in_dim: int, out_dim: int) -> dict:
    """Forward + backward of LinearFunction against F.linear on the same values (torch.utils.benchmark medians)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_dim, generator=g).to(device).requires_grad_()
    w = torch.randn(in_dim, out_dim, generator=g).to(device).requires_grad_()  # ours: (in_dim, out_dim)
    b = torch.randn(out_dim, generator=g).to(device).requires_grad_()
    w_t = w.detach().t().contiguous().requires_grad_()  # F.linear's layout: (out_dim, in_dim)
    grad = torch.randn(batch, out_dim, generator=g).to(device)
    ours = benchmark.Timer("LinearFunction.apply(x, w, b).backward(grad)", globals=locals() | {"LinearFunction": LinearFunction})
    ref = benchmark.Timer("F.linear(x, w_t, b).backward(grad)", globals=locals() | {"F": torch.nn.functional})
    t_ours, t_ref = ours.blocked_autorange(min_run_time=1.0).median, ref.blocked_autorange(min_run_time=1.0).median
    return {"shape": [batch, in_dim, out_dim], "linear_function_us": t_ours * 1e6, "F_linear_us": t_ref * 1e6, "ratio": t_ours / t_ref}


def run(device: str = "auto", epochs: int = 5, n_samples: int = 46_667, num_units: int = 256, batch_size: int = 64) -> dict:
    """All timings in one process, on the same data and network."""
    device = resolve_device(device)
    X_np, y_np = synthetic(n_samples=n_samples, seed=0)
    X, y = torch.tensor(X_np, device=device), torch.tensor(y_np, device=device)  # copies: the cached arrays are read-only
    timings = {}
    torch.manual_seed(0)
    timings["plain_nn_linear"] = plain_loop(torch_mlp(num_units).to(device), X, y, epochs=epochs, batch_size=batch_size)
    torch.manual_seed(0)
    timings["plain_custom_linear"] = plain_loop(NeuralNet(num_units).to(device), X, y, epochs=epochs, batch_size=batch_size)
    project = build_estimator({"num_units": num_units}, torch.optim.SGD, {"lr": LR}, max_epochs=epochs, batch_size=batch_size,
                              verbose="quiet", device=device)
    timings["skorch_project"] = skorch_epochs(project, X_np, y_np)
    timings["skorch_seed_way"] = skorch_epochs(tutorial_net(num_units, epochs, batch_size, device), X_np, y_np)
    per_epoch = {k: statistics.median(v[1:] if len(v) > 1 else v) for k, v in timings.items()}
    reference = per_epoch["plain_nn_linear"]
    return {
        "device": device,
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "workload": {"n_samples": n_samples, "num_units": num_units, "batch_size": batch_size, "epochs": epochs},
        "results": {k: {"s_per_epoch": v, "ratio": v / reference} for k, v in per_epoch.items()},
        "linear_vs_F_linear": linear_vs_F_linear(device, batch_size, 784, num_units),
        "linear_vs_F_linear_large": linear_vs_F_linear(device, 4096, 784, num_units),
    }


def profile_project_epoch(device: str, n_samples: int, num_units: int, batch_size: int, top: int = 15) -> str:
    """cProfile of the project estimator's training (2 epochs): where the time per step goes."""
    X_np, y_np = synthetic(n_samples=n_samples, seed=0)
    net = build_estimator({"num_units": num_units}, torch.optim.SGD, {"lr": LR}, max_epochs=2, batch_size=batch_size,
                          verbose="quiet", device=resolve_device(device))
    profiler = cProfile.Profile()
    profiler.runcall(net.fit, X_np, y_np)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


GRID = (32, 64, 128, 256)
GRID_SIZES = {"default": [], "full": ["dataset=synthetic"]}  # synthetic: 70,000 x 784, as the tutorial's MNIST train + test
# module=cnn on the bundled digits (the fused engine trains it through src.vmapped): one candidate's 3 folds, then 3
# learning rates x 3 folds
CNN_GRIDS = {"cnn-1": [0.01], "cnn-3": [0.01, 0.03, 0.1]}


def grid_points(size: str) -> list[tuple[str, list[str]]]:
    """(label, overrides) of each job of a grid, its swept override first: the widths, or the CNN's learning rates."""
    if size in CNN_GRIDS:
        lrs = CNN_GRIDS[size]
        return [(f"lr={lr}", [f"optimizer.lr={lr}"] if len(lrs) > 1 else [], ["module=cnn"]) for lr in lrs]
    return [(str(n), [f"module.num_units={n}"], GRID_SIZES[size]) for n in GRID]
BOTH_ENGINES = ("gridsearch", "fused")


def grid_jobs(size: str, device: str, epochs: int | None = None) -> list[tuple[dict, list[str], dict]]:
    """(settings, overrides, choices) of the grid's jobs (grid_points), composed as `python -m src.sweep` composes them."""
    from hydra import compose, initialize_config_dir

    jobs = []
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3", job_name="bench"):
        for _, swept, fixed in grid_points(size):
            overrides = [*swept, *fixed, f"device={device}", "train.verbose=quiet"]
            overrides += [] if epochs is None else [f"train.max_epochs={epochs}"]
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
            jobs.append((config.settings_of(cfg), swept, dict(cfg.hydra.runtime.choices)))
    return jobs


def time_grid(size: str, device: str, engines: tuple[str, ...] = BOTH_ENGINES, epochs: int | None = None, **options) -> dict:
    """Seconds and mean test accuracy per job (width, or the CNN's learning rate) through each engine, in this process,
    on the same jobs."""
    jobs, labels = grid_jobs(size, device, epochs), [label for label, _, _ in grid_points(size)]
    out = {}
    for name in engines:  # the jobs are prepared (their data loaded, once per process) outside the timings
        prepared = [job.prepare(settings, overrides, choices) for settings, overrides, choices in jobs]
        sync(device)
        start = time.perf_counter()
        fitted = [None] * len(prepared)  # gridsearch: each job trains its own folds
        if name == "fused":
            fitted = engine.train_group(prepared, **options)
        rows = [engine.run(j, trained=fits, name=name) for j, fits in zip(prepared, fitted)]
        sync(device)
        out[name] = {"seconds": time.perf_counter() - start,
                     "mean_test_accuracy": {label: float(r.cv_results["mean_test_accuracy"][0]) for label, r in zip(labels, rows)},
                     "status": sorted({r.status for r in rows})}
    if len(out) == 2:
        out["speedup"] = out["gridsearch"]["seconds"] / out["fused"]["seconds"]
        out["max_score_diff"] = max(abs(out["fused"]["mean_test_accuracy"][k] - out["gridsearch"]["mean_test_accuracy"][k])
                                    for k in out["fused"]["mean_test_accuracy"])
    return out


def time_mlp_paths(device: str, epochs: int | None = None, runs: int = 2) -> dict:
    """The default grid's 12 MLP fits through the fused engine's two ways, in turn, `runs` times: src.fused's hand-written
    step and src.vmapped (torch.func); seconds of each run, and the largest weight difference between their fits."""
    device = resolve_device(device)
    prepared = [job.prepare(settings, overrides, choices) for settings, overrides, choices in grid_jobs("default", device, epochs)]
    X, y = prepared[0].X, prepared[0].y
    hand = [spec for j in prepared for spec in engine.fit_specs(j)]
    by_torch_func = [vmapped.FitSpec(j.search.estimator.get_params_for("module"), spec.optimizer, spec.seed, spec.fold, spec.train_idx,
                                     spec.valid_idx, spec.repeat) for j in prepared for spec in engine.fit_specs(j)]
    ways = {"hand-written": lambda: fused.train(X, y, hand, engine.shared_settings(prepared[0].settings), device=device),
            "torch.func": lambda: vmapped.train(X, y, by_torch_func, engine.vmapped_shared(prepared[0]), device=device)}
    out: dict = {name: [] for name in ways}
    fits = {}
    for _ in range(runs):
        for name, train in ways.items():
            sync(device)
            start = time.perf_counter()
            fits[name] = train()
            sync(device)
            out[name].append(time.perf_counter() - start)
    out["max_weight_diff"] = max(float((a.state_dict[k] - b.state_dict[k]).abs().max())
                                 for a, b in zip(fits["hand-written"], fits["torch.func"]) for k in a.state_dict)
    return {"device": device, "device_name": _device_name(device), "threads": torch.get_num_threads(), "paths": out}


def mlp_paths_table(report: dict) -> str:
    """The --mlp-paths results as text."""
    p = report["paths"]
    lines = [f"device: {report['device']} ({report['device_name']}), {report['threads']} threads; the default grid's 12 MLP fits"]
    lines += [f"{name:<14}" + "  ".join(f"{s:.2f} s" for s in p[name]) for name in ("hand-written", "torch.func")]
    ratio = statistics.median(t / h for h, t in zip(p["hand-written"], p["torch.func"]))
    lines.append(f"torch.func / hand-written: {ratio:.2f}x (median of the runs' ratios); largest weight difference {p['max_weight_diff']:.2e}")
    return "\n".join(lines)


def run_grids(device: str, sizes: list[str], engines: tuple[str, ...], epochs: int | None = None) -> dict:
    """The --grid report: the device, then each grid size's timings."""
    device = resolve_device(device)
    time_grid(sizes[0], device, engines, epochs=1)  # warm-up: imports, data, CUDA context and kernels
    return {"device": device, "device_name": _device_name(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "grids": {size: time_grid(size, device, engines, epochs) for size in sizes}}


def grid_table(report: dict) -> str:
    """The --grid results as aligned text."""
    lines = [f"device: {report['device']} ({report['device_name']}), torch {report['torch']}, {report['threads']} threads"]
    for size, r in report["grids"].items():
        for name in BOTH_ENGINES:
            if name in r:
                acc = ", ".join(f"{k}: {v:.4f}" for k, v in r[name]["mean_test_accuracy"].items())
                lines.append(f"{size:<8}{name:<11}{r[name]['seconds']:>8.2f} s   mean_test_accuracy {acc}")
        if "speedup" in r:
            lines.append(f"{size:<8}speedup {r['speedup']:.2f}x, largest score difference {r['max_score_diff']:.4f}")
    return "\n".join(lines)


MAIN = ["module.num_units=32,64,128,256", "train.verbose=quiet"]
REPEATED = {"today": ["cv.repeats=1", "engine=gridsearch"], "repeated": ["cv.repeats=5", "engine=fused"]}


def time_commands(commands: dict[str, list[str]], runs: int = 3) -> dict[str, list[float]]:
    """Wall seconds of whole commands (argument lists after `python -m`), each in its own process, in turn, `runs`
    times; a command's `{out}` is a fresh folder of its own. Raises ValueError naming a command that failed."""
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            for name, command in commands.items():
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", *(a.replace("{out}", f"{tmp}/{name}{i}") for a in command)],
                                      cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
                seconds[name].append(time.perf_counter() - start)
                if proc.returncode != 0:
                    raise ValueError(f"the {name} command failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
                seconds.setdefault(f"{name}_stdout", []).append(proc.stdout)
    return seconds


def time_repeated(runs: int = 3, overrides: list[str] | None = None) -> dict:
    """Wall seconds of the main command today and with cv.repeats=5 on the fused engine, whole processes, in turn."""
    commands = {name: ["src.sweep", *MAIN, *extra, *(overrides or []), "hydra.sweep.dir={out}", "-m"] for name, extra in REPEATED.items()}
    timed = time_commands(commands, runs)
    seconds = {name: timed[name] for name in REPEATED}
    verdicts = next((x for x in timed["repeated_stdout"][-1].splitlines() if x.startswith("Best ")), None)
    ratios = [b / a for a, b in zip(seconds["today"], seconds["repeated"])]
    return {"commands": {name: " ".join(["python -m src.sweep", *MAIN, *extra, *(overrides or []), "-m"]) for name, extra in REPEATED.items()},
            "seconds": seconds, "median_seconds": {k: statistics.median(v) for k, v in seconds.items()},
            "ratios": ratios, "median_ratio": statistics.median(ratios), "verdicts": verdicts}


def time_vs_handwritten(runs: int = 3, sweep_args: list[str] | None = None, handwritten_args: list[str] | None = None) -> dict:
    """Wall seconds of the main command, defaults and all (refit and report included), and of the same job written
    by hand (src.handwritten), whole processes, in turn; the median of the per-pair ratios sweep / handwritten.
    `sweep_args`, `handwritten_args`: more arguments for each (a smaller job for a quick look)."""
    commands = {"sweep": ["src.sweep", "module.num_units=32,64,128,256", *(sweep_args or []), "hydra.sweep.dir={out}", "-m"],
                "handwritten": ["src.handwritten", *(handwritten_args or [])]}
    timed = time_commands(commands, runs)
    seconds = {name: timed[name] for name in commands}
    ratios = [a / b for a, b in zip(seconds["sweep"], seconds["handwritten"])]
    return {"commands": {name: " ".join(["python -m", *c]).replace(" hydra.sweep.dir={out}", "") for name, c in commands.items()},
            "seconds": seconds, "median_seconds": {k: statistics.median(v) for k, v in seconds.items()}, "ratios": ratios,
            "median_ratio": statistics.median(ratios), "handwritten_says": timed["handwritten_stdout"][-1].strip().splitlines()[-1]}


def vs_handwritten_table(report: dict) -> str:
    """The --vs-handwritten results as text."""
    lines = [f"{name:<12}{report['median_seconds'][name]:>8.2f} s (median of {len(report['seconds'][name])})  {report['commands'][name]}"
             for name in report["commands"]]
    lines.append(f"sweep / handwritten: median ratio {report['median_ratio']:.2f} ({', '.join(f'{r:.2f}' for r in report['ratios'])})")
    lines.append(f"handwritten: {report['handwritten_says']}")
    return "\n".join(lines)


def repeated_table(report: dict) -> str:
    """The --repeated results as text."""
    lines = [f"{name:<9}{report['median_seconds'][name]:>8.2f} s (median of {len(report['seconds'][name])})  {report['commands'][name]}"
             for name in REPEATED]
    lines.append(f"repeated / today: median ratio {report['median_ratio']:.2f} ({', '.join(f'{r:.2f}' for r in report['ratios'])})")
    lines.append(f"verdicts: {report['verdicts']}")
    return "\n".join(lines)


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or platform.machine()


def table(report: dict) -> str:
    """The results as aligned text, one line per variant."""
    lines = [f"device: {report['device']} ({report['device_name']}), torch {report['torch']}, {report['threads']} threads, "
             f"workload: {report['workload']}", f"{'variant':<22}{'s/epoch':>10}{'ratio':>8}"]
    for name, r in report["results"].items():
        lines.append(f"{name:<22}{r['s_per_epoch']:>10.4f}{r['ratio']:>8.2f}")
    for key in ("linear_vs_F_linear", "linear_vs_F_linear_large"):
        m = report[key]
        lines.append(f"{key} {m['shape']}: LinearFunction {m['linear_function_us']:.1f} us, F.linear {m['F_linear_us']:.1f} us, ratio {m['ratio']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: print the table, optionally write the JSON and a profile."""
    parser = argparse.ArgumentParser(prog="python -m src.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per variant; the first is a warm-up (default: 5)")
    parser.add_argument("--n-samples", type=int, default=46_667, help="training samples (default: 46,667, one fold of 70,000)")
    parser.add_argument("--num-units", type=int, default=256, help="first hidden layer (default: 256)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the project estimator's epochs")
    parser.add_argument("--grid", action="store_true", help="time the whole grid (4 widths x 3 folds) through both engines instead")
    parser.add_argument("--grid-size", choices=["default", "full", "both", "cnn"], default="both",
                        help="default: the bundled 5,000 digits; full: 70,000 synthetic samples; both (default); "
                             "cnn: module=cnn on the bundled digits, 3 folds and 3 learning rates x 3 folds")
    parser.add_argument("--engines", default=",".join(BOTH_ENGINES), help="comma-separated, of gridsearch,fused (default: both)")
    parser.add_argument("--grid-epochs", type=int, help="epochs per fit for --grid (default: the sweep's 25)")
    parser.add_argument("--mlp-paths", action="store_true",
                        help="time the default grid's MLP fits through the fused engine's hand-written step and through torch.func")
    parser.add_argument("--repeated", action="store_true", help="time the main command today against cv.repeats=5 on the fused engine")
    parser.add_argument("--vs-handwritten", action="store_true",
                        help="time the main command against the same job written by hand (src.handwritten), whole processes in turn")
    parser.add_argument("--runs", type=int, default=3, help="pairs of whole commands for --repeated and --vs-handwritten (default: 3)")
    parser.add_argument("--overrides", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for both --repeated commands")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs={args.runs}: must be at least 1")
    if args.repeated or args.vs_handwritten:  # whole commands in turn
        try:
            report = time_repeated(args.runs, args.overrides) if args.repeated else time_vs_handwritten(args.runs)
        except ValueError as e:
            parser.error(str(e))
        print((repeated_table if args.repeated else vs_handwritten_table)(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        return 0
    if args.mlp_paths:
        print(mlp_paths_table(time_mlp_paths(args.device, args.grid_epochs, args.runs)))
        return 0
    engines = tuple(args.engines.split(","))
    if args.grid and (not engines or set(engines) - set(BOTH_ENGINES)):
        parser.error(f"--engines={args.engines}: choose from {', '.join(BOTH_ENGINES)}")
    least = {"grid_epochs": 1} if args.grid else {"epochs": 1, "n_samples": 1, "num_units": 2, "batch_size": 1}
    for name, n in least.items():
        if getattr(args, name) is not None and getattr(args, name) < n:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)}: must be at least {n}")
    sizes = {"both": ["default", "full"], "cnn": list(CNN_GRIDS)}.get(args.grid_size, [args.grid_size])
    try:
        if args.grid:
            report = run_grids(args.device, sizes, engines, args.grid_epochs)
        else:
            report = run(args.device, args.epochs, args.n_samples, args.num_units, args.batch_size)
    except ValueError as e:
        parser.error(str(e))
    print((grid_table if args.grid else table)(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.profile and not args.grid:
        print(profile_project_epoch(report["device"], args.n_samples, args.num_units, args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
