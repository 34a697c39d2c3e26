"""One training run per workdir: ``WORKDIR/train.lock``, an exclusive ``flock`` held for the run.

The lock file names its holder (host, pid, start time). A second run on the same workdir is
refused with that name; a lock left by a process that died (killed, crashed, machine rebooted)
is free by construction (the kernel drops a dead process's flock) and is taken over with a note.
On a multi-host run process 0 holds the lock for all processes and every process learns the
outcome, so none of them trains when it is refused.

A bucket workdir (``gs://...``) has no ``flock``: there the lock is an object written when absent
and deleted at the end. A second run that starts after the first has written it is refused as
above, but the check and the write are not atomic (two runs starting in the same seconds can both
pass), and a run that dies leaves the object behind: delete it, as the message says. What guards
a bucket workdir is one job per workdir in the scheduler (a Slurm job name with
``--dependency=singleton``, one TPU slice per run); the lock catches the common mistake.
"""
from __future__ import annotations

import datetime
import fcntl
import itertools
import json
import os
import socket
from typing import Optional

import jax

from nuwa_xl_jax import paths

LOCK_FILE = "train.lock"


class WorkdirLockedError(RuntimeError):
    """Another live process trains in this workdir."""


def _holder_text(path: str) -> str:
    try:
        h = json.loads(paths.as_path(path).read_text())
        return f"process {h['pid']} on host {h['host']} (since {h.get('since', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


_ROUNDS = itertools.count()  # every process acquires in the same order: the keys agree


def _share(refused: bool) -> bool:
    """Process 0's outcome, told to every process through the coordination service's key-value
    store (the distributed client JAX and Orbax use; no device collective, no gloo context)."""
    # Deferred: a private JAX module, needed only by multi-process runs; a JAX that moves it
    # breaks only this path, not the import of the module.
    from jax._src import distributed

    client = distributed.global_state.client
    key = f"nuwa_xl_jax/workdir_lock/{next(_ROUNDS)}"
    if jax.process_index() == 0:
        client.key_value_set(key, "refused" if refused else "held")
    return client.blocking_key_value_get(key, 10 * 60 * 1000) == "refused"


class WorkdirLock:
    """``with WorkdirLock(workdir): ...`` holds the workdir's lock; :meth:`acquire` /
    :meth:`release`
    for explicit use. ``stale`` is the holder text of a dead process's lock taken over, else
    None."""

    def __init__(self, workdir: str):
        self.path = os.path.join(paths.absolute(workdir), LOCK_FILE)
        self._remote = paths.is_url(workdir)  # a bucket: an object, no flock (module docstring)
        self._fd: Optional[int] = None
        self.stale: Optional[str] = None

    def _info(self) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since":
                           datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})

    def _try_acquire_remote(self) -> Optional[str]:
        path = paths.as_path(self.path)
        if path.exists():
            return _holder_text(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._info())
        self._fd = -1  # held (no descriptor)
        return None

    def _try_acquire(self) -> Optional[str]:
        """None when acquired, else the holder's description."""
        if self._remote:
            return self._try_acquire_remote()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return _holder_text(self.path)
            try:  # the file we locked may have been unlinked by a releasing holder: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        if os.fstat(fd).st_size:  # a holder that died without releasing
            self.stale = _holder_text(self.path)
        os.ftruncate(fd, 0)
        os.write(fd, self._info().encode())
        os.fsync(fd)
        self._fd = fd
        return None

    def acquire(self) -> "WorkdirLock":
        holder = self._try_acquire() if jax.process_index() == 0 else None
        refused = holder is not None
        if jax.process_count() > 1:  # every process of the run learns process 0's outcome
            refused = _share(refused)
        if refused:
            raise WorkdirLockedError(
                f"workdir {os.path.dirname(self.path)} is in use by {holder or 'another run'}: "
                "two runs would write the same checkpoints. Wait for it to finish, stop it, or use "
                f"another --workdir (if that process is gone on another host, delete {self.path})")
        if self.stale and jax.process_index() == 0:
            print(f"note: took over the stale lock of {self.stale} in {self.path}")
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if self._remote:
            paths.as_path(self.path).unlink(missing_ok=True)
            self._fd = None
            return
        try:
            os.unlink(self.path)  # before unlocking: a waiter re-checks the inode it locked
        except FileNotFoundError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
