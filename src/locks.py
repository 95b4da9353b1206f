"""Who writes a results folder: a command holds its sweep (or run) folder, a job its job folder.

Two commands into one sweep folder would both number their jobs from 0 and write the same job
folders, so a command holds its results folder from its first look at what is there until it ends;
a second command waits, then resumes from what the first finished (src.resume). A job holds its job
folder while it checks, trains and records it, and src.resume waits for a job folder to be free
before it moves it (a straggling job of an earlier command may still be writing it).

The locks are filelock's SoftFileLease markers: a file recording the holder's pid, host and process
start time, refreshed by a heartbeat thread every 100 s. A holder killed on this host is taken over at
once, one killed on another host once its lease runs out (LEASE_SECONDS); they need no fcntl, so they
also work on network file systems.
"""
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from filelock import SoftFileLease, Timeout

log = logging.getLogger(__name__)

COMMAND_LOCK = ".command.lock"  # in a results folder: the command writing into it
JOB_LOCK = ".job.lock"          # in a job folder: the job writing it
LEASE_SECONDS = 300.0      # a holder that stops refreshing its marker for this long counts as gone (one on this
                           # host counts as gone at once when its process has ended)
POLL_SECONDS = 0.5         # how often a waiter looks again


@contextlib.contextmanager
def hold(path: Path, what: str) -> Iterator[None]:
    """Hold the lease at `path` for the block, waiting (with one log line naming the holder) while another process holds it."""
    path = Path(path).absolute()  # Hydra may change the working directory (hydra.job.chdir) while it is held
    path.parent.mkdir(parents=True, exist_ok=True)
    lease = SoftFileLease(str(path), lease_duration=LEASE_SECONDS, poll_interval=POLL_SECONDS)
    try:
        lease.acquire(timeout=0)
    except Timeout:
        owner = lease.owner
        holder = f"pid {owner.pid} on {owner.hostname}" if owner else "another process"
        log.warning(f"waiting for {holder}, which is writing {what} ({path})")
        lease.acquire()
    try:
        yield
    finally:
        lease.release()


def command(results_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold a results folder for a whole command (a second command into it waits until this one ends)."""
    return hold(Path(results_dir) / COMMAND_LOCK, f"into {results_dir}")


def job(job_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold a job folder while its job is checked, trained and recorded."""
    return hold(Path(job_dir) / JOB_LOCK, f"the job in {job_dir}")
