"""The diffusion-over-diffusion engine on small random-weight denoisers.

Most tests use a toy denoiser with MTDModels.denoise's signature (text embedding per frame, t,
visual condition, mask, level embedding, mixing across frames) that compiles in a second; one
test runs the real tiny MTD UNet + text encoder (configs/synthetic.py:tiny, random weights).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax import parallel
from nuwa_xl_jax.diffusion import samplers, schedules
from nuwa_xl_jax.dod import baselines, engine, memory, segments
from nuwa_xl_jax.dod import level_models as lm
from nuwa_xl_jax.dod import plan as planlib

L = 4
LATENT = (8, 8, 4)
T = 5
VOCAB = 11


def toy_params(seed: int):
    """Random weights of the toy denoiser, as {"mtd": ..., "text": ...} like an export."""
    r = np.random.default_rng(seed)
    c = LATENT[-1]
    w = lambda *s: jnp.asarray(r.normal(0, 0.5, s), jnp.float32)
    return {"mtd": {"x": w(c, c), "cond": w(c, c), "mask": w(c), "mix": w(c, c), "out": w(c, c),
                    "freq": w(c), "level": w(4, c)},
            "text": {"emb": w(VOCAB, c)}}


def toy_denoise(params, x, t, ids, cond, mask, level):
    """x [B, F, h, w, c], t [B, F], ids [B, F, T], cond like x, mask [B, F], level [B]."""
    p = params["mtd"]
    per_frame = (params["text"]["emb"][ids].mean(-2) + jnp.sin(t[..., None] * 1e-2 * p["freq"])
                 + mask[..., None] * p["mask"] + p["level"][level][:, None])  # [B, F, c]
    h = x @ p["x"] + cond @ p["cond"] + per_frame[:, :, None, None]
    h = h + jnp.mean(h, axis=1, keepdims=True) @ p["mix"]  # frames see each other (and the ends)
    return 0.5 * jnp.tanh(h) @ p["out"]


SCHEDULE = schedules.make_schedule("scaled_linear", 1000)


def prompts(n: int, seed: int = 0):
    return np.random.default_rng(seed).integers(1, VOCAB, (n, T)).astype(np.int32)


NULL = np.zeros(T, np.int32)


def models_for(depth: int, shared: bool = False):
    if shared:
        return lm.level_models(toy_denoise, toy_params(0), toy_params(1), depth, "shared")
    return lm.level_models(toy_denoise, toy_params(0), [toy_params(k) for k in range(1, depth)],
                               depth)


def mesh_of(n: int):
    return parallel.make_mesh(devices=jax.devices()[:n])


# One sampler setting for every toy run, so runs of equal shape share one compile across tests.
# DDPM: the per-step noise makes per-segment keys matter.
DDPM = dict(sampler="ddpm", steps=3, guidance_scale=2.0)


def run(plan, mesh, shared=False, ids=None, seed=7, models=None, **kw):
    ids = prompts(plan.frames) if ids is None else ids
    models = models_for(plan.depth, shared) if models is None else models
    return engine.run(plan, models, ids, NULL, SCHEDULE, LATENT, seed=seed, mesh=mesh,
                      **{**DDPM, **kw})


# ------------------------------------------------------------------------------------------


def test_batched_level_equals_segments_one_at_a_time():
    """All 9 segments of level 2 in one call == one call per segment, with DDPM: every step's
    noise comes from the segment's own key, not from its batch position."""
    plan = planlib.make_plan(L, 3)
    assert plan.levels[2].num_segments == 9
    batched = run(plan, mesh_of(1))
    assert [(s.calls, s.chunk) for s in batched.levels] == [(1, 1), (1, 3), (1, 9)]
    single = baselines.dod_per_segment(plan, models_for(3), prompts(plan.frames), NULL, SCHEDULE,
                                       LATENT, seed=7, mesh=parallel.make_mesh(), **DDPM)
    assert single.sequential_calls == 1 + 3 + 9
    assert batched.latents.shape == (28, *LATENT)
    np.testing.assert_allclose(np.asarray(batched.latents), np.asarray(single.latents),
                               rtol=1e-5, atol=1e-5)


