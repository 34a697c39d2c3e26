"""How well a trained family's videos follow their storyboards, read by the synthetic-world probe.

python benchmarks/quality.py --workdir=DIR [--seeds=0,1,2] [--storyboards=A.txt,B.txt]
    [--modes=dod,ar] [--lengths=demo,full] [--out=quality.json] [--videos=FOLDER] [--steps=S]
    [--guidance=G] [--vae_episodes=2] [--vae_frames=226] [--novae]

For every storyboard (default: the demo's cartoon.txt, village.txt, and heldout.txt, which no
tuning run may look at), mode (dod; ar when the workdir has an ``mtd_ar`` export), length (the
demo's ``generate.frames`` and the family's full (L-1)^depth + 1, once if equal) and seed, it
generates a video through ``NuwaXLPipeline.write`` exactly as the main job does (the config's
sampler, steps, guidance) and keeps its probe scores (metrics/storyboard_probe.agreement: scene,
characters, both, unknown, flicker, identity, keyframes / in-between). Prints one row per run and
the mean over seeds per storyboard / mode / length, writes everything to ``--out`` (JSON) and
keeps the videos and contact sheets in ``--videos`` (default: next to --out).

The VAE ceiling: the probe on the family's VAE reconstructions of held-out (test split) episodes
(``data.latent_cache.reconstruct``: the encode / decode paths training and generation use), next
to the probe on the same real frames. A generator cannot score above it.
"""
from __future__ import annotations

import json
import os
import time
import types
from typing import Sequence

import numpy as np
from absl import flags

from nuwa_xl_jax import cli
from nuwa_xl_jax.data import latent_cache, synthetic
from nuwa_xl_jax.data.builders.synthetic_cartoon import TEST_SEED_OFFSET
from nuwa_xl_jax.dod.plan import num_frames
from nuwa_xl_jax.family.store import export_dir
from nuwa_xl_jax.io.storyboards import load_storyboard
from nuwa_xl_jax.metrics import storyboard_probe
from nuwa_xl_jax.pipeline import NuwaXLPipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STORYBOARDS = tuple(os.path.join(ROOT, "configs", "storyboards", f)
                    for f in ("cartoon.txt", "village.txt", "heldout.txt"))
SCORES = ("scene", "characters", "both", "unknown", "flicker", "identity")


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    del argv
    d = dict(flag_values=fv)
    flags.DEFINE_string("workdir", None, "a training workdir (python -m nuwa_xl_jax.train)", **d)
    flags.DEFINE_list("seeds", ["0", "1", "2"], "generation seeds", **d)
    flags.DEFINE_list("storyboards", list(STORYBOARDS), "storyboard files", **d)
    flags.DEFINE_list("modes", ["dod", "ar"], "dod and/or ar (ar only if mtd_ar was trained)", **d)
    flags.DEFINE_list("lengths", ["demo", "full"],
                      "demo (config generate.frames), full ((L-1)^depth + 1), or numbers", **d)
    flags.DEFINE_string("out", "quality.json", "results (JSON)", **d)
    flags.DEFINE_string("videos", None, "videos and contact sheets (default: next to --out)", **d)
    flags.DEFINE_integer("steps", None, "sampler steps (default: the config's, as the main job; "
                         "fewer only for smoke tests)", **d)
    flags.DEFINE_float("guidance", None, "guidance scale (default: the config's, as the main job)",
                       **d)
    flags.DEFINE_integer("vae_episodes", 2, "held-out episodes for the VAE ceiling", **d)
    flags.DEFINE_integer("vae_frames", 226, "frames of each, from the start", **d)
    flags.DEFINE_bool("vae", True, "measure the VAE ceiling (--novae skips it)", **d)
    flags.mark_flag_as_required("workdir", flag_values=fv)


