"""Diffusion over diffusion at the paper's scale: wall time, peak memory and model TFLOP/s.

python benchmarks/generate_scale.py       # a smoke test: tiny MTD, 17 frames at 32 px, 2 steps
python benchmarks/generate_scale.py --mtd=sd --cases=1024x128,3376x256 --steps=50 --L=16 \
    --guidance=1,7.5                      # the paper's scale (PAPER), on an accelerator
    [--dtype=bfloat16] [--attention=auto] [--max_segments_per_call=auto]
    [--memory_fraction=0.8] [--json=FILE]

A Stable-Diffusion-size MTD (SD v1's UNet layout with temporal layers and condition injection)
and a CLIP-L-size text encoder with random weights (speed does not depend on them), L frames per
call, the depth that covers each case's frames, DDIM. Each case runs once as a warm-up (compile
included, printed apart) and then once timed with every program warm and every weight resident
on the device. Reported per case and guidance: wall time of the sampling (latents; decoding is
not included), sequential calls, peak device memory (the allocator's peak where the device
reports one, else the largest compiled level program's estimate), and model TFLOP/s: the MTD
UNet's forward FLOPs (XLA's count for one step of one segment) times the segment-steps that ran,
x2 with guidance; the text encoder and condition features (once per call) are not counted.

The targets of issue 10 (one H100/H200): 1024 frames at 128 px in <= 10 s warm (<= 15 s with
guidance); 3376 frames at 256 px under 40 GB peak. On a CPU only tiny settings run (the
defaults, the CI smoke test).
"""
from __future__ import annotations

import json
import os
import platform
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from nuwa_xl_jax import cli, configuration, family, parallel
from nuwa_xl_jax.configuration import presets
from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.dod import engine, memory
from nuwa_xl_jax.dod import plan as planlib
from nuwa_xl_jax.dod.level_models import place_models, place_params
from nuwa_xl_jax.dod.runner import level_models_for


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    del argv
    d = dict(flag_values=fv)
    # Defaults: a smoke test (seconds on a CPU); the paper's scale is PAPER below.
    flags.DEFINE_list("cases", ["17x32"], "FRAMESxPIXELS, one per case", **d)
    flags.DEFINE_integer("steps", 2, "DDIM steps", lower_bound=1, **d)
    flags.DEFINE_list("guidance", ["1"], "classifier-free guidance scales (1 = none)", **d)
    flags.DEFINE_enum("mtd", "tiny", ["sd", "small", "tiny"], "MTD / text encoder size", **d)
    flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "compute dtype", **d)
    flags.DEFINE_enum(
        "attention", "auto", ["auto", "xla", "cudnn", "splash"], "attention kernels", **d
    )
    flags.DEFINE_string("max_segments_per_call", "auto", "'auto', a number or 'none'", **d)
    flags.DEFINE_float("memory_fraction", memory.DEFAULT_MEMORY_FRACTION, "for 'auto'", **d)
    flags.DEFINE_integer("L", 4, "frames per call", lower_bound=2, **d)
    flags.DEFINE_integer("seed", 0, "weights' and sampler's seed", **d)
    flags.DEFINE_string("json", None, "also write the results to this file", **d)


# The paper's scale (issue 10's targets), on an accelerator.
PAPER = ["--mtd=sd", "--cases=1024x128,3376x256", "--steps=50", "--L=16", "--guidance=1,7.5"]


def parse(argv: Sequence[str] = ()) -> flags.FlagValues:
    return cli.parse(define_flags, argv, "generate_scale")


def parse_case(text: str) -> tuple[int, int]:
    try:
        frames, pixels = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--cases entry {text!r}: use FRAMESxPIXELS, e.g. 1024x128") from None
    return frames, pixels


def scale_config(a, pixels: int, depth: int):
    """The synthetic config with the MTD, text encoder and VAE (its x8 latent factor) of ``--mtd``
    at ``pixels``; the built-in word tokenizer stands in for CLIP's (same encoder cost)."""
    config = configuration.load("configs/synthetic.py")
    with config.unlocked():
        config.model.vae = presets.vae("sd" if a.mtd == "sd" else "tiny")
        config.model.mtd = presets.mtd(a.mtd)
        config.model.mtd.dtype = a.dtype
        config.model.mtd.attention = a.attention
        config.model.text = presets.text("clip-l" if a.mtd == "sd" else a.mtd)
        config.model.text.tokenizer = "word"
        config.model.text.vocab_size = max(config.model.text.vocab_size, 64)
        config.data.resolution = (pixels, pixels)
        config.data.frames_per_call = a.L
        config.data.depth = depth
        # Never read here (no data is loaded), but the config must describe a trainable family.
        config.data.episode_length = max(config.data.episode_length, planlib.num_frames(a.L, depth))
        config.data.max_length = config.model.text.max_position_embeddings
    configuration.validate(config)
    return config


