"""The fused launcher (hydra_plugins/fused_launcher) as Hydra's own launchers are tested: found by Hydra's plugin
discovery, and through Hydra's launcher test suites, whose demo apps (not this project's) it runs one job after
another, as the basic launcher does; and its plan: which of this project's jobs train together as one program, and
which run alone. This project's jobs through it are tested in test_engine.py and test_sweep.py."""
import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from omegaconf import open_dict

from conftest import ROOT, TINY, fake_job
from hydra_plugins.fused_launcher import _core as launcher
from hydra_plugins.fused_launcher._core import ours
from hydra_plugins.fused_launcher.fused_launcher import FusedLauncher
from src import config, engine


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


def test_jobs_that_fuse_share_a_group_and_the_rest_run_alone(compose_cfg, tmp_path):
    grid = [["optimizer=sgd", "module.num_units=8"], ["optimizer=sgd", "module.num_units=16"],
            ["optimizer=adam", "module.num_units=8"],
            ["optimizer=adam", "+optimizer.amsgrad=true", "module.num_units=16"],  # the fused engine cannot train amsgrad
            ["optimizer=sgd", "module.num_units=32"],  # finished already: nothing to train
            ["optimizer=sgd", "module.num_units=64", "engine=gridsearch"]]
    jobs = []
    for num, overrides in enumerate(grid):
        cfg = compose_cfg(*overrides, *TINY, f"hydra.sweep.dir={tmp_path}")
        with open_dict(cfg):
            cfg.hydra.job.num = num
        jobs.append(cfg)
    fake_job(tmp_path / "4", config.identity(config.settings_of(jobs[4])), units=32)
    assert launcher.plan(jobs) == [(True, [0, 1]), (True, [2]), (False, [3]), (False, [4]), (False, [5])]
    assert engine.cannot_fuse(config.settings_of(jobs[3])).startswith("optimizer keyword amsgrad")
    assert launcher.plan([jobs[4]]) == [(False, [0])]
    with open_dict(jobs[4]):
        jobs[4].resume = False  # resume=false trains it again
    assert launcher.plan(jobs[:2] + [jobs[4]]) == [(True, [0, 1, 2])]


