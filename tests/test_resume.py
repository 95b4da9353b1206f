"""Resuming into a results folder (src/resume.py): what a folder is, which jobs it owns, what a rerun may reuse,
move or refuse; in-process, on job folders written as src.store writes them."""
import pytest

from conftest import TINY, fake_job
from src import resume, store
from src.identity import job_key
from src.config import ConfigError, preflight


def checked(tmp_path, *overrides, multirun=True):
    """preflight() of a tiny command into tmp_path/s."""
    out = f"hydra.sweep.dir={tmp_path / 's'}" if multirun else f"hydra.run.dir={tmp_path / 's'}"
    return preflight([*TINY, *overrides, out, *(["-m"] if multirun else [])])


def test_momentum_0_and_0_0_are_one_configuration(tmp_path):
    """Issue 18 item 3: the identity compares values as the config means them (the default SGD's momentum: 0)."""
    zero, zero_float = checked(tmp_path, "optimizer.momentum=0", multirun=False), checked(tmp_path, "optimizer.momentum=0.0", multirun=False)
    assert job_key(zero.identities[0]) == job_key(zero_float.identities[0])
    fake_job(tmp_path / "s", zero.identities[0])
    assert resume.prepare_folder(zero_float) == []  # the finished run is this run: not refused as another configuration


def identity_of(units: int, **more) -> dict:
    return {"module": {"num_units": units}, "cv": {"scoring": ["accuracy"]}, **more}


def test_a_finished_folder_in_the_way_is_moved_aside_never_deleted(tmp_path):
    """Item 1: two finished folders of one identity (written before the preflight refused such sweeps); a rerun
    moves job 0 to number 1, where the second one sits: that one moves past the grid, it is not removed."""
    for k in (0, 1):
        fake_job(tmp_path / str(k), identity_of(8)).joinpath("mark").write_text(str(k))
    lines = resume.arrange(tmp_path, [identity_of(16), identity_of(8)], resume.finished_folders(tmp_path))
    marks = {d.name: d.joinpath("mark").read_text() for d in store.job_folders(tmp_path)}
    assert marks == {"1": "0", "2": "1"} and any("moved aside" in line for line in lines)


@pytest.mark.parametrize("resume_flag", ["resume=true", "resume=false"])
def test_a_folder_is_a_run_or_a_sweep_never_both(tmp_path, resume_flag):
    """Item 6: a sweep into a single run's folder, or a single run into a sweep's folder, is refused in one line."""
    run = checked(tmp_path, resume_flag, multirun=False)
    fake_job(tmp_path / "s", run.identities[0])  # a finished single run
    with pytest.raises(ConfigError, match=r"hydra.sweep.dir=.*: holds a single run .*never both"):
        resume.prepare_folder(checked(tmp_path, "module.num_units=8,16", resume_flag))
    (tmp_path / "s" / store.JOB).unlink()
    (tmp_path / "s" / ".hydra").mkdir()  # a single run that has not finished yet is a run too
    with pytest.raises(ConfigError, match="holds a single run"):
        resume.prepare_folder(checked(tmp_path, "module.num_units=8,16", resume_flag))
    sweep = tmp_path / "t" / "s"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    with pytest.raises(ConfigError, match=r"hydra.run.dir=.*: holds a sweep .*never both"):
        resume.prepare_folder(checked(tmp_path / "t", resume_flag, multirun=False))


def test_a_sweep_owns_only_its_own_job_folders_not_a_nested_sweeps(tmp_path):
    """Item 5: a sweep into S/ablation, then one into S: the outer one neither resumes, moves nor aggregates
    the inner one's jobs; and it refuses to launch a job into a numbered folder that is another sweep."""
    outer = checked(tmp_path, "module.num_units=8,16")
    inner = tmp_path / "s" / "ablation"
    fake_job(inner / "0", outer.identities[1], units=16)  # the inner sweep's job is the outer grid's job 1
    (inner / "multirun.yaml").write_text("hydra: {}\n")
    assert resume.finished_folders(tmp_path / "s") == {} and store.job_folders(tmp_path / "s") == []
    assert resume.prepare_folder(outer) == []
    assert (inner / "0" / store.JOB).is_file() and not (tmp_path / "s" / "1").exists()
    assert store.aggregate(tmp_path / "s") is None
    inner.rename(tmp_path / "s" / "1")  # a nested sweep where the outer one's job 1 would write
    with pytest.raises(ConfigError, match=r"hydra.sweep.dir=.*: its job 1 would write into .*, another sweep's folder"):
        resume.prepare_folder(outer)


