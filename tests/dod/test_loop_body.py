"""Nothing step-invariant runs inside the sampler loop of a level program: the condition / mask
cascades run once per call, before the scan, and the text encoder not in the program at all: each
distinct prompt of the video (and the null prompt, for guidance) is encoded once per level, in the
compute dtype, by a program of its own whose states the level program gathers per frame; the scan
body runs the UNet only. Checked on the traced programs (no compile), by the Flax module names of
their operations."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore
from test_engine import L, tiny_mtd

from nuwa_xl_jax import parallel
from nuwa_xl_jax.diffusion import samplers
from nuwa_xl_jax.dod import level_models as lm
from nuwa_xl_jax.dod import segments
from nuwa_xl_jax.family import MTDModels
from nuwa_xl_jax.models import text

CASCADES = ("cond_encoder", "mask_encoder")


def _subjaxprs(eqn):
    for value in eqn.params.values():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, jcore.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jcore.Jaxpr):
                yield v


def module_names(jaxpr, in_loop: bool) -> set:
    """Name stacks of the operations inside (``in_loop``) or outside every scan / while loop."""
    out = set()

    def walk(j, inside):
        for eqn in j.eqns:
            if inside == in_loop:
                out.add(str(eqn.source_info.name_stack))
            loop = inside or eqn.primitive.name in ("scan", "while")
            for sub in _subjaxprs(eqn):
                walk(sub, loop)

    walk(jaxpr, False)
    return out


def level_program_jaxpr(denoise, m, params, guidance_scale=3.0):
    sampling = samplers.Settings("ddim", 2, guidance_scale)
    mesh = parallel.make_mesh(devices=jax.devices()[:1])
    program = segments._level_program(denoise, m.schedule, sampling, mesh, False)
    T = m.null_ids.shape[0]
    C, P = 2, 3
    ids = jnp.zeros((P, T), jnp.int32)
    # the table as the level gets it: encode_prompts' output on P distinct prompts
    table = jax.eval_shape(lm.as_denoiser(denoise).encode_prompts, params, ids)
    args = (
        params,
        jax.random.key(0),
        jnp.zeros(C, jnp.uint32),
        table,
        jnp.zeros((C, L), jnp.int32),
        jnp.zeros((C, L, *m.latent_shape)),
        jnp.zeros((C, L)),
        jnp.zeros(C, jnp.int32),
    )
    return jax.make_jaxpr(program)(*args).jaxpr


def found(names, module):
    return any(module in n.split("/") for n in names)


def test_level_program_loop_body_runs_only_the_unet():
    m, _ = tiny_mtd()
    params = jax.eval_shape(lambda k: m.init(k, L), jax.random.key(0))
    jaxpr = level_program_jaxpr(m, m, params)
    inside, outside = module_names(jaxpr, True), module_names(jaxpr, False)
    assert any("down_blocks_0" in n for n in inside)  # the UNet is in the loop
    for module in CASCADES:
        assert not found(inside, module), f"{module} runs at every sampler step"
        assert found(outside, module), f"{module} is not run once per call either"
    assert not found(inside | outside, "text_model"), "the level program runs the text encoder"
    # The text encoder runs in the level's prompt-table program, in the compute dtype.
    mesh = parallel.make_mesh(devices=jax.devices()[:1])
    ids = jnp.zeros((3, m.null_ids.shape[0]), jnp.int32)
    encode = segments._encode_program(m, mesh)
    assert found(module_names(jax.make_jaxpr(encode)(params, ids).jaxpr, False), "text_model")
    model = m.config.model  # typed: a changed copy is checked as a new config
    bf16 = dataclasses.replace(m.config, model=dataclasses.replace(
        model, mtd=dataclasses.replace(model.mtd, dtype="bfloat16")))
    b = MTDModels(bf16, None, vae_params={})
    assert jax.eval_shape(segments._encode_program(b, mesh), params, ids).dtype == jnp.bfloat16
    # The inspection sees step-invariant work in the loop when it is there: the whole
    # denoise(params, x, t, ids, cond, mask, level) per step, the engine's structure before.
    whole = module_names(level_program_jaxpr(m.denoise, m, params), True)
    assert all(found(whole, module) for module in CASCADES + ("text_model",))


def test_each_distinct_prompt_is_one_row_of_the_table():
    null = np.zeros(4, np.int32)
    a, b = np.array([1, 2, 3, 0]), np.array([5, 6, 0, 0])
    ids = np.stack([a, b, a, null, b, a]).reshape(2, 3, 4)
    table, index = text.prompt_table(ids, null)
    assert len(table) == 3  # a, b and the null prompt, last
    np.testing.assert_array_equal(table[-1], null)
    np.testing.assert_array_equal(table[index], ids)
