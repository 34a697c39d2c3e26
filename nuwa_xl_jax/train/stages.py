"""The stages of a NUWA-XL model family, each a :class:`loop.Stage` built from the whole config.

  vae            the Temporal KL-VAE on clips of ``config.vae_frames`` consecutive frames
  mtd_global     MTD on the global level (L keyframes over the whole window, nothing given)
  mtd_local<d>   MTD on local depth d (ends given), one model per depth
  mtd_local      one shared local model for every depth, with a level embedding
  mtd_ar         the autoregressive baseline (a prefix given; the paper's FDM* row)
  mtd_artv       ART•V: one new frame from [anchor, previous] (train/artv.py)

MTD stages read the VAE exported by the ``vae`` stage (``WORKDIR/vae/export``, with its latent
scale) and train the MTD UNet together with the text encoder (built-in word tokenizer) on a latent
cache (``data/latent_cache.py``, built once into ``WORKDIR/latents`` by the stage runner): every
frame encoded among its consecutive neighbours, as generation decodes it, and the level's frames
picked out of those latents. No VAE runs in an MTD step. Given frames are shown to the model clean
with t = 0 and excluded from the loss; the samplers do the same at inference (``given_t=0``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from nuwa_xl_jax import parallel, paths
from nuwa_xl_jax.configuration import Config, ConfigError, DataConfig, train_block_name
from nuwa_xl_jax.data import batches, latent_cache
from nuwa_xl_jax.diffusion import samplers, schedules
from nuwa_xl_jax.family.artv import WINDOW as ARTV_WINDOW
from nuwa_xl_jax.family.artv import ARTVModels

# The on-disk format and runtime live in the family layer; these names stay importable from here.
from nuwa_xl_jax.family.runtime import MTDModels
from nuwa_xl_jax.family.store import export_dir, read_export, read_vae, write_export  # noqa: F401
from nuwa_xl_jax.models.discriminator import NLayerDiscriminator
from nuwa_xl_jax.models.tklvae import TKLVAE, is_temporal_param
from nuwa_xl_jax.train import artv as artv_lib
from nuwa_xl_jax.train import init_from, loop, prompt_table, vae_loss
from nuwa_xl_jax.weights.unet import is_new_layer


def _to_dict(c: Any) -> dict:
    """A typed block as fingerprinted and exported (tuples as JSON lists: the same JSON as the
    ConfigDict block it came from, so fingerprints of older workdirs hold): ``init_from`` (where
    the weights started) and ``trainable`` are not architecture, so a workdir trained before they
    existed still resumes."""
    d = json.loads(json.dumps(c.to_dict()))
    d.pop("init_from", None)
    d.pop("trainable", None)  # a frozen text encoder is its own entry (_mtd_model_config)
    return d


def data_config(config: Config, **overrides) -> DataConfig:
    """``config.data`` for one stage (a new block, checked as such); the batch size always comes
    from the stage's train block."""
    return dataclasses.replace(config.data, **overrides)


def _grain_data(dcfg, tokenizer=None, table=None):
    """``data(pidx, nproc)``; ``table()``: a frozen text encoder's PromptTable, whose row numbers
    are added to every batch (``prompt_index``)."""
    def data(pidx, nproc):
        ds = batches.make_dataset(
            dcfg, process_index=pidx, process_count=nproc, tokenizer=tokenizer
        )
        return iter(ds if table is None else ds.map(table().add_index))

    return data


def _no_prompts(prompts) -> np.ndarray:
    """The VAE stage ignores captions: one placeholder id per prompt, no tokenizer needed."""
    return np.zeros((len(prompts), 1), np.int32)


def to_video(frames: jax.Array) -> jax.Array:
    """uint8 ``[..., 3]`` -> float32 in [-1, 1] (the models' pixel range)."""
    return frames.astype(jnp.float32) / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------
# The T-KLVAE stage.

IMAGE_STRIDE = 97  # frames between the 3 frames of a vae_image example: 3 unrelated images
IMAGE_FRAMES = 3  # frames of an image example (frames_per_call >= 3 in the data spec)