def test_one_segment_equals_a_plain_sampler_call():
    """The vmapped engine is the sampler itself: segment 1 of level 1 (shared local model, level 1
    passed to the model) equals samplers.sample with that segment's key and inputs."""
    plan = planlib.make_plan(L, 2)
    seen = {}
    res = run(plan, mesh_of(1), shared=True,
              on_level=lambda lv, b: seen.setdefault(lv.level, np.asarray(b)))
    lv = plan.levels[1]
    seg = 1
    frames = lv.frames[seg]
    mask = lv.given[seg].astype(np.float32)[None]
    given = (seen[0][frames] * mask[0, :, None, None, None])[None]
    params = toy_params(1)

    def model_fn(x, t, ids, cond, mask, level):
        return toy_denoise(params, x, t, ids, cond, mask, level)

    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(7), 1), seg)  # DESIGN.md
    ids = prompts(plan.frames)[lv.prompts[seg]][None]
    want = samplers.sample("ddpm", model_fn, SCHEDULE, key, given.shape, steps=3,
                           cond={"ids": ids, "cond": given, "mask": mask,
                                 "level": jnp.array([1], jnp.int32)},
                           null_cond={"ids": NULL[None, None]}, guidance_scale=2.0,
                           given=given, mask=mask, given_t=0)[0]
    got = np.asarray(res.latents)[frames[1:-1]]
    np.testing.assert_allclose(got, np.asarray(want)[1:-1], rtol=1e-5, atol=1e-5)
    # The level reaches the model: the same params as level 2 of a shared model differ.
    other = segments.sample_segments(
        lm.LevelModel(toy_denoise, params),
        SCHEDULE,
        samplers.Settings(**{"name": "ddpm", "steps": 3, "guidance_scale": 2.0}),
        mesh_of(1),
        level_key=jax.random.fold_in(jax.random.key(7), 1),
        seg_index=np.arange(3),
        ids=prompts(plan.frames)[lv.prompts],
        given=seen[0][lv.frames] * lv.given[..., None, None, None],
        mask=lv.given,
        level=np.full(3, 2, np.int32),
        null_ids=NULL,
    )
    assert np.abs(np.asarray(other)[seg, 1:-1] - got).max() > 1e-3


def test_same_video_on_one_and_eight_devices_and_chunks_compile_once():
    plan = planlib.make_plan(L, 3)
    one = run(plan, mesh_of(1))
    eight = run(plan, parallel.make_mesh((-1, 2)), max_segments_per_call=8)
    # 3 segments padded to the 8 devices; 9 segments in 2 chunks of 8 that reuse level 1's compile.
    assert [(s.calls, s.chunk) for s in eight.levels] == [(1, 1), (1, 8), (2, 8)]
    assert eight.levels[2].traces == 0
    np.testing.assert_allclose(np.asarray(one.latents), np.asarray(eight.latents),
                               rtol=1e-5, atol=1e-5)
    other_seed = run(plan, mesh_of(1), seed=8)
    assert np.abs(np.asarray(other_seed.latents) - np.asarray(one.latents)).max() > 1e-2


def test_chunks_equal_one_call_and_compile_once_per_shape():
    plan = planlib.make_plan(L, 3)  # 1, 3, 9 segments
    whole = run(plan, mesh_of(1))
    chunked = run(plan, mesh_of(1), max_segments_per_call=2)
    # Fixed-size padded chunks: 3 -> 2 + 2 (one padded row), 9 -> 5 x 2; one compile at most for
    # the 2-segment shape (level 1), none for level 2's five chunks or for a second run.
    assert [(s.calls, s.chunk) for s in chunked.levels] == [(1, 1), (2, 2), (5, 2)]
    assert chunked.levels[1].traces <= 1 and chunked.levels[2].traces == 0
    assert chunked.sequential_calls == 8
    before = segments.trace_count()
    again = run(plan, mesh_of(1), max_segments_per_call=2)
    assert segments.trace_count() == before and [s.traces for s in again.levels] == [0, 0, 0]
    np.testing.assert_allclose(np.asarray(chunked.latents), np.asarray(whole.latents),
                               rtol=1e-5, atol=1e-5)


