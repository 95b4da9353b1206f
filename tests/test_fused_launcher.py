"""The fused launcher (hydra_plugins/fused_launcher) as Hydra's own launchers are tested: found by Hydra's plugin
discovery, and through Hydra's launcher test suites, whose demo apps (not this project's) it runs one job after
another, as the basic launcher does. This project's jobs through it are tested in test_engine.py and test_sweep.py."""
import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

from conftest import ROOT
from hydra_plugins.fused_launcher._core import ours
from hydra_plugins.fused_launcher.fused_launcher import FusedLauncher


def test_discovery():
    assert FusedLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


def test_only_this_projects_jobs_fuse(compose_cfg):
    from omegaconf import OmegaConf

    assert ours(compose_cfg())
    assert not ours(OmegaConf.create({"db": {"driver": "mysql"}}))  # a config of Hydra's demo app


@pytest.fixture
def hydras_default_version_base(hydra_restore_singletons):
    """The suite's apps give no version_base: Hydra then assumes 1.1 (a job runs in its own folder), unless an earlier
    test's compose(version_base="1.3") left that set in this process. Hydra restores it after the test."""
    from hydra import version

    version.setbase("1.1")


@pytest.mark.slow  # nine sweeps of Hydra's demo apps in this process: about 10 s on 2 cores
@pytest.mark.usefixtures("hydras_default_version_base")
@pytest.mark.parametrize("launcher_name, overrides", [("fused", [])])
class TestFusedLauncher(LauncherTestSuite):
    """Hydra's launcher test suite, in this process (hydra_sweep_runner is Hydra's pytest plugin's fixture)."""


@pytest.fixture
def pythonpath(monkeypatch):
    """The suite's apps run in subprocesses from a temporary folder: they find this repository's plugin through PYTHONPATH."""
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))


@pytest.mark.slow  # eleven tests, each running an app in a subprocess that imports torch through the core: 3 min on 2 cores
@pytest.mark.usefixtures("pythonpath")
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({"defaults": [{"override hydra/launcher": "fused"}, "_self_"]}, ["-m"])])
class TestFusedLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration test suite: its apps run with hydra/launcher=fused from the command line."""
