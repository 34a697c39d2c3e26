"""The latent cache reads the T-KLVAE a training run exported, and MTD training reads the cache."""
import jax
import jax.numpy as jnp
import numpy as np

from nuwa_xl_jax import cache_latents, configuration
from nuwa_xl_jax.data import batches
from nuwa_xl_jax.models.tklvae import TKLVAE
from nuwa_xl_jax.train import stages


def test_cache_from_a_training_workdir(tmp_path):
    config = configuration.load("configs/synthetic.py:tiny")
    vae = TKLVAE.from_config(config.model.vae)
    variables = jax.jit(vae.init)(jax.random.key(0), jnp.zeros((1, 1, 32, 32, 3)))
    stages.write_export(stages.export_dir(str(tmp_path / "run"), "vae"), {"vae": variables},
                        {"latent_scale": 2.5})
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "from nuwa_xl_jax import configuration\n"
        "def get_config():\n"
        "    c = configuration.load('configs/synthetic.py:tiny')  # a shipped config, extended\n"
        f"    c.data.data_dir = {str(tmp_path / 'tfds')!r}\n"
        "    c.data.episodes = 2\n"
        "    return c\n")
    code = cache_latents.main([f"--config={cfg}",
                              f"--out={tmp_path / 'lat'}", f"--vae_workdir={tmp_path / 'run'}"])
    assert code == 0
    c = configuration.load(str(cfg))
    c.data.latent_dir = str(tmp_path / "lat")
    c.data.batch_size = 2
    batch = next(batches.make_iterator(c.data, process_index=0, process_count=1))
    assert batch["latents"].shape == (2, 4, 8, 8, 4)
    assert np.isfinite(batch["latents"]).all() and np.abs(batch["latents"]).max() > 0