def test_another_storyboard_reuses_the_compile():
    """The prompt table is padded to a bucket: videos with 3 and 5 distinct prompts run the same
    level programs (no new trace), and the padding changes no frame."""
    plan = planlib.make_plan(L, 2)
    three = prompts(3)[np.arange(plan.frames) % 3]
    five = prompts(5, seed=1)[np.arange(plan.frames) % 5]
    first = run(plan, mesh_of(1), ids=three)
    before = segments.trace_count()
    second = run(plan, mesh_of(1), ids=five)
    assert segments.trace_count() == before and [s.traces for s in second.levels] == [0, 0]
    table, index = segments.encode_table(lm.LevelModel(toy_denoise, toy_params(0)), mesh_of(1),
                                       three, NULL)
    assert table.shape[0] == 8 and index.max() == 2  # 3 prompts + null, padded with null rows
    assert np.abs(np.asarray(first.latents) - np.asarray(second.latents)).max() > 1e-3


def test_exact_length_cuts_frames_and_skips_segments_past_the_end():
    # L=4, depth 2: level 0 at 0, 3, 6, 9; N=5 needs only the segments starting at 0 and 3 (the
    # one at 3 straddles N and uses frame 6 as its end); the one at 6 is never computed.
    res = run(planlib.make_plan(L, 2, frames=5), mesh_of(1))
    assert res.latents.shape == (5, *LATENT)
    assert [s.segments for s in res.levels] == [1, 2]
    full = run(planlib.make_plan(L, 2), mesh_of(1))
    assert full.latents.shape == (10, *LATENT) and [s.segments for s in full.levels] == [1, 3]
    # Depth 3, N=11: level 1 needs the pairs starting at 0 and 9, level 2 the 4 pairs below 11.
    deep = run(planlib.make_plan(L, 3, frames=11), mesh_of(1), max_segments_per_call=2)
    assert deep.latents.shape == (11, *LATENT)
    assert [(s.segments, s.calls) for s in deep.levels] == [(1, 1), (2, 1), (4, 2)]
    assert np.all(np.isfinite(np.asarray(deep.latents)))


def test_given_frames_are_carried_bit_exact():
    plan = planlib.make_plan(L, 3)
    after = {}
    res = run(
        plan, mesh_of(1), on_level=lambda lv, buf: after.setdefault(lv.level, np.asarray(buf))
    )
    out = np.asarray(res.latents)
    for lv in plan.levels[1:]:
        ends = lv.frames[lv.given]
        above = after[lv.level - 1][ends]
        assert np.array_equal(after[lv.level][ends], above)  # the level did not touch its ends
        assert np.array_equal(out[ends], above)
        written = lv.frames[lv.writes]  # ... and wrote every other frame of its segments
        assert np.all(np.abs(after[lv.level][written]).reshape(len(written), -1).max(1) > 0)
        assert not np.any(after[lv.level - 1][written])
    # The level call itself returns given positions exactly (imposed, not denoised).
    lv = plan.levels[1]
    mask = lv.given.astype(np.float32)
    given = after[0][lv.frames] * mask[..., None, None, None]
    x = np.asarray(segments.sample_segments(
        models_for(3)[1], SCHEDULE, samplers.Settings("ddpm", 3, 2.0), mesh_of(1),
        level_key=jax.random.fold_in(jax.random.key(7), 1), seg_index=np.arange(3),
        ids=prompts(plan.frames)[lv.prompts], given=given, mask=mask, level=np.ones(3, np.int32),
        null_ids=NULL))
    assert np.array_equal(x[:, [0, -1]], given[:, [0, -1]])
    np.testing.assert_allclose(x[:, 1:-1], out[lv.frames[:, 1:-1]], rtol=1e-5, atol=1e-5)


