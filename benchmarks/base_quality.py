"""How good a text-to-image base of the synthetic world is (configs/synthetic_base.py), read by the
synthetic-world probe: the measure its training stops on, and what its manifest records.

python benchmarks/base_quality.py --workdir=runs/base [--vae_step=N] [--unet_step=N]
    [--samples=1] [--guidance=G] [--vae_episodes=2] [--out=base_quality.json]
    [--sheet=base_sheet.png]

- VAE: the probe on the image VAE's reconstructions of held-out (test split) episodes (the first
  ``--vae_frames`` of each, as benchmarks/quality.py's VAE ceiling), next to the real frames: the
  ceiling of every generator that starts from it.
- UNet: one image per caption of :func:`synthetic.caption_patterns` (576: every scene, subject and
  cast the grammar can produce; ``--samples`` per caption), sampled with the config's sampler,
  steps and guidance from pure noise, decoded by the VAE; scene, characters, both, identity.

Weights: the stages' exports, or with ``--vae_step`` / ``--unet_step`` a training checkpoint's EMA
weights (the quality curve of a run that is still training; the VAE export or checkpoint step
decodes the UNet's samples). Without ``--unet_step`` and without an mtd_image export, only the VAE
is measured.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import flags

from nuwa_xl_jax import cli
from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.data.builders.synthetic_cartoon import TEST_SEED_OFFSET
from nuwa_xl_jax.diffusion import samplers
from nuwa_xl_jax.family import store
from nuwa_xl_jax.family.runtime import MTDModels
from nuwa_xl_jax.io import contact_sheets
from nuwa_xl_jax.metrics import storyboard_probe
from nuwa_xl_jax.models.tklvae import TKLVAE

SCORES = ("scene", "characters", "both", "unknown", "identity")


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    del argv
    d = dict(flag_values=fv)
    flags.DEFINE_string(
        "workdir", None, "a base's training workdir (configs/synthetic_base.py)", **d
    )
    flags.DEFINE_integer("vae_step", None, "a vae checkpoint step (default: the export)", **d)
    flags.DEFINE_integer(
        "unet_step", None, "an mtd_image checkpoint step (default: the export)", **d
    )
    flags.DEFINE_integer("samples", 1, "images per caption pattern", **d)
    flags.DEFINE_integer("vae_episodes", 2, "held-out episodes for the VAE ceiling", **d)
    flags.DEFINE_integer(
        "vae_frames",
        226,
        "frames of each, from the start (benchmarks/quality.py's VAE ceiling reads the same)",
        **d,
    )
    flags.DEFINE_integer("steps", None, "sampler steps (default: the config's)", **d)
    flags.DEFINE_float("guidance", None, "guidance scale (default: the config's)", **d)
    flags.DEFINE_integer("batch", 192, "images per sampler call", **d)
    flags.DEFINE_string("out", "base_quality.json", "results (JSON)", **d)
    flags.DEFINE_string("sheet", None, "a contact sheet of the first images of each scene", **d)
    flags.mark_flag_as_required("workdir", flag_values=fv)


def checkpoint_ema(workdir: str, stage: str, step: int) -> dict:
    """The EMA weights of ``stage``'s training checkpoint ``step``, as numpy arrays."""
    path = os.path.abspath(os.path.join(workdir, stage, "checkpoints", str(step), "state"))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint {step} of {stage} in {workdir}")
    return jax.tree.map(np.asarray, ocp.StandardCheckpointer().restore(path)["ema_params"])


def weights(workdir: str, stage: str, step: int | None):
    if step is not None:
        return checkpoint_ema(workdir, stage, step)
    return store.read_export(store.export_dir(workdir, stage))[0]


def latent_scale(vae, variables, frames: np.ndarray) -> float:
    """1 / std of the posterior means (what the vae stage exports) for checkpoint weights."""
    mean = vae.apply(variables, jnp.asarray(frames[:, None], jnp.float32) / 127.5 - 1,
                     method="encode")[0]
    return float(1.0 / max(float(jnp.std(mean)), 1e-6))


def vae_scores(config, variables, episodes: int, frames: int) -> dict:
    """The probe on held-out episodes' frames and on their reconstructions (mean posterior,
    decoded, rounded to uint8), mean over episodes."""
    vae = TKLVAE.from_config(config.model.vae)
    roundtrip = jax.jit(lambda v, x: vae.apply(v, vae.apply(v, x, method="encode")[0],
                                               method="decode"))
    c = config.data
    real, recon = [], []
    for i in range(min(episodes, c.test_episodes)):
        video, captions = synthetic.episode(c.world_seed + TEST_SEED_OFFSET, i,
                                            min(frames, c.episode_length), tuple(c.resolution))[:2]
        out = []
        for s in range(0, len(video), 64):
            x = jnp.asarray(video[s:s + 64, None], jnp.float32) / 127.5 - 1
            out.append(np.asarray(jnp.clip((roundtrip(variables, x)[:, 0] + 1) * 127.5, 0, 255)
                                  .round().astype(jnp.uint8)))
        real.append(storyboard_probe.agreement(video, captions))
        recon.append(storyboard_probe.agreement(np.concatenate(out), captions))
    return {"episodes": len(real), "frames": real[0]["frames"], "real": mean(real),
            "reconstructed": mean(recon)}


