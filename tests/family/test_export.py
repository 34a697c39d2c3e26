"""``python -m nuwa_xl_jax.export``: one self-contained artifact of a family, written from FSDP
shards
(2 processes x 2 devices too), loaded on another device count with the same video; a killed export
leaves nothing that loads, and a damaged or foreign artifact is one clear error."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import portpicker
import pytest
from cpu_flags import xla_flags
from tiny_family import write_random_family

from nuwa_xl_jax import parallel
from nuwa_xl_jax.family import artifact, store
from nuwa_xl_jax.pipeline import NuwaXLPipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAGES = ("mtd_global", "mtd_local1", "mtd_ar")
PROMPTS = ["fred walks left in the cave"] * 3 + ["wilma jumps in the desert"] * 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return write_random_family(str(tmp_path_factory.mktemp("family")), stages=STAGES)


def _assert_same_weights(a_dir, b_dir, stages):
    for name in stages:
        a, meta_a = store.read_export(store.export_dir(a_dir, name))
        b, meta_b = store.read_export(store.export_dir(b_dir, name))
        assert meta_a == meta_b
        assert jax.tree.structure(a) == jax.tree.structure(b)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(x, y)


def test_export_is_the_family_and_a_killed_one_leaves_nothing(workdir, tmp_path, monkeypatch):
    real = store.write_export
    calls = []

    def dies_on_second_stage(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "write_export", dies_on_second_stage)
    out = str(tmp_path / "art")
    mesh = parallel.make_mesh((1, -1))
    with pytest.raises(KeyboardInterrupt):
        artifact.write_family(workdir, out, mesh, progress=False)
    assert not os.path.exists(out)
    with pytest.raises(FileNotFoundError):
        NuwaXLPipeline.from_pretrained(out)
    monkeypatch.undo()

    assert artifact.write_family(workdir, out, mesh, progress=False) == out  # replaces the partial
    assert sorted(os.listdir(tmp_path)) == ["art"]
    info = store.check_family(out)
    assert info["stages"] == ["vae", "mtd_global", "mtd_local1", "mtd_ar"]
    _assert_same_weights(workdir, out, info["stages"])
    assert store.load_config(out).to_dict() == store.load_config(workdir).to_dict()
    with pytest.raises(FileExistsError, match="not empty"):  # an artifact is never overwritten
        artifact.write_family(workdir, out, progress=False)


def test_export_cli_and_damaged_or_foreign_artifacts(workdir, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               XLA_FLAGS=xla_flags(2))
    out = tmp_path / "art"
    r = subprocess.run([sys.executable, "-m", "nuwa_xl_jax.export", f"--workdir={workdir}",
                        f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert store.check_family(str(out))["format"] == store.FORMAT

    # truncated weights inside the artifact: one ExportError saying to export again
    bad = tmp_path / "truncated"
    shutil.copytree(out, bad)
    for dirpath, _, files in os.walk(bad / "mtd_global" / "export" / "params"):
        for f in files:
            if os.path.basename(dirpath) == "d":
                with open(os.path.join(dirpath, f), "r+b") as fh:
                    fh.truncate(10)
    with pytest.raises(store.ExportError, match="export it again") as e:
        store.read_export(store.export_dir(str(bad), "mtd_global"))
    assert "mtd_global" in str(e.value)
    # a foreign manifest, and a diffusers folder's config.json
    foreign = tmp_path / "foreign"
    shutil.copytree(out, foreign)
    (foreign / store.FAMILY_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(store.ExportError, match="is not a nuwa_xl_jax.family manifest"):
        NuwaXLPipeline.from_pretrained(str(foreign))
    diffusers = tmp_path / "diffusers"
    diffusers.mkdir()
    (diffusers / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(store.ExportError, match="not a nuwa_xl_jax family config"):
        store.load_config(str(diffusers))
    # the CLI on a foreign workdir: one line, nothing written
    r = subprocess.run([sys.executable, "-m", "nuwa_xl_jax.export", f"--workdir={diffusers}",
                        f"--out={tmp_path / 'none'}"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "ExportError" in r.stderr and not os.path.exists(tmp_path / "none")


WORKER = textwrap.dedent("""
    import sys
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    workdir, out, what = sys.argv[3], sys.argv[4], sys.argv[5]
    from nuwa_xl_jax import parallel
    parallel.initialize_distributed(f"127.0.0.1:{port}", 2, pid)
    import jax
    from nuwa_xl_jax.family import artifact, store
    assert jax.process_count() == 2 and jax.device_count() == 4
    mesh = parallel.make_mesh((1, -1))  # every weight FSDP-split over all 4 devices, 2 hosts
    params, meta = store.read_export(store.export_dir(workdir, "mtd_global"), mesh=mesh)
    split = [x for x in jax.tree.leaves(params) if not x.is_fully_addressable]
    assert split, "no weight is split across the two processes"
    if what == "stage":  # the per-stage export training writes, from FSDP shards
        store.write_export(store.export_dir(out, "mtd_global"), params, meta)
    else:
        artifact.write_family(workdir, out, mesh, progress=False)
    print("DONE", len(split))
""")


def _two_processes(workdir, out, what):
    port = portpicker.pick_unused_port()
    env = dict(os.environ, XLA_FLAGS=xla_flags(2),
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(p), str(port), workdir, out, what],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for p in range(2)]
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("multi-process export timed out")
        assert p.returncode == 0, stderr[-3000:]
        assert "DONE" in stdout


def test_two_processes_write_a_stage_from_fsdp_shards(workdir, tmp_path):
    """2 processes x 2 devices: weights split across processes are written by Orbax from their
    shards (no gather to one host) and read back exactly, here on 8 devices."""
    _two_processes(workdir, str(tmp_path), "stage")
    _assert_same_weights(workdir, str(tmp_path), ["mtd_global"])


@pytest.mark.slow
def test_two_processes_fsdp_export_loads_on_another_device_count(workdir, tmp_path):
    """2 processes x 2 devices, FSDP mesh, gloo collectives: the artifact holds the family's exact
    weights, and the pipeline on it (8 devices here) gives the workdir's video."""
    out = str(tmp_path / "art")
    _two_processes(workdir, out, "family")
    info = store.check_family(out)
    _assert_same_weights(workdir, out, info["stages"])
    assert jax.device_count() != 4
    a = NuwaXLPipeline.from_pretrained(out)(PROMPTS, steps=1, seed=5, progress=False)
    b = NuwaXLPipeline.from_pretrained(workdir)(PROMPTS, steps=1, seed=5, progress=False)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_allclose(a.latents, b.latents, rtol=1e-5, atol=1e-5)
