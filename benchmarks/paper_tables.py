"""The paper's comparisons on the synthetic world (issue 13, point 2), written to docs/results.md.

python benchmarks/paper_tables.py --root=runs/tables [--settings=tiny|default|scratch]
    [--tables=1,2a,2b,2c] [--steps=N] [--sample_steps=S] [--seeds=0,1,2]
    [--storyboards=heldout.txt,...] [--long_frames_per_call=L] [--arms=FAMILY,...]
    [--out=docs/results.md] [--dry_run]

Every arm is a model family trained by ``nuwa_xl_jax.train``'s stage runner into ``ROOT/<arm>`` with
the same budget, then scored by the synthetic world's probe (metrics/storyboard_probe) on videos of
held-out storyboards (default: configs/storyboards/heldout.txt, which no tuning run looks at), for
every seed. Resumable: a finished stage is skipped (the stage runner's done markers), so rerunning
the
command after an interruption continues.

Budget [ours]: ``--steps`` optimizer steps of MTD training per arm. DoD's arm spends them over its
``depth`` models (global + locals, ``steps // depth`` each), AR and ART•V each on its one model, so
every arm has seen the same number of batches. The VAE is trained once per family of a table
(Table 2a varies it and gives every variant ``vae_train.steps``).

Tables:
  1   DoD vs AR (FDM*) vs ART•V, one family (one VAE) with the three generators: probe scores at
      the demo's length and the family's full length, split by thirds of the video (distance from
      the start), flicker, identity, wall time, sequential sampler calls; and a second such family
      of depth 3 at its full length (L of --long_frames_per_call), the paper's long setting.
  2a  T-KLVAE temporal layers: identity-initialised (NUWA-XL) vs randomly initialised (every
      temporal kernel LeCun-normal, std 1/sqrt(fan-in) [ours]) vs none (temporal=False), each
      trained ``vae_train.steps`` from the same image VAE; reconstruction MSE (pixels in [-1, 1])
      and the probe on reconstructions of held-out episodes (spread: over episodes).
  2b  visual-condition injection: multi-scale symmetric vs multi-scale up blocks only vs the
      highest resolution only (model.mtd.condition_injection / condition_symmetric); DoD videos.
  2c  depth 1 / 2 / 3 with the same L: each family at its own full length and at the depth-3
      length (depth 2 through --extend, outside its training distribution; depth 1 cannot reach
      it: one call makes L frames).
Avg-FID and B-FVD-16 (nuwa_xl_jax/evaluation: the generated videos of an arm, mode and length as
one set against the world acting out the same storyboards) need the converted feature networks
(--fid_weights / --fvd_weights, docs/evaluation.md) or --random_feature_weights (numbers
comparable only within one run); without either they are left out.

Every scored video is kept under ``ROOT/<arm>/videos`` with its contact sheet and its scores
(``NAME.json``): a rerun reuses them, so an interrupted run continues where it stopped and the
Fréchet metrics can be added to a finished run without generating again.

``--settings=tiny`` is the CI smoke test's (configs/synthetic.py:tiny, a few steps: plumbing, no
meaning); ``--settings=default`` the embedded default's models and data, started from the shipped
text-to-image base (every arm's VAE, MTDs and text encoder, as the paper's from Stable Diffusion);
``--settings=scratch`` the same trained from random weights (configs/synthetic.py:scratch).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
import time
import types
import zlib
from typing import Sequence

import numpy as np
from absl import flags, logging

from nuwa_xl_jax import cli

# The library's JAX side (the training stack, the pipeline, the metrics) is imported in the steps
# that use it: the plan of arms and budgets, the report and --dry_run run without loading it
# (tests/test_paper_tables.py reads them in the default test run).

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STORY = os.path.join(ROOT, "configs", "storyboards")
SCORES = ("scene", "characters", "both", "flicker", "identity")
TABLES = ("1", "2a", "2b", "2c")


@dataclasses.dataclass(frozen=True)
class Arm:
    table: str
    name: str
    overrides: tuple = ()  # ((dotted field, value), ...) on the settings' config
    modes: tuple = ("dod",)  # generators scored on this family
    vae_init: str = "identity"  # Table 2a: identity | random | none
    family: str = ""  # the workdir it shares (Table 1's three generators share one family)


def arms(tables) -> list[Arm]:
    out = []
    if "1" in tables:
        out += [Arm("1", "dod vs ar vs artv", modes=("dod", "ar", "artv"), family="table1"),
                Arm("1", "dod vs ar vs artv, depth 3", (("data.depth", 3),),
                    modes=("dod", "ar", "artv"), family="table1_depth3")]
    if "2a" in tables:
        out += [Arm("2a", f"vae {v}", vae_init=v, family=f"vae_{v}")
                for v in ("identity", "random", "none")]
    if "2b" in tables:
        for name, inj, sym in (("multiscale symmetric", "multiscale", True),
                               ("multiscale up only", "multiscale", False),
                               ("highest only", "highest", True)):
            out.append(Arm("2b", name, (("model.mtd.condition_injection", inj),
                                        ("model.mtd.condition_symmetric", sym)),
                           family="inject_" + name.replace(" ", "_")))
    if "2c" in tables:
        out += [Arm("2c", f"depth {d}", (("data.depth", d),), family=f"depth{d}")
                for d in (1, 2, 3)]
    return out


def base_config(settings: str, tfds_dir: str):
    from nuwa_xl_jax import configuration
    config = configuration.load(f"configs/synthetic.py:{settings}")
    config.data.data_dir = tfds_dir
    if settings == "tiny":
        config.data.ar_prefix = 2  # < L = 4
    config.generate.enabled = False  # the tables generate their own videos
    return config


def is_long(arm: Arm) -> bool:
    """Whether the arm's family takes ``--long_frames_per_call``: Table 2c's depth families and
    Table 1's depth-3 family (the arms compared at the depth-3 length)."""
    return arm.table == "2c" or (arm.table == "1" and ("data.depth", 3) in arm.overrides)