def unet_flops_per_segment_step(models, params, L: int) -> float:
    """XLA's FLOP count of one UNet step on one segment of L frames."""
    T = models.null_ids.shape[0]
    x = jnp.zeros((1, L, *models.latent_shape))
    states = jax.eval_shape(
        lambda p: models.encode_prompts(p, jnp.zeros((1, L, T), jnp.int32)), params
    )
    features = jax.eval_shape(lambda p: models.condition(p, x, jnp.zeros((1, L))), params)
    step = jax.jit(lambda p, s, f: models.unet(p, x, jnp.zeros((1,), jnp.int32), s, f,
                                               jnp.zeros((1,), jnp.int32)))
    cost = step.lower(params, states, features).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def peak_device_bytes() -> int:
    stats = jax.devices()[0].memory_stats() or {}
    return int(stats.get("peak_bytes_in_use", 0))


def run_case(a, frames: int, pixels: int, scales: list[float]) -> list[dict]:
    depth = planlib.depth_for(a.L, frames)
    config = scale_config(a, pixels, depth)
    plan = planlib.make_plan(a.L, depth, frames=frames)
    models = family.MTDModels(config, None, vae_params={})  # the VAE is never called here
    keys = jax.random.split(jax.random.key(a.seed), 2)
    mesh = parallel.make_mesh()
    init = jax.jit(models.init, static_argnums=1)  # one compile for both models' weights
    weights = [place_params(init(k, a.L), mesh) for k in keys]
    levels = place_models(level_models_for(config, models, weights[0], [weights[1]] * (depth - 1),
                                                  depth), mesh)
    flops = unet_flops_per_segment_step(models, weights[0], a.L)
    # One caption per frame from a synthetic episode (the built-in tokenizer's words).
    ids = np.asarray(models.tokenizer(list(synthetic.simulate(0, frames).captions)))
    rows = []
    for g in scales:
        kw = dict(sampler="ddim", steps=a.steps, guidance_scale=g, seed=a.seed, mesh=mesh,
                  max_segments_per_call=memory.check_max_segments(a.max_segments_per_call),
                  memory_fraction=a.memory_fraction)
        t0 = time.perf_counter()
        jax.block_until_ready(engine.run(plan, levels, ids, models.null_ids, models.schedule,
                                         models.latent_shape, **kw).latents)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = engine.run(
            plan, levels, ids, models.null_ids, models.schedule, models.latent_shape, **kw
        )
        jax.block_until_ready(result.latents)
        wall = time.perf_counter() - t0
        segment_steps = sum(s.segments for s in result.levels) * a.steps * (2 if g != 1.0 else 1)
        rows.append(dict(
            frames=frames, pixels=pixels, depth=depth, guidance=g, wall_s=wall, warmup_s=first,
            compile_s=max(0.0, first - wall), sequential_calls=result.sequential_calls,
            chunks=[(s.calls, s.chunk) for s in result.levels],
            level_wall_s=[s.wall_s for s in result.levels],
            # the allocator's peak since the process started (JAX cannot reset it): the largest
            # case so far; benchmarks/device_check.py runs each case in a process of its own
            peak_device_bytes=peak_device_bytes(),
            largest_program_bytes=max(s.program_bytes for s in result.levels),
            unet_gflop_per_segment_step=flops / 1e9,
            model_tflop_per_s=flops * segment_steps / wall / 1e12))
        print(report_row(rows[-1]), flush=True)
    return rows


def report_row(r: dict) -> str:
    peak = r["peak_device_bytes"] or r["largest_program_bytes"]
    kind = "device peak" if r["peak_device_bytes"] else "largest program (XLA estimate)"
    return (f"| {r['frames']} @ {r['pixels']} px | {r['guidance']:g} | {r['wall_s']:.2f} | "
            f"{r['compile_s']:.1f} | {r['sequential_calls']} | {r['chunks']} | "
            f"{peak / 2**30:.2f} GiB ({kind}) | {r['model_tflop_per_s']:.3g} |")


HEADER = (
    "| case | guidance | wall s (warm) | compile s | sequential calls | (calls, chunk) per level "
    "| peak memory | model TFLOP/s |\n|---|---|---|---|---|---|---|---|"
)


def run(a) -> dict:
    cases = [parse_case(c) for c in a.cases]
    scales = [float(g) for g in a.guidance]
    machine = (f"{platform.machine()} {os.cpu_count()} CPU cores, jax {jax.__version__} on "
               f"{jax.devices()[0].device_kind} x{jax.device_count()}")
    print(f"machine: {machine}\nMTD {a.mtd} in {a.dtype}, attention {a.attention}, L={a.L}, "
          f"DDIM {a.steps} steps, max_segments_per_call={a.max_segments_per_call}\n{HEADER}",
          flush=True)
    rows = [r for frames, pixels in cases for r in run_case(a, frames, pixels, scales)]
    return dict(machine=machine, mtd=a.mtd, dtype=a.dtype, attention=a.attention, L=a.L,
                steps=a.steps, max_segments_per_call=a.max_segments_per_call,
                memory_fraction=a.memory_fraction, rows=rows)


def main(a) -> None:
    result = run(a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    cli.run(define_flags, main)
