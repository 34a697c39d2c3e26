"""Windowed T-KLVAE decoding: equals whole-sequence decoding, shows no seam, one compile.

The tiny VAE (x4, 16x16 frames -> 4x4 latents) is jitted once with its variables as an argument,
so the three weight sets below share compilations (one per call length).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from nuwa_xl_jax.configuration.presets import vae as vae_config
from nuwa_xl_jax.dod.compiled import program_bytes
from nuwa_xl_jax.dod.decode import (
    _jitted_decode,
    compute_decoder,
    decode_windows,
    receptive_field,
    redecode,
    sized_decode_fn,
    vae_decode_fn,
)
from nuwa_xl_jax.io import videos
from nuwa_xl_jax.models import windows
from nuwa_xl_jax.models.tklvae import TKLVAE, is_temporal_param
from nuwa_xl_jax.weights.vae import identity_temporal_params

FRAMES, WINDOW = 60, 8


@pytest.fixture(scope="module")
def vae():
    """The tiny T-KLVAE: random spatial weights, temporal layers at their identity init (built
    without running the whole init, which dominates on CPU)."""
    cfg = vae_config("tiny")
    module = TKLVAE.from_config(cfg)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1, 16, 16, 3)))
    shapes = traverse_util.flatten_dict(nn.meta.unbox(shapes["params"]), sep="/")
    rng = np.random.default_rng(0)
    flat = {}
    for k, s in shapes.items():
        if k.endswith("kernel"):
            flat[k] = rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape).astype(np.float32)
        else:  # norm scales 1, biases 0
            flat[k] = np.full(s.shape, float(k.endswith("scale")), np.float32)
    flat.update(identity_temporal_params(module))
    return module, cfg, flat


def _variables(flat, conv_noise, attention_noise, seed=1):
    """Temporal layers moved off their identity init (trained-like): Dirac convs + noise, a
    non-zero temporal attention output projection."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in flat.items():
        v = np.asarray(v)
        if is_temporal_param(k):
            scale = attention_noise if "attentions" in k else conv_noise
            fan_in = np.sqrt(v.shape[0]) if v.ndim > 1 else 1.0
            v = v + (scale / fan_in * rng.normal(size=v.shape)).astype(np.float32)
        out[k] = v
    return {"params": traverse_util.unflatten_dict(out, sep="/")}


def _smooth_latents(frames=FRAMES):
    """Latents that move slowly along a circle, so the natural frame-to-frame change is small and
    a seam would stand out."""
    a, b = np.asarray(jax.random.normal(jax.random.key(1), (2, 4, 4, 4)))
    t = np.arange(frames)[:, None, None, None] * 2 * np.pi / frames
    return (a * np.cos(t) + b * np.sin(t)).astype(np.float32)


def _decode(vae, variables, latents, window, context):
    fn = vae_decode_fn(vae[0], variables, uint8=False)
    whole = np.asarray(fn(latents[None]))[0]
    windowed = np.concatenate(list(decode_windows(fn, latents, window, context)))
    return whole, windowed


def _seam(windowed, whole, window):
    """How much more frames change across window borders than whole-sequence decoding changes
    there (max over borders and pixels), relative to the largest frame-to-frame change of the
    whole-sequence video. 0: no seam; ~1: a jump as large as the biggest real motion."""
    excess = np.abs(np.diff(windowed, axis=0)) - np.abs(np.diff(whole, axis=0))
    border = np.arange(len(excess)) % window == window - 1
    return excess[border].max() / np.abs(np.diff(whole, axis=0)).max()


def test_receptive_field_counts_the_decoders_temporal_convs(vae):
    """Changing one latent frame changes exactly the frames within receptive_field of it (temporal
    attention at identity, so only the convs mix frames)."""
    module, cfg, flat = vae
    rf = receptive_field(cfg)
    assert rf == 20 and receptive_field(vae_config("sd")) == 33
    cfg2 = vae_config("tiny")
    cfg2.temporal = False
    assert receptive_field(cfg2) == 0
    fn = vae_decode_fn(module, _variables(flat, 0.3, 0.0), uint8=False)
    z = _smooth_latents()
    z2 = z.copy()
    z2[30] += 10.0
    change = np.abs(np.asarray(fn(z2[None]) - fn(z[None]))[0]).max(axis=(1, 2, 3))
    reached = np.flatnonzero(change > 0)
    assert reached.min() >= 30 - rf and reached.max() <= 30 + rf, reached
    assert reached.min() <= 30 - rf + 2 and reached.max() >= 30 + rf - 2, "bound far too loose"


def test_identity_temporal_layers_need_no_context(vae):
    whole, windowed = _decode(vae, _variables(vae[2], 0.0, 0.0), _smooth_latents(), WINDOW, 0)
    np.testing.assert_allclose(windowed, whole, atol=1e-5)


