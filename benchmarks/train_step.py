"""Times the training step of the T-KLVAE and MTD stages of a config: the real jitted step.

    python benchmarks/train_step.py --config=configs/synthetic.py[:variant] \
        [--stage=vae,mtd_global] [--steps=10] [--warmup=2] [--data=random|pipeline] \
        [--config.train.batch_size=16] [--json=results.jsonl] [--peak_flops=...]

For each stage it builds the step exactly as ``nuwa_xl_jax.train`` does (``stages.build`` for the
stage, ``loop._make_step`` for the update, the state created directly sharded on the config's
mesh, explicit in/out shardings, donated state) and reports

- compile time (lower + XLA compile of that step),
- the steady-state step time: the median of ``--steps`` steps after ``--warmup`` steps, each
  followed by ``block_until_ready`` (data loading and host->device transfer are excluded: the
  batch already lives on the devices),
- examples/s and frames/s of the global batch,
- compiled memory per device (XLA's memory analysis of the step) and per clip of the global batch,
  with the stage's model dtype and remat policy (``model.vae`` for vae stages, ``model.mtd``
  else),
- FLOPs per step from XLA's cost analysis of the compiled step (the per-device program; the
  whole step: forward, backward, optimizer, EMA, and for MTD the frozen VAE encoder), and on an
  accelerator HFU (hardware FLOP utilisation) = those FLOPs per device / step time / the
  device's peak dense bf16 FLOP/s. They are the compiled program's FLOPs, remat recompute
  included (+32% with remat full), so this is not MFU; benchmarks/device_check.py reports MFU
  from model FLOPs (a remat-free lowering) and HFU apart.

MTD stages read the VAE that the ``vae`` stage exports; the benchmark writes one from randomly
initialised VAE weights into a temporary workdir (step time does not depend on trained weights).
Batches are random uint8 frames of the stage's shapes (``--data=random``, the default) or the first
batch of the stage's real data pipeline (``--data=pipeline``; builds the dataset if needed).
Prints a table, then one JSON line per stage (prefixed ``JSON ``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time

import flax.linen as nn
import jax
import numpy as np
from absl import flags, logging
from jax.sharding import NamedSharding

from nuwa_xl_jax import cli, configuration, parallel
from nuwa_xl_jax.configuration import train as train_config
from nuwa_xl_jax.configuration import train_block_name
from nuwa_xl_jax.configuration.files import define_config_flag

# nuwa_xl_jax.train is imported in the functions that use it ("deferred"): it brings grain and
# TFDS, which the accelerator machines lack, and benchmarks/device_check.py imports peak_flops from
# this module there.


def define_flags(fv, argv):
    d = dict(flag_values=fv)
    define_config_flag("config", "configs/NAME.py[:variant]", sys_argv=argv, **d)
    flags.DEFINE_list("stage", ["vae", "mtd_global"],
                      "stages to time: vae, mtd_global, mtd_local<d>, mtd_local, mtd_ar", **d)
    flags.DEFINE_integer("steps", 10, "timed steps per stage (the median is reported)", **d)
    flags.DEFINE_integer("warmup", 2, "untimed steps after compilation", **d)
    flags.DEFINE_enum("data", "random", ["random", "pipeline"], "random uint8 batches of the "
                      "stage's shapes, or the real pipeline's first batch", **d)
    flags.DEFINE_float("peak_flops", None, "peak FLOP/s per device for HFU (default: from the "
                       "table)", **d)
    flags.DEFINE_string("json", None, "also append the JSON lines to this file", **d)
    flags.DEFINE_list("text_trainable", [], "time each MTD stage once per value of "
                      "model.text.trainable (e.g. true,false: the trained vs the frozen text "
                      "encoder, in one run) and print the step-time ratios; default: the config's",
                      **d)


FLAGS = flags.FLAGS  # the script defines its flags there (cli.run)

# Peak dense bf16 FLOP/s per device (vendor figures, no sparsity), matched as lowercase substrings
# of ``device.device_kind``, first match wins.
PEAK_BF16_FLOPS = (
    ("h200", 989e12),
    ("h100", 989e12),   # SXM; the PCIe card is ~756e12 (pass --peak_flops)
    ("a100", 312e12),
    ("l40s", 362e12),
    ("l4", 121e12),
    ("tpu v6 lite", 918e12),  # v6e
    ("tpu v5 lite", 197e12),  # v5e
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),       # v5p reports "TPU v5"
    ("tpu v4", 275e12),
    ("tpu v3", 123e12),
)


def peak_flops(device) -> float | None:
    kind = str(getattr(device, "device_kind", "")).lower()
    for key, value in PEAK_BF16_FLOPS:
        if key in kind:
            return value
    return None


def cost_flops(compiled) -> float | None:
    """FLOPs from ``compiled.cost_analysis()``: a dict, or (older JAX) a list of dicts; None if the
    backend gives none."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops = cost.get("flops") if hasattr(cost, "get") else None
    return float(flops) if flops is not None and flops >= 0 else None


