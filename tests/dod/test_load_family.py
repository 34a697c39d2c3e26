"""A loaded family keeps every weight on the devices (MTDs, text encoder, VAE decoder): exports are
restored as numpy, and generation must not copy them to the devices at every call."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from nuwa_xl_jax import configuration, parallel
from nuwa_xl_jax.dod import engine
from nuwa_xl_jax.dod import generate as gen
from nuwa_xl_jax.models.tklvae import TKLVAE
from nuwa_xl_jax.train import pipeline, stages

from test_engine import L


def random_like(shapes, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(0, 0.02, s.shape).astype(s.dtype), shapes)


def test_load_family_places_weights_once(tmp_path):
    workdir = str(tmp_path)
    config = configuration.load("configs/synthetic.py:tiny")
    pipeline.save_config(config, workdir)
    vae = TKLVAE.from_config(config.model.vae)
    vae_shapes = jax.eval_shape(vae.init, jax.random.key(0), jnp.zeros((1, 1, 32, 32, 3)))
    stages.write_export(stages.export_dir(workdir, "vae"), {"vae": random_like(vae_shapes, 0)}, {})
    models = stages.MTDModels(config, workdir)
    shapes = jax.eval_shape(lambda k: models.init(k, L), jax.random.key(0))
    for i, name in enumerate(("mtd_global", "mtd_local1")):
        stages.write_export(stages.export_dir(workdir, name), random_like(shapes, i + 1), {})

    mesh = parallel.make_mesh(devices=jax.devices()[:2])
    family = gen.load_family(workdir, mesh=mesh)
    trees = [family.global_params, *family.local_params, family.models.vae_params]
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            assert isinstance(leaf, jax.Array) and isinstance(leaf.sharding, NamedSharding)
            assert leaf.sharding.mesh == mesh
    # Generation's per-call placement is then the identity: no copy.
    for tree in trees:
        again = engine.place_params(tree, mesh)
        assert all(a is b for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(again)))
