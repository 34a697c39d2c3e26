"""The typed config blocks (configuration/data.py, diffusion.py, train.py, generate.py, mesh.py,
artv.py, vae_loss.py, config.py): each round-trips, its defaults are the ConfigDict block's, a bad
value is one ConfigError naming the dotted field, an older config.json loads, the on-disk JSON
and the stage fingerprints are what the ConfigDicts gave, and a validated config is not checked
again on its way through training."""
import dataclasses
import json

import pytest

from nuwa_xl_jax import configuration
from nuwa_xl_jax.configuration import (
    ARTVConfig,
    Config,
    ConfigError,
    DataConfig,
    DiffusionConfig,
    GenerateConfig,
    MeshConfig,
    TrainConfig,
    VAELossConfig,
    presets,
)
from nuwa_xl_jax.family import store
from nuwa_xl_jax.train import checkpoint, stages

BLOCKS = [(DataConfig, configuration.data_block), (DiffusionConfig, configuration.diffusion_block),
          (TrainConfig, configuration.train_block), (GenerateConfig, configuration.generate_block),
          (MeshConfig, configuration.mesh_block), (ARTVConfig, configuration.artv_block),
          (VAELossConfig, presets.vae_loss)]


def _tiny():
    return configuration.load("configs/synthetic.py:tiny")


@pytest.mark.parametrize("cls, block", BLOCKS, ids=[c.__name__ for c, _ in BLOCKS])
def test_blocks_round_trip_and_their_defaults_are_the_config_blocks(cls, block):
    default = cls()
    assert block().to_dict() == default.to_dict()  # the ConfigDict block is the dataclass's
    assert cls.from_dict(default.to_dict()) == default
    assert cls.from_dict(block()) == default
    assert cls.from_dict(default) is default  # typed: passed through, not checked again
    assert cls.from_dict(json.loads(json.dumps(default.to_dict()))) == default  # lists -> tuples
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(default, dataclasses.fields(cls)[0].name, None)


@pytest.mark.parametrize("spec", ["configs/synthetic.py", "configs/synthetic.py:tiny",
                                  "configs/flintstones.py"])
def test_config_json_and_fingerprints_are_the_config_dicts(spec):
    """config.json is the same text (save_config rewrites nothing), and an MTD stage's
    fingerprint is the one the ConfigDict gave (finished stages of older workdirs still count)."""
    c = configuration.load(spec)
    typed = configuration.validate(c)
    assert json.dumps(typed.to_dict(), indent=1, sort_keys=True) == \
        c.to_json_best_effort(indent=1, sort_keys=True)
    assert Config.from_dict(typed.to_dict()) == typed

    def block(b):  # what train/stages.py fingerprinted before the typed blocks
        d = json.loads(b.to_json_best_effort())
        d.pop("init_from", None)
        d.pop("trainable", None)
        return d

    old = {"mtd": block(c.model.mtd), "text": block(c.model.text),
           "diffusion": {k: c.diffusion[k] for k in ("schedule", "num_train_timesteps",
                                                     "beta_start", "beta_end", "prediction_type")},
           "init_from": c.train.get("init_from", "")}
    if not configuration.text_trainable(c.model.text):
        old["text_frozen"] = True
    new = stages._mtd_model_config(typed, typed.train)
    assert checkpoint.fingerprint(new) == checkpoint.fingerprint(old)


def _set(c, path, value):
    *parents, field = path.split(".")
    for p in parents:
        c = c[p]
    with c.unlocked():
        c[field] = value


@pytest.mark.parametrize("path, value, match", [
    ("data.mode", "xyz", r"data\.mode must be one of"),
    ("data.batch_size", 0, r"data\.batch_size must be an integer >= 1"),
    ("data.resolution", (32, 30), r"data\.resolution=\(32, 30\): width 30 is not divisible"),
    ("data.foo", 1, r"unknown config field\(s\) data\.foo"),
    ("diffusion.sampler", "euler", r"diffusion\.sampler='euler' is unknown"),
    ("diffusion.sample_steps", 5000, r"diffusion\.sample_steps=5000 exceeds"),
    ("diffusion.min_snr_gamma", -1.0, r"diffusion\.min_snr_gamma must be >= 0"),
    ("train.steps", 0, r"train\.steps must be a positive integer"),
    ("vae_train.learning_rate", 0.0, r"vae_train\.learning_rate must be > 0"),
    ("train.prompt_dropout", 1.5, r"train\.prompt_dropout must be in \[0, 1\]"),
    ("train.init_from", "vae", r"train\.init_from must be '' or an MTD stage"),
    ("generate.memory_fraction", 1.5, r"generate\.memory_fraction must be in \(0, 1\]"),
    ("generate.max_segments_per_call", "lots", r"generate\.max_segments_per_call='lots'"),
    ("generate.frames", 1, r"generate\.frames must be >= 2"),
    ("mesh.axes", ("data",), r"mesh\.shape \(-1, 1\) and mesh\.axes \('data',\)"),
    ("artv.noise_aug_t", 1000, r"artv\.noise_aug_t must be an integer timestep in 0\.\.999"),
    ("vae_loss.disc_channels", 0, r"vae_loss\.disc_channels must be a positive integer"),
    ("vae_context", 9, r"vae_context=9"),
    ("local_models", "some", r"local_models='some'"),
])
def test_a_bad_value_names_its_dotted_field(path, value, match):
    c = _tiny()
    _set(c, path, value)
    with pytest.raises(ConfigError, match=match):
        configuration.validate(c)


