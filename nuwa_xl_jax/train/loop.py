"""One training loop for every stage (T-KLVAE, MTD global / local / autoregressive).

A stage says what to train (init, loss, data); the loop does the rest the same way for all:
the state is created directly sharded on the mesh (``eval_shape`` -> logical shardings ->
``jax.jit(init, out_shardings=...)``), one jitted step with explicit in/out shardings and a
donated state, Orbax checkpoints with the data iterator state (running the same command again
resumes exactly), SIGTERM saves then exits cleanly, a non-finite loss stops with the step named and
the last good checkpoint kept. Logs: a progress bar, ``metrics.jsonl`` and TensorBoard events.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from nuwa_xl_jax import parallel, paths
from nuwa_xl_jax.configuration.train import TrainConfig, check_batch_divides
from nuwa_xl_jax.models import attention_fallback
from nuwa_xl_jax.train import checkpoint as ckpt_lib
from nuwa_xl_jax.train import state as train_state

Batch = dict[str, np.ndarray]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or inf loss; the last good checkpoint is kept."""


@dataclasses.dataclass
class Stage:
    """What one stage trains.

    init(key) -> params (boxed with logical names or plain); pure, traced under ``eval_shape``.
    loss(params, batch, key, step) -> (scalar loss, dict of scalar metrics); pure.
    grads(params, batch, key, step) -> (loss, metrics, grads): optional, for stages whose
        gradients are not those of one loss (the VAE's generator and discriminator).
    data(process_index, process_count) -> an iterator of process-local numpy batches with
        ``get_state``/``set_state`` (a grain DatasetIterator), restored with the checkpoint.
    model_config: what decides parameter shapes; its fingerprint guards the workdir.
    frames_per_example: for the frames/s readout.
    sample(params, step, directory): optional, writes sample frames every ``sample_every`` steps;
        called by every process on the global weights (SPMD, see _sample); process 0 writes.
    export_meta(ema_params): optional, facts measured on the final weights that later stages read
        from the export (the VAE's latent scale).
    frozen: top-level parameter groups held fixed (state.py): no optimizer state, no gradients;
        checkpointed and exported like the rest.
    prepare(params) -> inputs: optional, step-invariant inputs computed once from the initialised
        or restored params (a frozen text encoder's prompt-state table); the loss then takes them
        as a fifth argument, ``loss(params, batch, key, step, inputs)``.
    fixed(path) -> bool: optional, parameters (by path, ``"vae/params/..."``) the optimizer leaves
        at their starting values: a pretrained image model's layers while the added ones train.
    """
    name: str
    init: Callable[[jax.Array], Any]
    loss: Callable[..., tuple[jax.Array, dict]] | None
    data: Callable[[int, int], Iterator[Batch]]
    model_config: dict
    grads: Callable[..., tuple[jax.Array, dict, Any]] | None = None
    frames_per_example: int = 1
    sample: Callable[[Any, int, str], None] | None = None
    export_meta: Callable[[Any], dict] | None = None  # extra facts stored with the exported weights
    frozen: tuple[str, ...] = ()
    prepare: Callable[[Any], Any] | None = None
    fixed: Callable[[str], bool] | None = None


@dataclasses.dataclass
class Result:
    state: train_state.TrainState
    step: int
    preempted: bool
    losses: list[float]


