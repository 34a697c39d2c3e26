"""Sharding is config (configuration/mesh.py), as MaxText's logical_axis_rules: the mesh block
holds the logical-axis rules and the batch axes, checked against the mesh's own axis names, so a
mesh whose axes the rules do not name is a ConfigError naming the field, not a run that silently
replicates everything. Training reads the rules from the block."""
import json

import jax
import pytest
from jax.sharding import PartitionSpec as P

from nuwa_xl_jax import configuration, parallel
from nuwa_xl_jax.configuration import ConfigError, MeshConfig


def _tiny():
    return configuration.load("configs/synthetic.py:tiny")


def test_the_default_rules_are_the_mesh_blocks():
    m = configuration.validate(_tiny()).mesh
    assert m.rules == parallel.DEFAULT_RULES and m.batch_axes == ("data", "fsdp")
    # a stored config.json (lists) reads back as the same tuples
    assert MeshConfig.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_other_mesh_axes_without_rules_for_them_are_an_error_not_replication():
    c = _tiny()
    c.mesh.axes = ("replica", "model")  # rules and batch axes still name data / fsdp
    with pytest.raises(ConfigError, match=r"mesh\.rules\[0\] names mesh axis 'data', which is "
                                          r"not one of mesh\.axes \('replica', 'model'\)"):
        configuration.validate(c)


@pytest.mark.parametrize("field, value, match", [
    ("rules", (("heads", "tensor"),), r"mesh\.rules\[0\] names mesh axis 'tensor'"),
    ("rules", (("batch", "data"), ("mlp", ("fsdp", "tp"))),
     r"mesh\.rules\[1\] names mesh axis 'tp'"),
    ("rules", (("hidden", "fsdp"),), r"mesh\.rules\[0\]: 'hidden' is not a logical axis"),
    ("rules", (("mlp",),), r"mesh\.rules\[0\] must be a pair"),
    ("batch_axes", ("data", "dp"), r"mesh\.batch_axes names mesh axis 'dp'"),
])
def test_a_bad_rule_names_its_field(field, value, match):
    c = _tiny()
    setattr(c.mesh, field, value)
    with pytest.raises(ConfigError, match=match):
        configuration.validate(c)


def test_rules_for_renamed_axes_shard_on_them():
    m = MeshConfig(shape=(1, -1), axes=("replica", "model"),
                   rules=(("batch", "replica"), ("mlp", "model"), ("embed", None)),
                   batch_axes=("replica",))
    mesh = parallel.make_mesh(m.shape, m.axes)
    n = len(jax.devices())
    sharding = parallel.logical_to_sharding(P("embed", "mlp"), (3, 4 * n), mesh, m.rules)
    assert sharding.spec == P(None, "model" if n > 1 else None)
    assert parallel.batch_sharding(mesh, 2, m.batch_axes).spec == P(("replica",), None)


def test_training_reads_the_rules_from_the_config(tmp_path, monkeypatch):
    from nuwa_xl_jax.train import loop, stage_runner

    seen = {}

    def train(stage, cfg, workdir, mesh, **kw):
        seen.update(rules=kw["rules"], batch_axes=kw["batch_axes"])
        raise KeyboardInterrupt  # enough: the stage got its sharding

    monkeypatch.setattr(loop, "train", train)
    c = _tiny()
    c.mesh.rules = (("batch", ("data", "fsdp")), ("mlp", "fsdp"))
    c.mesh.batch_axes = ("data",)
    with pytest.raises(KeyboardInterrupt):
        stage_runner.run(configuration.validate(c), str(tmp_path), None, ["vae"], progress=False)
    assert seen == {"rules": (("batch", ("data", "fsdp")), ("mlp", "fsdp")),
                    "batch_axes": ("data",)}
