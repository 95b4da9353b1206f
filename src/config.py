"""The check that runs before any job trains: the schema (src.schema), then what the schema cannot see.

preflight() composes the config of every job of the command line (expanding the sweep as Hydra's
BasicSweeper does) and checks each one against the schema, and loads and checks its data set
(load_data; the jobs that follow reuse the loaded copy), so that one bad grid point stops the command
before anything trains, with one line and exit status 2. It returns where the command writes and
each job's configuration, which src.resume uses to match a rerun's jobs to the finished ones there.
"""
import copy
import functools
import importlib
import inspect
import itertools
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException, MissingConfigException
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from src import data, fused, launchers, precision, schema
from src.cnn import CNN, IMAGE
from src.data import DataError
from src.devices import cores, resolve_device
from src.engine import fit_bytes
from src.identity import NOT_IDENTITY, job_key, without
from src.seeding import fit_generator, takes_generator

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
class ConfigError(ValueError):
    """A configuration mistake; its message is the one line the user sees."""


@dataclass(frozen=True)
class ModuleSize:
    """A module other than the MLP, as _check_module measured it on the check's batch, for the memory check."""
    parameters: int        # its trainable parameters
    parameter_bytes: int   # their bytes
    activations: int       # elements its layers (the modules without children) output for one sample


_passed: dict[str, ModuleSize | None] = {}  # every job's settings check() passed in this process (as JSON), and its module's size


def check(settings: dict) -> ModuleSize | None:
    """Raise ConfigError naming the first bad key, its value and what is allowed; also check the device, the optimizer,
    the data set against the network and folds it is for (loaded and checked once per process: _check_data), and a
    module other than the MLP on a batch of that data (_check_module). Returns that module's size (None for the MLP).

    Settings that passed are not checked again in this process: the jobs of a command the preflight checked trust
    it, and a job started elsewhere (a cluster task, --config-path best_config) checks itself once."""
    key = json.dumps(settings, sort_keys=True, default=str)
    if key in _passed:
        return _passed[key]
    try:
        schema.for_settings(settings).model_validate(settings)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(part) for part in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "no such key here (add new keys with +key=value only where the group accepts them)"
        raise ConfigError(f"{key}={err['input']!r}: {msg}") from None
    _check_device(settings["device"])
    _check_precision(settings["train"].get("precision", "fp32"), settings["device"])
    _check_optimizer(settings["optimizer"])
    _check_data(settings)
    _passed[key] = _check_module(settings)
    return _passed[key]


