"""Named sweeps (+sweeps=NAME): the repository's top-level sweeps/ folder as the config group `sweeps`, found
from any working folder, by every composition (the command line, `compose` in the tests, src.config's check).

Hydra adds configs from elsewhere through a SearchPathPlugin. A search path entry is a root of config groups,
though, and the folder that holds sweeps/ holds much else: as a file:// entry, conf/, outputs/ and every other
folder of the repository would become groups too (Hydra's `--help` lists every group, outputs/ included). So the
entry has a scheme of its own, whose ConfigSource shows just one group, `sweeps`, over the folder.
"""
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "sweeps"
FOLDER = Path(__file__).resolve().parents[2] / GROUP  # the top-level sweeps/, beside conf/ and src/


class NamedSweepsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="mlp-sweep", path=f"{NamedSweepsSource.scheme()}://{FOLDER}")


class NamedSweepsSource(ConfigSource):
    """A folder of YAML files, served as the one config group `sweeps`; each file's `# @package` header holds."""

    @staticmethod
    def scheme() -> str:
        return "named-sweeps"

    def _file(self, config_path: str) -> Path | None:
        """The file of `sweeps/NAME`; None for any other path."""
        group, _, name = config_path.strip("/").partition("/")
        return Path(self.path) / self._normalize_file_name(name) if group == GROUP and name else None

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._file(config_path)
        if path is None or not path.is_file():
            raise ConfigLoadError(f"Config not found: {config_path}")
        text = path.read_text(encoding="utf-8")
        return ConfigResult(config=OmegaConf.create(text), path=self.full_path(), provider=self.provider,
                            header=self._get_header_dict(text))

    def available(self) -> bool:
        return Path(self.path).is_dir()

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP) and self.available()

    def is_config(self, config_path: str) -> bool:
        path = self._file(config_path)
        return path is not None and path.is_file()

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        """The group `sweeps` at the root, and its options (file names without .yaml) within it."""
        if not self.available():
            return []
        if config_path.strip("/") == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if config_path.strip("/") == GROUP and results_filter in (None, ObjectType.CONFIG):
            return sorted(p.stem for p in Path(self.path).glob("*.yaml"))
        return []
