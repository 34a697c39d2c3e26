"""``export --format=diffusers`` is the inverse of ``convert``: convert -> export -> convert gives
the
same weights, the exported folders load in diffusers with the original tensors, and a trained
family's spatial VAE / UNet go out and back in unchanged."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tiny_family import write_random_family

from nuwa_xl_jax import convert
from nuwa_xl_jax.family import diffusers as family_diffusers
from nuwa_xl_jax.family import store
from nuwa_xl_jax.models.tklvae import is_temporal_param
from nuwa_xl_jax.weights.common import flatten, read_safetensors, torch_to_flax_leaf
from nuwa_xl_jax.weights.unet import diffusers_key_to_flax as unet_flax_path
from nuwa_xl_jax.weights.unet import is_new_layer
from nuwa_xl_jax.weights.vae import flax_path


def vae_flax_path(key):
    return flax_path(key)[0]


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tiny_models(folder):
    """A tiny AutoencoderKL and UNet2DConditionModel with every parameter perturbed, saved."""
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
        scaling_factor=0.5,
    )
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=8,
        cross_attention_dim=16,
        attention_head_dim=4,
    )
    with torch.no_grad():
        for p in list(vae.parameters()) + list(unet.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
    unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
    return vae, unet


def _spatial(variables, added):
    return {k: np.asarray(v) for k, v in flatten(variables["params"]).items() if not added(k)}


def _assert_equal(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.interop
@pytest.mark.slow  # ~45 s of CPU (four conversions, each compiling an init); the test below is fast
def test_convert_export_convert_round_trip(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    vae, unet = _tiny_models(tmp_path / "public")
    for kind in ("vae", "unet"):
        convert.convert(kind, str(tmp_path / "public" / kind), str(tmp_path / f"ours_{kind}"))
    # each converted folder is one export of the family format; export reads it as it is
    for kind in ("vae", "unet"):
        family_diffusers.export_diffusers(
            str(tmp_path / f"ours_{kind}"), str(tmp_path / f"out_{kind}")
        )
    out_vae, out_unet = tmp_path / "out_vae" / "vae", tmp_path / "out_unet" / "unet"
    assert sorted(os.listdir(tmp_path / "out_vae")) == ["vae"]

    # diffusers loads them (strictly: every tensor present, no extra) with the original tensors
    for original, folder, cls in ((vae, out_vae, diffusers.AutoencoderKL),
                                  (unet, out_unet, diffusers.UNet2DConditionModel)):
        loaded = cls.from_pretrained(str(folder))
        want = {k: v.numpy() for k, v in original.state_dict().items()}
        _assert_equal({k: v.numpy() for k, v in loaded.state_dict().items()}, want)
    assert json.load(open(out_vae / "config.json"))["scaling_factor"] == 0.5

    # and convert reads them back to the same weights (the new layers at the same identity init)
    for kind, folder, added in (
        ("vae", out_vae, is_temporal_param),
        ("unet", out_unet, is_new_layer),
    ):
        first = convert.load_converted(str(tmp_path / f"ours_{kind}"))
        convert.convert(kind, str(folder), str(tmp_path / f"again_{kind}"))
        again = convert.load_converted(str(tmp_path / f"again_{kind}"))
        assert again[0]["model"] == first[0]["model"]
        _assert_equal(flatten(again[1]["params"]), flatten(first[1]["params"]))


def test_a_trained_familys_vae_and_unet_go_out_and_back(tmp_path):
    """The CLI on a workdir, read back with the importers' renames: the family's spatial weights."""
    workdir = write_random_family(str(tmp_path / "family"), stages=("mtd_global",))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-m", "nuwa_xl_jax.export", f"--workdir={workdir}",
                        f"--out={tmp_path / 'sd'}", "--format=diffusers"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "sd")) == ["unet", "vae"]
    vae_weights, _ = store.read_vae(workdir)
    mtd_weights = store.read_export(store.export_dir(workdir, "mtd_global"))[0]["mtd"]
    # read back with the importers' own renames and layouts (what convert does, without its init)
    for kind, weights, added, rename in (("vae", vae_weights, is_temporal_param, vae_flax_path),
                                         ("unet", mtd_weights, is_new_layer, unet_flax_path)):
        ours = _spatial(weights, added)
        back = {}
        for key, value in read_safetensors(str(tmp_path / "sd" / kind)).items():
            module = rename(key)
            ndim = next(ours[f"{module}/{leaf}"].ndim for leaf in ("kernel", "scale", "bias")
                        if f"{module}/{leaf}" in ours)
            leaf, array = torch_to_flax_leaf(key, value, ndim)
            back[f"{module}/{leaf}"] = array
        _assert_equal(back, ours)
    again = subprocess.run([sys.executable, "-m", "nuwa_xl_jax.export", f"--workdir={workdir}",
                            f"--out={tmp_path / 'sd'}", "--format=diffusers"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "not empty" in again.stderr and "Traceback" not in again.stderr
