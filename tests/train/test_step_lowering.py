"""The train step as the loop builds it (loop.step_program: under its mesh, FSDP shardings, the
state donated) lowered for 'cuda' and 'tpu' from CPU, so rules only those platforms enforce fail
here: the vae stage in bf16 with remat, FSDP over 8 (simulated) GPUs or TPU chips. Lowered only,
never compiled. (The VAE's attention is XLA's; the MTD's cuDNN and splash kernels are lowered
for both platforms in tests/models/test_accelerator_trace.py.)"""
import fake_accelerators as fake
import flax.linen as nn
import jax
import numpy as np
import pytest

from nuwa_xl_jax import configuration, parallel
from nuwa_xl_jax.train import loop, stages
from nuwa_xl_jax.train import state as train_state


def lowered_vae_step(tmp_path, platform):
    config = configuration.load("configs/synthetic.py:tiny")
    config.data.data_dir = str(tmp_path)
    config.model.vae.dtype, config.model.vae.remat = "bfloat16", "full"
    config.vae_train.batch_size = 8
    stage = stages.vae_stage(config, str(tmp_path))
    cfg = configuration.Config.from_dict(config).train_block("vae")
    tx = train_state.make_optimizer(cfg.learning_rate, cfg.warmup_steps, cfg.steps,
                                    cfg.weight_decay, cfg.clip_norm, cfg.b1, cfg.b2)
    mesh = parallel.make_mesh((2, 4))
    abstract = jax.eval_shape(lambda k: train_state.create(stage.init(k), tx, k),
                              jax.random.key(0))
    shardings = parallel.tree_shardings(abstract, mesh)
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         nn.meta.unbox(abstract), shardings)
    h, w = config.data.resolution
    frames = jax.ShapeDtypeStruct((8, stage.frames_per_example, h, w, 3), np.uint8)
    step = loop.step_program(stage, tx, cfg.ema_decay, shardings, mesh)
    text = step.trace(state, {"frames": frames}).lower(lowering_platforms=(platform,)).as_text()
    assert "tf.aliasing_output" in text, "the state is donated"
    assert "bf16" in text and "num_partitions = 8" in text
    return text


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_the_train_step_lowers_for_the_platform(monkeypatch, tmp_path, platform):
    if platform == "cuda":
        fake.fake_nvidia_gpu(monkeypatch)
    else:
        fake.fake_tpu(monkeypatch, mosaic=True)
    lowered_vae_step(tmp_path, platform)
