"""Entry point: python -m src.sweep [key=value ...] [-m]

Each Hydra job cross-validates one candidate (src.job), so its row comes straight from scikit-learn's
GridSearchCV, then rebuilds the results folder's aggregate and HiPlot report (src.refresh, without a
lock; the launching process rebuilds them once more at the end). With -m, Hydra's sweeper launches one
job per grid point: the default launcher (hydra/launcher=fused) trains the jobs that fuse as one
program on CUDA, and other launchers run them in parallel or on a cluster, each job on its own GPU
and its share of the cores (src.devices). Before any job starts, every job's configuration is
checked (src.config.preflight); then the command holds its results folder (src.locks), so that a
second command into it waits, and moves finished jobs to the numbers of their configurations
(src.resume).
"""
import contextlib
import logging
import os
import re
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

# The project's modules (and through them torch, scikit-learn, skorch, pandas) are imported where a job
# or the check of one needs them, not here: `--help` and `--cfg` print text, and take Hydra alone (0.5 s, not 4 s).

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig, trained: dict | BaseException | None = None, waiting: int = 0) -> float:
    """One job: compose -> data -> estimator -> search -> results -> report. Returns the mean test score.

    The fused launcher (hydra_plugins/fused_launcher) hands a job the fits it trained with its group (`trained`), and
    says how many other jobs' fits are trained and waiting to be recorded (`waiting`: the progress line counts them as done).
    """
    from src import devices, job, launchers, refresh, report, results, store

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    results_dir = Path(hc.sweep.dir) if multirun else job_dir
    overrides = list(hc.overrides.task)
    label = f"job {hc.job.num if multirun else 0} ({' '.join(overrides) or 'defaults'})"
    swept, total = job.multirun_facts(results_dir / "multirun.yaml") if multirun else (frozenset(), None)
    settings, launcher_cfg = (OmegaConf.to_container(c, resolve=True) for c in (cfg, hc.launcher))
    with user_errors(), store.disk_errors():  # under a parallel launcher, the job gets its own GPU and its share of the cores
        placement = devices.place(settings["device"], settings["train"]["threads"], launcher_cfg, hc.job.num if multirun else 0, total)
        row = job.run(settings, overrides, dict(hc.runtime.choices), job_dir, label, swept, placement, trained)
        if multirun and not launchers.aggregates(launcher_cfg):  # the fused launcher rebuilds these once per group
            refresh.refresh(results_dir)
        elif not multirun:
            report.write_report([results_dir], results_dir / report.REPORT)

    metric = results.metric_names(row)[0]
    score = row[f"mean_test_{metric}"][0]
    done = f" [{store.progress(results_dir, total, waiting)}]" if multirun else ""
    log.info(f"{label}: {row['status'][0]}, mean_test_{metric} {score:.4f} ± {row[f'std_test_{metric}'][0]:.4f}, "
             f"fit {row['mean_fit_time'][0]:.1f} s/fold -> {job_dir}{done}")
    if not multirun and report.print_outcome(job_dir):
        sys.exit(1)
    return float(score)


@contextlib.contextmanager
def user_errors():
    """A configuration mistake ends the command with one line and exit status 2 (full trace with HYDRA_FULL_ERROR=1)."""
    try:
        yield
    except (ValueError, TypeError, InstantiationException) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        cause = e.__cause__ if isinstance(e, InstantiationException) and e.__cause__ else e
        print(f"Error: {shorten(str(cause))}", file=sys.stderr)
        sys.exit(2)


def shorten(message: str, longest: int = 80) -> str:
    """The message with every word longer than `longest` characters cut in the middle (a 100,000-character
    override is not echoed whole)."""
    def cut(word: str) -> str:
        if len(word) <= longest:
            return word
        return f"{word[:longest // 2]}...{word[-longest // 4:]} ({len(word):,} characters)"
    return " ".join(cut(w) for w in message.split(" "))


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM. A BaseException, so that neither skorch (which swallows KeyboardInterrupt
    to end one fit early) nor scikit-learn's error handling keeps the sweep going."""


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def hydra_only(argv: list[str]) -> bool:
    """Command lines with Hydra flags other than -m (--help, --cfg, -cn, --config-path ...): Hydra handles them
    (a job such a command runs checks its own config)."""
    return any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv)


def print_help() -> None:
    """`--help` as Hydra prints it (hydra.help.template: the header, the app's config groups, the composed config,
    the footer), in a fraction of the time: Hydra's own help lists every group of Hydra's too, deep-copying its
    config repository for each, which takes it 3 s on 2 cores. tests/test_sweep.py checks that the texts agree."""
    import string

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3", job_name="help"):
        cfg = compose("config", return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()  # the app's groups as Hydra finds them: conf/'s, and sweeps/ (hydra_plugins/named_sweeps)
        groups = "".join(f"{g}: {', '.join(sorted(loader.get_group_options(g)))}\n" for g in sorted(loader.list_groups("")) if g != "hydra")
    app = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
    print(string.Template(cfg.hydra.help.template).substitute(APP_CONFIG_GROUPS=groups, CONFIG=app, FLAGS_HELP="", HYDRA_CONFIG_GROUPS=""))


def cli() -> None:
    """Check every job's config, hold the results folder, resume, then run Hydra; an interruption leaves only complete files."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if sys.argv[1:] in (["--help"], ["-h"]):
            print_help()
            return
        if hydra_only(sys.argv[1:]):
            main()
            return
        with user_errors():
            from src import config

            checked = config.preflight(sys.argv[1:])
    except Interrupted as e:
        print(f"\nInterrupted ({e}) while checking the configuration; nothing was written.", file=sys.stderr)
        sys.exit(130 if str(e) == "SIGINT" else 143)
    from src import locks, resume

    try:
        pin_output_dir(checked)
        with locks.command(checked.out_dir):  # a second command into this folder waits here for the first to end
            with user_errors():
                for line in resume.prepare_folder(checked):
                    print(f"resume: {line}")
            main()
    except Interrupted as e:
        print(f"\nInterrupted ({e}). Finished jobs and their files are complete; run the same command with the "
              "same hydra.sweep.dir to resume.", file=sys.stderr)
        sys.exit(130 if str(e) == "SIGINT" else 143)


def pin_output_dir(checked) -> None:
    """Make Hydra write into the folder the preflight checked and this command holds: a ${now:...} in the
    configured one would otherwise be resolved again, a moment later, perhaps to the next second."""
    key = "hydra.sweep.dir" if checked.multirun else "hydra.run.dir"
    # Hydra's quoted value (commas, spaces, = stay literal): a quote is escaped, and backslashes before a quote or
    # the closing quote are doubled (a folder ending in a backslash was a lexer error)
    quoted = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", str(checked.out_dir))
    quoted = "'" + re.sub(r"(\\+)$", lambda m: m[1] * 2, quoted) + "'"
    rest = [a for a in sys.argv[1:] if not a.startswith(f"{key}=")]
    sys.argv = [sys.argv[0], f"{key}={quoted}", *rest]  # before any flag: argparse takes one run of overrides


if __name__ == "__main__":
    cli()
