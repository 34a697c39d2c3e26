"""One training run per workdir: a second ``train`` is refused naming the holder's host and pid, a
lock left by a dead process is taken over, and the lock goes when its run ends."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from nuwa_xl_jax.train.workdir_lock import LOCK_FILE, WorkdirLock, WorkdirLockedError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
HOLDER = ("import sys, time\n"
          "from nuwa_xl_jax.train.workdir_lock import WorkdirLock\n"
          "lock = WorkdirLock(sys.argv[1]).acquire()\n"
          "print('LOCKED', flush=True)\n"
          "sys.stdin.read()\n")


def test_second_train_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=ROOT, env=ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        r = subprocess.run([sys.executable, "-m", "nuwa_xl_jax.train",
                            "--config=configs/synthetic.py:tiny", f"--workdir={workdir}",
                            "--stages=vae"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 1, r.stderr[-2000:]
        assert "Traceback" not in r.stderr
        assert f"process {holder.pid} on host {socket.gethostname()}" in r.stderr, r.stderr
        assert "WorkdirLockedError" in r.stderr and "another --workdir" in r.stderr
        assert sorted(os.listdir(workdir)) == [LOCK_FILE]  # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: its file stays behind
        holder.wait()
    with open(workdir / LOCK_FILE) as f:
        assert json.load(f)["pid"] == holder.pid

    lock = WorkdirLock(str(workdir)).acquire()
    assert lock.stale is not None and f"process {holder.pid}" in lock.stale
    with open(workdir / LOCK_FILE) as f:
        assert json.load(f)["pid"] == os.getpid()
    lock.release()
    assert not os.path.exists(workdir / LOCK_FILE)


def test_lock_is_exclusive_and_released_on_exit(tmp_path):
    with WorkdirLock(str(tmp_path)) as first:
        assert first.stale is None
        with pytest.raises(WorkdirLockedError, match=f"process {os.getpid()} on host"):
            WorkdirLock(str(tmp_path)).acquire()
    with WorkdirLock(str(tmp_path)):  # free again after the with block
        pass
    with pytest.raises(RuntimeError):
        with WorkdirLock(str(tmp_path)):
            raise RuntimeError("a failing run")
    assert not os.path.exists(tmp_path / LOCK_FILE)


WORKER = ("import sys\n"
          "from nuwa_xl_jax import parallel\n"
          "parallel.initialize_distributed(f'127.0.0.1:{sys.argv[1]}', 2, int(sys.argv[2]))\n"
          "from nuwa_xl_jax.train.workdir_lock import WorkdirLock, WorkdirLockedError\n"
          "try:\n"
          "    with WorkdirLock(sys.argv[3]):\n"
          "        print('HELD', flush=True)\n"
          "except WorkdirLockedError:\n"
          "    print('REFUSED', flush=True)\n")


def _two_processes(workdir):
    import portpicker

    port = str(portpicker.pick_unused_port())
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, port, str(p), str(workdir)], cwd=ROOT,
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        outs.append(out.strip())
    return outs


def test_a_multi_process_run_holds_one_lock_and_is_refused_as_one(tmp_path):
    """Process 0 takes the lock for the run; every process learns whether it got it."""
    assert _two_processes(tmp_path) == ["HELD", "HELD"]
    with WorkdirLock(str(tmp_path)):  # another run holds it: the whole 2-process run is refused
        assert _two_processes(tmp_path) == ["REFUSED", "REFUSED"]
