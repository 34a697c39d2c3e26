"""A tiny model family on disk as training leaves it (configs/synthetic.py:tiny: L=4, depth 2, 10
frames, 32x32), with small random weights from shapes alone: generation's timing and plumbing do
not depend on training, and no compiled init runs (minutes on a busy 2-core CPU)."""
import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax import configuration, family
from nuwa_xl_jax.family.artv import ARTVModels
from nuwa_xl_jax.models.tklvae import TKLVAE
from nuwa_xl_jax.train import stage_runner

STAGES = ("mtd_global", "mtd_local1", "mtd_ar")


def random_like(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (0.05 * rng.standard_normal(s.shape)).astype(s.dtype), tree)


def write_random_family(workdir: str, stages=STAGES) -> str:
    """config.json, the vae export and every MTD stage in ``stages`` exported (random weights)."""
    config = configuration.load("configs/synthetic.py:tiny")
    stage_runner.save_config(config, workdir)
    vae = TKLVAE.from_config(config.model.vae)
    vae_shapes = jax.eval_shape(vae.init, jax.random.key(0), jnp.zeros((1, 1, 32, 32, 3)))
    family.write_export(family.export_dir(workdir, "vae"), {"vae": random_like(vae_shapes, 0)}, {})
    models = family.MTDModels(config, workdir)
    shapes = jax.eval_shape(
        lambda k: models.init(k, config.data.frames_per_call), jax.random.key(0)
    )
    artv_shapes = jax.eval_shape(ARTVModels(models).init, jax.random.key(0))
    for i, name in enumerate(stages):
        tree = artv_shapes if name == "mtd_artv" else shapes
        family.write_export(family.export_dir(workdir, name), random_like(tree, i + 1), {})
    return workdir
