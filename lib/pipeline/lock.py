"""One command at a time writes a run: a file lock on run_<run>/.lock, held while the command works.

Two `make` calls on one run used to interleave their stages (one crashed on the other's half-written
evaluation chunks). Every command that writes a run (each stage, Make's recording of the run,
clean-run) takes the lock before it writes anything; a second one stops at once with one line naming
the first (its process id and command line, which the holder writes into the file). The operating
system releases the lock when the holder exits, killed or not: nothing to clean up. In a
several-process launch the global rank 0 holds it for the command (the other ranks are its own).
"""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
from pathlib import Path

from lib.errors import InputError


class RunLock:
    """`with RunLock(path, run):` holds the run's lock, or raises an InputError naming the holder."""

    def __init__(self, path: Path, run: str):
        self.path, self.run = Path(path), run
        self._file = None

    def __enter__(self) -> RunLock:
        if os.environ.get("RANK", "0") != "0":  # a rank of a launch whose rank 0 holds the lock
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another command"
            handle.close()
            raise InputError(f"run {self.run!r} is being written by {holder}: wait for it to end (or stop it),"
                             " then run this again; nothing was written") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({holder_command()})\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None


def holder_command() -> str:
    """This process's command line, its interpreter shortened to its name."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    return shlex.join([Path(argv[0]).name, *argv[1:]])
