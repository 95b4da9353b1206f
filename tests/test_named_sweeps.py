"""Named sweeps (hydra_plugins/named_sweeps): the top-level sweeps/ folder is the config group `sweeps` for every
composition, whatever the working folder, and adds no other group. The command line's use of them (`--help`, a run
from another folder) is tested in test_sweep.py."""
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin

from conftest import ROOT
from hydra_plugins.named_sweeps.named_sweeps import NamedSweepsSearchPath, NamedSweepsSource


def test_discovery():
    assert NamedSweepsSearchPath.__name__ in [x.__name__ for x in Plugins.instance().discover(SearchPathPlugin)]
    assert NamedSweepsSource.__name__ in [x.__name__ for x in Plugins.instance().discover(ConfigSource)]


def test_a_named_sweep_composes_from_another_folder_with_its_package_header(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+sweeps=seed_reproduction"], return_hydra_config=True)
        groups = GlobalHydra.instance().config_loader().list_groups("")
        options = GlobalHydra.instance().config_loader().get_group_options("sweeps")
    assert cfg.module.init == "randn" and cfg.train.valid_split == 0.2  # `# @package _global_`: set where the file says
    assert str(cfg.hydra.sweeper.params["module.num_units"]) == "32,64,128,256"
    assert cfg.hydra.runtime.choices["sweeps"] == "seed_reproduction"
    assert options == sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
    # the repository's other folders (outputs/, src/ ...) do not become groups: conf/'s, Hydra's and sweeps only
    assert sorted(groups) == sorted([d.name for d in (ROOT / "conf").iterdir() if d.is_dir()] + ["hydra", "sweeps"])
