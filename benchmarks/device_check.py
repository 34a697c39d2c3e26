"""One command that checks a real accelerator (issue 23): python benchmarks/device_check.py

    python benchmarks/device_check.py [--tiny] [--parts=versions,attention,train,dod,plan]
        [--json=device_check.json] [--part_timeout=300]

Each part runs in a process of its own (a part that fails or runs out of memory is reported and
the rest still run; each part's peak device memory is its own, never an earlier case's):

- ``versions``: Python, jax, jaxlib, flax, optax, orbax; the device, its count and kind.
- ``attention``: cuDNN vs XLA attention at the model's real shapes (77 prompt tokens; head dims
  40 / 80 / 160; a large temporal batch), forward and gradient, bf16: ms per call, warm.
- ``train``: the SD-size MTD bf16 train step (UNet loss, AdamW; prompt states given, as with a
  frozen text encoder): step time; MFU from *model* FLOPs (XLA's count of a remat-free,
  XLA-attention lowering: the work the model needs) and hardware FLOP utilisation (the compiled
  step's own count, remat recompute included) apart; peak memory.
- ``dod``: 1024 frames at 128 px with the SD-size MTD, DDIM 50, no guidance
  (benchmarks/generate_scale.py): warm wall time per level and in total, compile time apart.
- ``plan``: 3376 frames at 256 px: the memory plan from the compiled level program of the
  largest level (its chunk under ``max_segments_per_call='auto'`` and that program's peak), no run.

``--tiny`` runs the same code paths at tiny sizes on CPU in under 2 minutes (CI runs it). Needs
only jax, flax, optax, orbax-checkpoint, absl, numpy (and scipy, pyyaml: jax's and orbax's own);
ml_collections comes from ``make device-bundle`` (``.device_bundle/``, git-ignored, imported from
its wheel) where it is not installed. Prints a table; ``--json`` writes every part's results.
"""
from __future__ import annotations

import glob
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The device machine has the tree, not an install: the tree, benchmarks/ and the bundle's wheels go
# on PYTHONPATH (this process starts again with it once; every part's process inherits it).
_PATH = os.pathsep.join([ROOT, os.path.join(ROOT, "benchmarks")]
                        + sorted(glob.glob(os.path.join(ROOT, ".device_bundle", "*.whl"))))
if __name__ == "__main__" and os.environ.get("NUWA_XL_DEVICE_CHECK_PATH") != _PATH:
    _paths = [_PATH] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
              dict(os.environ, PYTHONPATH=os.pathsep.join(_paths),
                   NUWA_XL_DEVICE_CHECK_PATH=_PATH))

from absl import flags  # noqa: E402

# Everything else (JAX, flax, optax, orbax, the library, benchmarks/) is imported inside the parts:
# the parent process never loads JAX (each part runs in a process of its own, with its own device
# memory), and a part imports only what it runs.

PARTS = ("versions", "attention", "train", "dod", "plan")
RESULT = "DEVICE_CHECK_RESULT "


def define_flags(fv, argv):
    del argv
    d = dict(flag_values=fv)
    flags.DEFINE_bool("tiny", False, "tiny sizes (CPU, CI): the same code paths", **d)
    flags.DEFINE_list("parts", list(PARTS), f"parts to run, of {', '.join(PARTS)}", **d)
    flags.DEFINE_string("part", None, "run this one part in this process (internal)", **d)
    flags.DEFINE_string("json", None, "write the results to this file", **d)
    flags.DEFINE_integer("part_timeout", 300, "seconds per part", **d)
    flags.DEFINE_integer("repeats", 5, "timed calls per case (the median is reported)", **d)


# --------------------------------------------------------------------------- helpers

def _timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first call s, median warm call ms)."""
    import jax
    import numpy as np
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)) * 1e3


def _flops(stage) -> float:
    cost = stage.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def _peak_bytes() -> int:
    import jax
    stats = jax.local_devices()[0].memory_stats() or {}
    return int(stats.get("peak_bytes_in_use", 0))


def _peak_flops() -> float | None:
    import jax
    from train_step import peak_flops  # benchmarks/ is on PYTHONPATH (above)
    return peak_flops(jax.local_devices()[0])


# --------------------------------------------------------------------------- parts

def part_versions(a) -> list[dict]:
    import flax
    import jax
    import optax
    import orbax.checkpoint as ocp
    d = jax.local_devices()[0]
    return [dict(python=platform.python_version(), jax=jax.__version__,
                 jaxlib=jax.lib.__version__, flax=flax.__version__, optax=optax.__version__,
                 orbax=getattr(ocp, "__version__", "?"), platform=d.platform,
                 device=d.device_kind, devices=jax.device_count(),
                 compute_capability=getattr(d, "compute_capability", None))]


def attention_cases(tiny: bool) -> list[tuple]:
    """(name, N, q_len, kv_len, heads, head_dim): SD's at 256 px, or tiny."""
    if tiny:
        return [("spatial", 2, 64, 64, 2, 40), ("cross", 2, 64, 77, 2, 80),
                ("temporal", 256, 16, 16, 2, 160)]
    return [("spatial 32x32", 16, 1024, 1024, 8, 40), ("cross 32x32", 16, 1024, 77, 8, 40),
            ("spatial 16x16", 16, 256, 256, 8, 80), ("cross 16x16", 16, 256, 77, 8, 80),
            ("spatial 8x8", 16, 64, 64, 8, 160), ("cross 8x8", 16, 64, 77, 8, 160),
            ("temporal 32x32 (16 seg x cfg)", 32 * 32 * 32, 16, 16, 8, 40)]


