"""A loaded family keeps every weight on the devices (MTDs, text encoder, VAE decoder): exports are
restored as numpy, and generation must not copy them to the devices at every call."""
import jax
from jax.sharding import NamedSharding
from tiny_family import write_random_family

from nuwa_xl_jax import parallel
from nuwa_xl_jax.dod import level_models as lm
from nuwa_xl_jax.dod import runner


def test_load_family_places_weights_once(tmp_path):
    workdir = write_random_family(str(tmp_path), stages=("mtd_global", "mtd_local1"))
    mesh = parallel.make_mesh(devices=jax.devices()[:2])
    family = runner.load_family(workdir, mesh=mesh)
    trees = [family.global_params, *family.local_params, family.models.vae_params]
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            assert isinstance(leaf, jax.Array) and isinstance(leaf.sharding, NamedSharding)
            assert leaf.sharding.mesh == mesh
    # Generation's per-call placement is then the identity: no copy.
    for tree in trees:
        again = lm.place_params(tree, mesh)
        assert all(a is b for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(again)))