def options(fv: flags.FlagValues) -> types.SimpleNamespace:
    """The parsed flags, checked, with seeds as ints and --videos filled in."""
    a = types.SimpleNamespace(**{name: fv[name].value for name in (
        "workdir", "seeds", "storyboards", "modes", "lengths", "out", "videos", "steps",
        "guidance", "vae_episodes", "vae_frames", "vae")})
    try:
        a.seeds = [int(s) for s in a.seeds]
    except ValueError:
        cli.fail(f"--seeds must be integers, got {a.seeds!r}", 2)
    if not a.seeds or not a.storyboards or not a.modes or not a.lengths:
        cli.fail("--seeds, --storyboards, --modes and --lengths need at least one value each", 2)
    if set(a.modes) - {"dod", "ar"}:
        cli.fail(f"--modes must be dod and/or ar, got {a.modes}", 2)
    for path in a.storyboards:
        if not os.path.isfile(path):
            cli.fail(f"storyboard {path} does not exist", 2)
    if a.videos is None:
        a.videos = os.path.splitext(a.out)[0] + "_videos"
    return a


def parse(argv: Sequence[str]) -> types.SimpleNamespace:
    """The benchmark's options from ``argv`` (flags only), for calling it in-process."""
    return options(cli.parse(define_flags, argv, "quality"))


def lengths(config, names) -> dict:
    """{name: frames} for 'demo', 'full' or explicit numbers; one entry per distinct length."""
    full = num_frames(config.data.frames_per_call, config.data.depth)
    out = {}
    for name in names:
        n = {"demo": config.generate.frames, "full": full}.get(name)
        if n is None:
            if not name.isdigit():
                raise ValueError(f"--lengths: {name!r} is not demo, full or a number")
            n = int(name)
        if n not in out.values():
            out[name] = int(n)
    return out


def run_one(pipe, prompts, video: str, mode: str, seed: int, steps=None, guidance=None) -> dict:
    """One video as the main job makes it (its ``generate`` block's settings); its scores."""
    g = pipe.config.generate
    overrides = g.sampler_overrides()
    overrides["steps"] = steps or overrides["steps"]
    if guidance is not None:
        overrides["guidance"] = guidance
    out = pipe.write(video, list(prompts), mode=mode, seed=seed,
                     max_segments_per_call=g.max_segments_per_call,
                     memory_fraction=g.memory_fraction, fps=g.fps, overwrite=True,
                     progress=False, **overrides)
    if out.agreement is None:
        raise ValueError("no probe scores: benchmarks/quality.py needs a synthetic_cartoon family")
    return {"video": out.path, "contact_sheet": out.contact_sheet,
            "seconds": round(out.seconds, 1), "sequential_calls": out.sequential_calls,
            **out.agreement}


def held_out_episodes(config, episodes: int, frames: int):
    """Real frames and captions of the test split's first episodes, rendered as the builder does."""
    c = config.data
    n = min(episodes, c.test_episodes)
    if n < 1:
        raise ValueError("the VAE ceiling needs held-out episodes (data.test_episodes >= 1); "
                         "pass --novae to skip it")
    length = min(frames, c.episode_length)
    return [synthetic.episode(c.world_seed + TEST_SEED_OFFSET, i, length, tuple(c.resolution))[:2]
            for i in range(n)]


def vae_ceiling(workdir: str, config, episodes: int, frames: int) -> dict:
    """The probe on real held-out frames and on the VAE's reconstructions of them (mean over
    episodes)."""
    real, recon = [], []
    for video, captions in held_out_episodes(config, episodes, frames):
        real.append(storyboard_probe.agreement(video, captions))
        recon.append(storyboard_probe.agreement(latent_cache.reconstruct(workdir, video), captions))
    return {"episodes": len(real), "frames": real[0]["frames"],
            "real": mean_scores(real), "reconstructed": mean_scores(recon)}


def mean_scores(rows) -> dict:
    out = {}
    for k in SCORES:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    for part in ("keyframes", "inbetween"):
        parts = [r[part] for r in rows if r.get(part) and r[part]["scene"] is not None]
        if parts:
            out[part] = {
                k: float(np.mean([p[k] for p in parts])) for k in ("scene", "characters", "both")
            }
    return out


