"""``python -m nuwa_xl_jax.generate --workdir=DIR --storyboard=FILE --frames=N --out=v.mp4``

Generates a long video with a model family trained by ``python -m nuwa_xl_jax.train``, through
:class:`nuwa_xl_jax.pipeline.NuwaXLPipeline` (this file only reads flags and prints the report):
diffusion over diffusion (``--mode=dod``, every segment of a level in one batched, sharded call)
the autoregressive baseline (``--mode=ar``) or ART•V, one frame per call conditioned on the
anchor and the previous frame (``--mode=artv``). Writes the video and a contact sheet of the
hierarchy's keyframes (``--sheet``, default next to the video). DoD runs the plan of the depth the
family was trained at, so ``--frames`` is at most its (L-1)^depth + 1 frames (the default) unless
``--extend``.
"""
from __future__ import annotations

from typing import Sequence

from absl import flags, logging

from nuwa_xl_jax import cli, compile_cache, pipeline
from nuwa_xl_jax.dod import memory, runner
from nuwa_xl_jax.dod.plan import num_frames
from nuwa_xl_jax.family import runtime
from nuwa_xl_jax.family.store import load_config
from nuwa_xl_jax.io import storyboards
from nuwa_xl_jax.pipeline import NuwaXLPipeline, report

# What a user can fix: a bad storyboard or flag (ValueError and its kind: StoryboardError,
# ConfigError, UnknownWordError, ...), an existing output, a missing workdir or stage, a level that
# does not fit the device's memory.
USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, MemoryError)


def define_flags(fv: flags.FlagValues, argv: Sequence[str]) -> None:
    del argv
    flags.DEFINE_string("workdir", None, "a training workdir (config.json + exported stages)",
                        flag_values=fv)
    flags.DEFINE_string("storyboard", None, "prompts: a text file (one per line) or JSON/YAML "
                        "scenes", flag_values=fv)
    flags.DEFINE_integer("frames", None, "frames to generate, exact; at most the family's trained "
                         "length (L-1)^depth + 1, its default, unless --extend", flag_values=fv)
    flags.DEFINE_string("out", "video.mp4", "output: .mp4, .gif, or a folder for PNG frames",
                        flag_values=fv)
    flags.DEFINE_string("sheet", None, "contact sheet PNG (default: the video's name + "
                        "_sheet.png)", flag_values=fv)
    flags.DEFINE_enum("mode", "dod", ["dod", "ar", "artv"], "diffusion over diffusion, the AR "
                      "baseline (stage mtd_ar) or ART•V frame by frame (stage mtd_artv)",
                      flag_values=fv)
    flags.DEFINE_string("sampler", None, "ddpm | ddim | dpm++2m (default: the config's)",
                        flag_values=fv)
    flags.DEFINE_integer("steps", None, "sampler steps (default: the config's)", flag_values=fv)
    flags.DEFINE_float("guidance", None, "classifier-free guidance scale (default: the config's)",
                       flag_values=fv)
    flags.DEFINE_integer("seed", 0, "the video is a function of the seed, not of the device count",
                         flag_values=fv)
    flags.DEFINE_string("max_segments_per_call", "auto", "segments per batched sampler call: "
                        "'auto' (the most that fit --memory_fraction of one device's memory), a "
                        "number, or 'none' (no limit)", flag_values=fv)
    flags.DEFINE_float("memory_fraction", memory.DEFAULT_MEMORY_FRACTION, "the share of one "
                       "device's memory a sampler or decoder call may use, for "
                       "--max_segments_per_call=auto and for decoding", flag_values=fv)
    flags.DEFINE_integer("fps", 8, "frames per second of the written video", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "replace existing output files", flag_values=fv)
    flags.DEFINE_string("compilation_cache", None, "persistent compilation cache folder, or 'off' "
                        "(default: $NUWA_XL_JAX_COMPILATION_CACHE, else ~/.cache/nuwa_xl_jax/jax)",
                        flag_values=fv)
    flags.DEFINE_bool("extend", False, "allow --frames past the trained length: extra levels reuse "
                      "the deepest local model (outside the training distribution)",
                      flag_values=fv)
    flags.DEFINE_integer("until_level", None, "0: stop after the global level and write its "
                         "keyframes (a short keyframe video at --out and its contact sheet): a "
                         "preview", flag_values=fv)
    flags.DEFINE_string("state", None, "a new or empty folder: save the generation state "
                        "(prompts, pins, seed, sampler settings, the family's fingerprint, each "
                        "finished level's latents) so --resume can continue it", flag_values=fv)
    flags.DEFINE_string("resume", None, "a --state folder: continue that generation from its "
                        "last finished level (byte-identical to an uninterrupted run); "
                        "--storyboard, --frames, --seed and the sampler flags come from the state",
                        flag_values=fv)
    flags.DEFINE_string("edit", None, "a finished --state folder: regenerate only what the "
                        "changed --storyboard touches (keyframes whose prompt or image changed, "
                        "then the segments whose ends or prompts changed, then their decode "
                        "windows); every other frame stays byte for byte. Seed, length and "
                        "sampler settings come from the state; the edited video's state goes to "
                        "--state (default: DIR_edit, DIR_edit2, ...), so edits chain",
                        flag_values=fv)