def _check_device(device: str) -> None:
    """The device exists here: CUDA at all (resolve_device), the CUDA index among the visible GPUs, Apple's MPS."""
    try:
        resolve_device(device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if device.startswith("cuda:") and int(device.removeprefix("cuda:")) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ConfigError(f"device={device}: this machine shows {n} CUDA device{'s' * (n != 1)} (cuda:0 to cuda:{n - 1}); "
                          "use one of those, or device=cuda")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps: Apple's MPS is not available here; use device=auto or device=cpu")


def _check_precision(wanted: str, device: str) -> None:
    """The device has what train.precision asks for: bf16 natively on a GPU (src.precision.unsupported)."""
    reason = precision.unsupported(wanted, resolve_device(device))
    if reason:
        raise ConfigError(f"train.precision={wanted}: {reason} (device={device}); use train.precision=fp32 or tf32")


def _check_optimizer(optimizer: dict) -> None:
    """Build the optimizer, as skorch will: a keyword it does not take, or a value it refuses, stops the command now,
    named, instead of failing every job (once per optimizer config: _optimizer_checked)."""
    _optimizer_checked(json.dumps(optimizer, sort_keys=True))


NO_PARAMETERS = "optimizer got an empty parameter list"  # torch.optim.Optimizer's error for []
FLAGS_CHECKED_LATER = ("foreach", "fused", "differentiable")  # torch's optimizers check these after taking parameters


def _build_optimizer(cls: type, **kwargs) -> None:
    """Build the optimizer class `cls` with `kwargs`, or raise what its constructor raises.

    torch's own optimizers check each value before they take parameters (but for FLAGS_CHECKED_LATER), so they are
    built on no parameters: ValueError(NO_PARAMETERS) then means every value passed. A parameter's first
    add_param_group imports torch._dynamo (about 1 s), which a fused sweep needs nowhere else. Other optimizers, a
    flag, a refused value, or words torch may change: built on a dummy parameter, which raises the real error."""
    if cls.__module__.startswith("torch.optim.") and not any(kwargs.get(k) for k in FLAGS_CHECKED_LATER):
        try:
            cls([], **kwargs)
        except ValueError as e:
            if str(e) == NO_PARAMETERS:
                return
    cls([torch.nn.Parameter(torch.zeros(1))], **kwargs)


@functools.lru_cache(maxsize=64)
def _optimizer_checked(optimizer_json: str) -> None:
    """_check_optimizer's check, remembered once it passes (an error is raised again each time): most sweeps vary the
    network, not the optimizer, and a sweep of N jobs built the same one N times."""
    optimizer = json.loads(optimizer_json)
    kwargs = {k: v for k, v in optimizer.items() if k != "_target_"}
    try:
        cls = get_class(optimizer["_target_"])
    except Exception as e:  # Hydra wraps an ImportError or AttributeError in its own
        raise ConfigError(f"optimizer._target_={optimizer['_target_']}: cannot be imported ({e})") from None
    _build("optimizer", optimizer["_target_"], cls, kwargs, functools.partial(_build_optimizer, cls), (ValueError, TypeError, RuntimeError))


def _build(group: str, target: str, cls: type, kwargs: dict, build, errors: tuple = (Exception,), hint: str = ""):
    """build(**kwargs) of the `group` node's class `cls`, as skorch will build it; a keyword the class does not take
    (`hint` added), or a value it refuses (the culprit: the key whose removal makes it build), is named as group.<key>."""
    params = inspect.signature(cls).parameters
    takes = [k for k, p in params.items() if k not in ("params", "generator") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        for key in kwargs:
            if key not in takes:
                raise ConfigError(f"{group}.{key}={kwargs[key]!r}: {target} takes no such keyword; it takes {', '.join(takes) or 'none'}{hint}")
    try:
        return build(**kwargs)
    except errors as e:
        message = " ".join(str(e).split())
        for key in kwargs:
            try:
                build(**{k: v for k, v in kwargs.items() if k != key})
            except errors:
                continue
            raise ConfigError(f"{group}.{key}={kwargs[key]!r}: {message}") from None
        given = f" with {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}" if kwargs else " with no keywords"
        raise ConfigError(f"{group}._target_={target}: cannot be built{given} ({type(e).__name__}: {message})") from None


def _check_module(settings: dict) -> ModuleSize | None:
    """Build a module other than the MLP (module._target_: module=cnn, or your own) with its keys, as skorch will, and
    run it on two samples of the job's data: a class that cannot be imported, a keyword it refuses, or logits of the
    wrong shape stop the command now, named, instead of failing every job. Returns its size, measured on that batch
    (for _check_memory: the module is built once); None for the MLP."""
    module = settings["module"]
    target = module.get("_target_")
    if target is None:  # the MLP: ModuleSchema has checked every key NeuralNet takes
        return None
    where, _, name = target.rpartition(".")
    if not where:
        raise ConfigError(f"module._target_={target}: names no Python module; give the module.path.ClassName of a torch.nn.Module "
                          "class, importable from where you run the command (e.g. my_nets.TinyNet)")
    try:  # as hydra.utils.get_class finds it (src.estimator), without the lines Hydra logs when it fails
        cls = getattr(importlib.import_module(where), name)
    except Exception as e:
        raise ConfigError(f"module._target_={target}: cannot be imported ({type(e).__name__}: {' '.join(str(e).split())})") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ConfigError(f"module._target_={target}: is not a torch.nn.Module class; give the module.path.ClassName of one")
    X, y = data.load(settings)
    of_data = f"{_data_name(settings['dataset'])}'s {X.shape[1]} features"
    if issubclass(cls, CNN) and X.shape[1] != math.prod(IMAGE):
        raise ConfigError(f"module._target_={target}: the CNN takes {IMAGE[1]}x{IMAGE[2]} images ({math.prod(IMAGE)} features a sample), "
                          f"but {_data_name(settings['dataset'])} has samples of {X.shape[1]} features; use an image data set "
                          "(dataset=mnist_sample, mnist, fashion_mnist, kmnist), or module=mlp")
    kwargs = {k: v for k, v in module.items() if k != "_target_"}
    seeded = {"generator": fit_generator(settings["seed"])} if takes_generator(cls) else {}
    hint = "; start from module=custom, which has no keys of its own" if "num_units" in module else ""  # the MLP's keys
    net = _build("module", target, cls, kwargs, lambda **kw: cls(**kw, **seeded), hint=hint)
    n_classes = kwargs.get("num_classes", int(y.max()) + 1)
    outputs = []  # each layer's output elements on the batch of 2
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel() if isinstance(o, torch.Tensor) else 0))
             for m in net.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad():
            out = net.eval()(torch.tensor(X[:2]))  # (2, n_features), as the estimator hands it a batch
    except Exception as e:
        raise ConfigError(f"module._target_={target}: fails on a batch of 2 samples of {of_data}: "
                          f"{type(e).__name__}: {' '.join(str(e).split())}") from None
    finally:
        for h in hooks:
            h.remove()
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, n_classes):
        raise ConfigError(f"module._target_={target}: returns {shape} for a batch of 2 samples of {of_data}; "
                          f"a module must return logits of shape (batch, {n_classes}), one per class")
    trained = [p for p in net.parameters() if p.requires_grad]
    if not trained:  # torch.optim refuses an empty parameter list: every fit would fail
        raise ConfigError(f"module._target_={target}: has no trainable parameters (none with requires_grad), so the optimizer has "
                          "nothing to train; give the module at least one nn.Parameter")
    return ModuleSize(sum(p.numel() for p in trained), sum(p.numel() * p.element_size() for p in trained), math.ceil(sum(outputs) / 2))