def run(a) -> dict:
    has_ar = os.path.isdir(export_dir(a.workdir, "mtd_ar"))
    modes = [m for m in a.modes if m == "dod" or has_ar]
    pipe = NuwaXLPipeline.from_pretrained(a.workdir, load_ar="ar" in modes)
    sizes = lengths(pipe.config, a.lengths)
    os.makedirs(a.videos, exist_ok=True)
    runs = []
    for path in a.storyboards:
        name = os.path.splitext(os.path.basename(path))[0]
        for length_name, n in sizes.items():
            prompts = list(load_storyboard(path, n))
            for mode in modes:
                for seed in a.seeds:
                    video = os.path.join(a.videos, f"{name}_{mode}_{n}_seed{seed}.mp4")
                    row = {"storyboard": name, "mode": mode, "length": length_name, "frames": n,
                           "seed": seed}
                    row.update(run_one(pipe, prompts, video, mode, seed, a.steps,
                                           a.guidance))
                    runs.append(row)
                    print(row_line(row), flush=True)
    means = []
    for key in dict.fromkeys((r["storyboard"], r["mode"], r["length"]) for r in runs):
        group = [r for r in runs if (r["storyboard"], r["mode"], r["length"]) == key]
        means.append({"storyboard": key[0], "mode": key[1], "length": key[2],
                      "frames": group[0]["frames"], "seeds": [r["seed"] for r in group],
                      **mean_scores(group)})
    result = {"workdir": os.path.abspath(a.workdir), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
              "storyboards": a.storyboards, "modes": modes, "ar_trained": has_ar,
              "lengths": sizes, "seeds": a.seeds, "steps": a.steps,
              "guidance": a.guidance, "runs": runs, "means": means}
    if a.vae:
        result["vae_ceiling"] = vae_ceiling(a.workdir, pipe.config, a.vae_episodes, a.vae_frames)
    return result


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def row_line(r: dict) -> str:
    name = (
        f"{r['storyboard']} {r['mode']} {r['frames']}f seed {r['seed'] if 'seed' in r else 'mean'}"
    )
    return f"{name:34s} " + " ".join(f"{k} {_f(r.get(k))}" for k in SCORES)


def report(result: dict) -> str:
    head = ("| storyboard | mode | frames | seeds | scene | characters | both | keyframes both "
            "| in-between both | unknown | flicker | identity |")
    lines = ["Per run:", head.replace("seeds", "seed"), "|" + "---|" * 12]
    for r in result["runs"] + [None] + result["means"]:
        if r is None:
            lines += ["", "Mean over seeds:", head, "|" + "---|" * 12]
            continue
        seeds = r.get("seed", ",".join(map(str, r.get("seeds", []))))
        kf, ib = (r.get(p) or {} for p in ("keyframes", "inbetween"))
        lines.append(f"| {r['storyboard']} | {r['mode']} | {r['frames']} | {seeds} | "
                     + " | ".join(_f(r.get(k)) for k in ("scene", "characters", "both"))
                     + f" | {_f(kf.get('both'))} | {_f(ib.get('both'))} | "
                     + " | ".join(_f(r.get(k)) for k in ("unknown", "flicker", "identity")) + " |")
    v = result.get("vae_ceiling")
    if v:
        lines += [
            "",
            f"VAE ceiling ({v['episodes']} held-out episodes x {v['frames']} frames):",
            "| input | scene | characters | both | unknown | identity |",
            "|---|---|---|---|---|---|",
        ]
        for which in ("real", "reconstructed"):
            s = v[which]
            lines.append(
                f"| {which} | "
                + " | ".join(
                    _f(s[k]) for k in ("scene", "characters", "both", "unknown", "identity")
                )
                + " |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> dict:
    """The benchmark with ``argv`` (flags only), in-process."""
    return measure(parse(argv))


def measure(a) -> dict:
    result = run(a)
    print(report(result))
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"results: {a.out}; videos and contact sheets: {a.videos}")
    return result


if __name__ == "__main__":
    cli.run(define_flags, lambda fv: measure(options(fv)))
