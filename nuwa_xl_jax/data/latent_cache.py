"""A latent cache: every frame of a split encoded once, so MTD training never runs the VAE.

Why it is the only way MTD stages see latents: a diffusion target must be the latent a frame has
at generation time, and there every frame's latent lives among its stride-1 neighbours (the
video is decoded in windows of consecutive frames). So each episode is encoded in windows of
consecutive frames, exactly as generation decodes (``models/windows.py``: calls of
``config.vae_frames`` frames, the VAE's training clip, keeping the middle and ``config.vae_context``
frames of context on each side), and a training example then picks its level's frames (stride
225, 15 or 1) out of those latents. Encoding the L sampled keyframes jointly instead would pass
frames 225 apart through the temporal layers as if they were neighbours.

Latents are the posterior means times the VAE export's ``latent_scale`` (1 / std, LDM's rule),
recorded in the index; MTD stages refuse a cache whose scale differs from their VAE's. Layout:

  OUT/SPLIT/index.json                  {"episodes": [{"name", "frames"}], "latent_shape",
                                         "latent_scale", "vae_frames", "vae_context"}
  OUT/SPLIT/EPISODE.latents.npy         [frames, h, w, c] float32 (memory-mapped when read)
  OUT/SPLIT/EPISODE.prompt_ids.npy      [frames, T] int32

The training command builds ``WORKDIR/latents`` after the vae stage (:func:`build`); point
``data.latent_dir`` elsewhere to use a cache built by the CLI. The encoder is any callable
``video [B, F, H, W, 3] float32 in [-1, 1] -> latents [B, F, h, w, c]``: ``tklvae_encoder`` (a
trained T-KLVAE), or ``pool_encoder`` (average pooling, a stand-in for tests and pixel-space runs).

CLI (``nuwa_xl_jax/cache_latents.py``): python -m nuwa_xl_jax.cache_latents
     --config=configs/synthetic.py --out=DIR [--split=train] [--encoder=tklvae --vae_workdir=RUN |
     --encoder=pool:4]
"""
from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from nuwa_xl_jax import paths
from nuwa_xl_jax.configuration import Config
from nuwa_xl_jax.data import sources
from nuwa_xl_jax.family import store
from nuwa_xl_jax.models import windows
from nuwa_xl_jax.models.tklvae import TKLVAE