def _data_name(dataset: dict) -> str:
    """The data set as the command line names it: dataset=mnist, dataset.path=my.npz, dataset=synthetic."""
    if "path" in dataset:
        return f"dataset.path={dataset['path']}"
    return f"dataset={dataset.get('name') or dataset['_target_'].rsplit('.', 1)[-1]}"


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

    Everything but NOT_IDENTITY, plus the data set's content hash (src.data.data_fingerprint), so that a changed
    data file is not resumed from. Of module.num_units and module.hidden_sizes only the one that builds the net is
    kept: hidden_sizes=null leaves a num_units job's identity (and job.json) as it was before hidden_sizes existed.
    train.precision is kept unless it is fp32, for the same reason: an fp32 job is the job it was before the key
    existed (and is resumed from its folder), and a bf16 or tf32 job is another one.
    """
    unused = ["module.hidden_sizes" if settings.get("module", {}).get("hidden_sizes") is None else "module.num_units"]
    if settings.get("train", {}).get("precision", "fp32") == "fp32":
        unused.append("train.precision")
    out = without(settings, [*NOT_IDENTITY, *unused])
    out["data_fingerprint"] = data.data_fingerprint(settings)
    return out


def job_overrides(argv_overrides: list[str], sweeper_params: dict) -> list[list[str]]:
    """Every job's overrides for a multirun, in Hydra's job order: the sweeper's params, then the command line's (a key
    given twice keeps its first place and takes its last value), multiplied out with the last key varying fastest."""
    # Hydra's BasicSweeper does this in split_arguments, which is internal (hydra._internal); its public parts are the
    # parsed Override's. tests/test_config.py checks that the jobs and their order are the BasicSweeper's.
    values: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper_params.items()] + argv_overrides):
        key = override.get_key_element()
        if override.is_sweep_override() and not override.is_discrete_sweep():
            raise HydraException(f"BasicSweeper does not support sweep type : {override.value_type.name}")
        sweep = override.sweep_string_iterator() if override.is_sweep_override() else [override.get_value_element_as_str()]
        values[key] = [f"{key}={value}" for value in sweep]
    return [list(job) for job in itertools.product(*values.values())]


@dataclass
class Checked:
    """What preflight() learnt: where the command writes, and each job's configuration (for resuming)."""
    out_dir: Path | None = None     # the sweep folder (-m) or the run folder
    multirun: bool = False
    resume: bool = True
    identities: list[dict] | None = None  # in job order; None when the jobs are not known up front (another sweeper)
    numbered: bool = False          # job folders are named by job number (hydra.sweep.subdir=${hydra.job.num})
    sweeper: str = "BasicSweeper"


