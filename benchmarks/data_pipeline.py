"""Prints synthetic episode generation speed (episodes/s) and pipeline throughput (batches/s).

python benchmarks/data_pipeline.py [--length=3376] [--resolution=64] [--batch=8] [--workers=0]
"""
import tempfile
import time

from absl import flags

from nuwa_xl_jax import cli
from nuwa_xl_jax.configuration.data import data_block
from nuwa_xl_jax.data import batches, sources, synthetic


def define_flags(fv, argv):
    del argv
    flags.DEFINE_integer("length", 3376, "frames per episode", flag_values=fv)
    flags.DEFINE_integer("resolution", 64, "frame height and width", flag_values=fv)
    flags.DEFINE_integer("episodes", 4, "episodes generated", flag_values=fv)
    flags.DEFINE_integer("batch", 8, "batch size", flag_values=fv)
    flags.DEFINE_integer("batches", 50, "batches timed per level", flag_values=fv)
    flags.DEFINE_integer("workers", 0, "grain worker processes", flag_values=fv)


def run(a):
    res = (a.resolution, a.resolution)

    t = time.perf_counter()
    for i in range(a.episodes):
        synthetic.episode(0, i, a.length, res)
    gen = a.episodes / (time.perf_counter() - t)
    print(f"synthetic generation: {gen:.2f} episodes/s ({gen * a.length:.0f} frames/s), "
          f"{a.length} frames at {a.resolution}x{a.resolution}")

    with tempfile.TemporaryDirectory() as tmp:
        c = data_block()
        c.data_dir, c.episodes, c.test_episodes = tmp, a.episodes, 0
        c.episode_length, c.resolution, c.batch_size, c.workers = a.length, res, a.batch, a.workers
        t = time.perf_counter()
        sources.prepare(c)
        print(f"tfds build (render + PNG + ArrayRecord): "
              f"{a.episodes / (time.perf_counter() - t):.2f} episodes/s")
        for level in range(c.depth):
            c.level = level
            it = batches.make_iterator(c)
            next(it)
            t = time.perf_counter()
            for _ in range(a.batches):
                next(it)
            bps = a.batches / (time.perf_counter() - t)
            print(f"pipeline level {level}: {bps:.1f} batches/s of {a.batch} x "
                  f"{c.frames_per_call} frames ({bps * a.batch * c.frames_per_call:.0f} frames/s), "
                  f"workers={a.workers}")


if __name__ == "__main__":
    cli.run(define_flags, run)
