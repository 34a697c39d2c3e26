"""A bucket workdir (``gs://...``) stays a bucket: never made absolute into ``./gs:/...`` on each
worker's disk. Tested on a fake ``gs://`` (fsspec's in-memory file system registered for GCS,
which etils.epath uses without TensorFlow); Orbax's array writes (TensorStore's own GCS driver)
are not simulated: the checkpoint directory is checked to stay the URL."""
import json
import os

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from nuwa_xl_jax import configuration, paths
from nuwa_xl_jax.train import checkpoint, stage_runner
from nuwa_xl_jax.train.workdir_lock import WorkdirLock, WorkdirLockedError


class FakeGCS(MemoryFileSystem):
    protocol = ("gs", "gcs")
    root_marker = ""

    def __init__(self, *args, finalize_on_close=None, **kwargs):  # what epath passes for gs
        super().__init__(*args, **kwargs)


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    from etils.epath import backend, gpath
    fsspec.register_implementation("gcs", FakeGCS, clobber=True)
    fsspec.register_implementation("gs", FakeGCS, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # epath: fsspec, not gfile
    from orbax.checkpoint._src.path import gcs_utils  # asks GCS itself about the bucket
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    monkeypatch.chdir(tmp_path)  # a mangled path would land here
    FakeGCS.store.clear()
    yield "gs://bucket/run"
    FakeGCS.store.clear()
    assert not os.path.exists(tmp_path / "gs:")  # nothing went to local disk


def test_urls_are_never_made_absolute():
    assert paths.absolute("gs://b/x") == "gs://b/x"
    assert paths.absolute("runs/x") == os.path.abspath("runs/x")
    assert str(paths.as_path("gs://b/x") / "y") == "gs://b/x/y"


@pytest.mark.parametrize("where", ["bucket", "local"])
def test_config_json_keeps_every_older_config_once(where, bucket, tmp_path):
    workdir = bucket if where == "bucket" else str(tmp_path / "w")
    config = configuration.load("configs/synthetic.py:tiny")

    def save(seed):
        config.seed = seed
        stage_runner.save_config(config, workdir)
        return paths.as_path(workdir + "/config.json").read_text()

    def previous(suffix):
        return paths.as_path(workdir + "/config.json.previous" + suffix)

    texts = [save(s) for s in (0, 1, 2, 3)]  # changed three times: nothing is lost
    assert json.loads(texts[-1])["seed"] == 3
    assert [previous(s).read_text() for s in ("", ".2", ".3")] == texts[:3]
    save(3)  # unchanged: nothing is rewritten or kept
    assert not previous(".4").exists()
    save(0)  # paper_tables alternates configs: the newest is kept, an older one only once
    save(1)
    assert previous(".4").read_text() == texts[3]
    assert not previous(".5").exists()
    assert paths.as_path(workdir + "/config.json").read_text() == texts[1]


def test_the_lock_of_a_bucket_workdir_refuses_a_second_run(bucket):
    with WorkdirLock(bucket) as lock:
        assert lock.path == bucket + "/train.lock"
        with pytest.raises(WorkdirLockedError, match="in use by process"):
            WorkdirLock(bucket).acquire()
    assert not paths.as_path(bucket + "/train.lock").exists()  # released
    WorkdirLock(bucket).acquire().release()


def test_checkpoints_stay_in_the_bucket(bucket):
    ckpt = checkpoint.Checkpointer(bucket + "/toy/checkpoints", async_save=False)
    assert str(ckpt.directory) == bucket + "/toy/checkpoints"
    assert str(ckpt.manager.directory) == bucket + "/toy/checkpoints"


def test_an_export_stays_in_the_bucket(bucket, monkeypatch):
    """The export's own files (model_config.json, files.json, the rename from export.partial) go
    to the bucket. Orbax's array writes use TensorStore's GCS driver, which the fake cannot
    serve: the weights' checkpointer is replaced by one that writes a file through epath."""
    from nuwa_xl_jax.family import store

    class Checkpointer:
        def save(self, path, params, force=False):
            assert str(path) == bucket + "/vae/export.partial/params"
            (paths.as_path(path) / "weights").write_text("w" * len(params))

        def wait_until_finished(self):
            pass

    monkeypatch.setattr(store.ocp, "StandardCheckpointer", Checkpointer)
    for _ in range(2):  # the second replaces the first
        store.write_export(store.export_dir(bucket, "vae"), {"a": 1, "b": 2}, {"latent_scale": 1.0})
        export = paths.as_path(bucket + "/vae/export")
        assert json.loads((export / "model_config.json").read_text()) == {"latent_scale": 1.0}
        assert json.loads((export / "files.json").read_text()) == {"weights": 2}
        assert store.has_export(bucket, "vae")
        assert not paths.as_path(bucket + "/vae/export.partial").exists()
        assert not paths.as_path(bucket + "/vae/export.old").exists()


def test_no_workdir_is_made_absolute_by_os_path():
    """``os.path.abspath`` of a workdir turns a bucket URL into a local folder: the package goes
    through paths.absolute / paths.as_path instead."""
    import re

    import nuwa_xl_jax
    root = os.path.dirname(nuwa_xl_jax.__file__)
    found = [f"{os.path.relpath(os.path.join(d, f), root)}:{n}"
             for d, _, files in os.walk(root) for f in files if f.endswith(".py")
             for n, line in enumerate(open(os.path.join(d, f)), 1)
             if re.search(r"os\.path\.abspath\([\w.]*workdir", line)]
    assert not found, found


def test_metrics_and_tensorboard_go_to_the_bucket(bucket):
    """metrics.jsonl and the TensorBoard events of a bucket workdir (whole files rewritten through
    epath: no append on object stores); a resumed run's logger keeps the first's lines."""
    from nuwa_xl_jax.train import loop

    for steps in ((1, 2), (3,)):
        logger = loop._Logger(bucket + "/toy", True)
        for step in steps:
            logger.log(step, {"loss": 0.5 / step})
        logger.close()
    lines = paths.as_path(bucket + "/toy/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    events = list(paths.as_path(bucket + "/toy/tensorboard").iterdir())
    assert events and all(e.name.startswith("events.") and e.read_bytes() for e in events)


def test_a_latent_cache_in_the_bucket(bucket):
    """The latent cache of a bucket workdir is written there and read back (whole files: no
    memory map of an object)."""
    import numpy as np

    from nuwa_xl_jax.data import latent_cache

    class Reader:  # one episode of 12 frames, 8x8
        table = [{"name": "ep0"}]
        frames = np.arange(12 * 8 * 8 * 3, dtype=np.uint8).reshape(12, 8, 8, 3)

        def __len__(self):
            return 1

        def length(self, e):
            return 12

        def read(self, e, idx):
            return self.frames[np.asarray(idx)], [f"caption {i % 2}" for i in idx]

    tokenizer = lambda captions: [[len(c), int(c[-1])] for c in captions]  # noqa: E731
    cache = bucket + "/latents"
    latent_cache.encode_split(Reader(), latent_cache.pool_encoder(4), tokenizer, cache, "train",
                              vae_frames=4, vae_context=1)
    assert latent_cache.read_index(bucket + "/latents", "train")["latent_shape"] == [2, 2, 3]
    latents, ids = latent_cache.LatentReader(bucket + "/latents", "train").read_latents(0, [0, 5])
    assert latents.shape == (2, 2, 2, 3) and ids.tolist() == [[9, 0], [9, 1]]
    assert latent_cache.distinct_prompt_ids(cache, "train").tolist() == [[9, 0], [9, 1]]


def test_an_exported_family_goes_to_the_bucket(bucket, monkeypatch, tmp_path):
    """python -m nuwa_xl_jax.export --out=gs://...: the artifact's files go to the bucket (the
    weights' reads and writes stubbed: TensorStore's GCS driver is not simulated)."""
    from nuwa_xl_jax.family import artifact, store

    class Checkpointer:
        def save(self, path, params, force=False):
            (paths.as_path(path) / "weights").write_text("w")

        def wait_until_finished(self):
            pass

    workdir = tmp_path / "family"
    config = configuration.load("configs/synthetic.py:tiny")
    stage_runner.save_config(config, str(workdir))
    names = artifact.required_stages(store.load_config(str(workdir)))
    for name in names:  # a finished export of each stage, as training leaves it
        (workdir / name / "export" / "params").mkdir(parents=True)
    monkeypatch.setattr(store, "has_export", lambda w, n: n in names)
    monkeypatch.setattr(store, "read_export", lambda directory, mesh=None: ({"a": 1}, {}))
    monkeypatch.setattr(store.ocp, "StandardCheckpointer", Checkpointer)
    out = artifact.write_family(str(workdir), bucket + "/artifact", progress=False)
    assert out == bucket + "/artifact"
    family = json.loads(paths.as_path(out + "/" + store.FAMILY_FILE).read_text())
    assert family["stages"] == names
    assert json.loads(paths.as_path(out + "/config.json").read_text())["seed"] == config.seed
    for name in names:
        assert paths.as_path(f"{out}/{name}/export/params/weights").exists()
    assert not paths.as_path(bucket + "/artifact" + store.PARTIAL).exists()
    with pytest.raises(FileExistsError, match="not empty"):
        artifact.write_family(str(workdir), bucket + "/artifact", progress=False)


def test_videos_and_contact_sheets_go_to_the_bucket(bucket):
    """The generate CLI's outputs in a bucket: PyAV and Pillow write a local temporary file, copied
    through epath on close; an existing output is refused there as on a local disk."""
    import numpy as np

    from nuwa_xl_jax.io import contact_sheets, videos

    frames = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    for out in (bucket + "/v/video.gif", bucket + "/v/frames/"):
        with videos.VideoWriter(out, 8, (16, 16)) as writer:
            writer.write(frames)
        with pytest.raises(FileExistsError):
            videos.check_output(out)
    assert paths.as_path(bucket + "/v/video.gif").read_bytes()[:3] == b"GIF"
    assert sorted(p.name for p in paths.as_path(bucket + "/v/frames").iterdir()) == \
        [f"frame_{i:06d}.png" for i in range(3)]
    sheet = bucket + "/v/video_sheet.png"
    contact_sheets.contact_sheet([(np.arange(3), frames)], sheet)
    assert paths.as_path(sheet).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError):
        contact_sheets.contact_sheet([(np.arange(3), frames)], sheet)
