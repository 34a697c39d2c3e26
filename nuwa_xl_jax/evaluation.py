"""One evaluation: videos (generated through :class:`NuwaXLPipeline` or read from files) against a
reference, Avg-FID, B-FVD-16 and (synthetic world) the storyboard probe; a JSON and a markdown
table in ``out``. Everything that can be wrong with the inputs is checked before any model or
feature network runs. ``python -m nuwa_xl_jax.evaluate`` is the command line of :func:`evaluate`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Optional, Sequence

from tqdm.auto import tqdm

from nuwa_xl_jax import io as nio
from nuwa_xl_jax import paths
from nuwa_xl_jax.dod import runner
from nuwa_xl_jax.dod.plan import num_frames
from nuwa_xl_jax.family import store
from nuwa_xl_jax.metrics import features, frechet, reference, storyboard_probe
from nuwa_xl_jax.metrics.statistics import EvaluationError, VideoSetStats, compare
from nuwa_xl_jax.models import i3d, inception
from nuwa_xl_jax.pipeline import NuwaXLPipeline

METRICS = ("avg_fid", "b_fvd16", "probe")
RESULTS_JSON, RESULTS_MD = "metrics.json", "metrics.md"


@dataclasses.dataclass
class Options:
    """What to evaluate; the fields are the CLI's flags (``python -m nuwa_xl_jax.evaluate
    --help``)."""
    out: str
    workdir: Optional[str] = None
    videos: Optional[str] = None
    storyboards: Sequence[str] = ()
    frames: Optional[int] = None
    modes: Sequence[str] = ("dod", "ar")
    seeds: Sequence[int] = (0, 1)
    extend: bool = False
    steps: Optional[int] = None
    reference: Optional[str] = None
    reference_seeds: Sequence[int] = (0, 1)
    reference_cache: Optional[str] = None
    fid_weights: Optional[str] = None
    fvd_weights: Optional[str] = None
    random_feature_weights: bool = False
    fid_size: int = inception.INPUT_SIZE
    fvd_size: int = i3d.RESOLUTION
    fvd_output: str = "logits"
    fid_batch: int = 32
    fvd_batch: int = 4
    metrics: Sequence[str] = METRICS
    save_videos: bool = False
    overwrite: bool = False
    progress: bool = True


def _name(path: str) -> str:
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def _check(o: Options):
    """Every input error that needs no model: raised before any work. Returns (config or None,
    frames, {storyboard name: prompts}, which metrics, the paths of --videos, their resolution,
    the DoD plan of the generated videos or None)."""
    unknown = sorted(set(o.metrics) - set(METRICS))
    if unknown or not o.metrics:
        raise EvaluationError(f"--metrics: unknown {unknown}; choose from {', '.join(METRICS)}")
    if not o.workdir and not o.videos:
        raise EvaluationError("give --workdir (a trained family: videos are generated through it) "
                              "or --videos (existing video files), or both")
    if o.videos and not o.workdir and not o.reference and ("avg_fid" in o.metrics
                                                          or "b_fvd16" in o.metrics):
        raise EvaluationError(
            "--videos without --workdir needs --reference (real videos or a .npz "
            "of statistics); with --workdir of a synthetic-world family the world "
            "renders the reference for --storyboards"
        )
    bad_modes = sorted(set(o.modes) - set(runner.MODES))
    if bad_modes or not o.modes:
        raise EvaluationError(f"--modes: {bad_modes or 'none'}; expected some of "
                              f"{', '.join(runner.MODES)}")
    if not o.seeds or not o.reference_seeds:
        raise EvaluationError("--seeds and --reference_seeds need at least one value each")
    for path in (os.path.join(o.out, RESULTS_JSON), os.path.join(o.out, RESULTS_MD)):
        if os.path.exists(path) and not o.overwrite:
            raise EvaluationError(f"{path} exists; pass --overwrite or choose another --out")
    config = store.load_config(o.workdir) if o.workdir else None
    synthetic = config is not None and config.data.dataset == "synthetic_cartoon"
    if "probe" in o.metrics and not synthetic:
        raise EvaluationError("--metrics=probe needs the synthetic world: --workdir of a family "
                              "trained on synthetic_cartoon (leave probe out otherwise)")
    want = {"fid": "avg_fid" in o.metrics, "fvd": "b_fvd16" in o.metrics,
            "probe": "probe" in o.metrics}
    frames = o.frames
    if config is not None and frames is None and not o.videos:
        frames = num_frames(config.data.frames_per_call, config.data.depth)
    if frames is not None and want["fvd"] and frames < frechet.BLOCK:
        raise EvaluationError(f"--frames={frames}: B-FVD-16 needs videos of at least "
                              f"{frechet.BLOCK} frames (one block); generate longer videos "
                              "(with --extend past the trained length) or leave b_fvd16 out of "
                              "--metrics")
    if not o.storyboards and (not o.videos or want["probe"] or (synthetic and not o.reference)):
        raise EvaluationError("--storyboards is required (the prompts of the generated videos, "
                              "and of the synthetic world's reference)")
    storyboards = {}
    if o.storyboards:
        names = [_name(p) for p in o.storyboards]
        if len(set(names)) != len(names):
            raise EvaluationError(f"--storyboards: two files share a name ({names}); rename one")
    plan = None
    if o.workdir and not o.videos:
        for mode in o.modes:
            if mode == "dod":  # made once here, run by every DoD video
                plan = runner.plan_for(config, frames, o.extend)
                continue
            stage, what = {"ar": ("mtd_ar", "AR baseline"),
                           "artv": ("mtd_artv", "ART•V model")}[mode]
            if not store.has_export(o.workdir, stage):
                raise EvaluationError(f"--modes={mode}: {o.workdir} has no trained {what} "
                                      f"(stage {stage}); train it (python -m nuwa_xl_jax.train "
                                      f"--config=... --workdir={o.workdir} --stages={stage}) or "
                                      "pass --modes=dod")
        storyboards = {_name(p): list(nio.load_storyboard(p, frames)) for p in o.storyboards}
    video_files = reference.expand_videos(o.videos) if o.videos else []
    if video_files and o.storyboards and len(o.storyboards) not in (1, len(video_files)):
        raise EvaluationError(f"--videos: {len(video_files)} videos but {len(o.storyboards)} "
                              "storyboards; give one storyboard for all, or one per video in order")
    # One resolution everywhere, checked on first frames before any network runs.
    resolution = (reference.check_resolutions(video_files, None, "video") if video_files
                  else tuple(config.data.resolution))
    refs = []
    if o.reference and not o.reference.endswith(".npz") and (want["fid"] or want["fvd"]):
        refs = reference.expand_videos(o.reference, "--reference")
        reference.check_resolutions(refs, resolution, "reference video")
    if want["fvd"]:  # every read video holds at least one block
        for path in video_files + refs:
            n = reference.frame_count(path)
            if n < frechet.BLOCK:
                raise EvaluationError(f"{path} has {n} frames; B-FVD-16 needs at least "
                                      f"{frechet.BLOCK} (one block). Pass longer videos, or leave "
                                      "b_fvd16 out of --metrics")
    return config, frames, storyboards, want, video_files, resolution, plan


def _prompts_for_video(o: Options, index: int, length: int) -> Optional[list]:
    """The prompts of the ``index``-th read video: one storyboard for all, or one per video."""
    if not o.storyboards:
        return None
    return list(nio.load_storyboard(o.storyboards[index % len(o.storyboards)], length))


def check_compatible(ref: VideoSetStats, identity: dict, resolution, path: str) -> None:
    """Saved reference statistics that these networks and videos can be compared with."""
    if ref.identity != identity:
        raise EvaluationError(f"{path}: made with other feature networks ({ref.identity}) than "
                              f"these ({identity}); compute the reference again with the same "
                              "weights, sizes and --fvd_output")
    if ref.resolution and tuple(ref.resolution) != tuple(resolution):
        raise EvaluationError(f"mismatched resolutions: {path} holds statistics of "
                              f"{ref.resolution[0]}x{ref.resolution[1]} videos, the evaluated "
                              f"videos are {resolution[0]}x{resolution[1]}")


def _loud(message: str) -> None:
    bar = "!" * 100
    print(f"{bar}\n{message}\n{bar}", file=sys.stderr, flush=True)


def evaluate(o: Options) -> dict:
    """Runs the evaluation and writes ``out/metrics.json`` and ``out/metrics.md``; returns the
    JSON's content."""
    t0 = time.time()
    config, frames, storyboards, want, video_files, resolution, plan = _check(o)
    nets = features.load_feature_networks(
        o.fid_weights, o.fvd_weights, random=o.random_feature_weights, need_fid=want["fid"],
        need_fvd=want["fvd"], fid_size=o.fid_size, fvd_size=o.fvd_size, fvd_output=o.fvd_output)
    if nets.random and (want["fid"] or want["fvd"]):
        _loud(features.RANDOM_WARNING)
    cache = o.reference_cache or os.path.join(o.out, "reference_cache")
    kw = dict(fid_batch=o.fid_batch, fvd_batch=o.fvd_batch, progress=o.progress)
    saved = None  # a .npz reference is read and checked before anything is generated
    if o.reference and o.reference.endswith(".npz") and (want["fid"] or want["fvd"]):
        saved = reference.video_reference(o.reference, nets, want, cache, **kw)
        check_compatible(saved[0], nets.identity, resolution, o.reference)
    os.makedirs(o.out, exist_ok=True)

    # Generated (or read) videos, one statistics set per mode; features as each video arrives.
    sets: dict[str, VideoSetStats] = {}
    probes: dict[str, list] = {}
    rows: list[dict] = []
    if video_files:
        sets["videos"] = VideoSetStats(nets.identity, want["fid"], want["fvd"])
        probes["videos"] = []
        for i, path in enumerate(tqdm(video_files, desc="videos", disable=not o.progress)):
            video = nio.read_video(path)
            if want["fid"] or want["fvd"]:
                sets["videos"].add(path, video, nets, **{k: kw[k] for k in ("fid_batch",
                                                                            "fvd_batch")})
            else:
                sets["videos"].check(path, video)
                sets["videos"].resolution = tuple(video.shape[1:3])
                sets["videos"].lengths.append(len(video))
            prompts = _prompts_for_video(o, i, len(video))
            score = storyboard_probe.agreement(video, prompts) if want["probe"] else None
            probes["videos"].append(score)
            rows.append({"mode": "videos", "video": path, "frames": len(video), "probe": score})
        if o.storyboards and not storyboards and config is not None:
            length = sets["videos"].lengths[0]
            storyboards = {_name(p): list(nio.load_storyboard(p, length)) for p in o.storyboards}
    else:
        pipe = NuwaXLPipeline.from_pretrained(o.workdir, load_ar="ar" in o.modes,
                                              load_artv="artv" in o.modes)
        runs = [(m, s, seed) for m in o.modes for s in storyboards for seed in o.seeds]
        for mode in o.modes:
            sets[mode] = VideoSetStats(nets.identity, want["fid"], want["fvd"])
            probes[mode] = []
        for mode, name, seed in tqdm(runs, desc="generating and measuring", disable=not o.progress):
            video = pipe(storyboards[name], mode=mode, seed=seed, steps=o.steps,
                         extend=o.extend, score=want["probe"], progress=False,
                         plan=plan if mode == "dod" else None)
            label = f"{name} {mode} seed {seed}"
            if want["fid"] or want["fvd"]:
                sets[mode].add(label, video.frames, nets, o.fid_batch, o.fvd_batch)
            else:
                sets[mode].resolution = tuple(video.frames.shape[1:3])
                sets[mode].lengths.append(len(video))
            row = {"mode": mode, "storyboard": name, "seed": seed, "frames": len(video),
                   "seconds": round(video.seconds, 2), "sequential_calls": video.sequential_calls,
                   "probe": video.agreement}
            if o.save_videos:
                row["video"], row["contact_sheet"] = video.save(
                    os.path.join(o.out, "videos", f"{name}_{mode}_seed{seed}.mp4"),
                    overwrite=o.overwrite)
            probes[mode].append(video.agreement)
            rows.append(row)

    # The reference, after the videos when they are read (their resolution and length decide it).
    ref_stats, ref_info = None, {}
    if want["fid"] or want["fvd"] or (want["probe"] and storyboards):
        if saved:
            ref_stats, ref_info = saved
        elif o.reference:
            ref_stats, ref_info = reference.video_reference(o.reference, nets, want, cache, **kw)
        elif storyboards and config is not None and config.data.dataset == "synthetic_cartoon":
            ref_stats, ref_info = reference.synthetic_reference(
                storyboards, tuple(config.data.resolution), o.reference_seeds, nets, want,
                cache, **kw)
        else:
            raise EvaluationError("no reference: pass --reference (real videos or a .npz), or "
                                  "--storyboards with a synthetic-world --workdir")

    results = {}
    for mode, stats in sets.items():
        entry = {"videos": stats.videos, "frames": stats.lengths[0] if stats.lengths else 0}
        if ref_stats is not None and (want["fid"] or want["fvd"]):
            entry.update(compare(stats, ref_stats))
        if want["probe"]:
            entry["probe"] = reference.mean_scores(probes[mode])
        results[mode] = entry
    report = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - t0, 1),
        "workdir": paths.absolute(o.workdir) if o.workdir else None,
        "videos": video_files or None, "storyboards": list(o.storyboards),
        "frames": frames, "modes": list(sets), "seeds": list(o.seeds) if not o.videos else None,
        "steps": o.steps, "metrics": list(o.metrics),
        "feature_networks": nets.identity,
        "warning": (features.RANDOM_WARNING if nets.random and (want["fid"] or want["fvd"])
                    else None),
        "reference": {"source": o.reference or "synthetic world acting out the storyboards",
                      "seeds": list(o.reference_seeds) if not o.reference else None,
                      **ref_info, "resolution": list(ref_stats.resolution or ())
                      if ref_stats else None},
        "results": results, "runs": rows,
    }
    with open(os.path.join(o.out, RESULTS_JSON), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(o.out, RESULTS_MD), "w") as f:
        f.write(markdown(report))
    return report


