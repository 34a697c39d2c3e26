"""Runs the stages of a model family in order, each resumable, each exporting its EMA weights."""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax

from nuwa_xl_jax import parallel, paths
from nuwa_xl_jax.configuration import Config, ConfigError, MeshConfig, train_block_name
from nuwa_xl_jax.data.builders.flintstones_hd import CaptionsError
from nuwa_xl_jax.data.sampling import EpisodeTooShortError
from nuwa_xl_jax.family.store import ExportError, export_dir, write_export
from nuwa_xl_jax.io import storyboards
from nuwa_xl_jax.models.tokenizers import TokenizerError, UnknownWordError
from nuwa_xl_jax.pipeline import NuwaXLPipeline, report, sheet_path
from nuwa_xl_jax.train import checkpoint, loop
from nuwa_xl_jax.train import stages as stages_lib
from nuwa_xl_jax.train.workdir_lock import WorkdirLock, WorkdirLockedError
from nuwa_xl_jax.weights.common import WeightsError

DONE = "done.json"


# Errors a user can fix (bad config, missing data, foreign checkpoint, NaN loss): reported as one
# clear line by the CLI, never a traceback from deep inside JAX.
USER_ERRORS = (ConfigError, storyboards.StoryboardError, FileExistsError,
               checkpoint.CheckpointMismatchError, loop.NonFiniteLossError, FileNotFoundError,
               CaptionsError, EpisodeTooShortError, TokenizerError, UnknownWordError, WeightsError,
               ExportError, WorkdirLockedError)


def save_config(config, workdir: str) -> None:
    """``WORKDIR/config.json``: ``config`` (a :class:`Config`; a ConfigDict is validated first)."""
    config = Config.from_dict(config)
    if jax.process_index() != 0:
        return
    directory = paths.as_path(workdir)  # a local folder or a bucket URL
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    # the same text as the ConfigDict's to_json_best_effort: an unchanged config rewrites nothing
    text = json.dumps(config.to_dict(), indent=1, sort_keys=True)
    if path.exists():
        old = path.read_text()
        if old == text:
            return
        kept, free = _older_configs(directory)
        if old not in kept:  # keep it: nothing is lost
            path.rename(free)
    path.write_text(text)


def _older_configs(directory) -> tuple[list, Any]:
    """The texts of ``config.json.previous``, ``.previous.2``, ... and the first free such name:
    a workdir whose config changes more than once keeps every older one, each once
    (benchmarks/paper_tables.py alternates each stage's steps; epath refuses a rename onto an
    existing file)."""
    texts, n = [], 1
    while (candidate := directory / ("config.json.previous" + (f".{n}" if n > 1 else ""))).exists():
        texts.append(candidate.read_text())
        n += 1
    return texts, candidate


def run(config, workdir: str, mesh=None, only: Sequence[str] | None = None,
        progress: bool = True) -> dict:
    """Trains ``only`` (default: ``config.stages``) in order, holding the workdir's lock (a second
    run on the same workdir is refused). Returns ``{stage: final step}``; stops early (returning
    what ran) if a stage was preempted. ``config``: a :class:`Config` (the CLI's, validated once),
    or a ConfigDict, validated here."""
    config = Config.from_dict(config)
    names = list(only or config.stages)
    for name in names:
        if name not in config.stages and not name.startswith("mtd_"):
            raise ConfigError(
                f"--stages: {name!r} is not a stage of this config ({', '.join(config.stages)})"
            )
    with WorkdirLock(workdir):
        return _run_locked(config, workdir, mesh, names, only, progress)


def _run_locked(config, workdir: str, mesh, names: list, only, progress: bool) -> dict:
    save_config(config, workdir)
    sharding = config.mesh or MeshConfig()  # logical-axis rules and batch axes
    done = {}
    for name in names:
        export = export_dir(workdir, name)
        marker = paths.as_path(export) / DONE
        if name.startswith("mtd_") and not marker.exists():
            stages_lib.ensure_latent_cache(config, workdir, progress)
        stage = stages_lib.build(config, name, workdir)
        fingerprint = checkpoint.fingerprint(stage.model_config)
        if marker.exists():
            finished = json.loads(marker.read_text())
            if finished.get("fingerprint") != fingerprint:
                raise checkpoint.CheckpointMismatchError(
                    f"{export} holds a finished {name!r} stage of another architecture. Nothing "
                    "was overwritten: use a new --workdir, or the config it was trained with.")
            done[name] = finished["step"]
            if progress and jax.process_index() == 0:
                print(f"[{name}] already trained ({done[name]} steps), exported at {export}")
            continue
        cfg = config.train_block(name)
        result = loop.train(stage, cfg, workdir, mesh, seed=config.seed, progress=progress,
                            cfg_path=train_block_name(config, name), rules=sharding.rules,
                            batch_axes=sharding.batch_axes)
        done[name] = result.step
        if result.preempted:
            break
        meta = dict(stage.model_config)
        if stage.export_meta is not None:
            meta.update(stage.export_meta(result.state.ema_params))
        write_export(export, result.state.ema_params, meta)
        if jax.process_index() == 0:
            marker.write_text(json.dumps({"step": result.step, "fingerprint": fingerprint,
                                          "final_loss": result.losses[-1] if result.losses
                                          else None}))
    if not only and len(done) == len(names) and all(
            (paths.as_path(export_dir(workdir, n)) / DONE).exists() for n in names):
        g = config.generate
        if g is not None and g.enabled:  # SPMD: every process generates, process 0 writes
            generate_video(config, workdir, mesh)
    return done


def generate_video(config, workdir: str, mesh=None) -> dict | None:
    """The main job's last step: a long video from the storyboard with the family just trained,
    through the pipeline on ``mesh`` (the generate command's path). With several processes every
    one calls it and generates over the global mesh (SPMD); process 0 writes."""
    config = Config.from_dict(config)
    g = config.generate
    out = g.out if paths.is_url(g.out) or os.path.isabs(g.out) else os.path.join(workdir, g.out)
    sheet = sheet_path(out)
    done = paths.as_path(out).exists()
    parallel.sync_processes("generated/checked")  # all decided before process 0 writes it
    if done:
        if jax.process_index() == 0:
            print(f"video: {out} (already generated; delete it to generate again)")
            print(f"contact sheet: {sheet}")
        return None
    prompts = storyboards.load_storyboard(g.storyboard, g.frames)
    pipe = NuwaXLPipeline.from_pretrained(workdir, mesh=mesh, config=config)
    video = pipe.write(out, list(prompts), sheet=sheet, fps=g.fps, seed=g.seed,
                       max_segments_per_call=g.max_segments_per_call,
                       memory_fraction=g.memory_fraction, **g.sampler_overrides())
    return report(video) if jax.process_index() == 0 else None