@pytest.fixture
def hydras_loader():
    """Hydra's own config loader for this app, and the master config of a multirun (what the sweeper and launcher hold)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        master = compose("config", overrides=["hydra.sweep.dir=/tmp/sweep", "hydra.job.config.override_dirname.kv_sep=_"],
                         return_hydra_config=True)
        yield GlobalHydra.instance().config_loader(), master


SHAPES = [  # each job's overrides, as the sweeper hands them to the launcher
    [["module.num_units=8", "optimizer.lr=0.1", *TINY], ["module.num_units=8", "optimizer.lr=0.01", *TINY],
     ["module.num_units=16", "optimizer.lr=0.1", *TINY], ["module.num_units=64", "optimizer.lr=1e-3", *TINY]],
    [["optimizer=adam", "module.num_units=8"], ["optimizer=sgd", "module.num_units=8"], ["optimizer=adam", "module.num_units=32"]],
    [["+optimizer.weight_decay=0.1", "seed=1"], ["+optimizer.weight_decay=0.2", "seed=2"], ["cv.scoring=[accuracy]", "seed=3"],
     ["cv.scoring=[accuracy,f1_macro]", "seed=4"], ["seed=5", "hydra.verbose=true"], ["seed=6", "hydra.verbose=true"]],
]


@pytest.mark.parametrize("jobs", SHAPES, ids=["plain values", "group choices", "adds, lists, hydra keys"])
def test_each_jobs_config_is_the_one_hydra_composes(hydras_loader, jobs):
    """ReusingConfigLoader's configs against Hydra's own load_sweep_config: the app's and Hydra's nodes (hydra.overrides.task,
    hydra.job.override_dirname, runtime.choices ...) and their flags; the sweeper's check and the launcher's load share one."""
    from omegaconf import OmegaConf

    from hydra_plugins.fused_launcher._configs import ReusingConfigLoader

    hydra_loader, master = hydras_loader
    reusing = ReusingConfigLoader(hydra_loader)
    checked = [reusing.load_sweep_config(master, job) for job in [*jobs, jobs[0]]]  # the sweeper's validate_batch_is_legal
    for k, job in enumerate([*jobs, jobs[0]]):  # a job listed twice is two jobs, with a config each
        cfg = reusing.take(master, job)  # the launcher's
        hydras = hydra_loader.load_sweep_config(master, job)
        assert cfg is checked[k]
        assert OmegaConf.to_yaml(cfg) == OmegaConf.to_yaml(hydras)
        assert OmegaConf.to_yaml(cfg.hydra) == OmegaConf.to_yaml(hydras.hydra)
        for a, b in [(cfg, hydras), (cfg.hydra, hydras.hydra), (cfg.module, hydras.module)]:
            assert (OmegaConf.is_struct(a), OmegaConf.is_readonly(a)) == (OmegaConf.is_struct(b), OmegaConf.is_readonly(b))


def test_a_sweep_of_values_is_composed_once_and_a_bad_value_by_hydra(hydras_loader, monkeypatch):
    from hydra.errors import ConfigCompositionException

    from hydra_plugins.fused_launcher._configs import ReusingConfigLoader

    hydra_loader, master = hydras_loader
    composed = []
    reusing = ReusingConfigLoader(hydra_loader)
    monkeypatch.setattr(hydra_loader, "load_sweep_config", lambda m, o: composed.append(o) or type(hydra_loader).load_sweep_config(hydra_loader, m, o))
    for units in range(8, 72, 8):
        reusing.load_sweep_config(master, [f"module.num_units={units}", *TINY])
    assert len(composed) == 1
    with pytest.raises(ConfigCompositionException, match="Could not override 'module.num_unit'"):
        reusing.load_sweep_config(master, ["module.num_unit=8", *TINY])  # a key the config lacks: Hydra says so


def test_jobs_of_another_module_fuse_by_module_class_and_what_vmap_refuses_runs_alone(compose_cfg, tmp_path):
    """Jobs of one module._target_ (src.vmapped trains them) that differ in the optimizer's numbers and the module's
    keywords form one group, apart from the MLP's; a module vmap cannot train runs alone through GridSearchCV."""
    modules = [{"_target_": "small_modules.TinyCNN", "channels": 2}, {"_target_": "small_modules.TinyCNN", "channels": 3},
               {"_target_": "small_modules.BatchNormNet"}, None, {"_target_": "small_modules.TinyCNN", "channels": 2}]
    jobs = []
    for num, module in enumerate(modules):
        cfg = compose_cfg(f"optimizer.lr={0.01 * (num + 1)}", *TINY, f"hydra.sweep.dir={tmp_path}")
        with open_dict(cfg):
            cfg.hydra.job.num = num
            if module is not None:
                cfg.module = module
        jobs.append(cfg)
    assert launcher.plan(jobs) == [(True, [0, 1, 4]), (False, [2]), (True, [3])]


def test_finished_jobs_keep_their_configs_in_their_folders(monkeypatch, tmp_path):
    """What the launch returns to the sweeper holds no job's config: each JobReturn reads its job's cfg and hydra_cfg
    from the files Hydra's job runner wrote (.hydra/), so that a sweep's memory does not grow with its jobs."""
    from conftest import run_here

    returned = []
    real = launcher.launch
    monkeypatch.setattr(launcher, "launch", lambda *a, **k: returned.extend(real(*a, **k)) or returned)
    sweep_dir = tmp_path / "s"
    proc = run_here("module.num_units=8,16", *TINY, "engine=fused", "cv.refit=false", f"hydra.sweep.dir={sweep_dir}", "-m")
    assert proc.returncode == 0, proc.stderr
    assert [type(r) for r in returned] == [launcher.FolderReturn] * 2
    for num, (ret, units) in enumerate(zip(returned, (8, 16))):
        assert "cfg" not in vars(ret) and "hydra_cfg" not in vars(ret)
        assert "hydra" not in ret.cfg and ret.cfg.module.num_units == units and ret.cfg.dataset.limit == 150  # as run_job's task config
        assert ret.hydra_cfg.hydra.job.num == num and ret.hydra_cfg.hydra.runtime.output_dir == str(sweep_dir / str(num))
        assert ret.overrides[0] == f"module.num_units={units}"
        assert isinstance(ret.return_value, float)
