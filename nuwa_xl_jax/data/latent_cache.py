"""A latent cache: encode every frame of a split once, so MTD training need not run the VAE each step.

Episodes are encoded in consecutive windows of ``window`` frames (the T-KLVAE is temporal, so each
window is one call; the last window is padded by repeating its last frame and trimmed). Layout:

  OUT/SPLIT/index.json                  {"episodes": [{"name", "frames"}], "latent_shape", ...}
  OUT/SPLIT/EPISODE.latents.npy         [frames, h, w, c] float32 (memory-mapped when read)
  OUT/SPLIT/EPISODE.prompt_ids.npy      [frames, T] int32

Point ``data.latent_dir`` at OUT and the pipeline reads latents instead of frames. The encoder is
any callable ``video [B, F, H, W, 3] float32 in [-1, 1] -> latents [B, F, h, w, c]``:
``tklvae_encoder`` (a trained T-KLVAE, scaled by its scaling_factor), or ``pool_encoder``
(average pooling, a stand-in for tests and pixel-space runs).

CLI: python -m nuwa_xl_jax.data.latent_cache --config=configs/synthetic.py --out=DIR
     [--split=train] [--encoder=tklvae --vae_params=vae.msgpack | --encoder=pool:4]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

import numpy as np


def pool_encoder(factor: int) -> Callable[[np.ndarray], np.ndarray]:
    """Average pooling by ``factor``: a VAE stand-in with the same shapes contract."""
    def encode(video):
        b, f, h, w, c = video.shape
        if h % factor or w % factor:
            raise ValueError(f"pool encoder: {h}x{w} is not divisible by {factor}")
        return video.reshape(b, f, h // factor, factor, w // factor, factor, c).mean((3, 5))
    return encode


def tklvae_encoder(vae_config: Any, variables: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The posterior mean of a T-KLVAE times its scaling_factor (the latents MTD diffuses)."""
    import jax
    from nuwa_xl_jax.models.tklvae import TKLVAE
    model = TKLVAE.from_config(vae_config)
    fn = jax.jit(lambda v, x: model.apply(v, x, method="encode")[0] * model.scaling_factor)
    return lambda video: np.asarray(fn(variables, video))


def encode_split(reader: Any, encode: Callable, tokenizer: Callable, out_dir: str, split: str,
                 window: int = 16, batch: int = 4) -> str:
    """Encodes every episode of ``reader`` (chunks.EpisodeReader) into ``out_dir/split``."""
    if window < 1 or batch < 1:
        raise ValueError(f"window and batch must be >= 1, got {window}, {batch}")
    dest = os.path.join(out_dir, split)
    os.makedirs(dest, exist_ok=True)
    episodes, shape = [], None
    for e in range(len(reader)):
        n = reader.length(e)
        starts = list(range(0, n, window))
        latents, ids = [], []
        for i in range(0, len(starts), batch):
            group = starts[i:i + batch]
            idx = [np.minimum(np.arange(s, s + window), n - 1) for s in group]
            clips, caps = zip(*(reader.read(e, ix) for ix in idx))
            video = np.stack(clips).astype(np.float32) / 127.5 - 1.0
            z = np.asarray(encode(video), np.float32)
            for s, zi, ci in zip(group, z, caps):
                keep = min(window, n - s)
                latents.append(zi[:keep])
                ids.append(tokenizer(list(ci[:keep])))
        lat, pid = np.concatenate(latents), np.concatenate(ids).astype(np.int32)
        name = str(reader.table[e]["name"])
        np.save(os.path.join(dest, f"{name}.latents.npy"), lat)
        np.save(os.path.join(dest, f"{name}.prompt_ids.npy"), pid)
        episodes.append({"name": name, "frames": int(n)})
        shape = list(lat.shape[1:])
    with open(os.path.join(dest, "index.json"), "w") as f:
        json.dump({"episodes": episodes, "latent_shape": shape, "window": window}, f)
    return dest


class LatentReader:
    """Random access to a latent cache split; same table / length interface as EpisodeReader."""

    def __init__(self, latent_dir: str, split: str):
        self.dir = os.path.join(os.path.expanduser(latent_dir), split)
        path = os.path.join(self.dir, "index.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"no latent cache at {path}; build one with `python -m nuwa_xl_jax.data.latent_cache"
                f" --out={latent_dir} --split={split}` or clear data.latent_dir")
        with open(path) as f:
            index = json.load(f)
        self.table = index["episodes"]
        self._arrays: dict = {}

    def __len__(self) -> int:
        return len(self.table)

    def length(self, episode: int) -> int:
        return int(self.table[episode]["frames"])

    def __getstate__(self):
        return {**self.__dict__, "_arrays": {}}

    def read_latents(self, episode: int, indices) -> tuple[np.ndarray, np.ndarray]:
        if episode not in self._arrays:
            name = self.table[episode]["name"]
            self._arrays[episode] = tuple(
                np.load(os.path.join(self.dir, f"{name}.{k}.npy"), mmap_mode="r")
                for k in ("latents", "prompt_ids"))
        lat, ids = self._arrays[episode]
        indices = np.asarray(indices)
        return np.asarray(lat[indices], np.float32), np.asarray(ids[indices], np.int32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="a config file (its data block is used)")
    p.add_argument("--out", required=True, help="where the cache goes (then set data.latent_dir)")
    p.add_argument("--split", default=None)
    p.add_argument("--encoder", default="tklvae", help="'tklvae' or 'pool:FACTOR'")
    p.add_argument("--vae_workdir", default="", help="a training workdir: use its exported T-KLVAE")
    p.add_argument("--vae_params", default="", help="or: a flax msgpack of T-KLVAE variables")
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    a = p.parse_args(argv)
    from nuwa_xl_jax import configuration
    from nuwa_xl_jax.data import pipeline
    from nuwa_xl_jax.data.builders import chunks
    from nuwa_xl_jax.data.config import data_block, validate_data
    try:
        config = configuration.load(a.config)
        c = data_block()
        c.update(dict(config.get("data", {})))
        if a.split:
            c.split = a.split
        validate_data(c)
        if a.encoder.startswith("pool:"):
            encode = pool_encoder(int(a.encoder.split(":", 1)[1]))
        elif a.encoder == "tklvae" and a.vae_workdir:
            from nuwa_xl_jax.train import stages
            variables = stages.read_export(stages.export_dir(a.vae_workdir, "vae"))[0]["vae"]
            encode = tklvae_encoder(config.model.vae, variables)
        elif a.encoder == "tklvae":
            if not a.vae_params or not os.path.isfile(a.vae_params):
                raise FileNotFoundError(f"--vae_params={a.vae_params!r}: give --vae_workdir (a "
                                        "training workdir whose vae stage is done) or a file of "
                                        "trained T-KLVAE variables (flax.serialization msgpack)")
            import flax.serialization
            with open(a.vae_params, "rb") as f:
                variables = flax.serialization.msgpack_restore(f.read())
            encode = tklvae_encoder(config.model.vae, variables)
        else:
            raise ValueError(f"--encoder must be 'tklvae' or 'pool:FACTOR', got {a.encoder!r}")
        tokenizer = pipeline.default_tokenizer(c)
        if tokenizer is None:
            from nuwa_xl_jax.models.tokenizers import make_tokenizer
            tokenizer = make_tokenizer(config.model.text)
        source = pipeline.prepare(c).as_data_source(c.split)
        table, chunk_frames = chunks.split_table(source, c.split)
        dest = encode_split(chunks.EpisodeReader(source, table, chunk_frames), encode, tokenizer,
                            a.out, c.split, a.window, a.batch)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {dest}; set data.latent_dir={a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