def memory_bytes(compiled) -> int | None:
    try:
        m = compiled.memory_analysis()
        return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
                   - m.alias_size_in_bytes)
    except Exception:
        return None


def random_batch(config, name: str, batch_size: int, seed: int = 0) -> dict:
    """Random inputs with the keys, shapes and dtypes the stage's loss reads."""
    rng = np.random.default_rng(seed)
    h, w = tuple(config.data.resolution)
    if name in ("vae", "vae_image"):
        F = config.vae_frames if name == "vae" else 3  # the image VAE's examples: 3 lone frames
        return {"frames": rng.integers(0, 256, (batch_size, F, h, w, 3), dtype=np.uint8)}
    L, T = config.data.frames_per_call, config.data.max_length
    mask = np.zeros((batch_size, L), np.float32)
    if name == "mtd_ar":
        mask[:, :min(config.data.ar_prefix, L - 1)] = 1
    elif name != "mtd_global":  # local levels: both ends given
        mask[:, 0] = mask[:, -1] = 1
    level = 0 if name in ("mtd_global", "mtd_ar") else (
        1 if name == "mtd_local" else int(name[len("mtd_local"):]))
    # MTD stages train on the latent cache: unit-scale latents, as the VAE export's scale makes them
    f = 2 ** (len(config.model.vae.block_out_channels) - 1)
    latents = rng.standard_normal((batch_size, L, h // f, w // f, config.model.vae.latent_channels))
    return {"latents": latents.astype(np.float32),
            "mask": mask,
            "prompt_ids": rng.integers(0, config.model.text.vocab_size, (batch_size, L, T),
                                       dtype=np.int32),
            "level": np.full((batch_size,), level, np.int32)}


def write_random_vae_export(config, workdir: str, name: str = "vae") -> None:
    """What the ``name`` stage (vae or vae_image) would export, from random weights (timing does not
    need trained ones)."""
    from nuwa_xl_jax.train import stages  # deferred (see the imports)

    if "vae_image" in config.stages:  # the vae stage would start from its export: skip that
        config = dataclasses.replace(
            config, stages=tuple(s for s in config.stages if s != "vae_image")
        )
    stage = stages.build(config, name, workdir)
    params = jax.jit(lambda k: nn.meta.unbox(stage.init(k)))(jax.random.key(config.seed))
    stages.write_export(stages.export_dir(workdir, name), params, stage.model_config)


def write_random_latent_cache(config, directory: str, prompt_ids, scale: float) -> str:
    """A one-episode latent cache whose prompts are ``prompt_ids`` ``[..., T]``: what a frozen
    text encoder's prompt table is built from (random data has no real cache)."""
    ids = np.asarray(prompt_ids, np.int32).reshape(-1, np.shape(prompt_ids)[-1])
    dest = os.path.join(directory, config.data.split)
    os.makedirs(dest, exist_ok=True)
    f = 2 ** (len(config.model.vae.block_out_channels) - 1)
    h, w = tuple(config.data.resolution)
    shape = [h // f, w // f, config.model.vae.latent_channels]
    np.save(os.path.join(dest, "random.latents.npy"), np.zeros((len(ids), *shape), np.float32))
    np.save(os.path.join(dest, "random.prompt_ids.npy"), ids)
    with open(os.path.join(dest, "index.json"), "w") as fh:
        json.dump({"episodes": [{"name": "random", "frames": len(ids)}], "latent_shape": shape,
                   "latent_scale": float(scale), "vae_frames": config.vae_frames,
                   "vae_context": config.vae_context}, fh)
    return directory


def bench_stage(config, name: str, workdir: str, mesh) -> dict:
    from nuwa_xl_jax.train import loop, stages  # deferred (see the imports)
    from nuwa_xl_jax.train import state as train_state

    cfg = config.train_block(name)  # typed: validated once in main
    cfg_path = train_block_name(config, name)
    train_config.check_batch_divides(cfg.batch_size, parallel.batch_devices(mesh),
                                     jax.process_count(), f"{cfg_path}.batch_size")
    from nuwa_xl_jax.train import prompt_table  # deferred (see the imports)

    frozen_text = name.startswith("mtd_") and not config.model.text.trains
    local = None
    if FLAGS.data != "pipeline":
        local = random_batch(config, name, cfg.batch_size // jax.process_count(),
                             seed=config.seed + jax.process_index())
    if frozen_text and FLAGS.data != "pipeline":
        # The prompt table comes from the latent cache: one holding the random batch's prompts.
        models = stages.MTDModels(config, workdir)
        config = config.copy_and_resolve_references()
        config.data.latent_dir = write_random_latent_cache(
            config, f"{workdir}/latents_{name}", local["prompt_ids"], models.scale)
        local["prompt_index"] = prompt_table.PromptTable.of(
            local["prompt_ids"], models.null_ids).index(local["prompt_ids"])
    stage = stages.build(config, name, workdir)

    # As loop.train: optimizer, state created directly sharded, the jitted donated step.
    tx = train_state.make_optimizer(cfg.learning_rate, cfg.warmup_steps, cfg.steps,
                                    cfg.weight_decay, cfg.clip_norm, cfg.b1, cfg.b2,
                                    cfg.accumulate_steps, cfg.end_lr_fraction)
    init_key, state_key = jax.random.split(jax.random.key(config.seed))

    def init_state(key):
        return train_state.create(stage.init(key), tx, state_key, stage.frozen)

    abstract = jax.eval_shape(init_state, init_key)
    shardings = parallel.tree_shardings(abstract, mesh)
    state = jax.jit(lambda k: nn.meta.unbox(init_state(k)), out_shardings=shardings)(init_key)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))

    batch_sharding = parallel.batch_sharding(mesh, 1)
    # a frozen text encoder's prompt-state table: computed once, outside the timed steps
    inputs = loop.prepare_inputs(stage, state.params, mesh)
    step_fn = jax.jit(loop._make_step(stage, tx, cfg.ema_decay),
                      in_shardings=(shardings, NamedSharding(mesh, batch_sharding.spec))
                      + (parallel.replicated(mesh),) * len(inputs),
                      out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=(0,))

    if FLAGS.data == "pipeline":
        local = next(stage.data(jax.process_index(), jax.process_count()))
    batch = loop._global_batch(local, batch_sharding)

    t = time.perf_counter()
    lowered = step_fn.lower(state, batch, *inputs)
    t_lower = time.perf_counter() - t
    t = time.perf_counter()
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t
    flops = cost_flops(compiled)
    mem = memory_bytes(compiled)

    times = []
    for i in range(FLAGS.warmup + FLAGS.steps):
        t = time.perf_counter()
        state, metrics = compiled(state, batch, *inputs)
        jax.block_until_ready((state, metrics))
        if i >= FLAGS.warmup:
            times.append(time.perf_counter() - t)
    step_time = statistics.median(times)
    loss = float(jax.device_get(metrics["loss"]))

    device = jax.devices()[0]
    accelerator = jax.default_backend() != "cpu"
    peak = FLAGS.peak_flops or (peak_flops(device) if accelerator else None)
    # the compiled step's FLOPs (remat recompute included): hardware FLOP utilisation
    hfu = flops / step_time / peak if (flops and peak and accelerator) else None
    frames = cfg.batch_size * stage.frames_per_example
    model = config.model.mtd if name.startswith("mtd_") else config.model.vae
    return {
        "stage": name, "backend": jax.default_backend(), "device_kind": device.device_kind,
        "devices": mesh.devices.size, "mesh": dict(mesh.shape), "batch_size": cfg.batch_size,
        "frames_per_example": stage.frames_per_example, "params": n_params,
        "dtype": model.dtype, "remat": model.remat,
        "text_trainable": None if not name.startswith("mtd_") else not frozen_text,
        "data": FLAGS.data, "lower_s": t_lower, "compile_s": t_compile,
        "step_s_median": step_time, "step_s_min": min(times), "step_s_max": max(times),
        "steps_timed": len(times), "examples_per_s": cfg.batch_size / step_time,
        "frames_per_s": frames / step_time, "flops_per_step_per_device": flops,
        "flops_per_step": flops * mesh.devices.size if flops else None,
        "achieved_flops_per_s_per_device": flops / step_time if flops else None,
        "peak_flops_per_device": peak, "hfu": hfu, "memory_bytes_per_device": mem,
        # what one clip (example) of the global batch costs: the size a batch can grow by
        "memory_bytes_per_clip": mem * mesh.devices.size / cfg.batch_size if mem else None,
        "loss": loss,
    }


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    cols = ("stage", "batch", "params", "compile s", "step ms (median)", "examples/s", "frames/s",
            "GFLOP/step/dev", "TFLOP/s/dev", "HFU", "MiB/clip")
    lines = []
    for r in rows:
        hfu = (
            "n/a on CPU"
            if r["backend"] == "cpu"
            else _fmt(r["hfu"] * 100 if r["hfu"] is not None else None, ".1f")
            + ("%" if r["hfu"] else "")
        )
        text = {None: "", True: " (text trained)", False: " (text frozen)"}[r.get("text_trainable")]
        lines.append(
            (
                r["stage"] + text,
                f"{r['batch_size']}x{r['frames_per_example']}",
                f"{r['params'] / 1e6:.2f}M",
                f"{r['lower_s'] + r['compile_s']:.1f}",
                f"{r['step_s_median'] * 1e3:.1f}",
                f"{r['examples_per_s']:.2f}",
                f"{r['frames_per_s']:.1f}",
                _fmt(
                    r["flops_per_step_per_device"] and r["flops_per_step_per_device"] / 1e9, ".1f"
                ),
                _fmt(
                    r["achieved_flops_per_s_per_device"]
                    and r["achieved_flops_per_s_per_device"] / 1e12,
                    ".3f",
                ),
                hfu,
                _fmt(r["memory_bytes_per_clip"] and r["memory_bytes_per_clip"] / 2**20, ".1f"),
            )
        )
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("-+-".join("-" * w for w in widths))
    for line in lines:
        print(" | ".join(v.ljust(w) for v, w in zip(line, widths)))


def text_variants(config, name: str) -> list:
    """The config once per ``--text_trainable`` value (MTD stages), else the config alone."""
    if not FLAGS.text_trainable or not name.startswith("mtd_"):
        return [config]
    out = []
    for value in FLAGS.text_trainable:
        text = dataclasses.replace(config.model.text, trainable=value)  # checked as a new block
        out.append(dataclasses.replace(config, model=dataclasses.replace(config.model, text=text)))
    return out


def main(flag_values):
    del flag_values  # the same object as the module's FLAGS
    logging.set_verbosity(logging.WARNING)  # Orbax logs every export save/restore at INFO
    if FLAGS.config is None:
        cli.fail("--config is required, e.g. --config=configs/synthetic.py:tiny", 2)
    config = configuration.validate(FLAGS.config)  # the one check; everything below reads it
    m = config.mesh or configuration.MeshConfig()
    mesh = parallel.make_mesh(m.shape, m.axes)
    print(f"backend {jax.default_backend()}, {mesh.devices.size} x {jax.devices()[0].device_kind}, "
          f"mesh {dict(mesh.shape)}, stages {','.join(FLAGS.stage)}, {FLAGS.steps} timed steps "
          f"after {FLAGS.warmup} warmup, data={FLAGS.data}", flush=True)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if any(s.startswith("mtd_") for s in FLAGS.stage):
                write_random_vae_export(config, tmp)
            if "vae" in FLAGS.stage and "vae_image" in config.stages:
                write_random_vae_export(config, tmp, "vae_image")
            for name in FLAGS.stage:
                for c in text_variants(config, name):
                    rows.append(bench_stage(c, name, tmp, mesh))
                    print(f"[{name}] compile {rows[-1]['lower_s'] + rows[-1]['compile_s']:.1f} s, "
                          f"step {rows[-1]['step_s_median'] * 1e3:.1f} ms", flush=True)
    except (configuration.ConfigError, ValueError, FileNotFoundError) as e:
        cli.fail(f"{type(e).__name__}: {e}")
    print()
    print_table(rows)
    for name in FLAGS.stage:
        by = {r["text_trainable"]: r["step_s_median"] for r in rows if r["stage"] == name}
        if True in by and False in by:
            print(f"{name}: step time, text encoder trained / frozen = {by[True] / by[False]:.2f}x")
    for r in rows:
        print("JSON " + json.dumps(r, sort_keys=True))
    if FLAGS.json:
        with open(FLAGS.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r, sort_keys=True) + "\n")


if __name__ == "__main__":
    cli.run(define_flags, main)
