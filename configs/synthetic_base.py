"""The synthetic world's text-to-image base: the embedded default's analogue of Stable Diffusion v1.

NUWA-XL starts its T-KLVAE from SD's KL-VAE and its MTD's spatial layers from a pretrained
text-to-image UNet. The synthetic world has no SD, so this config trains one for it: an image
KL-VAE (no temporal layers) and an image UNet (no temporal or condition layers) with its text
encoder, both on single frames with their captions, every element of a batch a different frame.
``configs/synthetic.py`` starts from the shipped copy, as a user starts from SD's weights.

Variants:
  default  the shipped base (32x32 frames of the default world), trained on a 2-core CPU:
             python -m nuwa_xl_jax.train --config=configs/synthetic_base.py --workdir=runs/base
           then written in convert's family format, with its manifest:
             python -m nuwa_xl_jax.export --workdir=runs/base --format=base --out=DIR
           -> runs/base/: config.json, vae_image/, vae/ (its decoder fine-tuned with a GAN loss)
              and mtd_image/ (checkpoints, export), latents/.
           3 h 22 min of training on a 2-core CPU (vae_image 95 min, vae 7 min, mtd_image 100
           min; niced in the background), resumed by the same command; the shipped copy's
           quality and its curve against steps: docs/quality.md.
  tiny     the same stages at test size (30 steps each: plumbing, not pictures):
             python -m nuwa_xl_jax.train --config=configs/synthetic_base.py:tiny --workdir=runs/b

Imports only the library, so a copy of this file loads from anywhere.
"""
import ml_collections

from nuwa_xl_jax import configuration
from nuwa_xl_jax.configuration import presets


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    if arg not in ("default", "tiny"):
        raise ValueError(f"configs/synthetic_base.py: unknown variant {arg!r}; expected 'default' "
                         "or 'tiny'")
    tiny = arg == "tiny"
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = ml_collections.ConfigDict()
    config.model.vae = presets.vae("tiny")
    config.model.mtd = presets.mtd("tiny")
    if not tiny:
        # The default world's VAE (8 latent channels at x4, see configs/synthetic.py), with a
        # wider 8x8 level: the one that must tell apart characters of 1-2 latent pixels.
        config.model.vae.latent_channels = 8
        config.model.vae.block_out_channels = (16, 32, 64)
        config.model.mtd.in_channels = config.model.mtd.out_channels = 8
    # An image model: the layers NUWA-XL adds (temporal convs and attentions, the condition
    # injection) do not exist here; the video family adds them at identity (init_from).
    config.model.vae.temporal = False
    config.model.mtd.temporal = False
    config.model.mtd.condition_injection = "none"
    config.model.text = presets.text("tiny" if tiny else "small")
    config.model.mtd.cross_attention_dim = config.model.text.hidden_size
    config.vae_loss = presets.vae_loss()
    config.vae_loss.l2_weight = 1.0
    config.vae_loss.init_logvar = -8.0
    config.diffusion = configuration.diffusion_block()
    config.diffusion.sampler = "ddim"
    config.diffusion.sample_steps = 10 if tiny else 25
    # The video family's diffusion settings (configs/synthetic.py): its MTDs continue from this
    # UNet, so they must predict the same target on the same schedule.
    config.diffusion.prediction_type = "epsilon" if tiny else "v"
    config.diffusion.min_snr_gamma = 5.0
    # Guidance 3: the shipped UNet (12000 steps) on every caption pattern, 2 images each, scene /
    # characters / identity at guidance 2: 1.00 / 0.91 / 0.86, 3: 1.00 / 0.93 / 0.86, 4: 1.00 /
    # 0.93 / 0.83 (at 8000 steps, 8: 0.94 / 0.78, 12: 0.92 / 0.70): strong guidance saturates
    # the colours a reader tells characters apart by (docs/quality.md).
    config.diffusion.guidance_scale = 1.0 if tiny else 3.0
    # The base sees far more of the world than the video family does, as SD saw far more images
    # than any video set: 256 episodes of 300 frames (76800 frames) where the family has 16 of
    # 1200. The same frame count in 16 long episodes leaves rare pairs almost unseen (fred in the
    # cave: 72 frames, against >= 3820 for every scene-character pair here), and both the VAE and
    # the UNet drew him there as a red blob (docs/quality.md). Held-out episodes are the same.
    config.data = presets.data(
        resolution=(32, 32), frames_per_call=4 if tiny else 16, depth=2,
        episodes=4 if tiny else 256, test_episodes=1 if tiny else 2,
        episode_length=40 if tiny else 300, chunk_frames=8 if tiny else 16,
        max_length=config.model.text.max_position_embeddings, ar_prefix=2 if tiny else 8)
    # vae_image: the image KL-VAE on single frames far apart (batch x 3 frames a step), L1 + L2.
    config.vae_image_train = presets.train(
        steps=30 if tiny else 4500, batch_size=8 if tiny else 16, learning_rate=2e-3,
        warmup_steps=5 if tiny else 100, ema_decay=0.9 if tiny else 0.999,
        log_every=5 if tiny else 50, checkpoint_every=15 if tiny else 250,
        keep_checkpoints=2 if tiny else 40)
    # vae: its decoder fine-tuned with LDM's PatchGAN loss from the first step (disc_start counts
    # the autoencoder's steps, vae_image's included), the encoder held, as SD's ft-EMA/ft-MSE
    # decoders were. L1 + L2 alone leave the edge tints around small objects that a reader takes
    # for extra characters (docs/quality.md); the adversarial loss removes them. A constant rate
    # (end_lr_fraction=1) so the phase can stop at any measured checkpoint; LDM's Adam betas.
    config.vae_loss.disc_start = config.vae_image_train.steps
    # LDM's PatchGAN at half its width (32 channels, not 64; 3 layers): sized for 256 px images,
    # the 64-wide one cost 5x a vae_image step on 32x32 frames; at 32 a decoder step is 2.7x
    # faster. 250 steps: held-out characters 0.95 (the shipped decoder; docs/quality.md).
    config.vae_loss.disc_channels = 32
    config.vae_train = presets.train(
        steps=10 if tiny else 250, batch_size=8 if tiny else 16, learning_rate=2e-4,
        warmup_steps=0, end_lr_fraction=1.0, b1=0.5, b2=0.9, train_layers="decoder",
        ema_decay=0.9 if tiny else 0.995, log_every=5 if tiny else 50,
        checkpoint_every=5 if tiny else 250, keep_checkpoints=2 if tiny else 20)
    config.vae_frames = 4 if tiny else 16
    config.vae_context = 1 if tiny else 4
    # mtd_image: batch x 3 unrelated frames a step, each with its own caption and timestep.
    config.train = presets.train(
        steps=30 if tiny else 12000, batch_size=8 if tiny else 32, learning_rate=2e-3,
        warmup_steps=5 if tiny else 100, ema_decay=0.9 if tiny else 0.999,
        log_every=5 if tiny else 50, checkpoint_every=15 if tiny else 250,
        keep_checkpoints=2 if tiny else 60, sample_every=0 if tiny else 1000)
    # no temporal layers, so the latent cache mtd_image trains on is the image VAE frame by frame
    config.stages = ("vae_image", "vae", "mtd_image")
    config.mesh = presets.mesh()
    return config
