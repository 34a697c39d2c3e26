"""Reads frames of the synthetic cartoon world: scene, characters, and whether each keeps its
identity.

Why not label pixels by nearest palette colour (the first probe did): then so a frame with no
recognised pixel reads as scene 0 and a fade toward grey loses the scene. Here:

- scene: every background template (``synthetic.backgrounds``) is fitted to the frame as
  ``gain * template + offset`` (a fade toward any grey is exactly that): first on the median
  colour of each template region (sky, ground, block), which characters cannot move, then by
  least squares on the pixels that fit explains; it scores the share of pixels it explains. The
  best template names
  the scene if its gain is plausible and it explains most of the frame; otherwise the scene is
  UNKNOWN (-1): black, grey, noise and mush frames have no template that fits.
- characters: each pixel is unmixed against the fitted background as ``bg + alpha * (colour - bg)``
  for every character colour (faded like the background), so blurred, half-covered pixels still
  count; a character is visible when its largest connected blob of pixels that are at least half
  its colour is big enough for the resolution. Position and size are the blob's bounding box.
- identity: a blob wholly inside the frame and clear of other characters is compared with every
  shape of ``synthetic.SHAPES`` rendered at its box (small offsets and sizes tried, as pixels
  quantise): its shape agrees when the character's own shape fits about as well as the best
  (at 4-5 px, square/circle and diamond/cross are the same pixels, so ties are not errors).
  Its colour agrees when the blob's pure pixels are closest to the character's own colour.

Works at any resolution from 16x16; thresholds are in units of the 0-255 template colours.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from nuwa_xl_jax.data import synthetic

UNKNOWN = -1
SCENE_TOLERANCE = 30.0  # |pixel - fitted template| (RGB L2, template units) of an explained pixel
MIN_EXPLAINED = (
    0.6  # share of the frame the scene's template must explain (characters cover < 0.35)
)
GAIN_RANGE = (0.3, 1.6)    # contrast versus the template: 0.5 is a 50% fade; near 0 is a flat frame
COLOUR_TOLERANCE = 40.0    # off-line distance of a pixel from the background-to-character mix
MIN_ALPHA = 0.5  # a pixel is the character's when at least half of it is the character's colour
PURE_ALPHA = 0.8           # the same where the scene is unknown and the background only a guess
MIN_CONTRAST = 60.0        # a character colour this close to the background cannot be read there
MIN_AREA_SHARE = 0.3  # of the smallest character's drawn area: the least blob that is a character
SHAPE_SLACK = 0.08         # IoU by which the own shape may trail the best fitting one
MIN_SHAPE_IOU = 0.55       # the own shape must fit at least this well
CHUNK = 64                 # frames per vectorised block (bounds memory at 64x64 and above)


@dataclasses.dataclass(frozen=True)
class Reading:
    """What the probe reads off frames [T, H, W, 3]; K = len(synthetic.CHARACTERS).

    scene [T] int32 (UNKNOWN = -1); explained [T] share of pixels the best template explains;
    gain [T] its contrast; visible [T, K] bool; x, y [T, K] blob box centre in [0, 1] of width /
    height; size [T, K] box height / frame height (NaN where not visible); judged [T, K] the blob
    can be judged for identity (inside the frame, clear of others); colour_ok, shape_ok [T, K].
    """
    scene: np.ndarray
    explained: np.ndarray
    gain: np.ndarray
    visible: np.ndarray
    x: np.ndarray
    y: np.ndarray
    size: np.ndarray
    judged: np.ndarray
    colour_ok: np.ndarray
    shape_ok: np.ndarray

    def __len__(self) -> int:
        return len(self.scene)


def check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.shape[1] < 16 or frames.shape[2] < 16:
        raise ValueError(f"frames must be at least 16x16, got {frames.shape[1]}x{frames.shape[2]}")
    return frames


def _fit(y, x, w):
    """Per (frame, template) weighted least squares y ~ a * x + b over pixels and channels.

    y [T, P, 3] frames, x [S, P, 3] templates, w [T, S, P] pixel weights -> a, b, ok [T, S]
    (ok: the weighted pixels span two or more template colours, so the gain is determined)."""
    sw = 3 * w.sum(-1)
    sx = np.einsum("tsp,sp->ts", w, x.sum(-1))
    sy = np.einsum("tsp,tp->ts", w, y.sum(-1))
    sxx = np.einsum("tsp,sp->ts", w, (x * x).sum(-1))
    sxy = np.einsum("tsp,tpc,spc->ts", w, y, x)
    det = sw * sxx - sx * sx
    ok = det > 1e-3 * np.maximum(sw * sxx, 1e-9)
    a = np.where(ok, (sw * sxy - sx * sy) / np.where(ok, det, 1), 0.0)
    b = (sy - a * sx) / np.maximum(sw, 1e-9)
    return a, b, ok


def _residual(y, x, a, b):
    """|y - (a x + b)| per pixel [T, S, P], in template units (divided by the gain)."""
    pred = a[..., None, None] * x[None] + b[..., None, None]
    r = np.sqrt(((y[:, None] - pred) ** 2).sum(-1))
    return r / np.maximum(np.abs(a), 1e-3)[..., None]


def _region_medians(y, x):
    """A first fit robust to characters: each template region (sky, ground, block) stands for
    the frame's median colour over it, weighted by its area (a character covers < half a region
    but for the small block, whose weight is small)."""
    T, S, P = len(y), len(x), x.shape[1]
    w = np.zeros((T, S, P), np.float32)
    target = np.zeros((T, S, P, 3), np.float32)
    for s in range(S):
        for colour in synthetic.SCENE_COLOURS[s]:
            region = np.flatnonzero((x[s] == colour).all(-1))
            if len(region):
                target[:, s, region] = np.median(y[:, region], axis=1)[:, None]
                w[:, s, region] = 1
    sw = 3 * w.sum(-1)
    sx = np.einsum("tsp,sp->ts", w, x.sum(-1))
    sy = np.einsum("tsp,tspc->ts", w, target)
    sxx = np.einsum("tsp,sp->ts", w, (x * x).sum(-1))
    sxy = np.einsum("tspc,spc->ts", target, x)
    det = sw * sxx - sx * sx
    a = (sw * sxy - sx * sy) / det
    return a, (sy - a * sx) / sw


def _scene(y, x):
    """Scene, explained share, gain and offset of the best fitting template, per frame."""
    T = len(y)
    a, b = _region_medians(y, x)
    r = _residual(y, x, a, b)
    a1, b1, ok = _fit(y, x, (r <= SCENE_TOLERANCE).astype(np.float32))  # refit on explained pixels
    a, b = np.where(ok, a1, a), np.where(ok, b1, b)
    share = (_residual(y, x, a, b) <= SCENE_TOLERANCE).mean(-1)
    plausible = (a >= GAIN_RANGE[0]) & (a <= GAIN_RANGE[1])
    best = np.where(plausible, share, -1).argmax(-1)
    t = np.arange(T)
    share = np.where(
        plausible[t, best], share[t, best], 0.0
    )  # no plausible template explains nothing
    scene = np.where(share >= MIN_EXPLAINED, best, UNKNOWN)
    return scene.astype(np.int32), share, a[t, best], b[t, best]


def _unmix(y, bg, a, b):
    """Per pixel and character: (alpha, off-line residual) of y = bg + alpha * (colour - bg)."""
    colours = a[:, None, None] * synthetic.CHARACTER_COLOURS.astype(np.float32) + b[:, None, None]
    e = colours[:, None] - bg[:, :, None]                       # [T, P, K, 3]
    d = (y - bg)[:, :, None]                                    # [T, P, 1, 3]
    ee = (e * e).sum(-1)
    alpha = (d * e).sum(-1) / np.maximum(ee, 1e-6)
    res = np.sqrt(((d - alpha[..., None] * e) ** 2).sum(-1))
    scale = np.maximum(a, 1e-3)[:, None, None]
    return alpha, res / scale, np.sqrt(ee) / scale


def read(frames) -> Reading:
    """Reads every frame of ``frames`` [T, H, W, 3] uint8 (see module doc)."""
    frames = check_frames(frames)
    T, H, W, _ = frames.shape
    parts = [_read_chunk(frames[i:i + CHUNK]) for i in range(0, T, CHUNK)]
    return Reading(*(np.concatenate([getattr(p, f.name) for p in parts])
                     for f in dataclasses.fields(Reading)))


def _read_chunk(frames) -> Reading:
    T, H, W, _ = frames.shape
    P, K = H * W, len(synthetic.CHARACTERS)
    y = frames.reshape(T, P, 3).astype(np.float32)
    x = synthetic.backgrounds((H, W)).reshape(-1, P, 3).astype(np.float32)
    # The scene is fitted on a 3x3 median of the frame: grain averages out, straight edges stay.
    smooth = ndimage.median_filter(frames, size=(1, 3, 3, 1), mode="nearest")
    scene, explained, gain, offset = _scene(smooth.reshape(T, P, 3).astype(np.float32), x)
    known = scene != UNKNOWN
    # Background: the fitted template; where the scene is unknown, the frame's median colour.
    bg = np.where(known[:, None, None],
                  gain[:, None, None] * x[np.maximum(scene, 0)] + offset[:, None, None],
                  np.median(y, axis=1, keepdims=True))
    gain = np.where(known, gain, 1.0).astype(np.float32)
    offset = np.where(known, offset, 0.0).astype(np.float32)
    alpha, res, contrast = _unmix(y, bg, gain, offset)
    # Without a fitted background (unknown scene) only nearly pure character colour counts.
    lo = np.where(known, MIN_ALPHA, PURE_ALPHA)[:, None, None]
    tol = np.where(known, COLOUR_TOLERANCE, COLOUR_TOLERANCE / 2)[:, None, None]
    fits = (alpha >= lo) & (alpha <= 1.5) & (res <= tol) & (contrast >= MIN_CONTRAST)
    owner = np.where(fits, res, np.inf).argmin(-1)
    owner = np.where(fits.any(-1), owner, -1).reshape(T, H, W)
    alpha = alpha.reshape(T, H, W, K)

    visible = np.zeros((T, K), bool)
    xs, ys, sz = (np.full((T, K), np.nan, np.float32) for _ in range(3))
    judged, colour_ok, shape_ok = (np.zeros((T, K), bool) for _ in range(3))
    min_area = max(2.0, MIN_AREA_SHARE * _smallest_area(H, W))
    eight = np.ones((3, 3), bool)
    for t in range(T):
        if not (owner[t] >= 0).any():
            continue
        for k in range(K):
            mask = owner[t] == k
            if mask.sum() < min_area:
                continue
            lab, n = ndimage.label(mask, eight)
            sizes = np.bincount(lab.ravel())[1:]
            # A blob with no pure pixel lying wholly along the edges of two other characters is
            # the blurred seam between them (their colours mixed), not a character.
            others = ndimage.binary_dilation((owner[t] >= 0) & ~mask, eight)
            touching = sum(np.bincount(lab[ndimage.binary_dilation(owner[t] == j, eight) & mask],
                                       minlength=n + 1)[1:] > 0 for j in range(K) if j != k)
            pure = np.bincount(lab[mask & (np.abs(alpha[t, ..., k] - 1) < 0.15)], minlength=n + 1)[
                1:
            ]
            seam = (
                (np.bincount(lab[others & mask], minlength=n + 1)[1:] == sizes)
                & (touching >= 2)
                & (pure == 0)
            )
            sizes[seam] = 0
            if sizes.max() < min_area:
                continue
            blob = lab == sizes.argmax() + 1
            rows, cols = np.flatnonzero(blob.any(1)), np.flatnonzero(blob.any(0))
            top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            visible[t, k] = True
            xs[t, k], ys[t, k] = (left + right) / (2 * W), (top + bottom) / (2 * H)
            sz[t, k] = (bottom - top) / H
            inside = top > 0 and left > 0 and bottom < H and right < W
            judged[t, k] = inside and not (others & blob).any()
            pure = blob & (alpha[t, ..., k] >= 0.75)
            colour_ok[t, k] = _colour_is(
                frames[t][pure if pure.any() else blob], k, gain[t], offset[t]
            )
            if judged[t, k]:
                shape_ok[t, k] = _shape_is(blob, (top, bottom, left, right), k)
    return Reading(scene, explained.astype(np.float32), gain, visible, xs, ys, sz, judged,
                   colour_ok, shape_ok)


def _smallest_area(H: int, W: int) -> float:
    """Pixels of the smallest drawn character (the 'tall' shape at the minimum size)."""
    h = synthetic.MIN_SIZE * H
    return h * h * 0.5


def _colour_is(pixels, k: int, gain: float, offset: float) -> bool:
    """The blob's median colour is nearest to character k's (faded like the frame) of all six."""
    colours = gain * synthetic.CHARACTER_COLOURS.astype(np.float32) + offset
    med = np.median(pixels.astype(np.float32), axis=0)
    return int(np.abs(colours - med).sum(-1).argmin()) == k


def _shape_ious(blob, box) -> np.ndarray:
    """Best IoU of the blob with each of SHAPES drawn at its box (sub-pixel offsets and sizes)."""
    top, bottom, left, right = box
    H, W = blob.shape
    r0, r1, c0, c1 = max(top - 2, 0), min(bottom + 2, H), max(left - 2, 0), min(right + 2, W)
    win = blob[r0:r1, c0:c1]
    rows = (np.arange(r0, r1) + 0.5)[None, :, None]
    cols = (np.arange(c0, c1) + 0.5)[None, None, :]
    h = bottom - top
    cy, cx = (top + bottom) / 2, (left + right) / 2
    grid = np.array([(s, oy, ox) for s in (h - 0.75, h - 0.25, h + 0.25, h + 0.75)
                     for oy in (-0.25, 0, 0.25) for ox in (-0.25, 0, 0.25)], np.float32)
    s, oy, ox = (grid[:, i, None, None] for i in range(3))
    dx, dy = (cols - cx - ox) / s, (rows - cy - oy) / s
    out = np.zeros(len(synthetic.SHAPES), np.float32)
    for i, shape in enumerate(synthetic.SHAPES):
        m = synthetic._shape_mask(shape, dx, dy)
        inter = (m & win).sum((1, 2))
        union = (m | win).sum((1, 2))
        out[i] = (inter / np.maximum(union, 1)).max()
    return out


def _shape_is(blob, box, k: int) -> bool:
    ious = _shape_ious(blob, box)
    return bool(ious[k] >= MIN_SHAPE_IOU and ious[k] >= ious.max() - SHAPE_SLACK)