def test_windowed_equals_whole_with_trained_temporal_convs(vae):
    """context = receptive_field: exact (fp32); no context: seams that the seam measure sees."""
    module, cfg, flat = vae
    variables, z = _variables(flat, 0.3, 0.0), _smooth_latents()
    whole, windowed = _decode(vae, variables, z, WINDOW, receptive_field(cfg))
    np.testing.assert_allclose(windowed, whole, atol=1e-5)
    _, naive = _decode(vae, variables, z, WINDOW, 0)
    assert np.abs(naive - whole).max() > 0.1
    assert _seam(naive, whole, WINDOW) > 0.5, (
        "the seam measure must see context-free windows' seams"
    )


def test_temporal_attention_makes_the_match_approximate(vae):
    """Temporal attention is global over a call, so windows differ from whole-sequence decoding
    by a bounded amount (measured: max 0.33, mean 0.033 on outputs spanning about [-2, 2.6]),
    and adjacent calls differ a little, leaving a small seam: a quarter or less of the one of
    context-free windows (measured 0.37 vs 1.9 of the largest real frame-to-frame change)."""
    module, cfg, flat = vae
    variables, z = _variables(flat, 0.3, 0.3), _smooth_latents()
    whole, windowed = _decode(vae, variables, z, WINDOW, receptive_field(cfg))
    err = np.abs(windowed - whole)
    assert err.max() < 0.5 and err.mean() < 0.06, (err.max(), err.mean())
    assert err.max() > 1e-4, "the attention must have been perturbed"
    _, naive = _decode(vae, variables, z, WINDOW, 0)
    seam, naive_seam = _seam(windowed, whole, WINDOW), _seam(naive, whole, WINDOW)
    assert seam < 0.5 and seam < 0.25 * naive_seam, (seam, naive_seam)


def test_decoding_in_bfloat16_casts_the_weights_once_and_matches_fp32(vae):
    module, _, flat = vae
    variables, z = _variables(flat, 0.3, 0.0), _smooth_latents(4)
    m16, v16 = compute_decoder(module, variables, "bfloat16")
    assert m16.dtype == jnp.bfloat16
    assert {a.dtype for a in jax.tree.leaves(v16)} == {jnp.dtype(jnp.bfloat16)}
    assert compute_decoder(module, variables, "float32") == (module, variables)  # fp32: as is
    x32 = vae_decode_fn(module, variables, uint8=False)(z[None])
    x16 = vae_decode_fn(m16, v16, uint8=False)(z[None])
    assert x16.dtype == jnp.float32
    err = np.abs(np.asarray(x16) - np.asarray(x32)).max()
    assert 0 < err < 0.1, err  # computed in bf16, and the same pictures


def test_uint8_and_scaled_latents(vae):
    module, _, flat = vae
    variables, z = _variables(flat, 0.3, 0.0), _smooth_latents(4)
    frames = np.concatenate(list(decode_windows(
        vae_decode_fn(module, variables, scaled=True), z * module.scaling_factor, 2, 1)))
    reference = vae_decode_fn(module, variables, uint8=False)(z[None])[0]
    assert frames.dtype == np.uint8 and frames.shape == (4, 16, 16, 3)
    assert np.abs(frames.astype(int) - videos.to_uint8(reference).astype(int)).max() <= 1


def _moving_average(z, passes=3):
    """A stand-in decoder with a temporal receptive field of ``passes`` (edge-replicated)."""
    x = z.astype(np.float64)
    for _ in range(passes):
        p = np.concatenate([x[:, :1], x, x[:, -1:]], axis=1)
        x = (p[:, :-2] + p[:, 1:-1] + p[:, 2:]) / 3
    return x


