"""``python -m nuwa_xl_jax.evaluate --workdir=DIR --storyboards=A.txt,B.txt --fid_weights=W1
--fvd_weights=W2 --out=DIR``

The paper's metrics (Avg-FID, B-FVD-16) and, on the synthetic world, the storyboard probe's scores,
for videos generated through :class:`nuwa_xl_jax.pipeline.NuwaXLPipeline` (``--modes=dod,ar,artv``,
``--seeds``) or read from files (``--videos``). The reference is the synthetic world acting out the
same storyboards (default, cached to ``.npz``), or ``--reference`` (real videos, or a ``.npz``).
Writes ``metrics.json`` and ``metrics.md`` to ``--out``. Feature networks come from folders written
by ``python -m nuwa_xl_jax.convert --kind=inception|i3d``; ``--random_feature_weights`` uses random
ones instead, for smoke tests only (the numbers are then not comparable with anything). The logic
is :func:`nuwa_xl_jax.evaluation.evaluate`; docs/evaluation.md has the definitions.
"""
from __future__ import annotations

import json
import os
from typing import Sequence

from absl import flags, logging

from nuwa_xl_jax import cli, compile_cache, evaluation

# What a user can fix: a flag, a missing weights folder or workdir, a short video, ...
USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, OSError)


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    del argv
    flags.DEFINE_string("workdir", None, "a trained family (training workdir); videos are "
                        "generated through it, and its config names the world and the resolution",
                        flag_values=fv)
    flags.DEFINE_string("export", None, "an artifact written by python -m nuwa_xl_jax.export "
                        "(read as --workdir is; give one of the two)", flag_values=fv)
    flags.DEFINE_string("videos", None, "evaluate existing videos instead of generating: files, "
                        "globs or folders, comma separated", flag_values=fv)
    flags.DEFINE_list("storyboards", [], "storyboard files (comma separated): the prompts of the "
                      "videos and of the synthetic world's reference", flag_values=fv)
    flags.DEFINE_integer("frames", None, "frames per generated video (default: the family's "
                         "trained length); B-FVD-16 needs >= 16", flag_values=fv)
    flags.DEFINE_list("modes", ["dod", "ar"], "dod, ar and/or artv (ar needs the trained mtd_ar "
                      "stage, artv the mtd_artv stage)", flag_values=fv)
    flags.DEFINE_list("seeds", ["0", "1"], "generation seeds: one video per storyboard, mode and "
                      "seed", flag_values=fv)
    flags.DEFINE_bool("extend", False, "allow --frames past the trained length (DoD)",
                      flag_values=fv)
    flags.DEFINE_integer("steps", None, "sampler steps (default: the config's)", flag_values=fv)
    flags.DEFINE_string("reference", None, "real videos (files, globs, folders) or a .npz of "
                        "reference statistics; default: the synthetic world acting out "
                        "--storyboards", flag_values=fv)
    flags.DEFINE_list("reference_seeds", ["0", "1"], "synthetic reference: staging seeds, one "
                      "real video per storyboard and seed", flag_values=fv)
    flags.DEFINE_string("reference_cache", None, "folder for cached reference statistics "
                        "(default: OUT/reference_cache)", flag_values=fv)
    flags.DEFINE_string("fid_weights", None, "folder from `convert --kind=inception`",
                        flag_values=fv)
    flags.DEFINE_string("fvd_weights", None, "folder from `convert --kind=i3d`", flag_values=fv)
    flags.DEFINE_bool("random_feature_weights", False, "use RANDOM feature networks (smoke tests "
                      "only: the numbers are not comparable with the paper's or any other run's)",
                      flag_values=fv)
    flags.DEFINE_integer("fid_size", 299, "Inception input size; 299 is FID's (smaller: off "
                         "protocol)", flag_values=fv)
    flags.DEFINE_integer("fvd_size", 224, "I3D frame size; 224 is FVD's (smaller: off protocol)",
                         flag_values=fv)
    flags.DEFINE_enum("fvd_output", "logits", ["logits", "features"], "I3D output FVD reads",
                      flag_values=fv)
    flags.DEFINE_integer("fid_batch", 32, "frames per Inception call", flag_values=fv)
    flags.DEFINE_integer("fvd_batch", 4, "16-frame clips per I3D call", flag_values=fv)
    flags.DEFINE_list("metrics", list(evaluation.METRICS), "avg_fid, b_fvd16, probe (synthetic "
                      "world)", flag_values=fv)
    flags.DEFINE_string("out", "eval", "output folder: metrics.json, metrics.md (and videos/)",
                        flag_values=fv)
    flags.DEFINE_bool("save_videos", False, "also write every generated video and its contact "
                      "sheet", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "replace existing results in --out", flag_values=fv)
    flags.DEFINE_string("compilation_cache", None, "persistent compilation cache folder, or 'off'",
                        flag_values=fv)


def _ints(name: str, values) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise evaluation.EvaluationError(f"--{name} must be integers, got {','.join(values)}") \
            from None


def options_from_flags(FLAGS: flags.FlagValues) -> evaluation.Options:
    if FLAGS.workdir and FLAGS.export:
        raise evaluation.EvaluationError("give --workdir or --export, not both (both name the "
                                         "family)")
    return evaluation.Options(
        out=FLAGS.out, workdir=FLAGS.workdir or FLAGS.export, videos=FLAGS.videos,
        storyboards=FLAGS.storyboards,
        frames=FLAGS.frames, modes=FLAGS.modes, seeds=_ints("seeds", FLAGS.seeds),
        extend=FLAGS.extend, steps=FLAGS.steps, reference=FLAGS.reference,
        reference_seeds=_ints("reference_seeds", FLAGS.reference_seeds),
        reference_cache=FLAGS.reference_cache, fid_weights=FLAGS.fid_weights,
        fvd_weights=FLAGS.fvd_weights, random_feature_weights=FLAGS.random_feature_weights,
        fid_size=FLAGS.fid_size, fvd_size=FLAGS.fvd_size, fvd_output=FLAGS.fvd_output,
        fid_batch=FLAGS.fid_batch, fvd_batch=FLAGS.fvd_batch, metrics=FLAGS.metrics,
        save_videos=FLAGS.save_videos, overwrite=FLAGS.overwrite)


def run(FLAGS: flags.FlagValues) -> int:
    logging.set_verbosity(logging.WARNING)  # progress bars, not Orbax's INFO lines
    compile_cache.configure(FLAGS.compilation_cache)
    report = evaluation.evaluate(options_from_flags(FLAGS))
    print(evaluation.markdown(report))
    print(json.dumps({"out": os.path.abspath(FLAGS.out), **{k: {m: v for m, v in r.items()
                      if m in ("avg_fid", "b_fvd16")} for k, r in report["results"].items()}}))
    return 0


def main(argv: Sequence[str]) -> int:
    """The command with ``argv`` (flags only), in-process; errors a user can fix are raised."""
    return run(cli.parse(define_flags, argv, "evaluate"))


if __name__ == "__main__":
    cli.run(define_flags, run, USER_ERRORS)