def preflight(argv: list[str]) -> Checked:
    """Check every job the command line (overrides and -m; src.sweep leaves other flags to Hydra) would launch;
    raise ConfigError on the first bad one."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if a not in ("-m", "--multirun")]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="preflight"):
        try:
            own_points = False
            if not multirun:
                jobs, out_key = [overrides], "hydra.run.dir"
            else:
                parsed = OverridesParser.create().parse_overrides(overrides)
                _check_repeated_values(parsed)
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
            progress = Progress(len(jobs))
            folders = JobFolders(base.hydra) if multirun and not own_points else None
            for job, (cfg, settings) in zip(jobs, job_settings(jobs)):
                _check_architecture(job)
                _check_relative_path(cfg, settings)
                size = check(settings)  # most sweeps vary the network, not the data: each data set is checked once (_checked)
                _check_memory(settings, size)
                identities.append(identity(settings))
                if folders is not None:
                    folders.add(job)
                progress.step()
            if multirun:
                _check_distinct(jobs, identities)
            out_dir = str(OmegaConf.select(cfg, out_key))
            check_writable(out_dir, out_key)
        except MissingConfigException as e:
            group = Path(e.missing_cfg_file).parent.as_posix() if e.missing_cfg_file else "option"
            choice = Path(e.missing_cfg_file).name if e.missing_cfg_file else ""
            if group == "hydra/launcher" and launchers.missing(choice):
                raise ConfigError(launchers.missing(choice)) from None
            raise ConfigError(f"{group}={choice} is not known; choose one of {', '.join(e.options or [])}") from None
        except HydraException as e:
            if str(e).startswith("Could not override 'module._target_'"):  # the MLP (module=mlp, the default) has no _target_
                raise ConfigError("module._target_: the MLP (module=mlp, the default) has no such key; name your own module with "
                                  "module=custom module._target_=your_package.YourNet") from None
            raise ConfigError(" ".join(str(e).split("\n")[:2])) from None
    scorings = list(dict.fromkeys(str(i["cv"]["scoring"]) for i in identities))
    if len(scorings) > 1:
        raise ConfigError(f"cv.scoring={' and '.join(scorings)}: every job of a sweep must be scored the same way, or their rows "
                          "cannot be ranked together; score them all with every metric instead, e.g. cv.scoring=[accuracy,f1_macro]")
    _check_flag_place(argv)  # last: a bad value is the news, wherever -m stands
    if not multirun:
        return Checked(out_dir=Path(out_dir), resume=settings["resume"], identities=identities)
    return Checked(out_dir=Path(out_dir), multirun=True, resume=settings["resume"], identities=None if own_points else identities,
                   numbered=OmegaConf.to_container(base.hydra.sweep, resolve=False).get("subdir") == "${hydra.job.num}",
                   sweeper=base.hydra.sweeper._target_.rsplit(".", 1)[-1])


class JobFolders:
    """Each job's folder under the sweep folder (hydra.sweep.subdir, resolved as Hydra's launcher resolves it for
    job k), so that a template that puts two jobs into one folder (hydra.sweep.subdir=fixed) is refused up front."""

    def __init__(self, hydra_cfg: DictConfig):
        self.hydra = OmegaConf.to_container(hydra_cfg, resolve=False)
        subdir = self.hydra["sweep"].get("subdir")
        self.template = None if subdir is None else str(subdir)
        self.unique = subdir is None or "${hydra.job.num}" in self.template or "${hydra.job.id}" in self.template  # Hydra's default
        self.seen: dict[str, int] = {}
        self.parser = OverridesParser.create()

    def add(self, job: list[str]) -> None:
        """Resolve job len(seen)'s folder; ConfigError if an earlier job has it. A template that resolves only
        inside the run (it reads the app's config, or a resolver Hydra registers later) is not checked."""
        if self.unique:
            return
        k, named = len(self.seen), self.hydra["job"]["config"]["override_dirname"]
        lines = sorted(o.input_line for o in self.parser.parse_overrides(job)
                       if not o.is_hydra_override() and o.key_or_group not in named["exclude_keys"])
        dirname = named["item_sep"].join(lines).replace("=", named["kv_sep"])  # hydra.job.override_dirname, as Hydra builds it
        node = OmegaConf.create({"hydra": {**self.hydra, "job": {**self.hydra["job"], "num": k, "id": str(k), "override_dirname": dirname}}})
        try:
            folder = str(OmegaConf.select(node, "hydra.sweep.subdir", throw_on_resolution_failure=True))
        except OmegaConfBaseException:
            self.unique = True
            return
        if folder in self.seen:
            raise ConfigError(f"hydra.sweep.subdir={self.template}: puts jobs {self.seen[folder]} and {k} into one folder ({folder}), "
                              "where the second would overwrite the first; include ${hydra.job.num} in it, as the default does")
        self.seen[folder] = k


def _check_flag_place(argv: list[str]) -> None:
    """Refuse -m between two overrides: Hydra's parser takes the overrides as one list, and would refuse those after -m
    (with its usage text) once this check had passed and the command had locked its folder."""
    flags = [i for i, a in enumerate(argv) if a in ("-m", "--multirun")]
    if flags and any(a not in ("-m", "--multirun") for a in argv[:flags[0]]) and any(a not in ("-m", "--multirun") for a in argv[flags[0] + 1:]):
        flag, overrides = argv[flags[0]], [a for a in argv if a not in ("-m", "--multirun")]
        raise ConfigError(f"{flag}: comes between the overrides ({argv[flags[0] - 1]} {flag} {argv[flags[0] + 1]}), where Hydra's parser "
                          f"stops reading them; put it after them all: python -m src.sweep {' '.join(overrides)} {flag}")


def _check_repeated_values(parsed: list) -> None:
    """Refuse a sweep that names one value twice (module.num_units=8,8): its two jobs would be one job, trained twice."""
    for o in parsed:
        if o.is_sweep_override() and o.is_discrete_sweep():
            values = list(o.sweep_string_iterator())
            twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if twice is not None:
                raise ConfigError(f"{o.input_line}: names {twice} twice, and its jobs would be one job trained twice; name each value once")


def _check_architecture(job: list[str]) -> None:
    """Refuse a job whose overrides set both module.num_units and module.hidden_sizes: hidden_sizes would win silently."""
    given = {o.key_or_group: o.get_value_element_as_str() for o in OverridesParser.create().parse_overrides(job)}
    if "module.num_units" in given and "module.hidden_sizes" in given:
        raise ConfigError(f"module.hidden_sizes={given['module.hidden_sizes']}: set either it or module.num_units="
                          f"{given['module.num_units']}, not both (num_units=N is the shorthand for hidden_sizes=[N,N//2])")


def _check_relative_path(cfg: DictConfig, settings: dict) -> None:
    """Refuse a relative dataset.path under hydra.job.chdir=true: the job runs in its own folder, where it finds nothing."""
    path = settings["dataset"].get("path")
    if OmegaConf.select(cfg, "hydra.job.chdir") and isinstance(path, str) and not Path(path).expanduser().is_absolute():
        raise ConfigError(f"dataset.path={path}: is relative, and hydra.job.chdir=true runs each job in its own folder, where it "
                          f"would not be found; give an absolute path, e.g. dataset.path={Path(path).absolute()}")


def _check_distinct(jobs: list[list[str]], identities: list[dict]) -> None:
    """Refuse a sweep two of whose jobs would compute the same result (they differ only in keys outside the
    identity, such as train.threads or engine, or in how a number is written): they would share one record."""
    first: dict[str, int] = {}
    parser = OverridesParser.create()
    for k, ident in enumerate(identities):
        key = job_key(ident)
        if key not in first:
            first[key] = k
            continue
        j = first[key]
        a, b = ({o.key_or_group: o.input_line for o in parser.parse_overrides(jobs[i])} for i in (j, k))
        differ = sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))
        if not differ:  # the same overrides twice: a named sweep (+sweeps=...) that names a value twice
            raise ConfigError(f"{' '.join(jobs[k])}: jobs {j} and {k} of this sweep have these same overrides, one job trained twice; "
                              "name each value of the sweep once")
        raise ConfigError(f"{', '.join(differ)}: jobs {j} ({' '.join(a.get(d, '') for d in differ).strip()}) and {k} "
                          f"({' '.join(b.get(d, '') for d in differ).strip()}) of this sweep compute the same result, as "
                          f"{', '.join(differ)} {'is' if len(differ) == 1 else 'are'} not part of what a job computes (or "
                          "name one value twice); sweep it in separate commands, each with its own hydra.sweep.dir")