def image_stride(config) -> int:
    """IMAGE_STRIDE, shortened to fit the synthetic world's episodes."""
    return max(1, min(IMAGE_STRIDE, (config.data.episode_length - 1) // 2))


def vae_stage(config, workdir: str, image: bool = False) -> loop.Stage:
    """L1 (+ L2, + LPIPS if a weights file is given) + KL; with a PatchGAN hinge loss and LDM's
    adaptive weight from ``vae_loss.disc_start`` on, when that step falls inside the run.

    ``image=True`` is the ``vae_image`` stage: the image KL-VAE (``temporal=False``) on single
    frames drawn far apart, so every frame of a batch is a different picture. The ``vae`` stage
    then inflates it (NUWA-XL starts the T-KLVAE from a pretrained image VAE: spatial weights
    copied, temporal layers at identity) and trains on clips of ``vae_frames`` consecutive frames.
    [ours: the paper inflates SD's VAE; the embedded default has none, so it trains one first.]

    ``vae_loss.disc_start`` counts the autoencoder's steps from its start: a ``vae`` stage that
    continues a ``vae_image`` stage begins at step ``vae_image_train.steps`` of that count (as
    LDM's ``disc_start`` counts from the autoencoder's first step). ``train_layers='decoder'``
    holds the encoder (so the latent space) and trains the decoder alone, as SD's ft-EMA/ft-MSE
    decoders were fine-tuned.
    """
    config = Config.from_dict(config)
    vae_cfg = config.model.vae
    train_cfg = config.train_block("vae_image" if image else "vae")
    name = "vae_image" if image else "vae"
    # A family whose VAE has no temporal layers (an image base, configs/synthetic_base.py) trains
    # its vae stage as vae_image does: on unrelated single frames.
    image = image or not vae_cfg.temporal
    if image:
        vae_cfg = dataclasses.replace(vae_cfg, temporal=False)
        F = IMAGE_FRAMES  # the image VAE sees each frame alone
        dcfg = data_config(config, mode="ar", frames_per_call=F, ar_stride=image_stride(config),
                           ar_prefix=0, batch_size=train_cfg.batch_size)
    else:
        F = config.vae_frames
        dcfg = data_config(config, mode="ar", frames_per_call=F, ar_stride=1, ar_prefix=0,
                           batch_size=train_cfg.batch_size)
    vae = TKLVAE.from_config(vae_cfg)
    h, w = tuple(config.data.resolution)
    cfg = config.vae_loss
    continues_image = name == "vae" and "vae_image" in config.stages
    # where this stage starts on the autoencoder's step count (disc_start's)
    offset = config.train_block("vae_image").steps if continues_image else 0
    use_gan = cfg.disc_start < offset + train_cfg.steps  # static: no discriminator otherwise
    disc = NLayerDiscriminator(cfg.disc_num_layers, cfg.disc_channels)
    clip = jnp.zeros((1, F, h, w, 3))
    # The discriminator always normalises with batch statistics (it is never run in eval mode), so
    # its BatchNorm running averages are neither trained nor kept.
    disc_stats = disc.init(jax.random.key(0), clip)["batch_stats"] if use_gan else None
    lpips = vae_loss.make_lpips(cfg)
    image_weights = None
    image_scale = None
    if continues_image:
        image_weights, image_meta = read_export(export_dir(workdir, "vae_image"))
        image_weights, image_scale = image_weights["vae"], image_meta.get("latent_scale")
    # public weights (model.vae.init_from) start the first VAE stage; the vae_image stage's pass on
    public = None if image_weights is not None else init_from.start_weights(
        config.model.vae, "model.vae", "vae")
    fixed = _fixed_vae_layers(train_cfg.train_layers, train_block_name(config, name), image,
                              image_weights is not None or public is not None)
    decoder_only = train_cfg.train_layers == "decoder"

    def init(key):
        k_vae, k_disc = jax.random.split(key)
        variables = vae.init(k_vae, clip)
        if image_weights is not None or public is not None:
            variables = overlay(variables, public if image_weights is None else image_weights)
        elif cfg.init_logvar:
            variables = init_logvar(variables, vae_cfg.latent_channels, cfg.init_logvar)
        params = {"vae": variables}
        if use_gan:
            params["disc"] = {"params": disc.init(k_disc, clip)["params"]}
        return params

    def lpips_distance(video, recon):
        return None if lpips is None else lpips[0].apply(lpips[1], video, recon)

    def logits(disc_params, x):
        out, _ = disc.apply({**disc_params, "batch_stats": disc_stats}, x, mutable=["batch_stats"])
        return out

    def grads(params, batch, key, step):
        video = to_video(batch["frames"])

        def generator(vae_params):
            mean, logvar = vae.apply(vae_params, video, method="encode")
            if decoder_only:  # a held encoder: no backward pass through it
                mean, logvar = jax.lax.stop_gradient((mean, logvar))
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
            recon = vae.apply(vae_params, z, method="decode")
            dist = lpips_distance(video, recon)
            if not use_gan:
                loss, metrics = vae_loss.autoencoder_loss(video, recon, mean, logvar, cfg, dist)
                return loss, (metrics, recon)
            nll_fn = lambda r: vae_loss.reconstruction_nll(
                video, r, cfg.l1_weight, dist, cfg.lpips_weight, cfg.l2_weight
            )
            g_fn = lambda r: vae_loss.generator_loss(logits(params["disc"], r))
            g_nll, g_gan = vae_loss.last_layer_grads(
                lambda p: vae.apply(p, z, method="decode"), vae_params, [nll_fn, g_fn],
                path=("params",) + vae_loss.LAST_LAYER)
            d_weight = vae_loss.adaptive_weight(g_nll, g_gan, cfg.disc_weight)
            loss, metrics = vae_loss.generator_objective(
                cfg, video, recon, mean, logvar, logits(params["disc"], recon), step + offset,
                d_weight, dist)
            metrics.pop("loss", None)
            return loss, (metrics, recon)

        (loss, (metrics, recon)), g_vae = jax.value_and_grad(generator, has_aux=True)(params["vae"])
        if not use_gan:
            return loss, metrics, {"vae": g_vae}

        def discriminator(disc_params):
            return vae_loss.discriminator_objective(
                cfg, logits(disc_params, video), logits(disc_params, jax.lax.stop_gradient(recon)),
                step + offset)

        (_, d_metrics), g_disc = jax.value_and_grad(discriminator, has_aux=True)(params["disc"])
        return loss, {**metrics, **d_metrics}, {"vae": g_vae, "disc": g_disc}

    def export_meta(ema_params, batches: int = 4) -> dict:
        """LDM's latent scale: 1 / std of the posterior means on a few training batches, so the
        diffusion models see unit-variance latents (SD's 0.18215 is right for SD's VAE only).
        A VAE whose image layers stay those of a converted image VAE keeps its scale: the image
        UNet that MTDs start from was trained at it (as SD's UNet at 0.18215). So does a decoder
        fine-tune of vae_image: same encoder, same latents (a UNet may already train on them)."""
        if fixed is not None and source_scale is not None:
            return {"latent_scale": source_scale}
        if decoder_only and continues_image:  # the encoder held: vae_image's latents, its scale
            return {"latent_scale": image_scale}
        it = _grain_data(dcfg, _no_prompts)(0, 1)
        encode = jax.jit(lambda p, f: vae.apply(p, to_video(f), method="encode")[0])
        means = np.concatenate([np.asarray(encode(ema_params["vae"], next(it)["frames"])).ravel()
                                for _ in range(batches)])
        return {"latent_scale": float(1.0 / max(means.std(), 1e-6))}

    source_scale = init_from.latent_scale(config.model.vae) if public is not None else None
    return loop.Stage(name, init, None, _grain_data(dcfg, _no_prompts),
                      model_config={"vae": _vae_fields(vae_cfg), "gan": use_gan,
                                    **_layers_field(train_cfg)},
                      grads=grads, frames_per_example=F, export_meta=export_meta, fixed=fixed)


def _fixed_vae_layers(train_layers: str, block: str, image: bool, starts_from_weights: bool):
    """``fixed(path)`` for the vae stages' ``train_layers`` (None: everything trains).

    'added': the image VAE's layers held, the T-KLVAE's temporal layers train. 'decoder': the
    encoder and its quant_conv held (the latent space the diffusion models learn stays put), the
    decoder and post_quant_conv train. Both need starting weights to hold."""
    if train_layers == "all":
        return None
    if train_layers == "added":
        if image or not starts_from_weights:
            raise ConfigError(f"{block}.train_layers='added' trains only the T-KLVAE's temporal "
                              "layers: it needs a temporal model.vae that starts from an image VAE "
                              "(model.vae.init_from, or a vae_image stage)")
        return lambda path: path.startswith("vae/") and not is_temporal_param(path)
    if not starts_from_weights:
        raise ConfigError(f"{block}.train_layers='decoder' fine-tunes the decoder of a trained VAE:"
                          " it needs starting weights (a vae_image stage before this vae stage, "
                          "or model.vae.init_from)")
    trained = ("vae/params/decoder/", "vae/params/post_quant_conv/")
    return lambda path: path.startswith("vae/") and not path.startswith(trained)


def _vae_fields(vae_cfg) -> dict:
    """The VAE block as fingerprinted: ``dtype`` and ``remat`` are how it computes, not what its
    parameters are, so a vae workdir resumes under either (and those from before they existed)."""
    return {k: v for k, v in _to_dict(vae_cfg).items() if k not in ("dtype", "remat")}


def _layers_field(train_cfg) -> dict:
    """``train_layers`` in a stage's fingerprint when not 'all' (its optimizer state is another
    tree; older workdirs, all 'all', keep their fingerprints)."""
    return {} if train_cfg.train_layers == "all" else {"train_layers": train_cfg.train_layers}


def overlay(variables: Any, weights: Any) -> Any:
    """``variables`` (boxed or plain) with every leaf that ``weights`` has replaced by it: the image
    VAE's weights into a T-KLVAE, whose extra temporal layers keep their identity init; the global
    MTD's into a local one (``init_from``)."""
    if isinstance(variables, dict) or hasattr(variables, "items"):
        return {k: overlay(v, weights[k]) if k in weights else v for k, v in variables.items()}
    value = jnp.asarray(weights)
    target = variables.value if isinstance(variables, nn.meta.AxisMetadata) else variables
    if value.shape != target.shape:
        raise ValueError(f"a starting weight of shape {value.shape} does not fit {target.shape}: "
                         "the stage it comes from must share this stage's model config")
    value = value.astype(target.dtype)
    return variables.replace_boxed(value) if isinstance(variables, nn.meta.AxisMetadata) else value


def init_logvar(variables: Any, latent_channels: int, value: float) -> Any:
    """Sets the bias of the posterior's log-variance (``quant_conv``'s second half) to ``value``."""
    bias = variables["params"]["quant_conv"]["bias"]
    raw = bias.value if isinstance(bias, nn.meta.AxisMetadata) else bias
    raw = raw.at[latent_channels:].set(value)
    new = bias.replace_boxed(raw) if isinstance(bias, nn.meta.AxisMetadata) else raw
    out = dict(variables)
    out["params"] = dict(variables["params"])
    out["params"]["quant_conv"] = dict(variables["params"]["quant_conv"], bias=new)
    return out


# ----------------------------------------------------------------------------------------------
# MTD stages.

def stage_data_overrides(config, name: str) -> dict:
    depth = config.data.depth
    if name == "mtd_image":  # unrelated frames of one episode, each its own image (image_batch)
        return dict(mode="ar", frames_per_call=IMAGE_FRAMES, ar_stride=image_stride(config),
                    ar_prefix=0)
    if name == "mtd_global":
        return dict(mode="dod", level=0)
    if name == "mtd_local":
        return dict(mode="dod", level=-1)
    if name == "mtd_ar":
        return dict(mode="ar")
    d = int(name[len("mtd_local"):])
    if not 1 <= d < depth:
        raise ValueError(f"stage {name!r}: local depth {d} is not in 1..{depth - 1} for "
                         f"data.depth={depth}")
    return dict(mode="dod", level=d)


def mtd_loss(models: MTDModels, params, batch, key, prompt_dropout: float,
             min_snr_gamma: float = 0.0, saliency_weight: float = 0.0, table_states=None,
             null_row: int | None = None):
    """Epsilon (or v) MSE on the frames to generate, Min-SNR-weighted when ``min_snr_gamma`` > 0;
    given frames are clean with t = 0. ``table_states``: a frozen text encoder's prompt states
    (prompt_table.py), gathered instead of running the encoder."""
    _, kt, kn, kd = jax.random.split(key, 4)  # 4 streams: keeps the keys of earlier runs
    if "latents" not in batch:
        raise ValueError("MTD stages train on cached latents (data.latent_dir): batches have "
                         "'latents', not 'frames' (see data/latent_cache.py)")
    z0 = batch["latents"]
    B, F = z0.shape[:2]
    mask = batch["mask"].astype(jnp.float32)
    m = mask[:, :, None, None, None]
    t = jax.random.randint(kt, (B,), 0, models.schedule.num_train_timesteps)
    noise = jax.random.normal(kn, z0.shape)
    x_t = schedules.q_sample(models.schedule, z0, t, noise)
    x_in = m * z0 + (1 - m) * x_t
    t_frames = jnp.where(mask > 0, 0, t[:, None]).astype(jnp.int32)
    drop = jax.random.bernoulli(kd, prompt_dropout, (B, 1, 1))
    states = prompt_table.batch_states(models, params, batch, drop, table_states, null_row)
    level = batch["level"].astype(jnp.int32) if "level" in batch else None
    pred = models.unet(
        params, x_in, t_frames, states, models.condition(params, z0 * m, mask), level
    )
    target = schedules.training_target(models.schedule, z0, noise, t)
    weight = 1 - m  # given frames are conditions, not targets
    if saliency_weight:
        # [ours] small objects on flat backgrounds are a few latent pixels of each frame, so a
        # plain mean over positions barely sees them: weight each position by how far its latent
        # is from the frame's typical (median) latent, 1 on background up to 1 + saliency_weight.
        median = jnp.median(z0, axis=(2, 3), keepdims=True)
        deviation = jnp.mean(jnp.abs(z0 - median), axis=-1, keepdims=True)
        salience = 1.0 + saliency_weight * jnp.tanh(deviation)
        # per frame the weights average 1: the loss keeps its scale, only its spread moves
        weight = weight * salience / jnp.mean(salience, axis=(2, 3, 4), keepdims=True)
    sq = jnp.square(pred.astype(jnp.float32) - target)
    norm = jnp.maximum(jnp.sum(1 - m), 1.0) * np.prod(z0.shape[2:])
    mse = jnp.sum((1 - m) * sq) / norm
    snr_w = schedules.min_snr_weight(models.schedule, t, min_snr_gamma)[:, None, None, None, None]
    loss = jnp.sum(snr_w * weight * sq) / norm
    return loss, {"mse": mse}


def image_batch(batch: dict) -> dict:
    """``[B, F, ...]`` windows as ``[B * F, 1, ...]`` single frames: the mtd_image stage's UNet
    (no temporal layers) sees each frame alone, with its own timestep and noise."""
    F = batch["latents"].shape[1]
    return {k: (jnp.repeat(v, F, axis=0) if v.ndim == 1  # per example (level, stride)
                else v.reshape(v.shape[0] * F, 1, *v.shape[2:]))
            for k, v in batch.items()}


def latent_dir(config, workdir: str) -> str:
    """The latent cache MTD stages read: ``data.latent_dir``, else the one the stage runner
    builds."""
    return config.data.latent_dir or os.path.join(workdir, "latents")


def ensure_latent_cache(config, workdir: str, progress: bool = True) -> str:
    """Builds ``WORKDIR/latents`` from the vae stage's export unless ``data.latent_dir`` names a
    cache or a complete one with the same scale and windows exists. Process 0 writes; every
    process waits for it (the folder must be shared storage on multi-host runs)."""
    config = Config.from_dict(config)
    if config.data.latent_dir:
        return config.data.latent_dir
    out = latent_dir(config, workdir)
    if jax.process_index() == 0:
        variables, scale = read_vae(workdir, config)
        latent_cache.build(config, out, variables, scale, config.data.split,
                           progress=progress)
    parallel.sync_processes("latent_cache")
    return out


def mtd_stage(config, name: str, workdir: str, vae_params: Any = None) -> loop.Stage:
    config = Config.from_dict(config)
    overrides = stage_data_overrides(config, name)  # a bad stage name fails before any loading
    models = MTDModels(config, workdir, vae_params)
    cache = latent_dir(config, workdir)
    latent_cache.check_scale(cache, config.data.split, models.scale)
    train_cfg = train_block_for(config, name)
    dcfg = data_config(config, batch_size=train_cfg.batch_size, latent_dir=cache, **overrides)
    L = config.data.frames_per_call
    if name == "mtd_local" and not models.model.mtd.num_levels:
        raise ValueError(
            "stage 'mtd_local' (one shared local model) needs model.mtd.num_levels > 0 "
            "for its level embedding; set it to data.depth"
        )
    if name == "mtd_image":
        L = 1
    init = _init_fn(lambda key: models.init(key, L), config, train_cfg, workdir)
    table = frozen_prompts(config, models, cache)
    fixed = _fixed_mtd_layers(config, train_cfg, name)

    def loss(params, batch, key, step, table_states=None):
        if name == "mtd_image":
            batch = image_batch(batch)
        return mtd_loss(models, params, batch, key, train_cfg.prompt_dropout,
                        config.diffusion.min_snr_gamma, train_cfg.saliency_weight, table_states,
                        None if table is None else table().null_row)

    def sample(params, step, directory):
        write_samples(models, params, directory, step, dcfg)

    return loop.Stage(name, init, loss, _grain_data(dcfg, models.tokenizer, table),
                      model_config=_mtd_model_config(config, train_cfg),
                      frames_per_example=IMAGE_FRAMES if name == "mtd_image" else L,
                      sample=sample, fixed=fixed, **_text_fields(models, table))


def _fixed_mtd_layers(config, train_cfg, name: str):
    """With ``train_layers='added'``: the MTD's image-UNet layers, held at their starting weights
    (the layers NUWA-XL adds train; the text encoder follows model.text.trainable)."""
    if train_cfg.train_layers == "all":
        return None
    if train_cfg.train_layers == "decoder":
        raise ConfigError(f"{train_block_name(config, name)}.train_layers='decoder' is for vae "
                          "stages; an MTD stage takes 'all' or 'added'")
    if not (train_cfg.init_from or config.model.mtd.init_from):
        raise ConfigError(f"{train_block_name(config, name)}.train_layers='added' trains only the "
                          "layers NUWA-XL adds: the MTD must start from an image UNet "
                          "(model.mtd.init_from) or an earlier stage (init_from)")
    prefix = "mtd/params/"
    return lambda path: path.startswith(prefix) and not is_new_layer(path[len(prefix):])


def frozen_prompts(config, models: MTDModels, cache: str):
    """None when the text encoder trains with the MTD (``model.text.trainable``); frozen: a
    cached ``() -> PromptTable`` of the latent cache's distinct prompts (prompt_table.py), read
    when the stage first needs it (after the stage runner has built the cache)."""
    if config.model.text.trains:
        return None
    return functools.cache(lambda: prompt_table.PromptTable.of(
        latent_cache.distinct_prompt_ids(cache, config.data.split), models.null_ids))


def _text_fields(models, table) -> dict:
    """The Stage fields of a frozen text encoder: no optimizer state for it, and its table of
    prompt states computed once from the (initialised or restored) weights."""
    if table is None:
        return {}
    return {"frozen": ("text",), "prepare": lambda params: table().states(models, params)}


def _init_fn(fresh, config, train_cfg, workdir: str):
    """``init(key)``: ``fresh(key)`` overlaid with the starting weights, if any: an earlier stage's
    export (``train_cfg.init_from``), else public weights (``model.mtd`` / ``model.text``
    ``.init_from``, spatial layers only)."""
    if train_cfg.init_from:
        # Read now, not in init: a missing export fails before any compile. overlay keeps the
        # fresh init of what the source lacks (a shared local model's level embedding, ART•V's
        # mask head).
        start = read_export(export_dir(workdir, train_cfg.init_from))[0]
    else:
        public = {
            c: init_from.start_weights(config.model[c], f"model.{c}", c) for c in ("mtd", "text")
        }
        start = {c: w for c, w in public.items() if w is not None} or None
    if start is None:
        return fresh
    return lambda key: overlay(fresh(key), start)


def _mtd_model_config(config, train_cfg) -> dict:
    """What decides an MTD stage's parameters and what its weights mean (the fingerprint)."""
    return {"mtd": _to_dict(config.model.mtd), "text": _to_dict(config.model.text),
            # what the weights predict: resuming or reusing them under another schedule / target
            # would silently mislead
            "diffusion": config.diffusion.schedule_fields(),
            "init_from": train_cfg.init_from, **_layers_field(train_cfg),
            # a frozen encoder has no optimizer state: its checkpoints are another tree
            **({} if config.model.text.trains else {"text_frozen": True})}


def write_samples(models: MTDModels, params, directory: str, step: int, dcfg) -> str:
    """Samples the first example of the stage's data with its own prompts and given frames and
    writes ``step_N.png``: the real frames (through the VAE) above, the generated ones below.
    SPMD: every process calls it with the global weights (FSDP across hosts too) and samples over
    their mesh; the frames reach the host by a multi-host gather and process 0 writes."""
    batch = next(
        batches.make_iterator(
            dataclasses.replace(dcfg, batch_size=1),
            process_index=0,
            process_count=1,
            tokenizer=models.tokenizer,
        )
    )
    # the same example on every process: replicated global arrays on the weights' mesh
    on_mesh = functools.partial(parallel.global_input, sharding=parallel.replicated(
        jax.tree.leaves(params)[0].sharding.mesh)) if jax.process_count() > 1 else (lambda x: x)
    z0 = jnp.asarray(on_mesh(np.asarray(batch["latents"])))
    mask = jnp.asarray(on_mesh(np.asarray(batch["mask"], np.float32)))
    ids = jnp.asarray(on_mesh(np.asarray(batch["prompt_ids"])))
    level = jnp.asarray(on_mesh(np.asarray(batch["level"], np.int32)))

    def model_fn(x, t, states, features):
        return models.unet(params, x, t, states, features, level)

    d = models.config.diffusion
    # Prompts and given frames are encoded once, not at every step.
    cond = {"states": models.encode_prompts(params, ids),
            "features": models.condition(params, z0 * mask[..., None, None, None], mask)}
    z = samplers.sample(d.sampler, model_fn, models.schedule, jax.random.key(step), z0.shape,
                        steps=d.sample_steps, cond=cond, given=z0, mask=mask, given_t=0,
                        eta=d.ddim_eta if d.sampler == "ddim" else 0.0)
    # decoded from host copies (the VAE's weights are each process's own)
    fake, real = (np.asarray(jnp.clip((models.decode(parallel.to_host(v))[0] + 1) * 127.5, 0, 255)
                             ).astype(np.uint8) for v in (z, z0))
    sheet = np.concatenate([np.concatenate(list(real), 1), np.concatenate(list(fake), 1)], 0)
    folder = paths.as_path(directory)  # a local folder or a bucket URL
    path = folder / f"step_{step}.png"
    if jax.process_index() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            Image.fromarray(sheet).save(f, format="PNG")
    return str(path)


def artv_stage(config, workdir: str, vae_params=None) -> loop.Stage:
    """The ``mtd_artv`` stage (train/artv.py): ``artv`` windows of the latent cache, the ``train``
    block, the MTD's model config plus the ``artv`` settings."""
    config = Config.from_dict(config)
    name = "mtd_artv"
    artv = ARTVModels(MTDModels(config, workdir, vae_params))
    cache = latent_dir(config, workdir)
    latent_cache.check_scale(cache, config.data.split, artv.models.scale)
    train_cfg = train_block_for(config, name)
    dcfg = data_config(config, batch_size=train_cfg.batch_size, latent_dir=cache, mode="artv")

    table = frozen_prompts(config, artv.models, cache)

    def loss(params, batch, key, step, table_states=None):
        return artv_lib.artv_loss(artv, params, batch, key, train_cfg.prompt_dropout,
                                  config.diffusion.min_snr_gamma, table_states,
                                  None if table is None else table().null_row)

    return loop.Stage(name, _init_fn(artv.init, config, train_cfg, workdir), loss,
                      _grain_data(dcfg, artv.tokenizer, table),
                      model_config={**_mtd_model_config(config, train_cfg),
                                    "artv": _to_dict(artv.settings)},
                      frames_per_example=ARTV_WINDOW, **_text_fields(artv.models, table))


def build(config, name: str, workdir: str) -> loop.Stage:
    """Stage ``name`` of ``config`` (a :class:`Config`; a ConfigDict is validated into one)."""
    config = Config.from_dict(config)
    if name in ("vae", "vae_image"):
        return vae_stage(config, workdir, image=name == "vae_image")
    if name == "mtd_artv":
        return artv_stage(config, workdir)
    if name.startswith("mtd_"):
        return mtd_stage(config, name, workdir)
    raise ValueError(f"unknown stage {name!r}; use vae_image, vae, mtd_global, mtd_local<d>, "
                     "mtd_local, mtd_ar, mtd_artv")


def train_block_for(config, name: str):
    """The train block of stage ``name`` (:meth:`Config.train_block`)."""
    return Config.from_dict(config).train_block(name)
