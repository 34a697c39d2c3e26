"""The Slurm launcher under a fake Slurm: its directives give one process per GPU, its command is
the training command with --distributed, and JAX's Slurm detection then gives each process of a
node a different GPU, so the 8 tasks of a node cover its 8 GPUs."""
import os
import re
import stat
import subprocess

from jax._src import clusters

SBATCH = os.path.join(os.path.dirname(__file__), "..", "launch", "slurm_gpu.sbatch")


def directives() -> dict:
    text = open(SBATCH).read()
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))


def test_one_task_per_gpu():
    d = directives()
    assert int(d["ntasks-per-node"]) == int(d["gpus-per-node"]) == 8
    assert "gpus-per-task" not in d  # binding would hide the GPU that SLURM_LOCALID names


def test_the_command_srun_runs(tmp_path):
    fake = tmp_path / "srun"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}",
               SRUN_ARGS=str(tmp_path / "args"))
    subprocess.run(["bash", SBATCH, "--config=configs/flintstones.py:256", "--workdir=/r"],
                   env=env, check=True)
    args = (tmp_path / "args").read_text().split("\n")[:-1]
    assert args == ["--kill-on-bad-exit=1", "python", "-m", "nuwa_xl_jax.train", "--distributed",
                    "--config=configs/flintstones.py:256", "--workdir=/r"]


def test_each_task_of_a_node_takes_its_own_gpu(monkeypatch):
    """What jax.distributed.initialize() (no arguments: --distributed) derives from the
    environment srun gives task LOCALID of 2 nodes x 8 tasks."""
    seen = []
    for node in range(2):
        for local in range(8):
            env = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "gpu[01-02]", "SLURM_NTASKS": "16",
                   "SLURM_PROCID": str(8 * node + local), "SLURM_LOCALID": str(local),
                   "SLURM_STEP_NUM_NODES": "2"}
            for k, v in env.items():
                monkeypatch.setenv(k, v)
            addr, n, pid, local_ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
                None, None, None, None, None, None)
            assert (addr.split(":")[0], n, pid) == ("gpu01", 16, 8 * node + local)
            seen.append(tuple(local_ids))
    assert seen == [(i,) for i in range(8)] * 2  # every GPU of each node, once
