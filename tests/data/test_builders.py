"""TFDS builders: synthetic_cartoon and flintstones_hd write chunked ArrayRecord that
tfds.data_source reads back without TensorFlow; bad manual folders are clear errors."""
import json
import os

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds

from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.data.builders import chunks
from nuwa_xl_jax.data.builders import flintstones_hd as fh
from nuwa_xl_jax.data.builders import synthetic_cartoon as sc


def test_tensorflow_is_not_installed():
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401


def test_synthetic_cartoon_round_trip(tmp_path):
    b = sc.prepare(str(tmp_path), episodes=2, test_episodes=1, episode_length=70,
                   resolution=(32, 24), chunk_frames=16)
    ds = tfds.data_source(f"synthetic_cartoon/{b.builder_config.name}", data_dir=str(tmp_path))
    assert set(ds) == {"train", "test"}
    src = ds["train"]
    table, C = chunks.split_table(src, "train")
    assert C == 16 and [r["chunks"] for r in table] == [5, 5] and len(src) == 10
    rec = src[table[1]["first_record"] + 4]
    assert (int(rec["episode"]), int(rec["chunk"]), int(rec["start"])) == (1, 4, 64)
    assert len(rec["frames"]) == 6  # the last chunk holds the remainder
    reader = chunks.EpisodeReader(src, table, C)
    idx = [69, 0, 17, 17, 33]
    frames, captions = reader.read(1, idx)
    truth = synthetic.simulate(0, 70, 1)
    assert np.array_equal(frames, synthetic.render(truth.take(idx), (32, 24)))  # PNG is lossless
    assert captions == [truth.captions[i] for i in idx]
    assert np.array_equal(rec["x"], truth.x[64:70])
    # Test episodes come from another seed stream.
    test_table, _ = chunks.split_table(ds["test"], "test")
    tf, _ = chunks.EpisodeReader(ds["test"], test_table, C).read(0, [0, 1, 2])
    assert not np.array_equal(tf, reader.read(0, [0, 1, 2])[0])
    with pytest.raises(IndexError, match="has 70 frames"):
        reader.read(0, [70])


def write_video(path, frames, fps=8):
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": "5"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def fake_frames(n, h=48, w=64, seed=0):
    """Frames whose brightness encodes the frame number; left half red tinted, right half blue."""
    f = np.zeros((n, h, w, 3), np.uint8)
    f[:] = (20 + np.arange(n) * 5)[:, None, None, None]
    f[:, :, : w // 2, 0] = 230
    f[:, :, w // 2:, 2] = 230
    return f


@pytest.fixture
def manual(tmp_path):
    d = tmp_path / "manual"
    d.mkdir()
    for name, n in (("ep_a", 21), ("ep_b", 30)):
        write_video(str(d / f"{name}.mp4"), fake_frames(n))
        (d / f"{name}.json").write_text(json.dumps([f"{name} frame {t}" for t in range(n)]))
    return d


def test_flintstones_hd_builds_from_a_manual_folder(tmp_path, manual):
    (manual / "splits.json").write_text(json.dumps({"train": ["ep_a", "ep_b"], "test": ["ep_b"]}))
    b = fh.prepare(str(tmp_path / "data"), str(manual), resolution=(32, 32), chunk_frames=8)
    ds = tfds.data_source(
        f"flintstones_hd/{b.builder_config.name}", data_dir=str(tmp_path / "data")
    )
    table, C = chunks.split_table(ds["train"], "train")
    assert [(r["name"], r["frames"], r["chunks"]) for r in table] == [
        ("ep_a", 21, 3),
        ("ep_b", 30, 4),
    ]
    reader = chunks.EpisodeReader(ds["train"], table, C)
    idx = [0, 9, 29]
    frames, captions = reader.read(1, idx)
    assert frames.shape == (3, 32, 32, 3)
    assert captions == [f"ep_b frame {t}" for t in idx]  # exact
    # Approximately the source pixels (lossy codecs): 48x64 -> short side 32 -> 43 wide, crop.
    ref = fake_frames(30)[idx]
    left, right = frames[:, 8:24, 2:10].astype(float), frames[:, 8:24, 22:30].astype(float)
    assert np.abs(left.mean((1, 2)) - ref[:, 0, 0]).max() < 12
    assert np.abs(right.mean((1, 2)) - ref[:, 0, -1]).max() < 12
    assert len(chunks.split_table(ds["test"], "test")[0]) == 1


def test_missing_manual_folder(tmp_path):
    with pytest.raises(fh.ManualFolderError, match=r"(?s)nothere. does not exist.*NAME\.json"):
        fh.prepare(str(tmp_path / "data"), str(tmp_path / "nothere"), resolution=(32, 32))


def test_video_without_captions(tmp_path, manual):
    os.remove(manual / "ep_b.json")
    with pytest.raises(
        fh.ManualFolderError, match=r"no captions file for video.*ep_b\.mp4.*ep_b\.json"
    ):
        fh.prepare(str(tmp_path / "data"), str(manual), resolution=(32, 32))


def test_captions_of_the_wrong_length(tmp_path, manual):
    (manual / "ep_a.json").write_text(json.dumps(["too few"] * 5))
    with pytest.raises(
        fh.CaptionsError, match=r"ep_a\.mp4 (declares|has) 21 frames but .*ep_a\.json holds 5"
    ):
        fh.prepare(str(tmp_path / "data"), str(manual), resolution=(32, 32))


def test_malformed_captions_and_splits(tmp_path, manual):
    (manual / "ep_a.json").write_text('{"not": "a list"}')
    with pytest.raises(fh.CaptionsError, match=r"ep_a\.json must hold a JSON list of strings"):
        fh.prepare(str(tmp_path / "data"), str(manual), resolution=(32, 32))
    (manual / "ep_a.json").write_text(json.dumps(["x"] * 21))
    (manual / "splits.json").write_text(json.dumps({"train": ["ep_zzz"]}))
    with pytest.raises(fh.ManualFolderError, match="splits.json names episode.*ep_zzz"):
        fh.prepare(str(tmp_path / "data"), str(manual), resolution=(32, 32))


def test_frame_count_checked_while_decoding(tmp_path):
    """A container that declares no frame count is still checked as frames are decoded."""
    frames = iter(fake_frames(4))
    with pytest.raises(fh.CaptionsError, match=r"v\.mp4 has 4 frames but c\.json holds 6"):
        list(fh._counted(frames, 6, "v.mp4", "c.json"))
    with pytest.raises(fh.CaptionsError, match=r"v\.mp4 has more frames than the 2 captions"):
        list(fh._counted(iter(fake_frames(4)), 2, "v.mp4", "c.json"))