class _Preemption:
    """Turns SIGTERM into a flag the loop checks between steps."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, training still works
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _make_step(stage: Stage, tx, ema_decay: float):
    if stage.grads is not None:
        if stage.frozen or stage.prepare is not None:
            raise ValueError(f"stage {stage.name!r}: a custom grads function takes no frozen "
                             "groups or prepared inputs")
        grads_fn = stage.grads
    else:
        def grads_fn(params, batch, key, step, *inputs):
            trained, fixed = train_state.split(params, stage.frozen)

            def loss(trained):
                params = {**trained, **fixed} if stage.frozen else trained
                return stage.loss(params, batch, key, step, *inputs)

            (loss, metrics), grads = jax.value_and_grad(loss, has_aux=True)(trained)
            return loss, metrics, grads

    def step_fn(state: train_state.TrainState, batch, *inputs):
        key = jax.random.fold_in(state.key(), state.step)
        loss, metrics, grads = grads_fn(state.params, batch, key, state.step, *inputs)
        finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
            [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        new = train_state.apply_gradients(state, grads, tx, ema_decay, stage.frozen)
        # A non-finite step leaves the state untouched; the host stops and names the step.
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
        metrics = dict(metrics, loss=loss, finite=finite,
                       grad_norm=jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                                              for g in jax.tree.leaves(grads))))
        return new, metrics

    return step_fn


def step_program(stage: Stage, tx, ema_decay: float, shardings: Any, mesh, n_inputs: int = 0):
    """The jitted train step as :func:`train` runs it: traced under its mesh, explicit in / out
    shardings, the state donated. Tests lower it for 'cuda' and 'tpu' from CPU."""
    batch = NamedSharding(mesh, parallel.batch_sharding(mesh, 1).spec)
    return jax.jit(parallel.under_mesh(_make_step(stage, tx, ema_decay), mesh),
                   in_shardings=(shardings, batch) + (parallel.replicated(mesh),) * n_inputs,
                   out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=(0,))


def _global_batch(local: Batch, sharding: NamedSharding) -> dict[str, jax.Array]:
    return {
        k: jax.make_array_from_process_local_data(
            NamedSharding(sharding.mesh, P(sharding.spec[0], *([None] * (np.ndim(v) - 1)))),
            np.asarray(v),
        )
        for k, v in local.items()
    }


class _Logger:
    """metrics.jsonl and TensorBoard events (tensorboardX: no TensorFlow), from process 0 only.
    A local folder is appended to; a bucket URL (object stores have no append) gets each file
    rewritten whole through etils.epath at every log, as tensorboardX's own GCS writer does."""

    def __init__(self, directory: str, enabled: bool):
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.path = paths.as_path(directory) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if paths.is_url(directory):
            self.jsonl = None
            self.lines = self.path.read_text() if self.path.exists() else ""
        else:
            self.jsonl = open(self.path, "a")
        try:  # deferred: heavy (protobuf, ~1.5 s) and optional; the JSONL log is the record
            from tensorboardX import SummaryWriter, record_writer
        except ImportError:
            return
        if paths.is_url(directory):
            record_writer.register_writer_factory(directory.split("://")[0], _EpathRecords)
        self.writer = SummaryWriter(str(paths.as_path(directory) / "tensorboard"))

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps({"step": step, **metrics}) + "\n"
        if self.jsonl is None:
            self.lines += line
            self.path.write_text(self.lines)
        else:
            self.jsonl.write(line)
            self.jsonl.flush()
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.enabled:
            if self.jsonl is not None:
                self.jsonl.close()
            if self.writer is not None:
                self.writer.close()