def pool_encoder(factor: int) -> Callable[[np.ndarray], np.ndarray]:
    """Average pooling by ``factor``: a VAE stand-in with the same shapes contract."""
    def encode(video):
        b, f, h, w, c = video.shape
        if h % factor or w % factor:
            raise ValueError(f"pool encoder: {h}x{w} is not divisible by {factor}")
        return video.reshape(b, f, h // factor, factor, w // factor, factor, c).mean((3, 5))
    return encode


def tklvae_encoder(vae_config: Any, variables: Any, latent_scale: float
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """The posterior mean of a T-KLVAE times ``latent_scale`` (the latents MTD diffuses)."""
    fn = _jitted(TKLVAE.from_config(vae_config), "encode")
    scale = np.float32(latent_scale)
    return lambda video: np.asarray(fn(variables, video, scale))


@functools.lru_cache(maxsize=8)
def _jitted(model, direction: str):
    """One jitted encoder / uint8 decoder per module: variables and scale are arguments, so every
    episode, workdir and call reuses one compile per shape."""
    def encode(variables, video, scale):
        return model.apply(variables, video, method="encode")[0] * scale

    def decode(variables, latents, scale):
        x = model.apply(variables, latents / scale, method="decode")
        return jnp.clip(jnp.round((x + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

    return jax.jit(encode if direction == "encode" else decode)


def encode_video(
    encode: Callable, frames: np.ndarray, vae_frames: int, vae_context: int
) -> np.ndarray:
    """Latents ``[T, h, w, c]`` of uint8 frames ``[T, H, W, 3]`` (or ``[B, T, ...]`` for several
    videos of one length), every frame encoded among its consecutive neighbours in calls of
    ``vae_frames`` frames (see module doc)."""
    window, context = windows.vae_windows(vae_frames, vae_context)
    frames = np.asarray(frames)
    batched = frames.ndim == 5
    video = (frames if batched else frames[None]).astype(np.float32) / 127.5 - 1.0
    out = np.concatenate(list(windows.apply_in_windows(encode, video, window, context)), axis=1)
    return out if batched else out[0]


def encode_split(reader: Any, encode: Callable, tokenizer: Callable, out_dir: str, split: str,
                 vae_frames: int, vae_context: int, latent_scale: float = 1.0,
                 progress: bool = False, batch: int = 8) -> str:
    """Encodes every episode of ``reader`` (chunks.EpisodeReader) into ``out_dir/split``, up to
    ``batch`` episodes of equal length per encoder call (the same calls, batched: the batch does
    not change any latent). The index is written last, so a cache without one is incomplete."""
    dest = _split_dir(out_dir, split)
    paths.as_path(dest).mkdir(parents=True, exist_ok=True)
    shape = None
    bar = None
    if progress:
        bar = tqdm(total=sum(reader.length(e) for e in range(len(reader))), unit="frame",
                   desc=f"latent cache ({split})", leave=True)
    by_length: dict = {}
    for e in range(len(reader)):
        by_length.setdefault(reader.length(e), []).append(e)
    for n, group in by_length.items():
        for i in range(0, len(group), batch):
            episodes = group[i:i + batch]
            read = [reader.read(e, np.arange(n)) for e in episodes]
            lat = encode_video(encode, np.stack([f for f, _ in read]), vae_frames, vae_context)
            for e, (_, captions), z in zip(episodes, read, lat):
                name = str(reader.table[e]["name"])
                _save(os.path.join(dest, f"{name}.latents.npy"), z.astype(np.float32))
                _save(os.path.join(dest, f"{name}.prompt_ids.npy"),
                      np.asarray(tokenizer(list(captions)), np.int32))
                shape = list(z.shape[1:])
            if bar is not None:
                bar.update(n * len(episodes))
    if bar is not None:
        bar.close()
    episodes = [{"name": str(reader.table[e]["name"]), "frames": int(reader.length(e))}
                for e in range(len(reader))]
    with paths.as_path(os.path.join(dest, "index.json")).open("w") as f:
        json.dump({"episodes": episodes, "latent_shape": shape, "latent_scale": float(latent_scale),
                   "vae_frames": int(vae_frames), "vae_context": int(vae_context)}, f)
    return dest


def read_index(latent_dir: str, split: str) -> dict | None:
    """The index of a complete cache split, or None."""
    path = paths.as_path(os.path.join(_split_dir(latent_dir, split), "index.json"))
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _split_dir(latent_dir: str, split: str) -> str:
    """A cache split's folder: local (``~`` expanded) or in a bucket (a URL, as it is)."""
    return os.path.join(latent_dir if paths.is_url(latent_dir) else os.path.expanduser(latent_dir),
                        split)


def _save(path: str, array: np.ndarray) -> None:
    with paths.as_path(path).open("wb") as f:
        np.save(f, array)


def _load(path: str) -> np.ndarray:
    """An array of the cache: memory-mapped from a local disk, read whole from a bucket."""
    if not paths.is_url(path):
        return np.load(path, mmap_mode="r")
    with paths.as_path(path).open("rb") as f:
        return np.load(f)


def build(config: Any, out_dir: str, vae_variables: Any, latent_scale: float, split: str = "train",
          progress: bool = True) -> str:
    """The cache of ``config.data``'s ``split`` encoded by a trained T-KLVAE, unless a complete one
    made with the same scale and windows is already there (then it is reused)."""
    config = Config.from_dict(config)
    index = read_index(out_dir, split)
    want = {"latent_scale": float(latent_scale), "vae_frames": int(config.vae_frames),
            "vae_context": int(config.vae_context)}
    if index is not None and all(index.get(k) == v for k, v in want.items()):
        return out_dir
    encode = tklvae_encoder(config.model.vae, vae_variables, latent_scale)
    encode_split(sources.episode_reader(config.data, split), encode,
                 sources.caption_tokenizer(config), out_dir, split, config.vae_frames,
                 config.vae_context, latent_scale, progress)
    return out_dir


def build_pooled(config: Any, out_dir: str, factor: int, split: str = "train",
                 progress: bool = True) -> str:
    """The cache of ``split`` with average pooling by ``factor`` as the encoder (pixel-space runs
    and tests; see :func:`pool_encoder`)."""
    config = Config.from_dict(config)
    return encode_split(sources.episode_reader(config.data, split), pool_encoder(factor),
                        sources.caption_tokenizer(config), out_dir, split,
                        config.vae_frames, config.vae_context,
                        progress=progress)


def check_scale(latent_dir: str, split: str, latent_scale: float) -> None:
    """A cache made with another VAE or scale would train the MTD on the wrong latents."""
    index = read_index(latent_dir, split)
    if index is None:
        return  # LatentReader names the missing cache
    got = index.get("latent_scale")
    if got is None or not np.isclose(got, latent_scale, rtol=1e-5):
        raise ValueError(
            f"the latent cache {latent_dir} was built with latent_scale={got}, but the "
            f"VAE export's latent_scale is {latent_scale}: rebuild it (delete the "
            "folder, or use --vae_workdir of this run) or clear data.latent_dir"
        )


def reconstruct(workdir: str, frames: np.ndarray) -> np.ndarray:
    """uint8 frames ``[T, H, W, 3]`` through a trained family's VAE the way the family sees them:
    encoded as this cache encodes (:func:`encode_video`), decoded as generation decodes (the same
    windows, the export's latent scale, rounding to uint8). What a probe reads on the result is
    the ceiling a generator of this family can reach."""
    config = store.load_config(workdir)
    variables, scale = store.read_vae(workdir, config)
    latents = encode_video(tklvae_encoder(config.model.vae, variables, scale), frames,
                           config.vae_frames, config.vae_context)
    fn = _jitted(TKLVAE.from_config(config.model.vae), "decode")
    decode = functools.partial(fn, variables, scale=np.float32(scale))
    window, context = windows.vae_windows(config.vae_frames, config.vae_context)
    return np.concatenate(list(windows.apply_in_windows(decode, latents[None], window, context)),
                          axis=1)[0]


class LatentReader:
    """Random access to a latent cache split; same table / length interface as EpisodeReader."""

    def __init__(self, latent_dir: str, split: str):
        self.dir = _split_dir(latent_dir, split)
        path = os.path.join(self.dir, "index.json")
        if not paths.as_path(path).is_file():
            raise FileNotFoundError(
                f"no latent cache at {path}; build one with `python -m nuwa_xl_jax.cache_latents"
                f" --config=... --out={latent_dir} --split={split}` or clear data.latent_dir")
        index = json.loads(paths.as_path(path).read_text())
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
                _load(os.path.join(self.dir, f"{name}.{k}.npy")) for k in ("latents", "prompt_ids"))
        lat, ids = self._arrays[episode]
        indices = np.asarray(indices)
        return np.asarray(lat[indices], np.float32), np.asarray(ids[indices], np.int32)


def distinct_prompt_ids(latent_dir: str, split: str) -> np.ndarray:
    """``[N, T]``: every distinct row of the split's prompt ids, sorted (the finite set of prompts
    training on this cache can draw)."""
    reader = LatentReader(latent_dir, split)
    rows = [_load(os.path.join(reader.dir, f"{e['name']}.prompt_ids.npy")) for e in reader.table]
    return np.unique(np.concatenate([np.asarray(r, np.int32) for r in rows]), axis=0)
