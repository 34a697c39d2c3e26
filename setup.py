"""nuwa_xl_jax: NUWA-XL (diffusion over diffusion) for extremely long video, in JAX/Flax."""
from setuptools import find_packages, setup

# Ranges seen working together on CPU (Python 3.11, November 2026); see README "Install".
# jax, jaxlib, flax and orbax have a floor and no ceiling: a Colab or TPU VM image with a newer
# jax keeps it instead of being downgraded (0.10.2 / 0.12.8 are the newest this project's package
# index offers, so newer ones are untested here).
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "jaxlib>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18,<0.3",
    "tensorflow-datasets>=4.9,<5",
    "transformers>=4.40,<6",  # tokenizers only at run time
    "ml_collections>=1.1.0,<2",
    "absl-py>=2.0,<3",
    "safetensors>=0.4,<1",
    "numpy>=1.26,<3",
    "tqdm>=4.66,<5",
    "av>=12,<19",  # PyAV: video codec with bundled ffmpeg
    "pillow>=10,<14",
    "pyyaml>=6,<7",
    "tensorboardX>=2.6,<3",  # TensorBoard event files without TensorFlow
]

EXTRAS = {
    # nbclient / nbformat / ipykernel: the test that executes notebooks/nuwa_xl_demo.ipynb
    "test": [
        "pytest>=8,<10",
        "pytest-xdist>=3.5,<4",
        "nbclient>=0.10,<1",
        "nbformat>=5.10,<6",
        "ipykernel>=6.29,<8",
        "ruff>=0.15,<0.18",  # `make test` lints first (ruff.toml)
    ],
    # Only for parity tests against the public PyTorch models; never imported by the library.
    # Not pytorch-fid: it needs torchvision, whose PyPI wheel is built against CUDA torch and,
    # beside this CPU torch, breaks `import torchvision` and with it transformers' and diffusers'
    # imports.
    "interop": ["torch==2.13.0", "diffusers>=0.30,<1"],
}

setup(
    name="nuwa_xl_jax",
    version="0.1.0",
    description="NUWA-XL diffusion over diffusion for extremely long video generation, in JAX/Flax",
    # The repository's configs/ ships inside the package as nuwa_xl_jax/configs/, where
    # nuwa_xl_jax.configuration.files finds ``configs/NAME.py`` when no such file is at hand.
    packages=find_packages(include=["nuwa_xl_jax", "nuwa_xl_jax.*"]) + ["nuwa_xl_jax.configs"],
    package_dir={"nuwa_xl_jax.configs": "configs"},
    # The synthetic world's text-to-image base (nuwa_xl_jax/family/base.py) is package data too.
    package_data={"nuwa_xl_jax.configs": ["storyboards/*"],
                  "nuwa_xl_jax": ["assets/synthetic_base/*", "assets/synthetic_base/**/*"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