def unet_images(config, vae_variables, scale: float, params, captions: Sequence[str], seed: int,
                steps: int | None, batch: int, guidance: float | None = None) -> np.ndarray:
    """uint8 ``[N, H, W, 3]``: one image per caption, sampled as the config's diffusion block says
    (sampler, steps, guidance against the empty prompt), decoded by the VAE."""
    models = MTDModels(config, None, vae_variables)
    models.scale = scale
    kw = samplers.config_kwargs(config.diffusion, steps=steps, guidance_scale=guidance)
    name = kw.pop("name")

    @jax.jit
    def draw(params, ids, key):
        n = ids.shape[0]
        shape = (n, 1, *models.latent_shape)
        zeros, mask = jnp.zeros(shape), jnp.zeros((n, 1))
        features = models.condition(params, zeros, mask)
        cond = {"states": models.encode_prompts(params, ids), "features": features}
        null = {"states": models.encode_prompts(params, models.null_ids[None, None])}
        z = samplers.sample(name, lambda x, t, states, features: models.unet(
            params, x, t, states, features), models.schedule, key, shape, cond=cond,
            null_cond=null, **kw)
        return jnp.clip((models.decode(z)[:, 0] + 1) * 127.5, 0, 255).round().astype(jnp.uint8)

    ids = np.asarray(models.tokenizer(list(captions)), np.int32)[:, None]
    out = []
    for s in range(0, len(ids), batch):
        chunk = ids[s:s + batch]
        pad = batch - len(chunk)  # one shape for every call: one compile
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
        key = jax.random.fold_in(jax.random.key(seed), s)
        out.append(np.asarray(draw(params, jnp.asarray(chunk), key))[:batch - pad])
    return np.concatenate(out)


def mean(rows) -> dict:
    out = {}
    for k in SCORES:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out


def measure(fv) -> dict:
    workdir = fv.workdir
    config = store.load_config(workdir)
    vae_vars = weights(workdir, "vae", fv.vae_step)["vae"]
    result = {
        "workdir": os.path.abspath(workdir),
        "vae_step": fv.vae_step,
        "unet_step": fv.unet_step,
        "guidance": fv.guidance,
        "vae": vae_scores(config, vae_vars, fv.vae_episodes, fv.vae_frames),
    }
    _print_vae(result["vae"])
    has_unet = fv.unet_step is not None or store.has_export(workdir, "mtd_image")
    if has_unet:
        if fv.vae_step is None:
            scale = float(store.read_export(store.export_dir(workdir, "vae"))[1]["latent_scale"])
        else:
            c = config.data
            frames = synthetic.episode(c.world_seed, 0, c.episode_length, tuple(c.resolution))[0]
            scale = latent_scale(TKLVAE.from_config(config.model.vae), vae_vars, frames[::7])
        params = weights(workdir, "mtd_image", fv.unet_step)
        captions = synthetic.caption_patterns() * fv.samples
        images = unet_images(config, vae_vars, scale, params, captions, 0, fv.steps, fv.batch,
                             fv.guidance)
        scores = storyboard_probe.agreement(images, captions)
        result["unet"] = {"images": len(captions), **{k: scores[k] for k in SCORES}}
        print("UNet, one image per caption pattern: " + "  ".join(
            f"{k} {_f(result['unet'][k])}" for k in SCORES))
        if fv.sheet:
            _sheet(images, captions, fv.sheet)
    with open(fv.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"results: {fv.out}")
    return result


def _sheet(images, captions, path: str) -> None:
    """Rows of 16 images, one row per scene (the first 16 captions of each)."""
    per_scene = len(synthetic.caption_patterns()) // len(synthetic.SCENES)
    rows = [(np.arange(16), images[s * per_scene:s * per_scene + 16])
            for s in range(len(synthetic.SCENES))]
    contact_sheets.contact_sheet(rows, path, labels=list(synthetic.SCENES), overwrite=True)
    print(f"contact sheet: {path} (rows: scenes; columns: the first 16 captions of each, "
          f"{captions[0]!r}, {captions[1]!r}, ...)")


def _print_vae(v: dict) -> None:
    for which in ("real", "reconstructed"):
        print(f"VAE, {v['episodes']} held-out episodes x {v['frames']} frames, {which}: "
              + "  ".join(f"{k} {_f(v[which][k])}" for k in SCORES))


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: Sequence[str]) -> dict:
    """The benchmark with ``argv`` (flags only), in-process."""
    return measure(cli.parse(define_flags, argv, "base_quality"))


if __name__ == "__main__":
    cli.run(define_flags, measure)
