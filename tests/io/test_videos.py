"""Video writers and readers: round trips for mp4, gif and PNG folders, overwrite, partial runs."""
import os

import numpy as np
import pytest

from nuwa_xl_jax.io import videos


def _video(frames=12, h=16, w=16):
    """A moving gradient: smooth enough for lossy codecs, different in every frame."""
    t = np.arange(frames)[:, None, None]
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 / (w - 1) + 8 * t) % 256
    g = (y * 255 / (h - 1))[None].repeat(frames, 0)
    b = np.broadcast_to((t * 20) % 256, r.shape)
    return np.stack([r, g, b], -1).astype(np.uint8)


def test_mp4_round_trip_streams_frames(tmp_path):
    video = _video(20)
    path = str(tmp_path / "out" / "v.mp4")
    with videos.VideoWriter(path, 8, (16, 16)) as writer:
        for i in range(0, 20, 7):  # in pieces, as a decoder yields them
            writer.write(video[i:i + 7])
        writer.write(video[0])  # a single frame [H, W, 3]
    assert writer.frames_written == 21
    back = videos.read_video(path)
    assert back.shape == (21, 16, 16, 3) and back.dtype == np.uint8
    err = np.abs(back[:20].astype(int) - video.astype(int))
    assert err.mean() < 12, err.mean()
    assert np.abs(back[:20].astype(int) - video[::-1].astype(int)).mean() > 2 * err.mean()


def test_mp4_odd_size_is_padded_to_even(tmp_path):
    video = _video(4, 15, 13)
    path = str(tmp_path / "odd.mp4")
    with videos.VideoWriter(path, 24, (15, 13)) as writer:
        writer.write(video)
    back = videos.read_video(path)
    assert back.shape == (4, 16, 14, 3)
    assert np.abs(back[:, :15, :13].astype(int) - video.astype(int)).mean() < 12


@pytest.mark.parametrize("name", ["frames/", "frames_no_ext"])
def test_png_folder_is_exact(tmp_path, name):
    video = _video(5)
    path = os.path.join(str(tmp_path), name)
    with videos.VideoWriter(path, 8, (16, 16)) as writer:
        writer.write(video)
    np.testing.assert_array_equal(videos.read_video(path), video)
    assert sorted(os.listdir(path))[0] == "frame_000000.png"


def test_gif_round_trip(tmp_path):
    video = _video(6)
    path = str(tmp_path / "v.gif")
    with videos.VideoWriter(path, 10, (16, 16)) as writer:
        writer.write(video)
    back = videos.read_video(path)
    assert back.shape == video.shape
    assert np.abs(back.astype(int) - video.astype(int)).mean() < 8


def test_refuses_to_overwrite_unless_asked(tmp_path):
    for name in ("v.mp4", "v.gif", "frames/"):
        path = os.path.join(str(tmp_path), name)
        with videos.VideoWriter(path, 8, (16, 16)) as writer:
            writer.write(_video(3))
        with pytest.raises(FileExistsError, match=r"already .*pass overwrite=True"):
            videos.VideoWriter(path, 8, (16, 16))
        with videos.VideoWriter(path, 8, (16, 16), overwrite=True) as writer:
            writer.write(_video(2))
        assert len(videos.read_video(path)) == 2, "overwriting replaces every earlier frame"


def test_writer_input_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown video format '.avi'"):
        videos.VideoWriter(str(tmp_path / "v.avi"), 8, (16, 16))
    with videos.VideoWriter(str(tmp_path / "f/"), 8, (16, 16)) as writer:
        with pytest.raises(ValueError, match=r"frames must be \[n, 16, 16, 3\]"):
            writer.write(np.zeros((2, 8, 8, 3), np.uint8))
        with pytest.raises(ValueError, match=r"must be uint8, got float32; .*to_uint8"):
            writer.write(np.zeros((2, 16, 16, 3), np.float32))


def test_a_failed_run_keeps_a_playable_partial_video(tmp_path):
    path = str(tmp_path / "v.mp4")
    with pytest.raises(RuntimeError, match="boom"):
        with videos.VideoWriter(path, 8, (16, 16)) as writer:
            writer.write(_video(5))
            raise RuntimeError("boom")
    assert videos.read_video(path).shape == (5, 16, 16, 3)


def test_to_uint8():
    np.testing.assert_array_equal(videos.to_uint8(np.array([-2.0, -1.0, 0.0, 1.0, 3.0])),
                                  [0, 0, 128, 255, 255])
