"""Resuming into a sweep folder: finished jobs are matched by their resolved configuration, wherever they sit.

Hydra numbers a multirun's job folders by the job's place in the grid, so a grown, shrunk or
reordered grid puts a different job at a number that already holds a finished one. Before such a
rerun launches, arrange() moves every finished job folder to the number of the job with its
configuration; finished jobs the new grid does not name move to numbers after the grid's, so nothing
finished is lost or overwritten, and the aggregate keeps them. Each move is one atomic rename
(through a hidden staging name), so a crash midway leaves only complete folders, which the next run
finds again.
"""
import logging
import os
import shutil
from pathlib import Path

from src import results

log = logging.getLogger(__name__)

STAGING = ".resume-"  # a finished job folder on its way to its new number (hidden from the aggregate)


def finished_folders(sweep_dir: Path) -> dict[str, Path]:
    """Every finished job folder under sweep_dir (numbered, or left in staging by an interrupted arrange), by configuration."""
    found: dict[str, Path] = {}
    if not Path(sweep_dir).is_dir():
        return found
    for d in sorted(Path(sweep_dir).iterdir()):
        if d.is_dir() and (d.name.isdigit() or d.name.startswith(STAGING)):
            record = results.finished_job(d)
            if record is not None:
                found.setdefault(results.job_key(record["config"]), d)
    return found


def arrange(sweep_dir: Path, wanted: list[dict]) -> list[str]:
    """Move finished job folders so that job k's folder holds the finished job with configuration wanted[k],
    where one exists; returns a line per move, for the log. Folders of unfinished (failed, killed) jobs
    in the way are removed: those jobs run again anyway."""
    sweep_dir = Path(sweep_dir)
    found = finished_folders(sweep_dir)
    target = {results.job_key(identity): sweep_dir / str(k) for k, identity in enumerate(wanted)}
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
        if dst.exists():  # an unfinished job's folder: it would be retrained and overwritten anyway
            shutil.rmtree(dst)
        os.rename(staged.get(src, src), dst)
        lines.append(f"finished job {src.name.removeprefix(STAGING)} ({', '.join(_overrides(dst))}) is job {dst.name} now")
    return lines


def _overrides(job_dir: Path) -> list[str]:
    record = results.finished_job(job_dir) or {}
    return record.get("overrides") or ["defaults"]