def test_prompts_steer_the_frames_they_belong_to():
    """Changing the prompt of frame 5 only (N=10, depth 2) changes the frames of its segment
    (4 and 5; 3 and 6 are given) and no other frame."""
    plan = planlib.make_plan(L, 2)
    a = run(plan, mesh_of(1))
    ids = prompts(plan.frames)
    ids[5] = (ids[5] % (VOCAB - 1)) + 1
    b = run(plan, mesh_of(1), ids=ids)
    diff = np.abs(np.asarray(a.latents) - np.asarray(b.latents)).reshape(10, -1).max(1)
    assert diff[5] > 1e-3 and diff[4] > 1e-3
    assert np.all(diff[[0, 1, 2, 3, 6, 7, 8, 9]] <= 1e-6)


def test_bad_input_is_a_clear_error():
    plan = planlib.make_plan(L, 2, frames=7)
    ms = models_for(2)
    with pytest.raises(ValueError, match=r"one row per requested frame \(N=7\)"):
        engine.run(plan, ms, prompts(8), NULL, SCHEDULE, LATENT)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        engine.run(plan, ms, prompts(7), NULL, SCHEDULE, LATENT, sampler="euler")
    with pytest.raises(ValueError, match="eta is a DDIM setting"):
        engine.run(plan, ms, prompts(7), NULL, SCHEDULE, LATENT, sampler="ddpm", eta=0.5)
    with pytest.raises(ValueError, match="steps must be an integer"):
        engine.run(plan, ms, prompts(7), NULL, SCHEDULE, LATENT, steps=0)
    with pytest.raises(ValueError, match="2 levels but 1 level models"):
        engine.run(plan, ms[:1], prompts(7), NULL, SCHEDULE, LATENT)
    with pytest.raises(ValueError, match="null_ids must be"):
        engine.run(plan, ms, prompts(7), np.zeros(T + 1, np.int32), SCHEDULE, LATENT)
    with pytest.raises(ValueError, match="max_segments_per_call"):
        engine.run(plan, ms, prompts(7), NULL, SCHEDULE, LATENT, max_segments_per_call=-2)
    with pytest.raises(ValueError, match="needs 2 local models"):
        lm.level_models(toy_denoise, toy_params(0), [toy_params(1)], 3)
    with pytest.raises(ValueError, match="local_models='joint'"):
        lm.level_models(toy_denoise, toy_params(0), toy_params(1), 3, "joint")


def tiny_mtd(num_levels: int = 2):
    """The real tiny MTD UNet + text encoder (configs/synthetic.py:tiny) as MTDModels, and
    a function of a seed giving random weights (every zero-initialised layer filled too, so
    conditions and level matter), numpy like an export."""
    from nuwa_xl_jax import configuration
    from nuwa_xl_jax.family import MTDModels

    c = configuration.load("configs/synthetic.py:tiny")
    c.model.mtd.num_levels = num_levels
    m = MTDModels(c, None, vae_params={})  # latents only: the VAE is never called
    assert m.latent_shape == LATENT
    # Random weights without running init (compiling it costs more than the whole test).
    shapes = jax.eval_shape(lambda k: m.init(k, L), jax.random.key(0))

    def weights(seed: int):
        rng = np.random.default_rng(seed)
        return jax.tree.map(lambda s: rng.normal(0, 1 / np.sqrt(max(np.prod(s.shape[:-1]), 1)),
                                                 s.shape).astype(s.dtype), shapes)

    return m, weights


