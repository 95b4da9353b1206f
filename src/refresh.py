"""Rebuilding a sweep folder's aggregate and report from its job folders, safely, without a lock.

Jobs of a parallel launcher finish at the same time, on several machines, often on NFS, where file
locks are unreliable. So writers take no lock. Each one lists the finished jobs (their job.json
files), rebuilds the aggregate (src.store) and the report (src.report) from the job folders, every
file written to a temporary name and renamed, and then lists the finished jobs again. If they changed
meanwhile, what it wrote may be stale, and it rebuilds again.

Why that is enough: the files left at the end come from the writer that finished last. It listed the
same finished jobs before and after writing, and every job that finishes later starts a rebuild of its
own after its job.json exists. So the aggregate holds every finished job unless the last writer was
killed midway; then its files are still whole (renamed into place), and the rebuild that the
launching process runs at the end of the sweep (src.callbacks.RebuildAggregate) sets them right.
"""
import logging
from pathlib import Path

from src import report, store

log = logging.getLogger(__name__)

ATTEMPTS = 5  # rebuilds before a writer leaves the rest to the jobs finishing after it, and to the final rebuild


def finished_jobs(sweep_dir: Path) -> dict[str, tuple[int, int, int]]:
    """Each job folder's job.json (by the folder's path under sweep_dir), with its inode, modification time and size.

    A job.json is replaced by a rename, never rewritten in place, so a retried job changes its inode. Only
    stat() is read here: the rebuild itself validates the records (store.read_jobs).
    """
    found = {}
    for job_dir in store.job_folders(sweep_dir):
        try:
            st = (job_dir / store.JOB).stat()
        except FileNotFoundError:  # moved or removed since the listing (a rerun arranging the folder)
            continue
        found[job_dir.relative_to(sweep_dir).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def refresh(sweep_dir: Path, attempts: int = ATTEMPTS) -> bool:
    """Rebuild the aggregate (cv_results.*) and report of a sweep folder; True once a rebuild saw no job finish."""
    sweep_dir = Path(sweep_dir)
    for _ in range(attempts):
        before = finished_jobs(sweep_dir)
        if not before:
            return True  # nothing finished yet: nothing to aggregate
        try:
            jobs = store.read_jobs(sweep_dir)  # each job's files, read once for the aggregate and the report
            if store.aggregate(sweep_dir, jobs) is not None:  # None: no job folder holds a complete record
                report.write_report([sweep_dir], sweep_dir / report.REPORT, jobs_of={sweep_dir: jobs})
        except FileNotFoundError:  # a job folder moved while it was read (another run arranging the folder)
            continue
        if finished_jobs(sweep_dir) == before:
            return True
    log.info(f"{sweep_dir}: jobs kept finishing during {attempts} rebuilds of the aggregate; the jobs after this one, "
             "and the end of the sweep, rebuild it again")
    return False