def write_video(FLAGS: flags.FlagValues) -> dict:
    """The video (or with --until_level=0 its keyframes) and its contact sheet, written; returns
    the printed report."""
    if FLAGS.resume:
        return resume(FLAGS)
    if FLAGS.edit:
        return edit(FLAGS)
    if not FLAGS.workdir or not FLAGS.storyboard:
        raise ValueError("--workdir and --storyboard are required")
    if FLAGS.until_level not in (None, 0):
        raise ValueError(f"--until_level={FLAGS.until_level}: only 0 (a keyframe preview of the "
                         "global level) is supported; continue it with --state and --resume")
    max_segments = memory.check_max_segments(FLAGS.max_segments_per_call)
    if not 0.0 < FLAGS.memory_fraction <= 1.0:
        raise ValueError(f"--memory_fraction must be in (0, 1], got {FLAGS.memory_fraction}")
    config = load_config(FLAGS.workdir)
    frames = FLAGS.frames
    if frames is None:  # the family's full trained length
        frames = num_frames(config.data.frames_per_call, config.data.depth)
    # A length it cannot run fails before loading; the pipeline runs this plan, not another.
    plan = runner.plan_for(config, frames, FLAGS.extend) if FLAGS.mode == "dod" else None
    prompts = storyboards.load_storyboard(FLAGS.storyboard, frames)  # a bad storyboard too
    storyboards.check_vocabulary(prompts, runtime.tokenizer(config))  # and an unknown word
    pipe = NuwaXLPipeline.from_pretrained(FLAGS.workdir, load_ar=FLAGS.mode == "ar",
                                          load_artv=FLAGS.mode == "artv", config=config)
    if FLAGS.until_level == 0:
        _check_outputs(FLAGS)
        video = pipe.preview(prompts, sampler=FLAGS.sampler, steps=FLAGS.steps,
                             guidance=FLAGS.guidance, seed=FLAGS.seed, state=FLAGS.state,
                             extend=FLAGS.extend)
        return _save(FLAGS, video)
    # the Storyboard itself: it carries the keyframe images' pins
    video = pipe.write(FLAGS.out, prompts, sheet=FLAGS.sheet or True, fps=FLAGS.fps,
                       overwrite=FLAGS.overwrite, mode=FLAGS.mode, sampler=FLAGS.sampler,
                       steps=FLAGS.steps, guidance=FLAGS.guidance, seed=FLAGS.seed,
                       max_segments_per_call=max_segments,
                       memory_fraction=FLAGS.memory_fraction, extend=FLAGS.extend, plan=plan,
                       state=FLAGS.state)
    return report(video)


def resume(FLAGS: flags.FlagValues) -> dict:
    """--resume=DIR: the stopped generation, continued and written to --out."""
    if not FLAGS.workdir:
        raise ValueError("--resume needs --workdir: the family that wrote the state")
    _check_outputs(FLAGS)
    pipe = NuwaXLPipeline.from_pretrained(FLAGS.workdir)
    return _save(FLAGS, pipe.resume(FLAGS.resume, memory_fraction=FLAGS.memory_fraction))


def edit(FLAGS: flags.FlagValues) -> dict:
    """--edit=DIR --storyboard=NEW: the saved video with only what NEW changes regenerated."""
    if not FLAGS.workdir or not FLAGS.storyboard:
        raise ValueError("--edit needs --workdir (the family that wrote the state) and "
                         "--storyboard (the changed storyboard)")
    _check_outputs(FLAGS)
    pipe = NuwaXLPipeline.from_pretrained(FLAGS.workdir)
    return _save(FLAGS, pipe.edit(FLAGS.edit, FLAGS.storyboard, new_state=FLAGS.state,
                                  memory_fraction=FLAGS.memory_fraction, score=True))


def _check_outputs(FLAGS: flags.FlagValues) -> None:
    """Existing outputs fail before any model work (the streamed path checks its own)."""
    pipeline.check_outputs(FLAGS.out, FLAGS.sheet or pipeline.sheet_path(FLAGS.out),
                           FLAGS.overwrite)


def _save(FLAGS: flags.FlagValues, video) -> dict:
    """Writes an in-memory video (a preview's keyframes, a resumed run) and its sheet."""
    video.path, video.contact_sheet = video.save(FLAGS.out, FLAGS.sheet or True, fps=FLAGS.fps,
                                                 overwrite=FLAGS.overwrite)
    return report(video)


def run(FLAGS: flags.FlagValues) -> int:
    logging.set_verbosity(logging.WARNING)  # progress bars, not Orbax's INFO lines
    try:  # before anything compiles
        compile_cache.configure(FLAGS.compilation_cache)
    except OSError as e:
        cli.fail(f"--compilation_cache: {e}")
    write_video(FLAGS)
    return 0


def main(argv: Sequence[str]) -> int:
    """The command with ``argv`` (flags only), in-process; errors a user can fix are raised."""
    return run(cli.parse(define_flags, argv, "generate"))


if __name__ == "__main__":
    cli.run(define_flags, run, USER_ERRORS)
