"""The paper's setting on FlintstonesHD: Stable Diffusion v1 layout, L=16, depth 3 (3376 frames).

Variants: ``128`` and ``256`` (frame size in pixels). The data are not downloadable: put the episode
videos and captions in a folder (docs/data.md) and name it with ``data.manual_dir``:

    python -m nuwa_xl_jax.train --config=configs/flintstones.py:128 --workdir=runs/fl128 \
        --config.data.manual_dir=PATH/TO/FLINTSTONES

-> the prepared dataset in TFDS's folder (~/tensorflow_datasets unless data.data_dir), then in
runs/fl128/: config.json, each stage's checkpoints and export (vae, mtd_global, mtd_local1,
mtd_local2) and latents/ (the latent cache): a model family for ``python -m nuwa_xl_jax.generate
--workdir=runs/fl128
--storyboard=FILE --out=video.mp4`` (up to 3376 frames). Sized for accelerators (bfloat16,
rematerialisation, FSDP over all devices); docs/training.md has the multi-host launchers.
Not wired yet: starting the stages from Stable Diffusion's weights (``python -m
nuwa_xl_jax.convert``
imports them, but the training stages start from random weights), so this config does not yet
reproduce the paper's SD initialisation.

Imports only the library (shared blocks: nuwa_xl_jax.configuration.presets), so a copy of this file
loads from anywhere; configs/... paths also name the copies shipped with nuwa_xl_jax.
"""
import ml_collections

from nuwa_xl_jax import configuration
from nuwa_xl_jax.configuration import presets


def get_config(arg: str = "128") -> ml_collections.ConfigDict:
    if arg not in ("128", "256"):
        raise ValueError(
            f"configs/flintstones.py: unknown variant {arg!r}; expected '128' or '256'"
        )
    size = int(arg)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict()
    config.model.vae = presets.vae("sd")
    config.model.vae.dtype = "bfloat16"  # SD's VAE at 256 px: activations dominate memory
    config.model.vae.remat = "full"
    config.model.mtd = presets.mtd("sd")
    config.model.mtd.dtype = "bfloat16"
    config.model.mtd.remat = "full"
    config.model.text = presets.text("clip-l")
    # A local CLIP tokenizer folder (vocab.json + merges.txt), e.g. SD v1's tokenizer/ folder.
    config.model.text.tokenizer = "~/stable-diffusion-v1/tokenizer"
    config.vae_loss = presets.vae_loss()
    config.diffusion = configuration.diffusion_block()
    config.data = presets.data(dataset="flintstones_hd", manual_dir="~/flintstones_hd",
                              resolution=(size, size), frames_per_call=16,
                              depth=3, chunk_frames=16, max_length=77)
    config.vae_train = presets.train(steps=100_000, batch_size=32, learning_rate=4.5e-6,
                                    warmup_steps=1000, ema_decay=0.9999, checkpoint_every=2000)
    config.vae_frames = 8  # the VAE's training clip = every encode / decode call (see synthetic.py)
    config.vae_context = 2
    config.train = presets.train(steps=200_000, batch_size=64, learning_rate=1e-4,
                                warmup_steps=2000, ema_decay=0.9999, checkpoint_every=2000,
                                sample_every=5000)
    config.stages = presets.stages(3)
    config.local_models = "separate"
    config.mesh = presets.mesh()
    config.mesh.shape = (1, -1)  # FSDP over all devices
    return config
