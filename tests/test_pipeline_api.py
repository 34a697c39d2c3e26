"""NuwaXLPipeline on a tiny family with random weights (plumbing, not quality): frames, latents and
each level's keyframes in memory, saved as video + contact sheet, equal to the streaming path the
generate CLI takes; prompts as a list or a storyboard file; clear errors."""
import gc
import os
import weakref

import jax
import numpy as np
import pytest
from tiny_family import STAGES, write_random_family

from nuwa_xl_jax import parallel
from nuwa_xl_jax.dod import decode
from nuwa_xl_jax.io.videos import read_video
from nuwa_xl_jax.pipeline import NuwaXLPipeline, Video

PROMPTS = ["fred walks left in the cave"] * 4 + ["wilma jumps in the desert"] * 3


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return NuwaXLPipeline.from_pretrained(
        write_random_family(str(tmp_path_factory.mktemp("family")))
    )


@pytest.fixture(scope="module")
def video(pipe):
    return pipe(PROMPTS, steps=2, seed=3, progress=False)


def test_call_returns_frames_latents_and_each_levels_keyframes(pipe, video):
    assert isinstance(video, Video) and len(video) == 7
    assert video.frames.dtype == np.uint8 and video.frames.shape == (7, 32, 32, 3)
    assert video.latents.shape == (7, *pipe.family.models.latent_shape)
    assert np.isfinite(video.latents).all() and video.frames.std() > 0
    # depth 2, L=4: the global level draws frames 0, 3, 6 (9 is past N=7); the local one all 7
    assert [list(k.indices) for k in video.keyframes] == [[0, 3, 6], list(range(7))]
    for level in video.keyframes:
        np.testing.assert_array_equal(level.frames, video.frames[level.indices])
    assert video.prompts == PROMPTS and video.mode == "dod" and video.sequential_calls == 2


def test_save_writes_video_and_sheet_and_keeps_existing_files(video, tmp_path):
    path, sheet = video.save(str(tmp_path / "v.mp4"))
    assert sheet == str(tmp_path / "v_sheet.png") and os.path.getsize(sheet) > 0
    assert read_video(path).shape == (7, 32, 32, 3)
    with pytest.raises(FileExistsError, match="overwrite"):
        video.save(path)
    frames, _ = video.save(str(tmp_path / "frames"), sheet=False)  # PNG frames: lossless
    np.testing.assert_array_equal(read_video(frames), video.frames)


def test_streaming_write_equals_the_call(pipe, video, tmp_path):
    """pipe.write (the CLI's path: frames streamed to the file) gives the same video as a call."""
    out = pipe.write(str(tmp_path / "frames"), PROMPTS, sheet=str(tmp_path / "s.png"), steps=2,
                     seed=3, progress=False)
    np.testing.assert_array_equal(read_video(out.path), video.frames)
    assert os.path.getsize(out.contact_sheet) > 0 and len(out) == 7 and out.frames is None
    assert {"scene", "characters", "both"} <= set(out.agreement)


def test_seed_and_storyboard_file(pipe, video, tmp_path):
    other = pipe(PROMPTS, steps=2, seed=4, progress=False, score=True)
    assert not np.array_equal(other.frames, video.frames)
    assert {"scene", "characters", "both"} <= set(other.agreement)
    story = tmp_path / "story.txt"
    story.write_text("fred walks left in the cave\nwilma jumps in the desert\n")
    assert pipe.prompts_for(str(story)) == [PROMPTS[0]] * 5 + [PROMPTS[-1]] * 5  # trained: 10
    assert pipe.trained_frames == 10
    same = pipe(str(story), frames=7, steps=2, seed=3, progress=False)  # scenes stretched to 7
    np.testing.assert_array_equal(same.frames, video.frames)


def test_ar_mode_loads_its_model_on_first_use(pipe):
    assert pipe.family.ar_params is None
    out = pipe(PROMPTS[:4], mode="ar", steps=2, progress=False)
    assert out.frames.shape == (4, 32, 32, 3) and pipe.family.ar_params is not None


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(prompts=PROMPTS, frames=5), ValueError, "7 prompts for frames=5"),
    (dict(prompts=[]), ValueError, "one per frame"),
    (dict(prompts=["fred flies in the desert"] * 4), ValueError, "flies"),
    (dict(prompts=["fred stands in the cave"] * 11), ValueError, "trained for 10"),
    (dict(prompts=PROMPTS, mode="gan"), ValueError, "use one of dod, ar, artv"),
])
def test_bad_calls_are_clear_errors(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe(**kwargs, steps=2, progress=False)


def test_from_pretrained_on_a_folder_that_is_not_a_family(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        NuwaXLPipeline.from_pretrained(str(tmp_path))


def test_from_pretrained_takes_an_already_loaded_config(pipe, monkeypatch):
    """The generate CLI reads and validates config.json once and hands it over: the family is
    loaded with that config, not from a second read of the file."""
    from nuwa_xl_jax.dod import runner
    config = pipe.config
    monkeypatch.setattr(
        runner, "load_config", lambda workdir: pytest.fail("config.json read again")
    )
    again = NuwaXLPipeline.from_pretrained(pipe.workdir, mesh=pipe.mesh, config=config)
    assert again.config is config


def test_decoding_is_sized_on_the_calls_mesh_and_memory_fraction(pipe, monkeypatch, tmp_path):
    """A call's mesh and memory_fraction reach decoding (as they reach sampling): its windows per
    device call are sized to that share of one device of that mesh (on CPU, the host's memory
    shared by the mesh's local devices), for a video in memory and a streamed one alike."""
    if jax.devices()[0].memory_stats():
        pytest.skip("the expected budget below is the CPU one (host memory)")
    budgets, sized = [], decode.sized_decode_fn
    monkeypatch.setattr(decode, "sized_decode_fn",
                        lambda *a, **k: budgets.append(a[6]) or sized(*a, **k))
    one = parallel.make_mesh(devices=jax.devices()[:1])
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    pipe(PROMPTS, steps=2, seed=3, progress=False, mesh=one, memory_fraction=0.5)
    pipe.write(str(tmp_path / "frames"), PROMPTS, steps=2, seed=3, progress=False, mesh=one,
               memory_fraction=0.25, score=False)
    assert budgets == [int(host * 0.5), int(host * 0.25)]


def test_a_released_pipeline_frees_its_device_weights(tmp_path):
    """Compiled programs are cached with the family that ran them, not for the process: once a
    pipeline is dropped, none of its device weights stay alive (benchmarks/paper_tables.py loads
    one family after another)."""
    pipe = NuwaXLPipeline.from_pretrained(
        write_random_family(str(tmp_path), STAGES + ("mtd_artv",)))
    for mode in ("dod", "artv"):
        pipe(PROMPTS[:4], mode=mode, steps=1, progress=False)
    f = pipe.family
    refs = [weakref.ref(a) for a in jax.tree.leaves(
        (f.models.vae_params, f.global_params, f.local_params, f.artv_params))]
    assert refs
    del pipe, f
    gc.collect()
    assert sum(r() is not None for r in refs) == 0