class Progress:
    """A line on stderr every few seconds while a large grid (`least` jobs or more) is checked, so it is not checked in silence."""

    def __init__(self, total: int, every: float = 5.0, least: int = 100):
        self.total, self.done, self.every, self.least = total, 0, every, least
        self.start = self.last = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if self.total >= self.least and now - self.last >= self.every and self.done < self.total:
            self.last = now
            print(f"checking the configuration of every job: {self.done} of {self.total} ({now - self.start:.0f} s)", file=sys.stderr)


def job_settings(jobs: list[list[str]]) -> Iterator[tuple[DictConfig, dict]]:
    """(composed config, resolved settings) of each job, given its overrides, as Hydra composes them.

    Hydra's compose takes about 0.1 s a job. A job whose overrides beyond the group choices and other
    structural ones are plain `key=value` settings of existing values (not +, ~, hydra.*, groups or
    dicts) therefore reuses the composition of its structural overrides, with those values set in it,
    which is what Hydra's own override of an existing value does. Any other job is composed by Hydra.
    """
    parser = OverridesParser.create()
    groups: set[str] | None = None
    bases: dict[tuple[str, ...], tuple[DictConfig, dict]] = {}
    for job in jobs:
        if groups is None:  # the first job: Hydra composes it, and names the config groups
            cfg = compose("config", overrides=job, return_hydra_config=True)
            groups = set(cfg.hydra.runtime.choices)
            yield cfg, settings_of(cfg)
            continue
        parsed = parser.parse_overrides(job)
        values = [o for o in parsed if plain_value(o, groups)]
        rest = [o for o in parsed if not plain_value(o, groups)]
        key = tuple(o.input_line for o in rest)
        if key not in bases:
            cfg = compose("config", overrides=list(key), return_hydra_config=True)
            bases[key] = cfg, app_part(cfg)
        cfg, plain = bases[key]
        if settable(plain, values, rest, groups):
            job_plain = copy.deepcopy(plain)
            for o in values:
                *parents, leaf = o.key_or_group.split(".")
                node = job_plain
                for part in parents:
                    node = node[part]
                node[leaf] = o.value()
            yield cfg, _resolved(job_plain)
        else:
            cfg = compose("config", overrides=job, return_hydra_config=True)
            yield cfg, settings_of(cfg)


