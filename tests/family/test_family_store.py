"""The family's on-disk format: an export is complete or absent (written under a temporary name and
renamed), and an export that cannot be read is one ExportError naming the folder and the fix."""
import json
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

from nuwa_xl_jax.family import store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARAMS = {"vae": {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(4, np.float32)}}


def _tree_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            _tree_equal(a[k], b[k])
        else:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_round_trip_leaves_no_partial_folder(tmp_path):
    d = store.export_dir(str(tmp_path), "vae")
    store.write_export(d, PARAMS, {"latent_scale": 0.5})
    params, meta = store.read_export(d)
    _tree_equal(params, PARAMS)
    assert meta == {"latent_scale": 0.5} and sorted(os.listdir(tmp_path / "vae")) == ["export"]
    # a second export replaces the first whole
    store.write_export(d, {"vae": {"w": PARAMS["vae"]["w"] + 1}}, {"latent_scale": 2.0})
    params, meta = store.read_export(d)
    np.testing.assert_array_equal(params["vae"]["w"], PARAMS["vae"]["w"] + 1)
    assert "b" not in params["vae"] and meta["latent_scale"] == 2.0
    assert sorted(os.listdir(tmp_path / "vae")) == ["export"]


def test_a_kill_mid_export_leaves_the_previous_export_or_none(tmp_path, monkeypatch):
    d = store.export_dir(str(tmp_path), "vae")

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # the process dies while the weights are being written

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write_export(d, PARAMS, {})
    with pytest.raises(FileNotFoundError, match="stopped while exporting"):
        store.read_export(d)
    monkeypatch.undo()
    store.write_export(d, PARAMS, {"latent_scale": 0.5})  # the rerun cleans up and completes
    monkeypatch.setattr(ocp.StandardCheckpointer, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        store.write_export(d, {"vae": {"w": PARAMS["vae"]["w"] * 0}}, {})
    params, meta = store.read_export(d)  # the complete older export is still what loads
    _tree_equal(params, PARAMS)
    assert meta == {"latent_scale": 0.5}


def _truncate_weights(d):
    for dirpath, _, files in os.walk(os.path.join(d, store.PARAMS)):
        for f in files:
            if os.path.basename(dirpath) == "d":  # the array data files of the OCDBT store
                with open(os.path.join(dirpath, f), "r+b") as fh:
                    fh.truncate(10)


@pytest.mark.parametrize("damage", ["truncated", "truncated_unlisted", "foreign_params",
                                    "bad_json", "json_list", "bad_listing"])
def test_unreadable_export_is_one_clear_error(tmp_path, damage):
    d = store.export_dir(str(tmp_path), "mtd_global")
    store.write_export(d, PARAMS, {})
    if damage == "truncated":
        _truncate_weights(d)
    elif damage == "truncated_unlisted":  # an export written before files.json: Orbax's error
        os.remove(os.path.join(d, store.FILES))
        _truncate_weights(d)
    elif damage == "bad_listing":
        open(os.path.join(d, store.FILES), "w").write("[")
    elif damage == "foreign_params":
        params = os.path.join(d, store.PARAMS)
        for f in os.listdir(params):
            p = os.path.join(params, f)
            os.remove(p) if os.path.isfile(p) else None
        open(os.path.join(params, "pytorch_model.bin"), "wb").write(b"\0" * 64)
    elif damage == "bad_json":
        open(os.path.join(d, store.MODEL_CONFIG), "w").write('{"mtd": ')
    else:
        json.dump([1, 2], open(os.path.join(d, store.MODEL_CONFIG), "w"))
    with pytest.raises(store.ExportError) as e:
        store.read_export(d)
    message = str(e.value)
    assert d in message and "delete that folder" in message and "--stages=STAGE" in message
    if damage in ("truncated", "foreign_params"):  # caught by the listing, before Orbax starts
        assert "bytes, found" in message


def test_the_listing_names_every_weight_file(tmp_path):
    d = store.export_dir(str(tmp_path), "mtd_global")
    store.write_export(d, PARAMS, {})
    with open(os.path.join(d, store.FILES)) as f:
        listed = json.load(f)
    on_disk = {os.path.relpath(os.path.join(r, n), os.path.join(d, store.PARAMS))
               for r, _, names in os.walk(os.path.join(d, store.PARAMS)) for n in names}
    assert set(listed) == on_disk and any(name.startswith("d" + os.sep) for name in listed)
    np.testing.assert_array_equal(store.read_export(d)[0]["vae"]["w"], PARAMS["vae"]["w"])


def test_generate_on_a_truncated_export_is_one_line(tmp_path):
    """What a user saw: a raw tensorstore message, then "Event loop is closed" tracebacks."""
    from tiny_family import write_random_family  # tests/ is on sys.path (tests/conftest.py)

    workdir = write_random_family(str(tmp_path / "family"), stages=("mtd_global", "mtd_local1"))
    _truncate_weights(store.export_dir(workdir, "mtd_global"))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "nuwa_xl_jax.generate", f"--workdir={workdir}",
                        f"--storyboard={ROOT}/configs/storyboards/cartoon.txt",
                        f"--out={tmp_path / 'v.mp4'}", "--steps=1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "Event loop" not in r.stderr, r.stderr[-3000:]
    assert (
        "ExportError" in r.stderr and "mtd_global" in r.stderr and "delete that folder" in r.stderr
    )
    assert not os.path.exists(tmp_path / "v.mp4")
