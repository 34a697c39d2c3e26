"""Prints synthetic episode generation speed (episodes/s) and pipeline throughput (batches/s).

python benchmarks/data_pipeline.py [--length 3376] [--resolution 64] [--batch 8] [--workers 0]
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nuwa_xl_jax.data import pipeline, synthetic  # noqa: E402
from nuwa_xl_jax.configuration.data import data_block  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--length", type=int, default=3376)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--workers", type=int, default=0)
    a = p.parse_args()
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
        pipeline.prepare(c)
        print(f"tfds build (render + PNG + ArrayRecord): "
              f"{a.episodes / (time.perf_counter() - t):.2f} episodes/s")
        for level in range(c.depth):
            c.level = level
            it = pipeline.make_iterator(c)
            next(it)
            t = time.perf_counter()
            for _ in range(a.batches):
                next(it)
            bps = a.batches / (time.perf_counter() - t)
            print(f"pipeline level {level}: {bps:.1f} batches/s of {a.batch} x "
                  f"{c.frames_per_call} frames ({bps * a.batch * c.frames_per_call:.0f} frames/s), "
                  f"workers={a.workers}")


if __name__ == "__main__":
    main()