def plain_value(o, groups: set[str]) -> bool:
    """An override that sets one value: no +, ++, ~ or @package, no hydra.* key, no group, no dict."""
    return not (o.is_add() or o.is_force_add() or o.is_delete() or o.is_hydra_override() or o.package is not None
                or o.key_or_group in groups or isinstance(o.value(), dict))


def settable(plain: dict, values: list, rest: list, groups: set[str]) -> bool:
    """Whether setting `values` in `plain` is what Hydra would do: each key exists and is set once, with a value
    of its kind (a list for a list, a scalar for a scalar), and no other config override touches it."""
    keys = [o.key_or_group for o in values]
    others = [o.key_or_group for o in rest if o.key_or_group not in groups and not o.is_hydra_override()]
    if len(set(keys)) != len(keys) or any(k == t or k.startswith(f"{t}.") or t.startswith(f"{k}.") for k in keys for t in others):
        return False
    for o in values:
        node = plain
        for part in o.key_or_group.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        if isinstance(node, dict) or isinstance(node, list) != isinstance(o.value(), list):
            return False
    return True


def _check_launcher(launcher: dict) -> None:
    """Check the settings of the launcher a multirun will use, against this machine's GPUs and cores."""
    try:
        launchers.check(launcher, torch.cuda.device_count(), cores())
    except ValueError as e:
        raise ConfigError(str(e)) from None