def test_real_tiny_mtd_batched_equals_per_segment():
    """The engine on the real tiny MTD: batched with prompts and conditions encoded once per call
    (MTDModels as the Denoiser) equals one call per segment running the whole model at every step
    (MTDModels.denoise, the structure before the split), with guidance and a level embedding."""
    m, weights = tiny_mtd()
    params = [weights(0), weights(1)]
    plan = planlib.make_plan(L, 2, frames=8)
    ids = np.asarray(m.tokenizer(["fred walks left in the forest", "wilma jumps in the cave"] * 4))
    kw = dict(sampler="ddim", steps=2, guidance_scale=3.0, eta=0.5, seed=3)
    batched = engine.run(plan, lm.level_models(m, params[0], params[1], 2, "shared"), ids,
                         m.null_ids, m.schedule, m.latent_shape, mesh=mesh_of(1), **kw)
    whole = lm.level_models(m.denoise, params[0], params[1], 2, "shared")
    single = baselines.dod_per_segment(plan, whole, ids, m.null_ids, m.schedule, m.latent_shape,
                                       **kw)
    assert [s.segments for s in batched.levels] == [1, 3] and single.sequential_calls == 4
    out = np.asarray(batched.latents)
    assert out.shape == (8, *LATENT) and np.all(np.isfinite(out)) and out.std() > 0.1
    # fp32: batched and batch-1 convolutions round differently; through a random-weight UNet the
    # gap grows with the activations' scale (measured 2.6e-5 at max |out| ~ 35).
    np.testing.assert_allclose(out, np.asarray(single.latents), rtol=1e-5,
                               atol=1e-5 * np.abs(out).max())


# ------------------------------------------------------------------------------------------
# Weights placed once, balanced chunks.


def numpy_models(depth: int):
    """Level models with numpy weights, as an export is restored."""
    return tuple(dataclasses.replace(m, params=jax.tree.map(np.asarray, m.params))
                 for m in models_for(depth))


@pytest.fixture
def weight_puts(monkeypatch):
    """ids of weight leaves (of the given trees) that jax.device_put copied, one per copy."""
    puts, leaves = [], set()
    real = jax.device_put

    def spy(x, *a, **k):
        puts.extend(id(v) for v in jax.tree.leaves(x) if id(v) in leaves)
        return real(x, *a, **k)

    monkeypatch.setattr(jax, "device_put", spy)

    def watch(*trees):
        leaves.update(id(v) for t in trees for v in jax.tree.leaves(t))
        return puts

    return watch


def test_weights_are_copied_to_the_devices_once_per_run_not_per_call(weight_puts):
    plan = planlib.make_plan(L, 3)  # level 2: 9 segments, 5 calls of 2
    models = numpy_models(3)
    puts = weight_puts(*[m.params for m in models])
    res = run(plan, mesh_of(1), models=models, max_segments_per_call=2)
    assert res.sequential_calls == 8
    assert sorted(puts) == sorted(id(v) for m in models for v in jax.tree.leaves(m.params))
    # Placed weights (as load_family keeps them) are never copied again, and placing them again
    # returns the very same arrays.
    placed = lm.place_models(models, mesh_of(1))
    puts.clear()
    run(plan, mesh_of(1), models=placed, max_segments_per_call=2)
    assert puts == []
    again = lm.place_models(placed, mesh_of(1))
    assert all(a is b for p, q in zip(placed, again)
               for a, b in zip(jax.tree.leaves(p.params), jax.tree.leaves(q.params)))


def test_autoregressive_copies_weights_once(weight_puts):
    model = numpy_models(1)[0]
    puts = weight_puts(model.params)
    res = baselines.autoregressive(model, prompts(9), NULL, SCHEDULE, LATENT, L=L, prefix=1,
                                   mesh=mesh_of(1), sampler="ddim", steps=1)
    assert res.sequential_calls == 3
    assert sorted(puts) == sorted(id(v) for v in jax.tree.leaves(model.params))


