"""Resuming into a results folder: finished jobs are matched by their resolved configuration, wherever they sit.

prepare_folder() runs once per command, before its jobs, while the command holds the folder
(src.locks.command): it refuses what cannot be resumed and moves finished jobs (arrange).

Hydra numbers a multirun's job folders by the job's place in the grid, so a grown, shrunk or
reordered grid puts a different job at a number that already holds a finished one. Before such a
rerun launches, arrange() moves every finished job folder to the number of the job with its
configuration; finished jobs the new grid does not name move to numbers after the grid's, so nothing
finished is lost or overwritten, and the aggregate keeps them. Each move is one atomic rename
(through a hidden staging name), so a crash midway leaves only complete folders, which the next run
finds again.
"""
import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from src import locks, store
from src.config import Checked, ConfigError
from src.identity import flat, job_key

log = logging.getLogger(__name__)

STAGING = ".resume-"  # a finished job folder on its way to its new number (hidden from the aggregate)
REPLACED = ".replaced"  # what resume=false set aside (hidden from the aggregate), one numbered folder per command


def finished_folders(sweep_dir: Path) -> dict[str, tuple[Path, dict]]:
    """Every finished job folder under sweep_dir (at any depth, or left in staging by an interrupted arrange),
    with its record, by configuration."""
    sweep_dir = Path(sweep_dir)
    found: dict[str, tuple[Path, dict]] = {}
    if not sweep_dir.is_dir():
        return found
    for d in [*store.job_folders(sweep_dir), *sorted(sweep_dir.glob(f"{STAGING}*"))]:
        record = store.finished_job(d)
        if record is not None:
            found.setdefault(job_key(record["config"]), (d, record))
    return found


def prepare_folder(checked: Checked) -> list[str]:
    """Get the command's results folder ready for its jobs; returns lines for the log. Raises ConfigError
    where its finished jobs would be overwritten or could not be ranked with this command's."""
    out = checked.out_dir
    if out.is_dir():
        _check_kind(out, checked.multirun)
    if checked.numbered and out.is_dir():
        for k in range(len(checked.identities or [])):
            if (out / str(k) / "multirun.yaml").is_file():
                raise ConfigError(f"hydra.sweep.dir={out}: its job {k} would write into {out / str(k)}, another sweep's folder "
                                  "(it holds a multirun.yaml); a sweep writes only into folders of its own: use another hydra.sweep.dir")
    if not out.is_dir():
        return []
    if not checked.resume:
        if not checked.multirun:
            return []  # a single run's resume=false overwrites its folder's one job
        _wait_for_jobs(out)
        return set_aside(out)
    if not checked.multirun:
        try:
            store.finished_job(out, checked.identities[0])
        except store.OtherJob as e:
            raise ConfigError(f"hydra.run.dir={out}: holds a finished run with another configuration "
                              f"({' '.join(e.record['overrides']) or 'defaults'}); use another hydra.run.dir, or resume=false to overwrite it") from None
        return []
    _wait_for_jobs(out)
    found = finished_folders(out)
    if checked.identities is None and found:
        raise ConfigError(
            f"hydra.sweep.dir={out}: holds finished jobs, and hydra/sweeper={checked.sweeper} draws its own points, so they "
            "cannot be matched to this run's jobs (a sweeper such as Optuna resumes through its own storage); use a new "
            "hydra.sweep.dir, or resume=false to overwrite them")
    if checked.identities:
        _check_comparable(out, found.values(), checked.identities)
        _check_one_command(out, found.values(), checked.identities)
    lines = []
    in_grid = {out / str(k) for k in range(len(checked.identities or []))} if checked.numbered else set()
    for folder in store.job_folders(out):
        try:
            store.job_record(folder)
        except store.DamagedJob as e:
            if folder not in in_grid:  # a job of the grid says so itself, when it runs again
                lines.append(f"{e}; the job in {folder} counts as unfinished and is left out of the aggregate")
    if checked.numbered and checked.identities:
        lines += arrange(out, checked.identities, found)
    return lines


def _check_kind(folder: Path, multirun: bool) -> None:
    """Refuse a sweep into a single run's folder, or a single run into a sweep's: a folder is one or the other,
    never both (a run's files at the top of a sweep folder would be taken for the aggregate, and the other way round)."""
    if multirun and ((folder / store.JOB).is_file() or (folder / ".hydra").is_dir()):
        raise ConfigError(f"hydra.sweep.dir={folder}: holds a single run (its job.json or .hydra); a folder holds a run or a sweep, "
                          "never both; use another hydra.sweep.dir")
    if not multirun and (folder / "multirun.yaml").is_file():
        raise ConfigError(f"hydra.run.dir={folder}: holds a sweep (its multirun.yaml); a folder holds a run or a sweep, never both; "
                          "use another hydra.run.dir")


def _check_comparable(sweep_dir: Path, finished: Iterable[tuple[Path, dict]], wanted: list[dict]) -> None:
    """Refuse a sweep folder whose finished jobs the aggregate could not rank with this command's: scored with
    other metrics, or trained on a data set that has changed since (same dataset settings, other content)."""
    scoring = wanted[0]["cv"]["scoring"]
    now = {job_key(i["dataset"]): i["data_fingerprint"] for i in wanted}
    for folder, record in finished:
        theirs = record["config"]
        if theirs["cv"]["scoring"] != scoring:
            raise ConfigError(f"cv.scoring={scoring}: hydra.sweep.dir={sweep_dir} holds finished jobs scored with {theirs['cv']['scoring']} "
                              f"(e.g. {folder}), and rows scored differently cannot be ranked together; use another hydra.sweep.dir")
        data = now.get(job_key(theirs["dataset"]))
        if data is not None and theirs.get("data_fingerprint") not in (None, data):  # None: recorded before fingerprints
            raise ConfigError(f"dataset={theirs['dataset']['_target_'].rsplit('.', 1)[-1]}: its data have changed since the finished "
                              f"jobs in hydra.sweep.dir={sweep_dir} were trained on them (e.g. {folder}); use resume=false to "
                              "retrain every job on the data as they are now, or another hydra.sweep.dir")



