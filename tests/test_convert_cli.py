"""``python -m nuwa_xl_jax.convert``: end to end on a tiny saved diffusers VAE, and its refusals."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from cpu_flags import xla_flags

from nuwa_xl_jax import convert
from nuwa_xl_jax.models.tklvae import TKLVAE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
    )
    folder = tmp_path_factory.mktemp("diffusers_vae")
    vae.save_pretrained(str(folder), safe_serialization=True)
    return str(folder)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
    return subprocess.run([sys.executable, "-m", "nuwa_xl_jax.convert", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.interop
def test_cli_writes_checkpoint_and_config_then_refuses_to_overwrite(diffusers_folder, tmp_path):
    dst = str(tmp_path / "converted")
    done = _cli("--kind=vae", f"--src={diffusers_folder}", f"--dst={dst}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(dst)) == [
        "files.json",
        "model_config.json",
        "params",
    ]  # the family format

    config, variables = convert.load_converted(dst)
    assert config["kind"] == "vae" and config["model"]["block_out_channels"] == [16, 32]
    module = TKLVAE.from_config(__import__("ml_collections").ConfigDict(config["model"]))
    assert module.temporal
    _, expected = convert.load_diffusers_vae(diffusers_folder)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 variables, expected)
    video = np.zeros((1, 2, 8, 8, 3), np.float32)
    mean, _ = module.apply(variables, video, method="encode")
    assert mean.shape == (1, 2, 4, 4, 4)

    again = _cli("--kind=vae", f"--src={diffusers_folder}", f"--dst={dst}")
    assert again.returncode != 0
    assert "is not empty; refusing to overwrite it" in again.stderr
    assert "Traceback" not in again.stderr


def test_refusals_are_clear(tmp_path, monkeypatch):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(convert.ConvertError, match="is not empty; refusing to overwrite"):
        convert.convert("vae", str(tmp_path), str(occupied))
    assert (occupied / "keep.txt").read_text() == "mine"
    with pytest.raises(
        convert.ConvertError, match=r"--kind='gan' is not supported; expected one of"
    ):
        convert.loader_for("gan")
    monkeypatch.setitem(convert.KINDS, "unet", ("nuwa_xl_jax.weights.no_such_importer", "load_x"))
    with pytest.raises(
        convert.ConvertError, match=r"--kind=unet needs nuwa_xl_jax.weights.no_such_importer.load_x"
    ):
        convert.loader_for("unet")
    assert convert.loader_for("vae") is convert.load_diffusers_vae


def test_cli_bad_source_is_a_clear_error(tmp_path):
    done = _cli("--kind=vae", f"--src={tmp_path}", f"--dst={tmp_path / 'out'}")
    assert done.returncode != 0
    assert "config.json' not found" in done.stderr and "Traceback" not in done.stderr
    assert not os.path.exists(tmp_path / "out")
