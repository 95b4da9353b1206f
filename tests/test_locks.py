"""The leases on results folders (src/locks.py): a waiter names the holder, and a killed holder does not block."""
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from conftest import ROOT
from src import locks

HOLD = "import sys, time; from pathlib import Path; from src import locks\n" \
       "with locks.job(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"


def test_a_waiter_names_the_holder_and_a_killed_holder_does_not_block(tmp_path, caplog):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        acquired = threading.Event()

        def wait_for_the_folder():
            with locks.job(tmp_path):
                acquired.set()

        with caplog.at_level(logging.WARNING, logger="src.locks"):
            waiter = threading.Thread(target=wait_for_the_folder, daemon=True)
            waiter.start()
            deadline = time.time() + 60
            while f"waiting for pid {holder.pid}" not in caplog.text:  # it waits, and says for whom
                assert time.time() < deadline and not acquired.is_set()
                time.sleep(0.05)
        assert not acquired.is_set()
        os.kill(holder.pid, signal.SIGKILL)  # its marker stays behind, naming a process that is gone
        holder.wait()
        assert (tmp_path / locks.JOB_LOCK).exists()
        waiter.join(timeout=60)
        assert acquired.is_set(), "a lock left by a killed process blocked its folder"
        assert not (tmp_path / locks.JOB_LOCK).exists()  # released again
    finally:
        if holder.poll() is None:
            holder.kill()