def _f(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(report: dict) -> str:
    """The small table of a report: one row per mode, the reference's probe row last."""
    lines = []
    if report.get("warning"):
        lines += [f"**{report['warning']}**", ""]
    ident = report["feature_networks"]
    lines.append(
        f"Feature networks: FID {ident.get('fid', '-')}, FVD {ident.get('fvd', '-')}"
        + (f" ({ident['fvd_output']})" if "fvd_output" in ident else "")
        + (f"; OFF PROTOCOL: {ident['off_protocol']}" if ident.get("off_protocol") else "")
    )
    ref = report["reference"]
    lines.append(f"Reference: {ref['source']}, {ref.get('videos', 0)} videos.")
    lines.append("")
    lines.append("| videos | count | frames | Avg-FID | B-FVD-16 | probe scene | probe characters "
                 "| probe both | flicker |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    rows = list(report["results"].items())
    if ref.get("probe"):
        rows.append(("reference (real)", {"videos": ref.get("videos"), "frames": report["frames"],
                                          "probe": ref["probe"]}))
    for mode, r in rows:
        p = r.get("probe") or {}
        lines.append(f"| {mode} | {r.get('videos', '-')} | {r.get('frames') or '-'} | "
                     f"{_f(r.get('avg_fid'))} | {_f(r.get('b_fvd16'))} | {_f(p.get('scene'))} | "
                     f"{_f(p.get('characters'))} | {_f(p.get('both'))} | {_f(p.get('flicker'))} |")
    return "\n".join(lines) + "\n"