def part_attention(a) -> list[dict]:
    import jax
    import jax.numpy as jnp

    from nuwa_xl_jax.models import layers
    rows = []
    impls = ["xla"] + (["cudnn"] if layers._on_nvidia_gpu() else [])
    for name, n, q_len, kv_len, heads, hd in attention_cases(a.tiny):
        key = jax.random.key(0)
        q = jax.random.normal(key, (n, q_len, heads, hd), jnp.bfloat16)
        kv = jax.random.normal(key, (n, kv_len, heads, hd), jnp.bfloat16)
        for impl in impls:
            row = dict(case=name, shape=f"{n}x{q_len}x{kv_len}x{heads}x{hd}", impl=impl)
            fwd = jax.jit(lambda q, k, impl=impl: layers.attend(q, k, k, implementation=impl))
            loss = lambda q, k, impl=impl: layers.attend(q, k, k, implementation=impl).astype(
                jnp.float32).sum()
            grad = jax.jit(jax.grad(loss, (0, 1)))
            try:
                row["fwd_compile_s"], row["fwd_ms"] = _timed(fwd, q, kv, repeats=a.repeats)
                row["grad_compile_s"], row["grad_ms"] = _timed(grad, q, kv, repeats=a.repeats)
            except Exception as e:  # a shape the kernel refuses: reported, the rest still runs
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
            rows.append(row)
    return rows


def _mtd_step(variant: str, dtype: str, attention: str, remat: str, batch: int, frames: int,
              latent: int):
    """(jitted train step, its abstract-free args): the MTD UNet's epsilon loss and AdamW."""
    import jax
    import jax.numpy as jnp
    import optax

    from nuwa_xl_jax.configuration import presets
    from nuwa_xl_jax.models.mtd import MTDUNet
    c = presets.mtd(variant)
    c.dtype, c.attention, c.remat = dtype, attention, remat
    model = MTDUNet.from_config(c)
    tokens, width = (77, 768) if variant == "sd" else (8, c.cross_attention_dim)
    x = jnp.zeros((batch, frames, latent, latent, 4))
    args = (x, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch, frames, tokens, width)), x,
            jnp.zeros((batch, frames)))
    # zero weights (timing does not depend on them): no init program to compile
    shapes = jax.eval_shape(model.init, jax.random.key(0), *args)
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    tx = optax.adamw(1e-4)
    opt = tx.init(params)

    def step(params, opt, x, t, states, cond, mask):
        def loss(p):
            out = model.apply(p, x, t, states, cond, mask)
            return jnp.mean(jnp.square(out.astype(jnp.float32) - x))
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    return jax.jit(step, donate_argnums=(0, 1)), (params, opt, *args)