@functools.lru_cache(maxsize=16)
def _checked(dataset: str, seed: int, input_dim: int | None, num_classes: int | None, folds: int, valid_split: float | None = None) -> None:
    """check_data on the data set's cross-validation part, and its labels on the held-out part (_split checked the
    features of both); remembered once it passes (an error is raised again each time). input_dim, num_classes None (a
    module with no such keys): the data's (_check_module checks the module against them)."""
    X, y, _, y_test = data.parts(dataset, seed)
    input_dim = X.shape[1] if input_dim is None else input_dim
    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    if y_test is not None:
        check_labels(y_test, num_classes)
    check_data(X, y, input_dim=input_dim, num_classes=num_classes, folds=folds, limit=json.loads(dataset).get("limit"))
    if valid_split:  # skorch's stratified split of each fit's rows, as scikit-learn's StratifiedShuffleSplit sizes it
        n_train, classes = len(y) - math.ceil(len(y) / folds), len(set(y.tolist()))  # the smallest fold's training rows
        n_valid = math.ceil(valid_split * n_train)
        if min(n_valid, n_train - n_valid) < classes:
            raise ConfigError(f"train.valid_split={valid_split:g}: holds out {n_valid} of a fold's {n_train} training samples and keeps "
                             f"{n_train - n_valid}; each part needs at least one sample of each of the {classes} classes "
                             f"(use about {classes / n_train:.3g} to {1 - classes / n_train:.3g}, or train.valid_split=null)")


def _check_data(settings: dict) -> None:
    """Load the job's data set (the jobs that follow in this process reuse it) and check it against the network,
    the folds and the validation split it is for (once per data set and those settings)."""
    m = settings["module"]
    try:
        _checked(json.dumps(settings["dataset"], sort_keys=True), settings["seed"], m.get("input_dim"), m.get("num_classes"),
                 settings["cv"]["folds"], settings["train"].get("valid_split"))
    except InstantiationException as e:
        raise ConfigError(_data_error(e.__cause__ or e)) from None
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(_data_error(e)) from None


def _data_error(e: BaseException) -> str:
    """A loader's error (src.data) as the user's line: its keyword named as the config key dataset.<keyword>."""
    return f"dataset.{e}" if isinstance(e, DataError) else f"dataset: {e}"


def check_data(X: np.ndarray, y: np.ndarray, *, input_dim: int, num_classes: int, folds: int, limit: int | None = None) -> None:
    """Raise ConfigError unless (X, y) fit the network and can be split into `folds` stratified folds.

    `limit` is the dataset.limit that drew (X, y) from a larger set, if any: a class left with too few
    samples is then that key's doing, and the message names it. (src.data.parts checked that every feature is finite.)
    """
    if len(X) != len(y):
        raise ConfigError(f"dataset: X has {len(X)} rows but y has {len(y)} labels")
    if X.shape[1] != input_dim:
        raise ConfigError(f"dataset: the samples have {X.shape[1]} features but module.input_dim={input_dim}; set module.input_dim={X.shape[1]}")
    check_labels(y, num_classes)
    counts = np.bincount(y, minlength=num_classes)
    if (counts < folds).any():
        cls = int(np.argmin(counts))
        if limit is not None:
            raise ConfigError(f"dataset.limit={limit}: leaves class {cls} {int(counts[cls])} samples, fewer than cv.folds={folds}; "
                              "every class needs at least one per fold, so raise dataset.limit or lower cv.folds")
        raise ConfigError(f"dataset: class {cls} has {int(counts[cls])} samples, fewer than cv.folds={folds}; every class needs at least one per fold")


