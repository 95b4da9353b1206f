"""The fused launcher's plan (src/launcher.py): which jobs train together as one program, and which run alone."""
from omegaconf import open_dict

from conftest import TINY, fake_job
from src import config, engine, launcher


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
