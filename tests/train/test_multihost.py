"""Multi-host: 2 processes x 2 fake CPU devices on localhost (gloo collectives) give the same losses
as 1 process x 4 devices for the same steps, with FSDP over both hosts, and everything after a step
is SPMD: samples during training (every process computes on the split weights, process 0 writes),
the export, and the end-of-training video (stage_runner.generate_video through the pipeline on
the global FSDP mesh) identical to the 1-process one, written once."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import portpicker
import pytest
import tiny_family
from cpu_flags import xla_flags

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

WORKER = textwrap.dedent("""
    import json, sys
    pid, nproc, port, workdir = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    late = float(sys.argv[5]) if pid == 1 else 0.0  # seconds process 1 starts training late
    family = sys.argv[6]  # a tiny family's workdir to generate the video from, or ""
    import time
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if nproc > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc,
                                   process_id=pid)
    from toy_stage import make_stage
    from nuwa_xl_jax import parallel
    from nuwa_xl_jax.configuration import train as train_config
    from nuwa_xl_jax.train import loop
    assert jax.device_count() == 4, jax.device_count()
    c = train_config.train_block()
    c.update(steps=6, batch_size=8, learning_rate=0.05, warmup_steps=0, log_every=1,
             checkpoint_every=3, async_checkpoints=False, sample_every=3)
    import dataclasses, os
    import numpy as np
    from nuwa_xl_jax.family import store

    def sample(params, step, directory):  # as write_samples: SPMD on the split weights
        kernel = jax.jit(lambda p: p["params"]["proj"]["kernel"] * 1)(params)
        assert nproc == 1 or not kernel.is_fully_addressable  # FSDP across the hosts
        kernel = parallel.to_host(kernel)  # a multi-host gather, never a read of other hosts
        if jax.process_index() == 0:
            os.makedirs(directory, exist_ok=True)
            np.save(os.path.join(directory, f"step_{step}.npy"), kernel)

    stage = dataclasses.replace(make_stage(), sample=sample)
    time.sleep(late)
    # FSDP over all 4 devices: with 2 processes every weight is split across the hosts
    mesh = parallel.make_mesh((1, -1))
    r = loop.train(stage, c, workdir, mesh, progress=False)
    store.write_export(os.path.join(workdir, "toy", "export"), r.state.ema_params, {"width": 4})
    if family:  # the end-of-training video: every process generates over the FSDP mesh
        from nuwa_xl_jax import configuration
        from nuwa_xl_jax.train import stage_runner
        config = configuration.load("configs/synthetic.py:tiny")
        config.generate.steps = 2
        stage_runner.generate_video(config, family, mesh)
    print("LOSSES", json.dumps(r.losses))
""")


def _launch(nproc, devices_per_process, workdir, late=0.0, family=""):
    port = portpicker.pick_unused_port()
    env = dict(
        os.environ,
        XLA_FLAGS=xla_flags(devices_per_process),
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([ROOT, HERE]),
    )  # HERE: toy_stage
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(p), str(nproc), str(port),
                               str(workdir), str(late), str(family)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in range(nproc)]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("multi-process training timed out")
        assert p.returncode == 0, _why(err)
        outs.append(json.loads(out.split("LOSSES", 1)[1]))
    return outs


def test_two_processes_match_one(tmp_path):
    families = {}
    for run in ("single", "multi"):  # a tiny family each: the video is written into it
        families[run] = tmp_path / f"{run}_family"
        tiny_family.write_random_family(str(families[run]))
    (single,) = _launch(1, 4, tmp_path / "single", family=families["single"])
    multi = _launch(2, 2, tmp_path / "multi", family=families["multi"])
    assert len(single) == 6
    for losses in multi:
        np.testing.assert_allclose(losses, single, rtol=1e-5)
    # samples (computed SPMD on FSDP weights split across the hosts) and the export: written once
    from nuwa_xl_jax.family import store
    samples = tmp_path / "multi" / "toy" / "samples"
    assert sorted(os.listdir(samples)) == ["step_3.npy", "step_6.npy"]
    exported, _ = store.read_export(str(tmp_path / "multi" / "toy" / "export"))
    np.testing.assert_array_equal(np.load(samples / "step_6.npy"),
                                  exported["params"]["proj"]["kernel"])
    # the end-of-training video: generated by both processes over the global FSDP mesh, written
    # by process 0, frame for frame the 1-process video
    for name in ("video.mp4", "video_sheet.png"):
        assert (families["multi"] / name).read_bytes() == (families["single"] / name).read_bytes()


@pytest.mark.slow
def test_a_process_far_behind_does_not_time_out(tmp_path):
    """Process 1 reaches training 40 s after process 0: longer than gloo's fixed 30 s connect
    timeout, which the first collective of a program would hit without the compile-then-meet
    barrier (parallel.compile_together)."""
    (single,) = _launch(1, 4, tmp_path / "single")
    multi = _launch(2, 2, tmp_path / "multi", late=40.0)
    for losses in multi:
        np.testing.assert_allclose(losses, single, rtol=1e-5)


def _why(stderr: str) -> str:
    """The error lines of a failed run (its tail alone is an abort's stack of module names)."""
    errors = [line for line in stderr.splitlines() if "Error" in line or "error" in line]
    return "\n".join(errors[-20:]) + "\n...\n" + stderr[-1500:]


def _stage_losses(workdir):
    with open(os.path.join(workdir, "vae", "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


@pytest.mark.slow  # two minutes: the default run keeps test_two_processes_match_one
def test_launch_script_real_stage_matches_one_process(tmp_path):
    """launch/local_multiprocess.sh, 2 processes x 2 devices, the real VAE stage and data pipeline
    (whose global batches do not depend on the process count) = 1 process x 4 devices."""
    from nuwa_xl_jax import configuration
    from nuwa_xl_jax.data import sources

    config = configuration.load("configs/synthetic.py:tiny")
    config.data.data_dir = str(tmp_path / "tfds")
    sources.prepare(config.data)  # build once, not concurrently from two processes
    args = ["--config=configs/synthetic.py:tiny", "--stages=vae",
            f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.vae_train.steps=4",
            "--config.vae_train.log_every=1", "--config.vae_train.async_checkpoints=False"]
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
               PORT=str(portpicker.pick_unused_port()))
    multi = subprocess.run(["bash", "launch/local_multiprocess.sh", "2", "2", *args,
                            f"--workdir={tmp_path / 'multi'}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=900)
    assert multi.returncode == 0, _why(multi.stderr)
    single = subprocess.run([sys.executable, "-m", "nuwa_xl_jax.train", *args,
                             f"--workdir={tmp_path / 'single'}"], cwd=ROOT,
                            env=dict(env, XLA_FLAGS=xla_flags(4)),
                            capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, _why(single.stderr)
    np.testing.assert_allclose(
        _stage_losses(tmp_path / "multi"), _stage_losses(tmp_path / "single"), rtol=1e-5
    )