def _canonical(config: dict) -> dict:
    """A nested config as {"module.num_units": "64", ...}, each value as its canonical JSON (job_key)."""
    return {k: job_key(v) for k, v in flat(config).items()}


def _check_one_command(sweep_dir: Path, finished: Iterable[tuple[Path, dict]], wanted: list[dict]) -> None:
    """Refuse a command whose jobs differ from the folder's finished jobs in a key that neither varies: its rows
    and theirs would stand in one aggregate, and one ranking and refit, with no column to tell them apart (the
    aggregate's columns are the keys a sweep varies). A grown, shrunk or reordered grid varies the same keys."""
    finished = list(finished)
    theirs, ours = [_canonical(record["config"]) for _, record in finished], [_canonical(i) for i in wanted]
    if not theirs:
        return

    def varied(rows: list[dict]) -> set[str]:
        return {k for k in set().union(*rows) if len({row.get(k) for row in rows}) > 1}

    free = varied(theirs) | varied(ours)
    for key in sorted(set().union(*theirs, *ours) - free - {"data_fingerprint"}):  # the data's content: _check_comparable
        if theirs[0].get(key) != ours[0].get(key):
            def shown(value: str | None) -> str:
                return "(none)" if value is None else str(json.loads(value))
            folder = finished[0][0]
            raise ConfigError(f"{key}={shown(ours[0].get(key))}: hydra.sweep.dir={sweep_dir} holds finished jobs of another command, "
                              f"with {key}={shown(theirs[0].get(key))} (e.g. {folder}), and neither command varies {key}, so their rows "
                              "would be ranked together with no column to tell them apart; use resume=false to start the folder "
                              "afresh (its jobs are moved aside to .replaced/), or another hydra.sweep.dir")


def set_aside(sweep_dir: Path) -> list[str]:
    """resume=false: move what the folder holds (its jobs, aggregate, report and refit) into .replaced/<n>/, out
    of the aggregate but not deleted, so that the command starts afresh. Another sweep nested here stays."""
    keep = {locks.COMMAND_LOCK, "multirun.yaml", REPLACED}
    entries = [e for e in sorted(Path(sweep_dir).iterdir()) if e.name not in keep and not (e / "multirun.yaml").is_file()]
    if not entries:
        return []
    aside = next(d for d in (sweep_dir / REPLACED / str(n) for n in range(10**9)) if not d.exists())
    aside.mkdir(parents=True)
    for entry in entries:
        os.rename(entry, aside / entry.name)
    return [f"resume=false, so the folder's earlier jobs and results are moved aside to {aside}, out of the aggregate"]


def _wait_for_jobs(sweep_dir: Path) -> None:
    """Wait until no job is writing a job folder here (a straggling job of an earlier command may be)."""
    for marker in sorted(Path(sweep_dir).rglob(locks.JOB_LOCK)):
        with locks.job(marker.parent):
            pass


def arrange(sweep_dir: Path, wanted: list[dict], found: dict[str, tuple[Path, dict]]) -> list[str]:
    """Move finished job folders so that job k's folder holds the finished job with configuration wanted[k],
    where one exists; returns a line per move, for the log. Folders of unfinished (failed, killed) jobs
    in the way are removed: those jobs run again anyway. A finished folder in the way is moved aside, past the
    grid, never removed. The command holds the sweep folder, and no job
    is writing in it (prepare_folder). `found`: finished_folders(sweep_dir)."""
    sweep_dir = Path(sweep_dir)
    records = {src: record for src, record in found.values()}
    found = {k: src for k, (src, _) in found.items()}
    target = {job_key(identity): sweep_dir / str(k) for k, identity in enumerate(wanted)}
    moves = {src: target[k] for k, src in found.items() if k in target and src != target[k]}
    taken = set(target.values())
    # a finished job the grid does not name, sitting on a number the grid needs (or in staging), moves past the grid
    spare = (sweep_dir / str(n) for n in range(len(wanted), 10**9) if not (sweep_dir / str(n)).exists())
    for k, src in found.items():
        if k not in target and (src in taken or src.name.startswith(STAGING)):
            moves[src] = next(spare)
    if not moves:
        return []
    staged = {}
    for src in moves:  # first out of the way, so that swaps and cycles work
        if not src.name.startswith(STAGING):
            stage = sweep_dir / f"{STAGING}{src.name}"
            os.rename(src, stage)
            staged[src] = stage
    lines = []
    for src, dst in moves.items():
        if dst.exists() and store.finished_job(dst) is not None:  # finished, yet not found: a second job of one identity
            aside = next(spare)
            os.rename(dst, aside)
            lines.append(f"finished job {dst.name} is in the way (it repeats the configuration of another); moved aside to job {aside.name}")
        elif dst.exists():  # an unfinished job's folder: it would be retrained and overwritten anyway
            shutil.rmtree(dst)
        os.rename(staged.get(src, src), dst)
        lines.append(f"finished job {src.name.removeprefix(STAGING)} ({' '.join(records[src]['overrides']) or 'defaults'}) is job {dst.name} now")
    return lines

