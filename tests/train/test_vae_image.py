"""The vae_image stage trains the image VAE on single frames; the vae stage inflates it: spatial
weights copied, temporal layers at identity, so at its first step the T-KLVAE is exactly the
trained image VAE applied frame by frame (NUWA-XL's recipe from a pretrained image VAE)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nuwa_xl_jax import configuration
from nuwa_xl_jax.data import synthetic
from nuwa_xl_jax.models.tklvae import TKLVAE
from nuwa_xl_jax.train import stages


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    c = configuration.load("configs/synthetic.py:tiny")
    c.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    c.stages = ("vae_image",) + tuple(c.stages)
    c.vae_image_train = c.vae_train.copy_and_resolve_references()
    c.vae_loss.init_logvar = -8.0
    configuration.validate(c)
    return c


def test_image_stage_draws_frames_far_apart_and_has_no_temporal_layers(config, tmp_path):
    stage = stages.build(config, "vae_image", str(tmp_path))
    assert stage.name == "vae_image" and stage.model_config["vae"]["temporal"] is False
    batch = next(stage.data(0, 1))
    gaps = np.diff(batch["indices"], axis=1)
    assert (
        (gaps == stages.image_stride(config)).all()
        and stages.image_stride(config) == 19
        and batch["frames"].shape[1] == 3
    )
    params = nn.meta.unbox(jax.eval_shape(stage.init, jax.random.key(0)))
    names = jax.tree_util.tree_flatten_with_path(params)[0]
    assert not any("temporal" in jax.tree_util.keystr(p) for p, _ in names)


def test_vae_stage_starts_as_the_image_vae_frame_by_frame(config, tmp_path):
    workdir = str(tmp_path)
    image_stage = stages.build(config, "vae_image", workdir)
    image = nn.meta.unbox(jax.jit(image_stage.init)(jax.random.key(3)))
    # perturb so the copy is not mistaken for a fresh init
    image = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(4), x.shape), image)
    assert float(image["vae"]["params"]["quant_conv"]["bias"][4:].mean()) == pytest.approx(
        -8, abs=0.2
    )
    stages.write_export(stages.export_dir(workdir, "vae_image"), image, {})
    video_stage = stages.build(config, "vae", workdir)
    video = nn.meta.unbox(jax.jit(video_stage.init)(jax.random.key(5)))
    frames = synthetic.episode(0, 0, 4, (32, 32))[0][None].astype(np.float32) / 127.5 - 1
    tk = TKLVAE.from_config(config.model.vae)
    img_cfg = config.model.vae.copy_and_resolve_references()
    img_cfg.temporal = False
    iv = TKLVAE.from_config(img_cfg)
    mean_t = tk.apply(video["vae"], frames, method="encode")[0]
    mean_i = jnp.concatenate([iv.apply(image["vae"], frames[:, i:i + 1], method="encode")[0]
                              for i in range(4)], axis=1)
    np.testing.assert_allclose(mean_t, mean_i, atol=1e-4)
    dec_t = tk.apply(video["vae"], mean_t, method="decode")
    dec_i = iv.apply(image["vae"], mean_i, method="decode")
    np.testing.assert_allclose(dec_t, dec_i, atol=1e-4)


def test_image_vae_of_another_shape_is_refused(config, tmp_path):
    bad = {"params": {"quant_conv": {"bias": np.zeros(3)}}}
    variables = {"params": {"quant_conv": {"bias": jnp.zeros(8)}}}
    with pytest.raises(ValueError, match="does not fit"):
        stages.overlay(variables, bad["params"] and bad)


def test_mtd_fingerprint_covers_what_the_weights_predict(config, tmp_path):
    """Resuming an epsilon checkpoint as a v model (or another schedule) is refused, not silently
    continued: the stage fingerprint includes the diffusion target and schedule."""
    from nuwa_xl_jax.train import checkpoint

    def fp(**diffusion):
        c = config.copy_and_resolve_references()
        c.diffusion.update(diffusion)
        st = stages.mtd_stage(c, "mtd_global", str(tmp_path), vae_params={})
        return checkpoint.fingerprint(st.model_config)

    assert fp() == fp(sample_steps=3, guidance_scale=2.0)  # sampling settings do not matter
    assert fp() != fp(prediction_type="v")
    assert fp() != fp(schedule="cosine")


def test_saliency_weight_puts_the_loss_on_small_objects():
    """With a flat frame and one odd latent position (a character), an error there costs more with
    saliency weighting, an error on the background less; errors everywhere cost the same (the
    weights average 1 per frame); given frames never count."""
    import types

    from nuwa_xl_jax.diffusion import schedules

    z0 = np.zeros((1, 2, 8, 8, 4), np.float32)
    z0[:, :, 3, 3] = 2.0  # the object
    sched = schedules.make_schedule("scaled_linear", 1000, prediction_type="v")

    def loss(where, saliency, mask=(0.0, 0.0)):
        def unet(params, x, t, states, features, level):
            # the exact target plus a unit error at ``where`` (None: everywhere)
            _, kt, kn, _ = jax.random.split(jax.random.key(0), 4)
            tt = jax.random.randint(kt, (1,), 0, 1000)
            target = schedules.training_target(
                sched, jnp.asarray(z0), jax.random.normal(kn, z0.shape), tt
            )
            err = (
                jnp.ones_like(target)
                if where is None
                else jnp.zeros_like(target).at[:, :, where[0], where[1]].set(1.0)
            )
            return target + err

        models = types.SimpleNamespace(
            schedule=sched,
            null_ids=jnp.zeros((3,), jnp.int32),
            unet=unet,
            encode_prompts=lambda params, ids: ids,
            condition=lambda params, cond, mask: None,
        )
        batch = {
            "latents": jnp.asarray(z0),
            "mask": jnp.asarray([mask]),
            "prompt_ids": jnp.zeros((1, 2, 3), jnp.int32),
        }
        return float(stages.mtd_loss(models, None, batch, jax.random.key(0), 0.0, 0.0, saliency)[0])

    assert loss((3, 3), 4.0) > 2 * loss((3, 3), 0.0)
    assert loss((0, 0), 4.0) < loss((0, 0), 0.0)
    assert loss(None, 4.0) == pytest.approx(loss(None, 0.0), rel=1e-5)
    assert loss((3, 3), 4.0, mask=(1.0, 0.0)) == pytest.approx(loss((3, 3), 4.0), rel=1e-5)