@pytest.mark.parametrize("segments,max_segments,devices,chunk", [
    (69, 16, 1, 14),  # 5 calls of 14 (70 computed), not 5 of 16 (80)
    (69, 16, 2, 14),
    (69, 16, 8, 16),  # a multiple of the devices: 5 x 16
    (9, 2, 1, 2), (9, 4, 1, 3), (10, 4, 1, 4), (3, 5, 2, 4), (8, None, 8, 8), (1, 4, 8, 1),
])
def test_balanced_chunk_sizes(segments, max_segments, devices, chunk):
    assert memory.chunk_size(segments, max_segments, devices) == chunk


def test_chunks_are_balanced_and_as_few_as_the_budget_allows():
    for devices in (1, 2, 4, 8):
        for max_segments in (1, 2, 3, 5, 8, 16):
            cap = -(-max_segments // devices) * devices  # the budget, rounded up to the devices
            for n_segments in range(2, 80):
                c = memory.chunk_size(n_segments, max_segments, devices)
                calls = -(-n_segments // c)
                assert c % devices == 0 and c <= cap
                assert calls == -(-n_segments // min(cap, -(-n_segments // devices) * devices))
                assert calls * c - n_segments < calls * devices  # padding spread over the calls


def test_balanced_chunks_in_a_run_equal_one_call():
    plan = planlib.make_plan(L, 3)  # 9 segments at level 2
    chunked = run(plan, mesh_of(1), max_segments_per_call=4)
    assert [(s.calls, s.chunk) for s in chunked.levels] == [(1, 1), (1, 3), (3, 3)]
    whole = run(plan, mesh_of(1))
    np.testing.assert_allclose(np.asarray(chunked.latents), np.asarray(whole.latents),
                               rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Memory-sized chunks ("auto") and the donated latent buffer.


def linear_peak(base: int, per_row: int, calls: list):
    def peak(chunk):
        calls.append(chunk)
        return base + per_row * chunk
    return peak


@pytest.mark.parametrize("segments,devices,budget,chunk", [
    (69, 1, 10_000, 69),        # everything fits: one call, no probes
    (69, 1, 1000 + 100 * 16, 14),  # room for 16 rows: balanced to 5 x 14, not 5 x 16
    (69, 8, 1000 + 100 * 20, 16),  # room for 20 rows, a multiple of 8 devices: 16
    (9, 1, 1000 + 100 * 1, 1),  # one row at a time
    (9, 2, 1000 + 100 * 3, 2),  # 2 < 2 devices' rows * 2 = 4 == whole - devices: the probe size
])
def test_auto_chunk_size_is_the_largest_balanced_chunk_that_fits(segments, devices, budget, chunk):
    calls = []
    got = memory.auto_chunk_size(segments, devices, linear_peak(1000, 100, calls), budget)
    assert got == chunk
    assert 1000 + 100 * got <= budget
    # Largest: the balanced chunk of one more device row would not fit (or there is none).
    bigger = memory.chunk_size(segments, got + devices, devices)
    assert bigger == got or 1000 + 100 * bigger > budget
    assert len(calls) <= 5  # the whole level, two probes, confirm, one size up


def test_auto_chunk_size_steps_down_when_the_linear_estimate_is_optimistic():
    # Memory that grows faster than linearly past 4 rows: the estimate from 1 and 2 rows says 9
    # fit, compiling 9 says no, and the sizer steps down until a compiled size fits.
    peak = lambda c: 100 * c + (0 if c <= 4 else 1000 * (c - 4))
    got = memory.auto_chunk_size(40, 1, peak, 900)
    assert peak(got) <= 900 and got == 4


def test_auto_chunk_size_names_the_budget_when_nothing_fits():
    with pytest.raises(MemoryError, match="memory_fraction"):
        memory.auto_chunk_size(9, 2, lambda c: 10**9 * c, 10**9)


def test_auto_sizes_chunks_from_the_compiled_programs_memory(monkeypatch):
    plan = planlib.make_plan(L, 3)  # level 1: 3 segments, level 2: 9
    mesh = mesh_of(1)
    whole = run(plan, mesh)
    # XLA's own estimate for 3-segment calls, as the budget: level 2 must then run in 3 x 3.
    three = segments.program_peak(
        models_for(3)[2], SCHEDULE, samplers.Settings("ddpm", 3, 2.0), mesh,
        level_key=jax.random.key(0), chunk=3, frames=L,
        table=segments.encode_table(models_for(3)[2], mesh, prompts(plan.frames), NULL)[0],
        latent_shape=LATENT, replicate=False)
    monkeypatch.setattr(memory, "memory_budget", lambda mesh, fraction: three)
    auto = run(plan, mesh, max_segments_per_call="auto")
    assert [(s.calls, s.chunk) for s in auto.levels] == [(1, 1), (1, 3), (3, 3)]
    assert all(0 < s.program_bytes <= three for s in auto.levels[1:])
    np.testing.assert_allclose(np.asarray(auto.latents), np.asarray(whole.latents),
                               rtol=1e-5, atol=1e-5)


def test_auto_runs_a_level_in_one_call_when_it_fits():
    plan = planlib.make_plan(L, 3)
    auto = run(plan, mesh_of(1), max_segments_per_call="auto")  # host memory: everything fits
    assert [(s.calls, s.chunk) for s in auto.levels] == [(1, 1), (1, 3), (1, 9)]
    assert all(s.program_bytes > 0 for s in auto.levels)


@pytest.mark.parametrize("bad", [-1, 2.5, "half", "-3", True])
def test_bad_max_segments_per_call_is_named(bad):
    with pytest.raises(ValueError, match="max_segments_per_call.*'auto'"):
        memory.check_max_segments(bad)


@pytest.mark.parametrize("given,taken", [
    (None, None), (0, None), ("none", None), ("", None), ("auto", "auto"), (" AUTO", "auto"),
    (16, 16), ("16", 16), (np.int64(3), 3)])
def test_max_segments_per_call_spellings(given, taken):
    assert memory.check_max_segments(given) == taken


def test_memory_budget_is_a_fraction_of_the_device_memory():
    mesh = mesh_of(1)
    assert 0 < memory.memory_budget(mesh, 0.5) <= memory.memory_budget(mesh, 1.0)
    with pytest.raises(ValueError, match="memory_fraction"):
        memory.memory_budget(mesh, 1.5)


def test_the_latent_buffer_is_donated_to_each_write():
    plan = planlib.make_plan(L, 2)
    lv = plan.levels[1]
    mesh = mesh_of(1)
    buffer = jax.device_put(jnp.ones((plan.span, *LATENT), jnp.float32), parallel.replicated(mesh))
    out, stats = engine.run_level(
        lv,
        models_for(2)[1],
        buffer,
        prompts(plan.frames),
        NULL,
        SCHEDULE,
        samplers.Settings("ddpm", 3, 2.0),
        seed=0,
        mesh=mesh,
    )
    assert buffer.is_deleted() and not out.is_deleted()
    given = np.unique(lv.frames[lv.given])
    np.testing.assert_array_equal(np.asarray(out)[given], 1.0)  # given frames kept bit-exact


def test_memory_budget_reads_a_device_of_this_process():
    """On a multi-host mesh the first device may be another host's: it cannot be queried."""
    import types

    class Device:
        def __init__(self, process, limit):
            self.process_index, self.limit = process, limit

        def memory_stats(self):
            if self.process_index != jax.process_index():
                raise RuntimeError("not addressable from this process")
            return {"bytes_limit": self.limit}

    mesh = types.SimpleNamespace(devices=np.array([Device(jax.process_index() + 1, 1),
                                                   Device(jax.process_index(), 1000)]))
    assert memory.memory_budget(mesh, 0.5) == 500
