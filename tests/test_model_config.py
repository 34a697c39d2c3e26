"""The model blocks are validated once into typed, frozen objects (configuration.model); models are
built from those objects as they are, and a stored config.json of an older version still loads."""
import dataclasses
import json

import pytest

from nuwa_xl_jax import configuration
from nuwa_xl_jax.configuration import ConfigError, ModelConfig, MTDConfig, TextConfig, VAEConfig
from nuwa_xl_jax.family import store
from nuwa_xl_jax.models.mtd import MTDUNet
from nuwa_xl_jax.models.text import CLIPTextModel
from nuwa_xl_jax.models.tklvae import TKLVAE


def _tiny():
    return configuration.load("configs/synthetic.py:tiny")


def test_a_good_config_becomes_typed_objects_with_its_values():
    config = _tiny()
    model = configuration.validate(config).model
    assert isinstance(model, ModelConfig)
    assert isinstance(model.vae, VAEConfig) and isinstance(model.mtd, MTDConfig)
    assert isinstance(model.text, TextConfig)
    for name in ("vae", "mtd", "text"):
        assert model[name].to_dict() == config.model[name].to_dict()  # every value, as written
    assert isinstance(model.mtd.block_out_channels, tuple)
    assert model.vae.downsampling_factor == 2 ** (len(config.model.vae.block_out_channels) - 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.mtd.num_levels = 3


def test_values_are_normalised_once():
    as_json = json.loads(json.dumps(_tiny().model.to_dict()))  # tuples became lists
    as_json["mtd"]["remat"] = True  # the older spelling
    as_json["vae"]["remat"] = False
    as_json["vae"]["scaling_factor"] = 1  # an int where a float is meant
    model = ModelConfig.from_dict(as_json)
    assert model.mtd.block_out_channels == tuple(as_json["mtd"]["block_out_channels"])
    assert model.mtd.remat == "full" and model.vae.remat == "none"
    assert model.vae.scaling_factor == 1.0
    assert isinstance(model.vae.scaling_factor, float)


@pytest.mark.parametrize("block,field,value,match", [
    ("mtd", "layers_per_block", "2", r"model\.mtd\.layers_per_block must be a positive integer, "
                                     r"got '2'"),
    ("mtd", "num_levels", True, r"model\.mtd\.num_levels must be an integer >= 0"),
    ("mtd", "temporal", "yes", r"model\.mtd\.temporal must be True or False"),
    ("mtd", "norm_eps", "small", r"model\.mtd\.norm_eps must be a number"),
    ("mtd", "block_out_channels", 32, r"model\.mtd\.block_out_channels must be a list"),
    ("mtd", "remat", "sometimes", r"model\.mtd\.remat='sometimes'; use 'none', 'full'"),
    ("mtd", "attention", "flash", r"model\.mtd\.attention='flash'"),
    ("mtd", "init_from", 3, r"model\.mtd\.init_from must be a folder"),
    ("vae", "mid_block_add_attention", 1, r"model\.vae\.mid_block_add_attention must be True or "
                                          r"False"),
    ("vae", "scaling_factor", -1.0, r"model\.vae\.scaling_factor must be > 0"),
    ("vae", "latent_channels", 0, r"model\.vae\.latent_channels must be a positive integer"),
    ("vae", "dtype", "float16", r"model\.vae\.dtype='float16'; use 'float32' or 'bfloat16'"),
    ("vae", "remat", "sometimes", r"model\.vae\.remat='sometimes'; use 'none', 'full'"),
    ("text", "hidden_act", "relu", r"model\.text\.hidden_act='relu'"),
    ("text", "layer_norm_eps", None, r"model\.text\.layer_norm_eps must be a number"),
    ("text", "tokenizer", "", r"model\.text\.tokenizer must be 'word' or a CLIP tokenizer folder"),
    ("text", "trainable", "sometimes", r"model\.text\.trainable='sometimes'; use 'auto'"),
])
def test_each_bad_value_is_one_error_naming_the_field(block, field, value, match):
    config = _tiny()
    with config.ignore_type():
        config.model[block][field] = value
    with pytest.raises(ConfigError, match=match):
        configuration.validate(config)
    # a model built from the block (a ConfigDict, as from Python) goes through the same check
    module = {"vae": TKLVAE, "mtd": MTDUNet, "text": CLIPTextModel}[block]
    with pytest.raises(ConfigError, match=match):
        module.from_config(config.model[block])


def test_a_block_built_in_python_is_checked_the_same_way():
    good = _tiny().model.mtd.to_dict()
    assert MTDConfig(**good) == MTDConfig.from_dict(good)
    with pytest.raises(ConfigError, match=r"model\.mtd\.dtype='float16'"):
        MTDConfig(**dict(good, dtype="float16"))
    with pytest.raises(ConfigError, match=r"model\.mtd\.dtype='float16'"):
        dataclasses.replace(MTDConfig(**good), dtype="float16")
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) model\.mtd\.heads"):
        MTDConfig.from_dict(dict(good, heads=4))
    with pytest.raises(ConfigError, match=r"^unet/config\.json\.norm_num_groups"):
        MTDConfig.from_dict(dict(good, norm_num_groups=0), path="unet/config.json")
    model = _tiny().model
    with pytest.raises(ConfigError, match=r"model\.mtd\.cross_attention_dim=.* must equal "
                                          r"model\.text\.hidden_size"):
        ModelConfig(mtd=MTDConfig(**good), text=TextConfig.from_dict(
            dict(model.text.to_dict(), hidden_size=2 * model.text.hidden_size)))
    with pytest.raises(ConfigError, match=r"model\.vae must be a VAEConfig"):
        ModelConfig(vae=model.vae.to_dict())


def test_models_from_typed_objects_equal_those_from_config_blocks():
    config = _tiny()
    model = configuration.validate(config).model
    assert TKLVAE.from_config(model.vae) == TKLVAE.from_config(config.model.vae)
    assert MTDUNet.from_config(model.mtd) == MTDUNet.from_config(config.model.mtd)
    assert CLIPTextModel.from_config(model.text) == CLIPTextModel.from_config(config.model.text)
    assert TKLVAE.from_config(model.vae).to_config() == dataclasses.replace(model.vae, init_from="")
    assert MTDUNet.from_config(model.mtd).to_config() == dataclasses.replace(
        model.mtd, init_from=""
    )


def test_an_older_stored_config_json_loads(tmp_path):
    """A family's config.json written before init_from / attention / the remat policies existed
    (as in exports and workdirs trained then) reads into the same typed blocks."""
    config = json.loads(json.dumps(_tiny().to_dict()))
    for block in ("vae", "mtd", "text"):
        config["model"][block].pop("init_from")
    config["model"]["mtd"].pop("attention")
    config["model"]["mtd"]["remat"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = configuration.model_config(store.load_config(str(tmp_path)))
    assert model == configuration.validate(_tiny()).model