class _EpathRecords:
    """tensorboardX's record writer (and its factory) for a URL through etils.epath: the event
    file is rewritten whole at each flush (no append on object stores). tensorboardX's own GCS
    writer needs google-cloud-storage; epath takes whatever the bucket's file system is."""

    def __init__(self, path: str | None = None):
        self.path = None if path is None else paths.as_path(path)
        self.data = bytearray()

    @staticmethod
    def directory_check(path: str) -> None:
        paths.as_path(path).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def open(path: str) -> "_EpathRecords":
        return _EpathRecords(path)

    def write(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        self.path.write_bytes(bytes(self.data))

    def close(self) -> None:
        self.flush()


def train(stage: Stage, cfg: Any, workdir: str, mesh=None, seed: int = 0,
          rules=parallel.DEFAULT_RULES, progress: bool = True,
          stop_after: int | None = None, cfg_path: str = "train",
          batch_axes=parallel.DEFAULT_BATCH_AXES) -> Result:
    """Trains ``stage`` to ``cfg.steps`` (a train block, named ``cfg_path`` in errors), resuming
    from ``workdir`` if it holds a checkpoint of the same stage and architecture. ``rules`` and
    ``batch_axes``: the config's ``mesh.rules`` / ``mesh.batch_axes``. ``stop_after`` ends early
    after that many steps of this call (tests)."""
    cfg = TrainConfig.from_dict(cfg, cfg_path)  # a ConfigDict block (tests, Python callers)
    mesh = mesh if mesh is not None else parallel.make_mesh()
    nproc, pidx = jax.process_count(), jax.process_index()
    check_batch_divides(cfg.batch_size, parallel.batch_devices(mesh, batch_axes), nproc,
                        f"{cfg_path}.batch_size")
    stage_dir = os.path.join(workdir, stage.name)
    tx = train_state.make_optimizer(
        cfg.learning_rate,
        cfg.warmup_steps,
        cfg.steps,
        cfg.weight_decay,
        cfg.clip_norm,
        cfg.b1,
        cfg.b2,
        cfg.accumulate_steps,
        cfg.end_lr_fraction,
        stage.fixed,
    )
    init_key, state_key = jax.random.split(jax.random.key(seed))

    def init_state(key):
        return train_state.create(stage.init(key), tx, state_key, stage.frozen)

    abstract = jax.eval_shape(init_state, init_key)
    shardings = parallel.tree_shardings(abstract, mesh, rules)
    meta = {"stage": stage.name, "fingerprint": ckpt_lib.fingerprint(stage.model_config),
            "model_config": stage.model_config}

    data_iter = stage.data(pidx, nproc)
    # Orbax's first calls broadcast through a device collective (gloo on CPU, 30 s to connect):
    # processes that got here minutes apart (data set-up on a loaded host) meet first.
    parallel.sync_processes(f"{stage.name}/start")
    ckpt = ckpt_lib.Checkpointer(os.path.join(stage_dir, "checkpoints"), cfg.keep_checkpoints,
                                 cfg.async_checkpoints)
    start = ckpt.latest_step()
    if start is not None:
        ckpt.check_compatible(meta, start)
        target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                              nn.meta.unbox(abstract), shardings)
        state, _ = ckpt.restore(target, start, data_iterator=data_iter)
        if progress and pidx == 0:
            print(f"[{stage.name}] resuming from step {start} in {stage_dir}")
    else:
        start = 0
        init_fn = jax.jit(lambda k: nn.meta.unbox(init_state(k)), out_shardings=shardings)
        state = parallel.compile_together(init_fn, f"{stage.name}/init")(init_key)

    batch_sharding = parallel.batch_sharding(mesh, 1, batch_axes)
    inputs = prepare_inputs(stage, state.params, mesh)
    build = lambda: step_program(stage, tx, cfg.ema_decay, shardings, mesh, len(inputs))
    name = f"{stage.name}/step"
    step_fn = parallel.compile_together(None, name, compile=lambda *args: (
        attention_fallback.compile_program(lambda: build().lower(*args), name)))

    logger = _Logger(stage_dir, pidx == 0)
    bar = None
    if progress and pidx == 0:
        bar = tqdm(total=cfg.steps, initial=start, desc=stage.name, dynamic_ncols=True)
    losses: list[float] = []
    step = start
    last_good = start if ckpt.latest_step() is not None else None
    preempted = False
    t0, steps_since = time.perf_counter(), 0
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    try:
        with _Preemption() as preemption:
            pending = (
                None  # metrics of the previous step, read one step late to keep dispatch async
            )
            while step < end:
                local = next(data_iter)
                state, metrics = step_fn(state, _global_batch(local, batch_sharding), *inputs)
                step += 1
                if pending is not None:
                    _check_finite(*pending, last_good)
                pending = (step, metrics)
                steps_since += 1
                host = None
                if step % cfg.log_every == 0 or step == end:
                    host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    _check_finite(step, host, last_good)
                    dt = time.perf_counter() - t0
                    rate = steps_since / max(dt, 1e-9)
                    host.update(steps_per_s=rate,
                                frames_per_s=rate * cfg.batch_size * stage.frames_per_example)
                    host.pop("finite", None)
                    logger.log(step, host)
                    losses.append(host["loss"])
                    if bar is not None:
                        bar.set_postfix(loss=f"{host['loss']:.4f}", steps_s=f"{rate:.2f}",
                                        frames_s=f"{host['frames_per_s']:.1f}")
                    t0, steps_since = time.perf_counter(), 0
                if bar is not None:
                    bar.update(1)
                if stage.sample is not None and cfg.sample_every and step % cfg.sample_every == 0:
                    _sample(stage, state.ema_params, step, os.path.join(stage_dir, "samples"))
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or preemption.requested:
                    _check_finite(step, jax.device_get(metrics), last_good)
                    ckpt.save(step, state, meta, data_iter, force=True)
                    last_good = step
                if preemption.requested:
                    preempted = True
                    break
    finally:
        ckpt.close()
        logger.close()
        if bar is not None:
            bar.close()
    if preempted and pidx == 0:
        print(f"[{stage.name}] SIGTERM: saved a checkpoint at step {step} in {stage_dir}; "
              "run the same command to resume.")
    return Result(state, step, preempted, losses)


def _sample(stage: Stage, params: Any, step: int, directory: str) -> None:
    """``stage.sample`` on every process (SPMD): it computes on the global EMA weights as they
    are laid out (FSDP across hosts too), never on a gathered copy, brings its frames to the host
    with a multi-host gather (parallel.to_host) and writes on process 0 alone. The processes then
    meet at a coordination barrier (a slow write can outlast the collectives' timeouts)."""
    stage.sample(params, step, directory)
    parallel.sync_processes(f"{stage.name}/sampled/{step}")


def prepare_inputs(stage: Stage, params: Any, mesh) -> tuple:
    """``()``, or ``(stage.prepare(params),)`` computed once, replicated on ``mesh``: from the
    restored params on a resume, so it always matches the weights it stands for."""
    if stage.prepare is None:
        return ()
    prepare = jax.jit(stage.prepare, out_shardings=parallel.replicated(mesh))
    return (parallel.compile_together(prepare, f"{stage.name}/prepare")(params),)


def _check_finite(step: int, metrics: Any, last_good: int | None) -> None:
    finite = metrics["finite"] if isinstance(metrics, dict) else True
    if not bool(np.asarray(finite)) or not math.isfinite(float(np.asarray(metrics["loss"]))):
        kept = f"the last good checkpoint (step {last_good}) is kept" if last_good else \
            "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: training stopped and {kept}. Lower "
            "train.learning_rate, check the data, or enable train.clip_norm.")
