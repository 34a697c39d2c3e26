"""Keyframe images through the pipeline, on a tiny family with random weights: a pinned frame's
latent is its image's VAE latent bit for bit at every level, so it decodes to the image within
the VAE's own reconstruction error; unpinned frames stay as without pins only where no segment
holds a pin; a pin on a non-DoD mode is a clear error."""
import json

import numpy as np
import pytest
from PIL import Image
from tiny_family import write_random_family

from nuwa_xl_jax.dod import pinned_latents
from nuwa_xl_jax.pipeline import NuwaXLPipeline

FRED = "fred walks left in the cave"
WILMA = "wilma jumps in the desert"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return NuwaXLPipeline.from_pretrained(write_random_family(str(tmp_path_factory.mktemp("fam"))))


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    d = tmp_path_factory.mktemp("board")
    y, x = np.mgrid[:48, :48]
    smooth = np.stack([x * 5, y * 5, (x + y) * 2], -1).astype(np.uint8)  # a gradient, 48x48
    Image.fromarray(smooth).save(d / "pin.png")
    path = d / "story.json"
    path.write_text(json.dumps({"scenes": [{"prompt": FRED, "frames": 5},
                                           {"prompt": WILMA, "frames": 5}],
                                "keyframes": [{"frame": 4, "image": "pin.png"}]}))
    return str(path)


def test_a_pinned_frame_keeps_its_images_latent_and_decodes_to_it(pipe, board):
    video = pipe(board, 10, steps=2, seed=1, progress=False)
    free = pipe([FRED] * 5 + [WILMA] * 5, steps=2, seed=1, progress=False)
    frames, latents = pinned_latents.pinned_latents(pipe.family.models, pipe.config, video.prompts)
    assert frames.tolist() == [4]
    np.testing.assert_array_equal(video.latents[4], latents[0])  # bit-exact through both levels
    # within the VAE's reconstruction error of that image (decoded alone)
    image = np.asarray(Image.open(board.replace("story.json", "pin.png")).resize((32, 32)),
                       np.float32)
    alone = np.concatenate(list(pipe._decode(latents, pipe.mesh, 0.5))).astype(np.float32)[0]
    recon = np.abs(alone - image).mean()
    assert np.abs(video.frames[4].astype(np.float32) - image).mean() <= 1.25 * recon + 2.0
    # the pin changes only the segment holding it ([3, 6]) and the level-0 keyframes stay
    np.testing.assert_array_equal(video.latents[[0, 3, 6, 9]], free.latents[[0, 3, 6, 9]])
    np.testing.assert_array_equal(video.latents[[1, 2, 7, 8]], free.latents[[1, 2, 7, 8]])
    assert not np.array_equal(video.latents[5], free.latents[5])


def test_keyframe_images_need_dod(pipe, board):
    with pytest.raises(ValueError, match="--mode=ar cannot use them"):
        pipe(board, 10, steps=2, mode="ar", progress=False)