def finished_sweep(tmp_path, *overrides):
    """tmp_path/s holding the finished jobs of `overrides -m`, as the command would have left them."""
    first = checked(tmp_path, *overrides)
    for k, identity in enumerate(first.identities):
        fake_job(tmp_path / "s" / str(k), identity, units=identity["module"]["num_units"])
    (tmp_path / "s" / "multirun.yaml").write_text("hydra: {}\n")
    return first


def test_a_second_command_with_other_fixed_settings_is_refused_and_resume_false_starts_afresh(tmp_path):
    """Item 2: rows of two commands are never mixed in one aggregate without a column to tell them apart."""
    finished_sweep(tmp_path, "module.num_units=8,16")
    with pytest.raises(ConfigError) as err:
        resume.prepare_folder(checked(tmp_path, "module.num_units=8,16", "train.max_epochs=3"))
    assert str(err.value).startswith("train.max_epochs=3: hydra.sweep.dir=") and "train.max_epochs=2" in str(err.value)
    assert "resume=false" in str(err.value) and "\n" not in str(err.value)
    resume.prepare_folder(checked(tmp_path, "module.num_units=8,32"))  # accepted: a grown grid varies the keys its jobs vary
    resume.prepare_folder(checked(tmp_path, "module.num_units=16"))    # and so does a shrunk one
    lines = resume.prepare_folder(checked(tmp_path, "module.num_units=8", "train.max_epochs=3", "resume=false"))
    assert store.job_folders(tmp_path / "s") == [] and lines and "moved aside" in lines[0]
    assert sorted(p.parent.name for p in (tmp_path / "s" / ".replaced").rglob(store.JOB)) == ["0", "1"]  # kept, not deleted


def units_by_folder(sweep_dir) -> dict[str, int]:
    """Each job folder's name -> the num_units of the finished job it holds."""
    return {d.relative_to(sweep_dir).as_posix(): store.job_record(d)["config"]["module"]["num_units"] for d in store.job_folders(sweep_dir)}


def test_a_grown_shrunk_or_reordered_grid_finds_every_finished_job(tmp_path):
    """Each finished job moves to the number of its configuration in the new grid; those the grid leaves out move past
    it: nothing finished is lost, and no folder holds another configuration's job."""
    finished_sweep(tmp_path, "module.num_units=8,32")
    lines = resume.prepare_folder(checked(tmp_path, "module.num_units=32,16,8,24"))  # grown and reordered
    assert any(line.startswith("finished job 0 (module.num_units=8") and "is job 2 now" in line for line in lines), lines
    assert units_by_folder(tmp_path / "s") == {"0": 32, "2": 8}
    resume.prepare_folder(checked(tmp_path, "module.num_units=24"))  # shrunk: neither is in the grid
    kept = units_by_folder(tmp_path / "s")
    assert sorted(kept.values()) == [8, 32] and "0" not in kept


def test_an_interrupted_rearrangement_is_found_again(tmp_path):
    """A finished job left under its staging name by a crash is matched on the next run, not retrained."""
    finished_sweep(tmp_path, "module.num_units=8")
    (tmp_path / "s" / "0").rename(tmp_path / "s" / f"{resume.STAGING}0")
    lines = resume.prepare_folder(checked(tmp_path, "module.num_units=16,8"))
    assert any("is job 1 now" in line for line in lines) and units_by_folder(tmp_path / "s") == {"1": 8}
    assert not list((tmp_path / "s").glob(f"{resume.STAGING}*"))
