"""The configuration's schema, and the check that runs before any job trains.

The schema is a set of pydantic models that mirror conf/: a type and a range for every key a user
sets (pydantic gives per-key messages such as "module.num_units=1: Input should be greater than or
equal to 2"). OmegaConf's structured configs would check the types but not the ranges.

preflight() composes the config of every job of the command line (expanding the sweep as Hydra's
BasicSweeper does) and checks each one against the schema, and loads and checks its data set
(load_data; the jobs that follow reuse the loaded copy), so that one bad grid point stops the command
before anything trains, with one line and exit status 2. It returns each job's configuration, which
src.resume uses to match a rerun's jobs to the finished ones in its sweep folder.
"""
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sklearn.metrics import get_scorer_names

from src import launchers
from src.data import SCALINGS, check_data
from src.devices import cores
from src.engine import ENGINES
from src.estimator import VERBOSITY, resolve_device
from src.layers import INITS
from src.model import ACTIVATIONS
from src.resume import finished_folders

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class ConfigError(ValueError):
    """A configuration mistake; its message is the one line the user sees."""


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ModuleSchema(_Group):
    num_units: int = Field(ge=2)  # the second layer has num_units // 2 >= 1 units
    input_dim: int = Field(ge=1)
    num_classes: int = Field(ge=2)
    activation: Literal[tuple(ACTIVATIONS)]
    init: Literal[INITS]


class OptimizerSchema(_Group):
    model_config = ConfigDict(extra="allow", strict=True)  # any keyword of the chosen torch.optim class
    target: str = Field(alias="_target_")
    lr: float = Field(gt=0, allow_inf_nan=False)


class TrainSchema(_Group):
    max_epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    shuffle: bool
    valid_split: float | None = Field(gt=0, lt=1)
    threads: int | None = Field(default=None, ge=1)
    verbose: Literal[VERBOSITY]


class CVSchema(_Group):
    folds: int = Field(ge=2)
    shuffle: bool
    scoring: list[str] = Field(min_length=1)

    @field_validator("scoring")
    @classmethod
    def _known_scorers(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in get_scorer_names()]
        if unknown:
            raise ValueError(f"unknown scorer {unknown[0]!r}; scikit-learn knows e.g. accuracy, balanced_accuracy, f1_macro, roc_auc_ovr")
        return names


class DatasetSchema(_Group):
    model_config = ConfigDict(extra="allow", strict=True)  # each data set has its own keys
    target: str = Field(alias="_target_")
    limit: int | None = Field(default=None, ge=1)
    scaling: Literal[SCALINGS] = "standard"


class ConfigSchema(_Group):
    dataset: DatasetSchema
    module: ModuleSchema
    optimizer: OptimizerSchema
    cv: CVSchema
    train: TrainSchema
    seed: int = Field(ge=0)
    device: str = Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    engine: Literal[ENGINES]
    resume: bool


def check(settings: dict) -> None:
    """Raise ConfigError naming the first bad key, its value and what is allowed; also check the device."""
    try:
        ConfigSchema.model_validate(settings)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(part) for part in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "no such key here (add new keys with +key=value only where the group accepts them)"
        raise ConfigError(f"{key}={err['input']!r}: {msg}") from None
    try:
        resolve_device(settings["device"])
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_writable(folder: str, key: str) -> None:
    """Raise ConfigError unless `folder` exists writable or could be created; creates nothing."""
    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is a file")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(f"{key}={folder}: this output folder cannot be written ({e.strerror})") from None


def identity(settings: dict) -> dict:
    """The part of a resolved config that decides a job's results: two jobs with equal identities agree.

    train.verbose and resume change what a run prints and whether it resumes, and engine and
    train.threads how it computes (both engines train the same fits), not what it computes.
    """
    out = {**settings, "train": {k: v for k, v in settings["train"].items() if k not in ("verbose", "threads")}}
    out.pop("resume", None)
    out.pop("engine", None)
    return out


def job_overrides(argv_overrides: list[str], sweeper_params: dict) -> list[list[str]]:
    """Every job's overrides for a multirun, expanded as Hydra's BasicSweeper expands them."""
    params = [f"{k}={v}" for k, v in sweeper_params.items()] + argv_overrides
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    return [job for batch in batches for job in batch]