def arm_config(arm: Arm, settings: str, tfds_dir: str, long_frames_per_call: int = 0):
    """The arm's whole config, validated: the settings' config with the arm's overrides, its
    stages (Table 1 adds mtd_ar and mtd_artv), every MTD stage from the same start (the base's UNet
    with --settings=default, random with scratch). The long
    families (:func:`is_long`) use ``long_frames_per_call`` (L) when it is set: a depth-3 family
    at the default L = 16 makes 3376-frame videos, hours of generation and scoring on a 2-core
    CPU [ours]."""
    from nuwa_xl_jax import configuration
    from nuwa_xl_jax.configuration import presets
    config = base_config(settings, tfds_dir)
    for field, value in arm.overrides:
        *path, last = field.split(".")
        block = config
        for p in path:
            block = block[p]
        block[last] = value
    if is_long(arm) and long_frames_per_call:
        config.data.frames_per_call = long_frames_per_call
        # AR's given prefix stays half its window, as at the settings' L (8 of 16) [ours]
        config.data.ar_prefix = min(config.data.ar_prefix, long_frames_per_call // 2)
    depth = config.data.depth
    # a deeper family needs episodes as long as its window ((L-1)^depth + 1 frames)
    L = config.data.frames_per_call
    config.data.episode_length = max(config.data.episode_length, (L - 1) ** depth + 1)
    if arm.vae_init == "none":
        config.model.vae.temporal = False
    stages = presets.stages(depth, image_vae="vae_image" in config.stages)
    if arm.table == "1":
        stages += ("mtd_ar", "mtd_artv")
    if arm.table == "2a":  # the VAE alone is compared
        stages = tuple(s for s in stages if s.startswith("vae"))
    config.stages = stages
    if config.get("local_train") is not None:
        config.local_train.init_from = ""  # every arm from the same start: the base or scratch
    configuration.validate(config)
    return config


def budgets(config, steps: int) -> dict:
    """{stage: optimizer steps}: MTD stages share ``steps`` per arm (DoD over its depth)."""
    depth = config.data.depth
    out = {}
    for s in config.stages:
        if s in ("mtd_ar", "mtd_artv"):
            out[s] = steps
        elif s.startswith("mtd_"):
            out[s] = max(1, steps // depth)
    return out


def train_family(arm: Arm, config, workdir: str, steps: int, mesh) -> dict:
    """Trains every stage of the arm's family (resumable); MTD stages with their budget."""
    from nuwa_xl_jax.train import stage_runner
    done = {}
    for stage in config.stages:
        c = config.copy_and_resolve_references()
        block = "local_train" if stage.startswith("mtd_local") and c.get("local_train") else "train"
        if stage in budgets(c, steps):
            c[block].steps = budgets(c, steps)[stage]
            # checkpoints every 250 steps: a stage killed after hours resumes near where it stopped
            c[block].checkpoint_every = max(1, min(250, c[block].steps))
            c[block].sample_every = 0
        if stage == "vae" and arm.vae_init == "random":
            done.update(_train_vae_random(c, workdir, mesh))
            continue
        done.update(stage_runner.run(c, workdir, mesh, [stage], progress=False))
    return done


def randomize_temporal_kernels(params, key):
    """``params`` (boxed or plain) with every kernel under a ``*_temporal`` layer drawn LeCun-normal
    (std 1 / sqrt(fan-in)) [ours]; spatial layers, temporal biases and norms unchanged."""
    import jax

    def draw(path, leaf):
        names = "/".join(str(getattr(p, "key", p)) for p in path)
        if "temporal" not in names or not names.endswith("kernel"):
            return leaf
        value = getattr(leaf, "value", leaf)
        std = 1.0 / np.sqrt(np.prod(value.shape[:-1]))
        noise = std * jax.random.normal(jax.random.fold_in(key, zlib.crc32(names.encode())),
                                        value.shape, value.dtype)
        return leaf.replace_boxed(noise) if hasattr(leaf, "replace_boxed") else noise

    return jax.tree_util.tree_map_with_path(draw, params,
                                            is_leaf=lambda x: hasattr(x, "replace_boxed"))


def _train_vae_random(config, workdir: str, mesh) -> dict:
    """The vae stage with its temporal kernels drawn at random instead of identity."""
    import jax

    from nuwa_xl_jax.family.store import export_dir, write_export
    from nuwa_xl_jax.train import loop, stage_runner, stages
    marker = os.path.join(export_dir(workdir, "vae"), stage_runner.DONE)
    if os.path.exists(marker):
        return {"vae": json.load(open(marker))["step"]}
    stage = stages.build(config, "vae", workdir)
    built_init = stage.init  # the inflated image VAE, temporal layers at identity

    def init(key):
        return randomize_temporal_kernels(built_init(key), jax.random.fold_in(key, 7))

    stage = dataclasses.replace(stage, init=init)
    stage_runner.save_config(config, workdir)
    result = loop.train(stage, config.vae_train, workdir, mesh, seed=config.seed, progress=False,
                        cfg_path="vae_train")
    meta = dict(stage.model_config)
    meta.update(stage.export_meta(result.state.ema_params))
    write_export(export_dir(workdir, "vae"), result.state.ema_params, meta)
    with open(marker, "w") as f:
        json.dump({"step": result.step, "fingerprint": "vae-random-temporal"}, f)
    return {"vae": result.step}


def thirds(frames, prompts) -> list:
    """The probe's 'both' on each third of a video: distance from the start."""
    from nuwa_xl_jax.metrics import storyboard_probe
    n = len(frames)
    cuts = [0, n // 3, 2 * n // 3, n]
    return [storyboard_probe.agreement(frames[a:b], prompts[a:b])["both"] if b > a else None
            for a, b in zip(cuts, cuts[1:])]


def score_video(pipe, prompts, mode: str, seed: int, steps, extend=False, out=None) -> dict:
    """One video's probe scores; with ``out`` it is kept (mp4 + contact sheet beside it, its
    scores in ``out``'s ``.json``, reused by a rerun with the same sampler steps), so the schemes
    of Table 1 can be compared side by side on the same storyboard and seed."""
    from nuwa_xl_jax.metrics import storyboard_probe
    scores = os.path.splitext(out)[0] + ".json" if out else None
    if scores and os.path.exists(scores):
        with open(scores) as f:
            kept = json.load(f)
        if kept.get("sample_steps") == steps and os.path.exists(kept["row"].get("video", "")):
            return kept["row"]
    video = pipe(prompts, mode=mode, seed=seed, steps=steps, extend=extend, progress=False)
    s = storyboard_probe.agreement(video.frames, prompts)
    row = {**{k: s.get(k) for k in SCORES}, "thirds_both": thirds(video.frames, prompts),
           "seconds": round(video.seconds, 2), "sequential_calls": video.sequential_calls}
    if out:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        row["video"], row["contact_sheet"] = video.save(out, overwrite=True)
        with open(scores, "w") as f:
            json.dump({"sample_steps": steps, "row": row}, f, indent=1)
    return row


def eval_generators(arm: Arm, workdir: str, a) -> list:
    from nuwa_xl_jax.dod.plan import num_frames
    from nuwa_xl_jax.io.storyboards import StoryboardError, load_storyboard
    from nuwa_xl_jax.pipeline import NuwaXLPipeline
    pipe = NuwaXLPipeline.from_pretrained(workdir, load_ar="ar" in arm.modes,
                                          load_artv="artv" in arm.modes)
    c = pipe.config
    L, depth = c.data.frames_per_call, c.data.depth
    lengths = {"demo": min(c.generate.frames, num_frames(L, depth)), "full": num_frames(L, depth)}
    if arm.table == "2c":
        lengths = {"own full": num_frames(L, depth), "depth-3 full": num_frames(L, 3)}
    elif is_long(arm):  # Table 1's depth-3 family: its full length (the demo's is the other arm's)
        lengths = {"depth-3 full": num_frames(L, depth)}
    rows = []
    for story in a.storyboards:
        seen = set()
        for lname, n in lengths.items():
            if n in seen:  # the demo's length may be the full one
                continue
            seen.add(n)
            try:
                prompts = list(load_storyboard(story, max(n, 2)))
            except StoryboardError as e:  # e.g. depth 1 at L = 8: 8 frames for 10 scenes
                rows += [{"arm": arm.name, "mode": mode, "length": lname, "frames": n,
                          "storyboard": os.path.basename(story),
                          "note": "fewer frames than scenes"} for mode in arm.modes]
                print(f"{arm.name}: {e}", flush=True)
                continue
            for mode in arm.modes:
                extend = n > num_frames(L, depth)
                if mode == "dod" and extend and depth < 2:
                    rows.append({"arm": arm.name, "mode": mode, "length": lname, "frames": n,
                                 "storyboard": os.path.basename(story), "note": "cannot reach"})
                    continue
                for seed in a.seeds:
                    name = f"{os.path.splitext(os.path.basename(story))[0]}_{mode}_{n}f_seed{seed}"
                    r = score_video(pipe, prompts, mode, seed, a.sample_steps, extend=extend,
                                    out=os.path.join(workdir, "videos", name + ".mp4"))
                    rows.append({"arm": arm.name, "mode": mode, "length": lname, "frames": n,
                                 "storyboard": os.path.basename(story), "seed": seed, **r})
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def eval_vae(arm: Arm, workdir: str, a) -> list:
    """Reconstruction MSE (pixels in [-1, 1]) and the probe on reconstructions of held-out
    episodes."""
    from nuwa_xl_jax.data import latent_cache, synthetic
    from nuwa_xl_jax.data.builders.synthetic_cartoon import TEST_SEED_OFFSET
    from nuwa_xl_jax.family.store import load_config
    from nuwa_xl_jax.metrics import storyboard_probe
    c = load_config(workdir).data
    rows = []
    for i in range(min(a.vae_episodes, c.test_episodes)):
        length = min(a.vae_frames, c.episode_length)
        video, captions = synthetic.episode(c.world_seed + TEST_SEED_OFFSET, i, length,
                                            tuple(c.resolution))[:2]
        recon = latent_cache.reconstruct(workdir, video)
        mse = float(
            np.mean((recon.astype(np.float32) / 127.5 - video.astype(np.float32) / 127.5) ** 2)
        )
        s = storyboard_probe.agreement(recon, captions)
        rows.append({"arm": arm.name, "episode": i, "recon_mse": mse,
                     **{k: s.get(k) for k in SCORES}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def frechet_metrics(summary, rows, a) -> None:
    """Adds ``avg_fid`` and ``b_fvd16`` to each generator row of ``summary``: that group's kept
    videos as one set against the synthetic world acting out the same storyboards at the same
    length (``a.reference_seeds``). A no-op without feature networks."""
    if not (a.fid_weights or a.fvd_weights or a.random_feature_weights):
        return
    from nuwa_xl_jax import io as nio
    from nuwa_xl_jax.metrics import features, reference
    from nuwa_xl_jax.metrics.statistics import VideoSetStats, compare
    nets = features.load_feature_networks(a.fid_weights, a.fvd_weights,
                                          random=a.random_feature_weights)
    paths = {os.path.basename(s): s for s in a.storyboards}
    for row in summary:
        group = [r for r in rows if r.get("video") and all(
            r.get(k) == row.get(k) for k in ("table", "arm", "mode", "length", "frames"))]
        if not group or row["frames"] < 16:  # B-FVD-16 needs one block of 16 frames
            continue
        stats = VideoSetStats(nets.identity)
        for r in group:
            stats.add(r["video"], nio.read_video(r["video"]), nets)
        boards = {name: list(nio.load_storyboard(paths[name], row["frames"]))
                  for name in dict.fromkeys(r["storyboard"] for r in group)}
        ref, _ = reference.synthetic_reference(
            boards, stats.resolution, a.reference_seeds, nets,
            {"fid": True, "fvd": True, "probe": False},
            os.path.join(a.root, "reference_cache"), progress=False)
        found = compare(stats, ref)
        row["avg_fid"], row["b_fvd16"] = found["avg_fid"], found["b_fvd16"]
        print(json.dumps({k: row.get(k) for k in ("arm", "mode", "frames", "avg_fid", "b_fvd16")}),
              flush=True)
    a.feature_networks = nets.identity


def side_by_side(rows, a) -> list:
    """One contact sheet per table, storyboard, length and seed with a row per scheme (and the
    world acting out the storyboard on top): the same evenly spaced frames of every video.
    Written to ``ROOT/side_by_side/``; the first seed's also beside ``--out`` (``images/``), for
    the page. Returns ``[(table, path beside --out)]``."""
    from nuwa_xl_jax import io as nio
    from nuwa_xl_jax.data import scripted
    paths = {os.path.basename(s): s for s in a.storyboards}
    groups: dict = {}
    for r in rows:
        if r.get("video") and os.path.exists(r["video"]):
            groups.setdefault((r["table"], r["storyboard"], r["frames"], r["seed"]), []).append(r)
    shown = []
    for (table, story, n, seed), group in groups.items():
        if len(group) < 2:
            continue
        prompts = list(nio.load_storyboard(paths[story], n))
        generated = [nio.read_video(r["video"]) for r in group]
        videos = [scripted.render_storyboard(prompts, generated[0].shape[1:3], 0)] + generated
        picks = np.unique(np.round(np.linspace(0, n - 1, min(n, 12))).astype(int))
        levels = [(picks, v[picks], n) for v in videos]
        labels = ["world"] + [r["mode"] if table == "1" else r["arm"] for r in group]
        name = f"table{table}_{os.path.splitext(story)[0]}_{n}f_seed{seed}.png"
        nio.contact_sheet(levels, os.path.join(a.root, "side_by_side", name), prompts,
                          labels=labels, overwrite=True)
        if seed == a.seeds[0]:
            page = os.path.join(
                os.path.dirname(os.path.abspath(a.out)), "images", "results_" + name
            )
            nio.contact_sheet(levels, page, prompts, labels=labels, overwrite=True)
            shown.append((table, page))
    return shown


def summarize(rows, keys) -> list:
    """Mean and spread (std over seeds / episodes) per group of ``keys``."""
    out = []
    for key in dict.fromkeys(tuple(r.get(k) for k in keys) for r in rows):
        group = [r for r in rows if tuple(r.get(k) for k in keys) == key]
        row = dict(zip(keys, key), n=len(group))
        for k in ("recon_mse",) + SCORES + ("seconds", "sequential_calls"):
            vals = [r[k] for r in group if r.get(k) is not None]
            if vals:
                row[k] = (float(np.mean(vals)), float(np.std(vals)))
        th = [r["thirds_both"] for r in group if r.get("thirds_both")]
        if th:
            row["thirds_both"] = [float(np.mean([t[i] for t in th if t[i] is not None] or [np.nan]))
                                  for i in range(3)]
        if any(r.get("note") for r in group):
            row["note"] = group[0]["note"]
        out.append(row)
    return out


def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v[0]:.3f} ± {v[1]:.3f}" if isinstance(v, tuple) else f"{v:.3f}"


def render(result: dict) -> str:
    """docs/results.md."""
    a = result["args"]
    lines = [
        "# The paper's comparisons on the synthetic world",
        "",
        "Written by `benchmarks/paper_tables.py` (the command and its settings below); "
        "mean ± std over seeds (generators) or held-out episodes (VAE). Probe scores: shares "
        "of frames whose scene / characters / both match the caption; flicker: mean "
        "absolute change between consecutive frames of one scene (lower is steadier).",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}; finished {result['time']}; {result['wall_s']:.0f} s",
        f"- settings: `{a['settings']}`, MTD budget {a['steps'] or 'default'} steps per arm, "
        f"sampler steps "
        f"{a['sample_steps'] or 'config'}, seeds {a['seeds']}, storyboards "
        f"{[os.path.basename(s) for s in a['storyboards']]}",
        "",
    ]
    if a["settings"] == "tiny":
        lines += ["**Smoke-test settings: the models are a few steps old; these numbers test the "
                  "plumbing and say nothing about the methods.**", ""]
    gen_rows = [r for r in result["summary"] if "mode" in r]
    for table, title in (("1", "Table 1: DoD vs AR (FDM*) vs ART•V"),
                         ("2b", "Table 2b: visual-condition injection"),
                         ("2c", "Table 2c: depth")):
        rows = [r for r in gen_rows if r["table"] == table]
        if not rows:
            continue
        lines += [f"## {title}", "", "| arm | mode | length | frames | scene | characters | both | "
                  "both by thirds | flicker | identity | Avg-FID | B-FVD-16 | seconds (compile in "
                  "seed 1) | sequential calls |", "|" + "---|" * 14]
        for r in rows:
            th = r.get("thirds_both")
            lines.append(
                f"| {r['arm']} | {r['mode']} | {r['length']} | {r['frames']} | "
                + " | ".join(_ms(r.get(k)) for k in ("scene", "characters", "both"))
                + f" | {' / '.join(f'{x:.2f}' for x in th) if th else r.get('note', '-')} | "
                + " | ".join(_ms(r.get(k)) for k in ("flicker", "identity"))
                + " | " + " | ".join(f"{r[k]:.1f}" if r.get(k) is not None else "-"
                                     for k in ("avg_fid", "b_fvd16"))
                + " | " + _ms(r.get("seconds"))
                + f" | {_ms(r.get('sequential_calls'))} |")
        lines.append("")
        out_dir = os.path.dirname(os.path.abspath(a.get("out") or "."))
        for t, path in result.get("sheets", ()):
            if t == table:
                lines += [f"![{title}, side by side]({os.path.relpath(path, out_dir)})", ""]
        if any(t == table for t, _ in result.get("sheets", ())):
            lines += ["Side by side: the same evenly spaced frames of each video (first seed), "
                      "under the world acting out the storyboard (top row).", ""]
    vae_rows = [r for r in result["summary"] if r["table"] == "2a"]
    if vae_rows:
        lines += ["## Table 2a: T-KLVAE temporal layers", "",
                  "| temporal layers | recon MSE | scene | characters | both | flicker |",
                  "|---|---|---|---|---|---|"]
        for r in vae_rows:
            lines.append(f"| {r['arm']} | " + " | ".join(_ms(r.get(k)) for k in (
                "recon_mse", "scene", "characters", "both", "flicker")) + " |")
        lines.append("")
    nets = a.get("feature_networks")
    if not nets:
        lines += ["Avg-FID and B-FVD-16: not computed in this run (pass --fid_weights and "
                  "--fvd_weights, or --random_feature_weights).", ""]
    elif nets.get("random"):
        lines += ["Avg-FID and B-FVD-16: each arm's videos of one length as one set against the "
                  "world acting out the same storyboards, with **randomly initialised** feature "
                  "networks (no converted weights here): comparable between the rows of this page "
                  "only, not with the paper's numbers.", ""]
    else:
        lines += [f"Avg-FID and B-FVD-16: feature networks {nets}.", ""]
    return "\n".join(lines)


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    del argv
    d = dict(flag_values=fv)
    flags.DEFINE_string("root", None, "folder of the arms' workdirs (resumable)", **d)
    flags.DEFINE_enum("settings", "default", ["tiny", "default", "scratch"],
                      "configs/synthetic.py variant (default: every arm starts from the shipped "
                      "text-to-image base; scratch: from random weights)", **d)
    flags.DEFINE_list("tables", list(TABLES), "tables to make: 1, 2a, 2b, 2c", **d)
    flags.DEFINE_integer("steps", None, "MTD budget per arm (default: 3 for tiny, else the "
                         "config's train.steps)", **d)
    flags.DEFINE_integer("sample_steps", None, "sampler steps (default: the config's)", **d)
    flags.DEFINE_list("seeds", ["0", "1", "2"], "generation seeds", **d)
    flags.DEFINE_list("storyboards", [os.path.join(STORY, "heldout.txt")], "storyboard files", **d)
    flags.DEFINE_integer("vae_episodes", 2, "held-out episodes for Table 2a", **d)
    flags.DEFINE_integer("vae_frames", 64, "frames of each, from the start", **d)
    flags.DEFINE_string("out", os.path.join(ROOT, "docs", "results.md"), "the tables (Markdown; "
                        "the raw rows go next to it as .json)", **d)
    flags.DEFINE_string("vae_from", None, "a trained workdir whose VAE stages (and latent cache) "
                        "the arms that do not vary the VAE start from, instead of training one "
                        "(its config must match --settings'; the fingerprints are checked)", **d)
    flags.DEFINE_string("fid_weights", None, "converted Inception (Avg-FID): "
                        "python -m nuwa_xl_jax.convert --kind=inception", **d)
    flags.DEFINE_string("fvd_weights", None, "converted I3D (B-FVD-16): "
                        "python -m nuwa_xl_jax.convert --kind=i3d", **d)
    flags.DEFINE_bool("random_feature_weights", False, "Avg-FID / B-FVD-16 with random feature "
                      "networks (comparable within one run only)", **d)
    flags.DEFINE_list("reference_seeds", ["0", "1"], "staging seeds of the world's reference "
                      "videos for the Fréchet metrics", **d)
    flags.DEFINE_integer("long_frames_per_call", 0, "L of the families compared at the depth-3 "
                         "length: Table 1's depth-3 family and Table 2c's depth 1 / 2 / 3 (0: the "
                         "settings' L; 8 makes the depth-3 length 344 frames instead of 3376 at "
                         "L = 16, which fits a CPU's budget)", **d)
    flags.DEFINE_list("arms", [], "only these arms of the tables, by family (workdir) name, e.g. "
                      "table1_depth3 (default: every arm; --dry_run lists them)", **d)
    flags.DEFINE_bool("dry_run", False, "list the arms, their stages and budgets only", **d)
    flags.mark_flag_as_required("root", flag_values=fv)


def options(fv: flags.FlagValues, argv: Sequence[str]) -> types.SimpleNamespace:
    a = types.SimpleNamespace(**{name: fv[name].value for name in (
        "root", "settings", "tables", "steps", "sample_steps", "seeds", "storyboards",
        "vae_episodes", "vae_frames", "out", "dry_run", "vae_from", "fid_weights", "fvd_weights",
        "random_feature_weights", "reference_seeds", "long_frames_per_call", "arms")})
    bad = [t for t in a.tables if t not in TABLES]
    if bad or not a.tables:
        cli.fail(f"--tables: unknown {bad}; choose from {','.join(TABLES)}", 2)
    if a.long_frames_per_call and a.long_frames_per_call < 3:
        cli.fail(f"--long_frames_per_call must be 0 (the settings' L) or >= 3, got "
                 f"{a.long_frames_per_call}", 2)
    families = [arm.family for arm in arms(a.tables)]
    unknown = [f for f in a.arms if f not in families]
    if unknown:
        cli.fail(f"--arms: {unknown} are not arms of --tables={','.join(a.tables)}; choose from "
                 f"{','.join(families)}", 2)
    for name in ("seeds", "reference_seeds"):
        try:
            setattr(a, name, [int(s) for s in getattr(a, name)])
        except ValueError:
            cli.fail(f"--{name} must be integers, got {getattr(a, name)!r}", 2)
    if a.random_feature_weights and (a.fid_weights or a.fvd_weights):
        cli.fail("--random_feature_weights and --fid_weights/--fvd_weights exclude each other", 2)
    a.storyboards = [s if os.path.exists(s) else os.path.join(STORY, s) for s in a.storyboards]
    for path in a.storyboards:
        if not os.path.isfile(path):
            cli.fail(f"storyboard {path} does not exist", 2)
    a.command = "python benchmarks/paper_tables.py " + " ".join(argv)
    return a


def main(argv: Sequence[str]) -> dict:
    """The benchmark with ``argv`` (flags only), in-process."""
    return measure(options(cli.parse(define_flags, argv, "paper_tables"), argv))


def measure(a) -> dict:
    logging.set_verbosity(logging.WARNING)  # the tables' rows, not Orbax's INFO lines
    tfds_dir = os.path.join(a.root, "tfds")
    plan = []
    for arm in arms(a.tables):
        if a.arms and arm.family not in a.arms:
            continue
        config = arm_config(arm, a.settings, tfds_dir, a.long_frames_per_call)
        steps = a.steps or (3 if a.settings == "tiny" else config.train.steps)
        plan.append((arm, config, steps))
        print(f"[{arm.table}] {arm.name}: {arm.family} stages {tuple(config.stages)} "
              f"budget {budgets(config, steps)} modes {arm.modes}", flush=True)
    if a.dry_run:
        return {
            "plan": [(arm.table, arm.name, tuple(c.stages), budgets(c, s)) for arm, c, s in plan]
        }
    from nuwa_xl_jax import parallel
    from nuwa_xl_jax.train import stage_runner
    mesh = parallel.make_mesh()
    t0 = time.perf_counter()
    rows = []
    for arm, config, steps in plan:
        workdir = os.path.join(a.root, arm.family)
        if arm.table == "2a" and "vae_image" in config.stages:
            shared = os.path.join(a.root, "vae_image_shared")  # one image VAE for every variant
            if a.vae_from and not os.path.exists(os.path.join(shared, "vae_image")):
                shutil.copytree(os.path.join(a.vae_from, "vae_image"),
                                os.path.join(shared, "vae_image"),
                                ignore=shutil.ignore_patterns("checkpoints"))
            stage_runner.run(config, shared, mesh, ["vae_image"], progress=False)  # skips if done
            if not os.path.exists(os.path.join(workdir, "vae_image")):
                shutil.copytree(
                    os.path.join(shared, "vae_image"), os.path.join(workdir, "vae_image")
                )
        if arm.vae_init == "identity":
            # Arms that do not vary the VAE share one (trained once, with the same settings).
            shared = os.path.join(a.root, "vae_shared")
            base = arm_config(Arm("1", "vae"), a.settings, tfds_dir)
            base.stages = tuple(s for s in base.stages if s.startswith("vae"))
            copied = ["latents"] if a.vae_from else []
            for stage in (list(base.stages) + copied) if a.vae_from else ():
                if not os.path.exists(os.path.join(shared, stage)):
                    shutil.copytree(os.path.join(a.vae_from, stage), os.path.join(shared, stage),
                                    ignore=shutil.ignore_patterns("checkpoints"))
            stage_runner.run(base, shared, mesh, list(base.stages), progress=False)  # skips if done
            for stage in list(base.stages) + copied:
                if not os.path.exists(os.path.join(workdir, stage)):
                    shutil.copytree(os.path.join(shared, stage), os.path.join(workdir, stage))
        train_family(arm, config, workdir, steps, mesh)
        found = eval_vae(arm, workdir, a) if arm.table == "2a" else eval_generators(arm, workdir, a)
        rows += [{"table": arm.table, **r} for r in found]
    summary = []
    for table in a.tables:
        part = [r for r in rows if r["table"] == table]
        keys = ("table", "arm", "mode", "length", "frames") if table != "2a" else ("table", "arm")
        summary += summarize(part, keys)
    frechet_metrics(summary, rows, a)
    sheets = side_by_side(rows, a)
    result = {
        "sheets": sheets,
        "args": dict(vars(a)),
        "rows": rows,
        "summary": summary,
        "command": a.command,
        "machine": f"{platform.machine()} {os.cpu_count()} cores ({platform.platform()})",
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": time.perf_counter() - t0,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(render(result))
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"results: {a.out}")
    return result


if __name__ == "__main__":
    cli.run(define_flags, lambda fv: measure(options(fv, sys.argv[1:])))
