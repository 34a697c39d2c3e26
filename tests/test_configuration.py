"""Configs load through get_config(arg) and bad values are errors that name the field."""
import pytest

from nuwa_xl_jax import configuration


@pytest.mark.parametrize("spec", ["configs/synthetic.py", "configs/synthetic.py:tiny",
                                  "configs/flintstones.py:128", "configs/flintstones.py:256"])
def test_configs_load(spec):
    config = configuration.load(spec)
    c = config.model.vae.latent_channels
    assert c in (4, 8) and config.model.mtd.in_channels == config.model.mtd.out_channels == c


def test_mtd_channels_must_match_the_latents():
    config = configuration.load("configs/synthetic.py")
    config.model.mtd.in_channels = 4
    with pytest.raises(
        configuration.ConfigError, match="model.mtd.in_channels=4.*latent_channels=8"
    ):
        configuration.validate(config)


def _cfg():
    return configuration.load("configs/synthetic.py")


@pytest.mark.parametrize("mutate,match", [
    (lambda c: c.model.vae.__setattr__("block_out_channels", (16, -32)),
     r"model.vae.block_out_channels\[1\]"),
    (lambda c: c.model.vae.__setattr__("block_out_channels", (16, 30)), "not divisible by "
                                                                        "model.vae.norm_num_groups"),
    (lambda c: c.model.vae.__setattr__("temporal_kernel_size", 2), "temporal_kernel_size must be "
                                                                   "odd"),
    (lambda c: c.data.__setattr__("resolution", (64, 62)), "width 62 is not divisible .* factor 4"),
    (lambda c: c.mesh.__setattr__("shape", (1, 2, 3)), "same length"),
    (lambda c: c.generate.__setattr__("max_segments_per_call", "lots"),
     "generate.max_segments_per_call"),
    (lambda c: c.generate.__setattr__("memory_fraction", 1.5), "generate.memory_fraction"),
])
def test_bad_values_name_the_field(mutate, match):
    c = _cfg()
    with c.unlocked():
        mutate(c)
    with pytest.raises(configuration.ConfigError, match=match):
        configuration.validate(c)


def test_unknown_field_is_an_error():
    c = _cfg()
    with c.unlocked():
        c.model.vae.lattent_channels = 4  # a typo
    with pytest.raises(
        configuration.ConfigError, match="unknown config field.*model.vae.lattent_channels"
    ):
        configuration.validate(c)


def test_unknown_variant_and_missing_file():
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        configuration.load("configs/synthetic.py:huge")
    with pytest.raises(configuration.ConfigError, match="not found"):
        configuration.load("configs/nope.py")


def test_shared_local_model_needs_its_stage_and_level_embedding():
    c = _cfg()
    with c.unlocked():
        c.local_models = "shared"
    with pytest.raises(configuration.ConfigError, match="stages must list 'mtd_local'"):
        configuration.validate(c)
    with c.unlocked():
        c.stages = ("vae", "mtd_global", "mtd_local")
    with pytest.raises(configuration.ConfigError, match="num_levels > 0"):
        configuration.validate(c)
    with c.unlocked():
        c.model.mtd.num_levels = 2
    configuration.validate(c)
