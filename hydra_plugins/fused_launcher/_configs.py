"""Each job's composed config, as Hydra's load_sweep_config makes it, from one composition per shape of overrides.

Hydra composes every job of a multirun twice: the sweeper to check that it composes (validate_batch_is_legal),
and the launcher to run it; each composition reads and merges the whole defaults tree again (about 0.1 s
a job on 2 cores: 13 s of a 64-job sweep). Most sweeps vary plain values (module.num_units=8,16,...).
ReusingConfigLoader therefore composes one job of each shape through Hydra, and makes each other job of that
shape from a copy of it, with the job's values set as Hydra sets them (OmegaConf.update) and Hydra's record of
the job (hydra.overrides.task, hydra.job.override_dirname) written as Hydra writes it. A job's config is
made once: the sweeper's check makes it (load_sweep_config), and the launcher takes it (take). Any other job (a group choice,
+key, ~key, a dict value, a value that fails to set) is composed by Hydra itself.
"""
import copy
import re
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from src.config import app_part, plain_value, settable


def reusing(hydra_context) -> "ReusingConfigLoader":
    """The context's config loader as a ReusingConfigLoader, installed in the context (a hydra.types.HydraContext) where it
    is not yet: the sweeper holds the same context, so that its check of each job makes the config the launch takes."""
    if not isinstance(hydra_context.config_loader, ReusingConfigLoader):
        hydra_context.config_loader = ReusingConfigLoader(hydra_context.config_loader)
    return hydra_context.config_loader


class ReusingConfigLoader(ConfigLoader):
    """Hydra's config loader (`inner`), whose load_sweep_config reuses one composition per shape of overrides."""

    def __init__(self, inner: ConfigLoader):
        self.inner = inner
        self.parser = OverridesParser.create()
        self.groups: set[str] | None = None  # the config groups (a choice among them is no plain value), from the first composition
        self.bases: dict[tuple, tuple[DictConfig, dict]] = {}  # shape -> (Hydra's composition of its first job, its app part)
        self.made: dict[tuple[str, ...], list[DictConfig]] = {}  # made for the sweeper's check, not yet taken by the launch

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """The job's config, for the sweeper's check (validate_batch_is_legal); it is kept for the job's launch (take)."""
        cfg = self._make(master_config, list(sweep_overrides))
        self.made.setdefault(tuple(sweep_overrides), []).append(cfg)
        return cfg

    def take(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """The config of a job to launch: the one the sweeper's check of it made, else a new one."""
        kept = self.made.get(tuple(sweep_overrides))
        return kept.pop(0) if kept else self._make(master_config, list(sweep_overrides))

    def _make(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(OmegaConf.to_container(master_config.hydra.overrides.hydra) + sweep_overrides)
        cfg = None if self.groups is None else self._reuse(master_config, parsed)
        if cfg is None:
            cfg = self.inner.load_sweep_config(master_config, sweep_overrides)
            self.groups = self.groups if self.groups is not None else set(cfg.hydra.runtime.choices)
            self.bases.setdefault(self._shape(parsed), (copy.deepcopy(cfg), app_part(cfg)))
        return cfg

    def _shape(self, parsed: list) -> tuple:
        """What jobs of one shape share: every override but their plain values', and the keys of those."""
        return tuple(("value", o.key_or_group) if plain_value(o, self.groups) else ("as is", o.input_line) for o in parsed)

    def _reuse(self, master_config: DictConfig, parsed: list) -> DictConfig | None:
        """The job's config from the composition of its shape, or None where Hydra must compose it."""
        if self._shape(parsed) not in self.bases:
            return None
        base, plain = self.bases[self._shape(parsed)]
        values = [o for o in parsed if plain_value(o, self.groups)]
        if not settable(plain, values, [o for o in parsed if not plain_value(o, self.groups)], self.groups):
            return None
        cfg = copy.deepcopy(base)
        try:
            for o in values:  # as Hydra's _apply_overrides_to_config sets a plain value
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        except Exception:  # a value the config refuses: Hydra composes the job, and says what is wrong
            return None
        app = [o for o in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in app]
        named = cfg.hydra.job.config.override_dirname
        lines = sorted(o.input_line for o in app if o.key_or_group not in named.exclude_keys)
        cfg.hydra.job.override_dirname = re.sub("[=]", named.kv_sep, named.item_sep.join(lines))  # Hydra's get_overrides_dirname
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    # the rest is Hydra's own
    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.inner.load_configuration(*args, **kwargs)

    def get_search_path(self):
        return self.inner.get_search_path()

    def get_sources(self):
        return self.inner.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.inner.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.inner.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any):
        return self.inner.compute_defaults_list(*args, **kwargs)