def check_labels(y: np.ndarray, num_classes: int) -> None:
    """Raise ConfigError unless every label is in 0..num_classes-1."""
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        wrong = int(y.min() if y.min() < 0 else y.max())
        raise ConfigError(f"dataset: label {wrong} is outside 0..{num_classes - 1} (module.num_classes={num_classes})")


def _check_memory(settings: dict, size: ModuleSize | None = None) -> None:
    """Refuse a candidate that would not fit in its device's available memory trained one fit at a time (its other
    folds' fits wait on disk): the MLP by the fused engine's estimate (src.engine.fit_bytes), another module
    (`size`: as _check_module measured it) by module_fit_bytes. Larger grids are fine: they train stack
    by stack (src.vmapped splits a stack of other modules to fit)."""
    device = resolve_device(settings["device"])
    have = _available(device)
    rows = len(data.load(settings)[1])
    if size is not None:
        folds = settings["cv"]["folds"]
        batch = min(settings["train"]["batch_size"], rows * (folds - 1) // folds)  # a fold's training rows, at most
        need = module_fit_bytes(size, settings["optimizer"], batch)
        if need > have:
            m = settings["module"]
            cnn = m["_target_"] == "src.cnn.CNN"  # module=cnn: its size is module.channels's doing
            named, smaller = (f"module.channels={m['channels']}", "fewer or narrower module.channels") if cnn else \
                (f"module._target_={m['_target_']}", "a smaller module")
            raise ConfigError(f"{named}: one fit of {'this CNN' if cnn else 'it'} needs about {_amount(need)} (its "
                              f"{size.parameters:,} parameters, their gradients and optimizer state, and its layers' outputs on a batch of "
                              f"{batch}), more than the {_amount(have)} available on {device}; "
                              f"choose {smaller}, or a smaller train.batch_size")
        return
    need = fit_bytes(settings, rows, device)
    if need > have:
        m = settings["module"]
        key = "module.num_units" if m.get("hidden_sizes") is None else "module.hidden_sizes"
        raise ConfigError(f"{key}={m[key.split('.')[1]]}: training and scoring this width needs about {need / 2**30:.1f} GiB "
                          f"(one fit's parameters, gradients, optimizer state, activations), more than the {have / 2**30:.1f} GiB available on {device}; "
                          "choose a smaller width, or a smaller train.batch_size")


def _amount(n_bytes: int) -> str:
    """Bytes as the memory check writes them: 3.2 GiB, 41.5 MiB."""
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def module_fit_bytes(size: ModuleSize, optimizer: dict, batch: int) -> int:
    """An estimate of one fit's memory (bytes) for a module other than the MLP, trained on batches of `batch` rows: its
    parameters, their gradients and the optimizer's state (SGD's momentum buffer where momentum is set, two copies for
    Adam's moments and any other optimizer), and three times its layers' outputs on a batch (the outputs, what autograd
    saves of them for the backward pass, their gradients). Not counted: the framework's workspaces and temporaries
    inside a layer (a conv's unfolded input on some backends), so it is a lower bound: what it refuses cannot fit."""
    sgd = optimizer["_target_"].rsplit(".", 1)[-1] == "SGD"
    state = int(bool(optimizer.get("momentum"))) if sgd else 2
    return (2 + state) * size.parameter_bytes + 3 * size.activations * batch * 4  # float32 outputs


@functools.lru_cache(maxsize=8)
def _available(device: str) -> int:
    """The device's available memory, read once per command (src.fused.free_memory)."""
    return fused.free_memory(device)


def settings_of(cfg) -> dict:
    """The composed config without Hydra's own node (it resolves only inside a run), as plain Python."""
    return _resolved(app_part(cfg))


def app_part(cfg) -> dict:
    """The composed config, unresolved, without Hydra's node."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    return plain


def _resolved(plain: dict) -> dict:
    """The app's config with its interpolations resolved; ConfigError if a required (???) value is missing."""
    job_cfg = OmegaConf.create(plain)
    missing = sorted(OmegaConf.missing_keys(job_cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required: add {missing[0]}=... to the command line")
    return OmegaConf.to_container(job_cfg, resolve=True)
