"""Fingerprints of a tiny family's generated videos, to check that a refactor of the generation
path changes no byte: the sha256 of each video's uint8 frames and float latents, per mode and
settings (same seeds, same random weights). Not a test: run it before and after, compare.

    PYTHONPATH=tests .venv/bin/python tests/generation_fingerprint.py OUT.json   # repo root
"""
import hashlib
import json
import os
import sys
import tempfile

import numpy as np
from tiny_family import STAGES, write_random_family  # noqa: E402  (tests/ on PYTHONPATH)

from nuwa_xl_jax.io.videos import read_video  # noqa: E402
from nuwa_xl_jax.pipeline import NuwaXLPipeline  # noqa: E402

PROMPTS = ["fred walks left in the cave"] * 4 + ["wilma jumps in the desert"] * 3
RUNS = {  # name: the pipeline call's settings
    "dod_config_sampler": dict(mode="dod", seed=3),
    "dod_ddim_guided_chunked": dict(mode="dod", seed=5, sampler="ddim", steps=3, guidance=2.0,
                                    eta=0.5, max_segments_per_call=1),
    "dod_dpm_trained_length": dict(mode="dod", seed=1, sampler="dpm++2m", steps=3, frames=10),
    "ar": dict(mode="ar", seed=7, steps=3),
    "artv": dict(mode="artv", seed=9, steps=3),
    "artv_guided": dict(mode="artv", seed=2, sampler="ddim", steps=2, guidance=3.0),
}


def sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def main(out: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        workdir = write_random_family(os.path.join(d, "family"), STAGES + ("mtd_artv",))
        pipe = NuwaXLPipeline.from_pretrained(workdir)
        result = {}
        for name, kw in RUNS.items():
            kw = dict(kw)
            frames = kw.pop("frames", None)
            prompts = PROMPTS if frames is None else (PROMPTS * 2)[:frames]
            video = pipe(prompts, progress=False, **kw)
            result[name] = {"frames": sha(video.frames), "latents": sha(video.latents),
                            "shape": list(video.frames.shape)}
        # The streaming path (the generate CLI's): PNG frames are lossless.
        pipe.write(os.path.join(d, "frames"), PROMPTS, seed=3, progress=False, score=False)
        result["dod_streamed"] = {"frames": sha(read_video(os.path.join(d, "frames")))}
    with open(out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print(json.dumps(result, indent=1, sort_keys=True))
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fingerprint.json")
