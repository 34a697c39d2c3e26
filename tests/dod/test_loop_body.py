"""Nothing step-invariant runs inside the sampler loop of a level program: the text encoder (the
prompts' and, with guidance, the null prompt's states) and the condition / mask cascades run once
per call, before the scan; the scan body runs the UNet only. Checked on the traced program (no
compile), by the Flax module names of the operations inside the loop."""
import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from nuwa_xl_jax import parallel
from nuwa_xl_jax.dod import engine

from test_engine import L, tiny_mtd

STEP_INVARIANT = ("text_model", "cond_encoder", "mask_encoder")


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
    sampling = engine.Sampling("ddim", 2, guidance_scale)
    program = engine._level_program(denoise, m.schedule, sampling,
                                    parallel.make_mesh(devices=jax.devices()[:1]), False)
    T = m.null_ids.shape[0]
    C = 2
    args = (params, jax.random.key(0), jnp.zeros(C, jnp.uint32), jnp.zeros((C, L, T), jnp.int32),
            jnp.zeros((C, L, *m.latent_shape)), jnp.zeros((C, L)), jnp.zeros(C, jnp.int32),
            jnp.zeros(T, jnp.int32))
    return jax.make_jaxpr(program)(*args).jaxpr


def found(names, module):
    return any(module in n.split("/") for n in names)


def test_level_program_loop_body_runs_only_the_unet():
    m, _ = tiny_mtd()
    params = jax.eval_shape(lambda k: m.init(k, L), jax.random.key(0))
    jaxpr = level_program_jaxpr(m, m, params)
    inside, outside = module_names(jaxpr, True), module_names(jaxpr, False)
    assert any("down_blocks_0" in n for n in inside)  # the UNet is in the loop
    for module in STEP_INVARIANT:
        assert not found(inside, module), f"{module} runs at every sampler step"
        assert found(outside, module), f"{module} is not run once per call either"
    # The inspection sees step-invariant work in the loop when it is there: the whole
    # denoise(params, x, t, ids, cond, mask, level) per step, the engine's structure before.
    whole = module_names(level_program_jaxpr(m.denoise, m, params), True)
    assert all(found(whole, module) for module in STEP_INVARIANT)