def test_a_train_block_is_named_by_where_it_sits():
    c = _tiny()
    c.local_train = c.train.copy_and_resolve_references()
    c.local_train.steps = -3
    with pytest.raises(ConfigError, match=r"local_train\.steps must be a positive integer"):
        configuration.validate(c)
    c.local_train.steps = 3
    typed = configuration.validate(c)
    assert typed.train_block("mtd_local1") is typed.local_train
    assert typed.train_block("mtd_global") is typed.train
    assert typed.train_block("vae") is typed.vae_train


def test_building_a_block_in_python_runs_the_same_checks():
    with pytest.raises(ConfigError, match=r"data\.level must be -1"):
        DataConfig(level=7)
    assert DataConfig(resolution=[16, 16], episode_length=4000).resolution == (16, 16)
    with pytest.raises(ConfigError, match=r"data must be a DataConfig"):
        Config(data={"mode": "dod"})
    assert dataclasses.replace(DataConfig(), mode="ar").window == 16


def test_an_older_config_json_loads_with_defaults(tmp_path):
    """A workdir's config.json written before these fields (and the artv block) existed."""
    raw = json.loads(_tiny().to_json_best_effort())
    for block, field in [
        ("data", "latent_dir"),
        ("data", "workers"),
        ("diffusion", "min_snr_gamma"),
        ("train", "saliency_weight"),
        ("train", "init_from"),
        ("generate", "memory_fraction"),
        ("vae_loss", "l2_weight"),
        ("vae_loss", "init_logvar"),
    ]:
        raw[block].pop(field)
    for top in ("artv", "vae_context", "local_train"):
        raw.pop(top, None)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = store.load_config(str(tmp_path))
    assert isinstance(config, Config) and isinstance(config.data, DataConfig)
    assert config.data.latent_dir == "" and config.diffusion.min_snr_gamma == 0.0
    assert config.train.saliency_weight == 0.0 and config.generate.memory_fraction == 0.8
    assert config.vae_loss.l2_weight == 0.0 and config.vae_context == 0
    assert config.artv is None and config.local_train is None
    assert config.train_block("mtd_local1") is config.train


@pytest.fixture
def validations(monkeypatch):
    """Counts the checks of every typed block class (their __post_init__)."""
    counts = {}
    classes = (Config, configuration.ModelConfig, configuration.VAEConfig, configuration.MTDConfig,
               configuration.TextConfig, TrainConfig, DiffusionConfig)
    for cls in classes:
        original = cls.__post_init__

        def counted(self, _original=original, _name=cls.__name__):
            counts[_name] = counts.get(_name, 0) + 1
            _original(self)

        monkeypatch.setattr(cls, "__post_init__", counted)
    return counts


class _Stop(Exception):
    pass


def test_training_validates_the_config_once(validations, monkeypatch, tmp_path):
    """The CLI's path: validate after the overrides, then stage_runner.run -> stages.build ->
    loop.train read that object; no block (the model section included) is checked again."""
    from nuwa_xl_jax.train import loop, stage_runner

    c = _tiny()  # (load validates too, then returns the ConfigDict for overrides)
    validations.clear()
    typed = configuration.validate(c)  # what the CLI does after the overrides
    after_validation = dict(validations)
    assert after_validation["Config"] == 1 and after_validation["ModelConfig"] == 1
    seen = {}

    def train(stage, cfg, *args, **kwargs):
        seen["cfg"] = cfg
        raise _Stop

    monkeypatch.setattr(loop, "train", train)
    with pytest.raises(_Stop):
        stage_runner.run(typed, str(tmp_path), None, ["vae"], progress=False)
    assert seen["cfg"] is typed.vae_train
    assert validations == after_validation
    # the MTD runtime of a stage or of generation reads the same objects
    stages.MTDModels(typed, None, vae_params={})
    assert validations == after_validation
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved == json.loads(json.dumps(typed.to_dict()))


def test_a_config_dict_handed_to_the_library_is_validated_there(tmp_path):
    c = _tiny()
    c.train.steps = 0  # changed after load: the entry point's check names it
    with pytest.raises(ConfigError, match=r"train\.steps must be a positive integer"):
        stages.build(c, "vae", str(tmp_path))
