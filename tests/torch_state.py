"""Random PyTorch state dicts for the parity tests of conv / frozen-batch-norm networks (FID's
Inception, I3D): He-scaled conv and linear weights, so activations keep their size through many
layers, and batch norms near identity with random running statistics."""
import numpy as np
import pytest


def random_state_dict(shapes: dict, seed: int = 0) -> dict:
    """``{key: tensor}`` for ``{key: shape}`` in a torch state-dict layout (``...bn.weight``,
    ``...running_mean``, ``...num_batches_tracked``, other ``weight`` / ``bias``)."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("bn.weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state