@pytest.mark.parametrize("frames", [1, 5, 13, 14, 30, 37])
@pytest.mark.parametrize("piece", [None, 1, 3, 7])
def test_streamed_pieces_fixed_call_size_and_exact_ends(frames, piece):
    z = np.random.default_rng(frames).normal(size=(frames, 2, 2, 1))
    calls = []

    def decode(x):
        calls.append(x.shape[1])
        return _moving_average(x)

    source = z if piece is None else (z[i:i + piece] for i in range(0, frames, piece))
    out = list(decode_windows(decode, source, 4, 3))
    np.testing.assert_allclose(np.concatenate(out), _moving_average(z[None])[0], atol=1e-12)
    assert all(len(o) <= 4 for o in out)
    assert calls == [frames] if frames <= 10 else set(calls) == {10}, calls
    if frames > 10:
        assert len(calls) == -(-frames // 4), "one call per window"


@pytest.mark.parametrize("frames,per_batch", [(30, 2), (37, 3), (37, 100), (9, 4), (14, 1)])
def test_calls_batched_together_give_the_same_frames(frames, per_batch):
    z = np.random.default_rng(frames).normal(size=(frames, 2, 2, 1))
    rows = []

    def decode(x):
        rows.append(x.shape[0])
        return _moving_average(x)

    one = np.concatenate(list(decode_windows(_moving_average, z, 4, 3)))
    batched = list(decode_windows(decode, z, 4, 3, calls_per_batch=per_batch))
    np.testing.assert_array_equal(np.concatenate(batched), one)
    calls = -(-frames // 4) if frames > 10 else 1
    assert sum(rows) == calls and max(rows) <= per_batch  # every call once, k at a time
    assert len(rows) == -(-calls // per_batch)


@pytest.mark.parametrize("frames", [5, 10, 13, 30, 37])
def test_window_calls_are_the_calls_decode_windows_makes(frames):
    """Each call's input frames, read back from a video whose values are the frame indices."""
    z = np.arange(frames, dtype=np.float64).reshape(frames, 1, 1, 1)
    seen = []

    def decode(x):
        seen.extend((int(r[0, 0, 0, 0]), int(r[-1, 0, 0, 0]) + 1) for r in x)
        return x

    list(decode_windows(decode, z, 4, 3))
    calls = windows.window_calls(frames, 4, 3)
    assert sorted({(lo, hi) for lo, hi, _, _ in calls}) == sorted(set(seen))
    kept = np.concatenate([np.arange(a, b) for _, _, a, b in calls])
    np.testing.assert_array_equal(kept, np.arange(frames))  # every frame kept once, in order


@pytest.mark.parametrize("frames,changed", [(37, [20]), (37, [0, 36]), (13, [12]), (9, [4])])
def test_redecode_decodes_only_the_windows_that_read_a_changed_latent(frames, changed):
    z = np.random.default_rng(frames).normal(size=(frames, 2, 2, 1))
    old = np.concatenate(list(decode_windows(_moving_average, z, 4, 3)))
    new_z = z.copy()
    new_z[changed] += 5.0
    mask = np.zeros(frames, bool)
    mask[changed] = True
    rows = []

    def decode(x):
        rows.append(x.shape[0])
        return _moving_average(x)

    got, redone = redecode(decode, new_z, old, mask, 4, 3, calls_per_batch=2)
    whole = np.concatenate(list(decode_windows(_moving_average, new_z, 4, 3)))
    np.testing.assert_allclose(got, whole, atol=1e-12)  # = decoding the whole edited video
    np.testing.assert_array_equal(got[~redone], old[~redone])  # the rest: the old frames
    calls = [w for w in windows.window_calls(frames, 4, 3) if mask[w[0]:w[1]].any()]
    assert sum(rows) == len({(lo, hi) for lo, hi, _, _ in calls})
    assert redone.sum() == sum(b - a for _, _, a, b in calls) < frames or frames <= 10


def test_decode_windows_sized_to_memory(vae):
    module, _, flat = vae
    variables, z = _variables(flat, 0.3, 0.0), _smooth_latents(20)
    z = z * module.scaling_factor
    whole, k_whole = sized_decode_fn(module, variables, z.shape[1:], 20, 2, 1, budget=2**40)
    assert k_whole == 10  # everything fits: all ten calls in one
    one = np.concatenate(
        list(decode_windows(vae_decode_fn(module, variables, scaled=True), z, 2, 1))
    )
    # A budget of three calls' worth: XLA's own estimate decides, and the frames do not change.
    jitted = _jitted_decode(module, True, True)
    three = program_bytes(jitted.lower(
        variables, jax.ShapeDtypeStruct((3, 4, *z.shape[1:]), np.float32)).compile())
    fn, k = sized_decode_fn(module, variables, z.shape[1:], 20, 2, 1, budget=three)
    assert 1 <= k <= 3 and program_bytes(jitted.lower(
        variables, jax.ShapeDtypeStruct((k, 4, *z.shape[1:]), np.float32)).compile()) <= three
    # Same calls, batched: equal up to float rounding of the batched kernels (a uint8 step at most).
    for f, n in ((fn, k), (whole, k_whole)):
        got = np.concatenate(list(decode_windows(f, z, 2, 1, n))).astype(int)
        assert (
            got.shape == one.shape and np.abs(got - one).max() <= 1 and np.mean(got != one) < 1e-3
        )


def test_one_compile_and_batched_input():
    traces = []

    @jax.jit
    def decode(x):
        traces.append(x.shape)
        return jnp.cumsum(x, axis=-1) * 2.0

    z = np.random.default_rng(0).normal(size=(2, 50, 2, 2, 3)).astype(np.float32)
    out = list(decode_windows(decode, z, 8, 5))
    assert len(traces) == 1 and traces[0] == (2, 18, 2, 2, 3)
    got = np.concatenate(out, axis=1)
    np.testing.assert_allclose(got, np.cumsum(z, axis=-1) * 2.0, rtol=1e-6)


def test_argument_errors():
    f = lambda x: x
    z = np.zeros((4, 2, 2, 4))
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        list(decode_windows(f, z, 0, 1))
    with pytest.raises(ValueError, match="context must be an integer >= 0"):
        list(decode_windows(f, z, 2, -1))
    with pytest.raises(ValueError, match=r"video must be rank 4 \[F, \.\.\.\]"):
        list(decode_windows(f, np.zeros((4, 2, 2)), 2, 1))
    with pytest.raises(ValueError, match="every piece must have the shape of the first"):
        list(decode_windows(f, iter([z, np.zeros((3, 2, 2, 5))]), 2, 1))