def part_train(a) -> list[dict]:
    import jax
    shape = dict(batch=1, frames=4, latent=8) if a.tiny else dict(batch=1, frames=16, latent=32)
    variant = "tiny" if a.tiny else "sd"
    dtype = "float32" if a.tiny else "bfloat16"
    # model FLOPs: the work the model needs (no remat recompute, XLA attention that XLA counts)
    ref, ref_args = _mtd_step(variant, dtype, "xla", "none", **shape)
    model_flops = _flops(ref.lower(*ref_args))
    del ref, ref_args
    rows = []
    for remat in (("full",) if a.tiny else ("none", "full")):
        step, args = _mtd_step(variant, dtype, "auto", remat, **shape)
        compiled = step.lower(*args).compile()
        hw_flops = _flops(compiled)
        state = args
        t0 = time.perf_counter()
        state = (*compiled(*state)[:2], *state[2:])
        jax.block_until_ready(state)
        first = time.perf_counter() - t0
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            state = (*compiled(*state)[:2], *state[2:])
            jax.block_until_ready(state)
            times.append(time.perf_counter() - t0)
        ms = sorted(times)[len(times) // 2] * 1e3
        peak = _peak_flops()
        mem = compiled.memory_analysis()
        rows.append(dict(case=f"MTD {variant} {dtype} remat={remat}", **shape, step_ms=ms,
                         first_step_s=first, model_gflop=model_flops / 1e9,
                         hardware_gflop=hw_flops / 1e9,
                         mfu=model_flops / (ms / 1e3) / peak if peak else None,
                         hfu=hw_flops / (ms / 1e3) / peak if peak else None,
                         program_bytes=getattr(mem, "temp_size_in_bytes", 0)
                         + getattr(mem, "argument_size_in_bytes", 0),
                         peak_device_bytes=_peak_bytes()))
        del state, compiled, step, args
    return rows


def _scale_flags(a, case: str, steps: int, guidance: str):
    import generate_scale  # benchmarks/ is on PYTHONPATH (above)
    argv = [f"--cases={case}", f"--steps={steps}", f"--guidance={guidance}"]
    argv += (["--mtd=tiny", "--L=4", "--dtype=float32"] if a.tiny
             else ["--mtd=sd", "--L=16", "--dtype=bfloat16"])
    return generate_scale, generate_scale.parse(argv)


def part_dod(a) -> list[dict]:
    generate_scale, fa = _scale_flags(a, "10x32" if a.tiny else "1024x128", 2 if a.tiny else 50,
                                      "1")
    rows = generate_scale.run(fa)["rows"]
    return [dict(case=f"{r['frames']} frames @ {r['pixels']} px", wall_s=r["wall_s"],
                 compile_s=r["compile_s"], level_wall_s=r["level_wall_s"],
                 sequential_calls=r["sequential_calls"], peak_device_bytes=r["peak_device_bytes"],
                 model_tflop_per_s=r["model_tflop_per_s"]) for r in rows]


def part_plan(a) -> list[dict]:
    """The largest level of the case, its auto chunk and the compiled program's peak."""
    import jax
    import jax.numpy as jnp

    from nuwa_xl_jax import family, parallel
    from nuwa_xl_jax.diffusion import samplers
    from nuwa_xl_jax.dod import level_models, memory
    from nuwa_xl_jax.dod import plan as planlib
    from nuwa_xl_jax.dod import segments as segments_lib
    generate_scale, fa = _scale_flags(a, "10x32" if a.tiny else "3376x256", 2 if a.tiny else 50,
                                      "7.5")
    frames, pixels = generate_scale.parse_case(fa.cases[0])
    depth = planlib.depth_for(fa.L, frames)
    config = generate_scale.scale_config(fa, pixels, depth)
    models = family.MTDModels(config, None, vae_params={})
    mesh = parallel.make_mesh()
    params = level_models.place_params(
        jax.jit(models.init, static_argnums=1)(jax.random.key(0), fa.L), mesh
    )
    model = level_models.LevelModel(models, params)
    plan = planlib.make_plan(fa.L, depth, frames=frames)
    segments = max(lv.frames.shape[0] for lv in plan.levels)
    sampling = samplers.Settings("ddim", fa.steps, 7.5)
    T = models.null_ids.shape[0]
    table = jax.ShapeDtypeStruct((8, T, config.model.text.hidden_size),
                                 jnp.dtype(config.model.mtd.dtype))
    devices = parallel.batch_devices(mesh)

    def peak(chunk):
        return segments_lib.program_peak(model, models.schedule, sampling, mesh,
                                    level_key=jax.random.key(0), chunk=chunk, frames=fa.L,
                                    table=table, latent_shape=models.latent_shape,
                                    replicate=False)

    budget = memory.memory_budget(mesh, fa.memory_fraction)
    chunk = memory.auto_chunk_size(segments, devices, peak, budget)
    latents = frames * 4 * int(jnp.prod(jnp.asarray(models.latent_shape)))
    return [dict(case=f"{frames} frames @ {pixels} px, guidance 7.5", depth=depth,
                 largest_level_segments=segments, auto_chunk=chunk,
                 program_peak_bytes=peak(chunk), budget_bytes=budget, latent_buffer_bytes=latents)]


# --------------------------------------------------------------------------- driver

def run_part(a) -> None:
    rows = globals()[f"part_{a.part}"](a)
    print(RESULT + json.dumps({"part": a.part, "rows": rows}, default=str), flush=True)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def main(a) -> dict:
    if a.part:
        run_part(a)
        return {}
    unknown = set(a.parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"error: --parts: unknown {sorted(unknown)}; use {', '.join(PARTS)}")
    results = {}
    for part in a.parts:
        cmd = [sys.executable, os.path.abspath(__file__), f"--part={part}",
               f"--repeats={a.repeats}"] + (["--tiny"] if a.tiny else [])
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.part_timeout)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith(RESULT)]
            if p.returncode == 0 and lines:
                results[part] = json.loads(lines[-1][len(RESULT):])["rows"]
            else:
                err = [ln for ln in p.stderr.splitlines() if ln.strip()][-3:]
                results[part] = [{"error": f"exit {p.returncode}: " + " | ".join(err)}]
        except subprocess.TimeoutExpired:
            results[part] = [{"error": f"timed out after {a.part_timeout} s"}]
        print(f"\n## {part} ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows = results[part]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
        for r in rows:
            print("| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return results


if __name__ == "__main__":
    from nuwa_xl_jax import cli
    cli.run(define_flags, main)
