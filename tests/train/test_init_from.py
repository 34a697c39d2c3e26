"""model.mtd.init_from: an MTD stage started from a converted diffusers UNet equals that UNet frame
by
frame at step 0 (its temporal and condition layers at identity) and trains from there."""
import dataclasses

import flax.linen as nn
import grain
import jax
import numpy as np
import pytest
from tiny_family import write_random_family

from nuwa_xl_jax import configuration, convert, parallel
from nuwa_xl_jax.train import loop, stages

B, F, T = 1, 4, 16  # one clip of L=4 frames; prompts of the tiny config's 16 tokens


def _tiny_unet(folder, mtd):
    """A random diffusers UNet with the tiny config's spatial architecture, every weight
    perturbed."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=mtd.in_channels, out_channels=mtd.out_channels,
        block_out_channels=tuple(mtd.block_out_channels), layers_per_block=mtd.layers_per_block,
        down_block_types=tuple(mtd.down_block_types), up_block_types=tuple(mtd.up_block_types),
        norm_num_groups=mtd.norm_num_groups, cross_attention_dim=mtd.cross_attention_dim,
        attention_head_dim=mtd.attention_head_dim).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    unet.save_pretrained(str(folder), safe_serialization=True)
    return unet


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """The tiny config's global MTD stage with model.mtd.init_from = a converted random UNet."""
    tmp = tmp_path_factory.mktemp("init_from")
    config = configuration.load("configs/synthetic.py:tiny")
    unet = _tiny_unet(tmp / "sd_unet", config.model.mtd)
    convert.convert("unet", str(tmp / "sd_unet"), str(tmp / "ours"))
    config.model.mtd.init_from = str(tmp / "ours")
    configuration.validate(config)
    workdir = write_random_family(str(tmp / "run"), stages=())  # config + a VAE export
    return config, workdir, unet, stages.build(config, "mtd_global", workdir)


@pytest.mark.interop
@pytest.mark.slow  # ~50 s of CPU (a conversion and the MTD's init and apply compiled)
def test_mtd_from_a_diffusers_unet_is_that_unet_frame_by_frame_at_step_0(started):
    import torch

    config, workdir, unet, stage = started
    params = jax.device_get(jax.jit(lambda k: nn.meta.unbox(stage.init(k)))(jax.random.key(3)))
    rs = np.random.RandomState(0)
    x = rs.randn(B, F, 8, 8, 4).astype(np.float32)
    t = rs.randint(0, 1000, (B, F)).astype(np.float32)
    text = rs.randn(B, F, T, config.model.mtd.cross_attention_dim).astype(np.float32)
    cond = rs.randn(B, F, 8, 8, 4).astype(np.float32)  # any condition: its layers are identity
    mask = np.array([[1, 0, 0, 1]], np.float32)
    module = stages.MTDModels(config, workdir).mtd
    ours = np.asarray(jax.jit(module.apply)(params["mtd"], x, t, text, cond, mask))
    with torch.no_grad():
        for f in range(F):
            sample = torch.from_numpy(np.ascontiguousarray(x[0, f].transpose(2, 0, 1)))[None]
            want = unet(sample, torch.tensor([float(t[0, f])]), torch.from_numpy(text[0, f])[None])
            np.testing.assert_allclose(ours[0, f], want.sample[0].numpy().transpose(1, 2, 0),
                                       rtol=1e-4, atol=1e-4, err_msg=f"frame {f}")


@pytest.mark.interop
@pytest.mark.slow  # compiles the MTD training step: minutes on a shared 2-core CPU
def test_mtd_from_a_diffusers_unet_trains(started, tmp_path):
    """A few steps of the training loop on one fixed batch of latents lower the loss."""
    config, _, _, stage = started
    rs = np.random.RandomState(0)
    batch = {"latents": rs.randn(8, F, 8, 8, 4).astype(np.float32),
             "mask": np.tile([[1, 0, 0, 1]], (8, 1)).astype(np.int32),
             "prompt_ids": rs.randint(1, 20, (8, F, T)).astype(np.int32)}

    def data(pidx, nproc):
        return iter(grain.MapDataset.source([batch]).repeat().to_iter_dataset())

    cfg = config.train.copy_and_resolve_references()
    cfg.update(steps=8, batch_size=8, warmup_steps=0, learning_rate=1e-3, log_every=1,
               checkpoint_every=8, sample_every=0, async_checkpoints=False)
    result = loop.train(dataclasses.replace(stage, data=data, sample=None), cfg,
                        str(tmp_path / "train"), parallel.make_mesh((-1, 1)), progress=False)
    first, last = np.mean(result.losses[:2]), np.mean(result.losses[-2:])
    assert last < 0.8 * first, result.losses


def test_init_from_a_foreign_folder_is_one_clear_error(tmp_path):
    config = configuration.load("configs/synthetic.py:tiny")
    workdir = write_random_family(str(tmp_path / "run"), stages=())
    config.model.mtd.init_from = str(tmp_path / "run" / "vae" / "export")  # a VAE, not a UNet
    with pytest.raises(configuration.ConfigError, match=r"model.mtd.init_from=.* holds \['vae'\] "
                                                        r"weights, not 'mtd'.*--kind=unet"):
        stages.build(config, "mtd_global", workdir)
    config.model.mtd.init_from = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no exported weights"):
        stages.build(config, "mtd_global", workdir)
