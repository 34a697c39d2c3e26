"""Before/after ratio of taking step-invariant work out of the sampler loop, measured in one run.

Runs one level program (the engine's batched sampler loop over a level's segments) twice on the
same weights and inputs: "in loop" passes ``MTDModels.denoise`` (text encoder, null prompt and
condition cascades at every step: the engine before the change), "once per call" passes
``MTDModels`` itself (a dod Denoiser: prompts and conditions encoded once, the scan runs the UNet
only). Both are compiled first; then warm calls are timed alternately and the medians compared.
Random weights (speed does not depend on training).

    python benchmarks/step_invariant.py --config=configs/synthetic.py:tiny --segments=4 --steps=10
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from nuwa_xl_jax import cli, configuration, parallel
from nuwa_xl_jax.diffusion import samplers
from nuwa_xl_jax.dod import segments
from nuwa_xl_jax.dod.level_models import LevelModel
from nuwa_xl_jax.family import MTDModels


def define_flags(fv, argv):
    del argv
    flags.DEFINE_string("config", "configs/synthetic.py:tiny", "configs/NAME.py[:variant]",
                        flag_values=fv)
    flags.DEFINE_integer("segments", 4, "segments in the level call", flag_values=fv)
    flags.DEFINE_integer("steps", 10, "DDIM steps", flag_values=fv)
    flags.DEFINE_float("guidance", 3.0, "classifier-free guidance scale", flag_values=fv)
    flags.DEFINE_integer("repeats", 5, "timed calls per mode", flag_values=fv)


def run(a):
    config = configuration.load(a.config)
    m = MTDModels(config, None, vae_params={})
    L = config.data.frames_per_call
    shapes = jax.eval_shape(lambda k: m.init(k, L), jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.02, s.shape), s.dtype), shapes)
    mesh = parallel.make_mesh(devices=jax.devices()[:1])
    sampling = samplers.Settings("ddim", a.steps, a.guidance)
    C = a.segments
    ids = np.asarray(m.tokenizer(["fred walks left in the forest"] * (C * L))).reshape(C, L, -1)
    mask = np.zeros((C, L), np.float32)
    mask[:, [0, -1]] = 1
    given = jnp.asarray(rng.normal(size=(C, L, *m.latent_shape)), jnp.float32)
    modes = {"in loop": m.denoise, "once per call": m}

    def call(denoise):
        return segments.sample_segments(
            LevelModel(denoise, params), m.schedule, sampling, mesh,
            level_key=jax.random.key(0), seg_index=np.arange(C), ids=ids, given=given, mask=mask,
            level=np.zeros(C, np.int32), null_ids=m.null_ids, replicate=True).block_until_ready()

    out = {}
    for name, d in modes.items():
        t0 = time.perf_counter()
        out[name] = np.asarray(call(d))
        print(f"{name}: first call (compile + run) {time.perf_counter() - t0:.1f} s")
    times = {name: [] for name in modes}
    for _ in range(a.repeats):
        for name, d in modes.items():  # alternate, so load on a shared machine hits both alike
            t0 = time.perf_counter()
            call(d)
            times[name].append(time.perf_counter() - t0)
    med = {name: float(np.median(t)) for name, t in times.items()}
    diff = np.abs(out["in loop"] - out["once per call"]).max() / np.abs(out["in loop"]).max()
    print(f"{a.config}: {C} segments x {L} frames, latents {m.latent_shape}, ddim {a.steps} steps, "
          f"guidance {a.guidance}; max relative difference of the samples {diff:.1e}")
    for name in modes:
        print(f"  {name}: median {med[name] * 1e3:.0f} ms of {a.repeats}")
    print(f"  ratio in loop / once per call: {med['in loop'] / med['once per call']:.2f}")


if __name__ == "__main__":
    cli.run(define_flags, run)