def sweep_size(multirun: dict) -> int | None:
    """How many jobs a multirun launches, from its multirun.yaml; None when its sweeper draws its own points."""
    hydra_cfg = multirun.get("hydra", {})
    sweeper = hydra_cfg.get("sweeper") or {}
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    return len(job_overrides(list((hydra_cfg.get("overrides") or {}).get("task") or []), sweeper.get("params") or {}))


@dataclass
class Checked:
    """What preflight() learnt: where a multirun writes, and each job's configuration (for resuming)."""
    sweep_dir: Path | None = None
    identities: list[dict] | None = None  # in job order; None when the jobs are not known up front (another sweeper)


def preflight(argv: list[str]) -> Checked:
    """Check every job the command line would launch; raise ConfigError on the first bad one.

    Command lines with Hydra flags other than -m (--cfg, --help, -cn ...) are left to Hydra.
    """
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    if any(a.startswith("-") for a in overrides):
        return Checked()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="preflight"):
        try:
            own_points = False
            if not multirun:
                jobs, out_key = [overrides], "hydra.run.dir"
            else:
                parsed = OverridesParser.create().parse_overrides(overrides)
                fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
                base = compose("config", overrides=fixed, return_hydra_config=True)
                _check_launcher(OmegaConf.to_container(base.hydra.launcher, resolve=False))
                own_points = base.hydra.sweeper._target_ != BASIC_SWEEPER
                if own_points:
                    jobs = [fixed]  # another sweeper (Optuna ...) draws its own points; each job checks itself
                else:
                    params = base.hydra.sweeper.params
                    jobs = job_overrides(overrides, OmegaConf.to_container(params) if params else {})
                out_key = "hydra.sweep.dir"
            identities = []
            for job in jobs:
                cfg = compose("config", overrides=job, return_hydra_config=True)
                settings = settings_of(cfg)
                check(settings)
                _check_data(settings)
                identities.append(identity(settings))
            out_dir = str(OmegaConf.select(cfg, out_key))
            check_writable(out_dir, out_key)
        except MissingConfigException as e:
            group = Path(e.missing_cfg_file).parent.as_posix() if e.missing_cfg_file else "option"
            choice = Path(e.missing_cfg_file).name if e.missing_cfg_file else ""
            if group == "hydra/launcher" and launchers.missing(choice):
                raise ConfigError(launchers.missing(choice)) from None
            raise ConfigError(f"{group}={choice} is not known; choose one of {', '.join(e.options or [])}") from None
        except HydraException as e:
            raise ConfigError(" ".join(str(e).split("\n")[:2])) from None
    if not multirun or not settings["resume"]:
        return Checked()
    if own_points and finished_folders(Path(out_dir)):
        raise ConfigError(
            f"hydra.sweep.dir={out_dir}: holds finished jobs, and hydra/sweeper={base.hydra.sweeper._target_.rsplit('.', 1)[-1]} "
            "draws its own points, so they cannot be matched to this run's jobs (a sweeper such as Optuna resumes "
            "through its own storage); use a new hydra.sweep.dir, or resume=false to overwrite them")
    numbered = OmegaConf.to_container(base.hydra.sweep, resolve=False).get("subdir") == "${hydra.job.num}"
    return Checked(Path(out_dir), identities if numbered and not own_points else None)


def _check_launcher(launcher: dict) -> None:
    """Check the settings of the launcher a multirun will use, against this machine's GPUs and cores."""
    try:
        launchers.check(launcher, torch.cuda.device_count(), cores())
    except ValueError as e:
        raise ConfigError(str(e)) from None


def load_data(settings: dict):
    """The configured data set (loaded once per process), checked against the network and the folds it is for."""
    X, y = instantiate(settings["dataset"])
    check_data(X, y, input_dim=settings["module"]["input_dim"], num_classes=settings["module"]["num_classes"], folds=settings["cv"]["folds"])
    return X, y


def _check_data(settings: dict) -> None:
    """Load the job's data set (the jobs that follow in this process reuse it) and check it."""
    try:
        load_data(settings)
    except InstantiationException as e:
        raise ConfigError(str(e.__cause__ or e)) from None
    except ValueError as e:
        raise ConfigError(str(e)) from None


def settings_of(cfg) -> dict:
    """The composed config without Hydra's own node (it resolves only inside a run), as plain Python."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    job_cfg = OmegaConf.create(plain)
    missing = sorted(OmegaConf.missing_keys(job_cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required: add {missing[0]}=... to the command line")
    return OmegaConf.to_container(job_cfg, resolve=True)
