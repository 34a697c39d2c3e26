"""The typed ``mesh`` block (:class:`MeshConfig`): the device mesh's shape and axis names, and how
arrays are laid out on it: the logical-axis rules (as MaxText's ``logical_axis_rules``) and the
mesh axes a batch is split over. Every mesh axis the rules or the batch axes name must be one of
``axes``; a name that is not would silently replicate what it was meant to shard."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

from nuwa_xl_jax.configuration.block import Block
from nuwa_xl_jax.configuration.checks import ConfigError

# The logical axis names parameters and activations carry (nn.with_logical_partitioning):
#   batch      examples (videos, or segments of a level)
#   conv_in / conv_out   input / output channels of a conv kernel
#   embed / mlp          input / output features of a dense kernel
#   heads      attention projection width;  vocab  token embedding rows;  norm  norm scale/bias
LOGICAL_AXES = ("batch", "conv_in", "conv_out", "embed", "mlp", "heads", "vocab", "norm")
# Each logical axis -> a mesh axis, a tuple of mesh axes, or None (replicated): FSDP by default.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("conv_out", "fsdp"),
    ("mlp", "fsdp"),
    ("heads", "fsdp"),
    ("vocab", "fsdp"),
    ("conv_in", None),
    ("embed", None),
    ("norm", None),
)
DEFAULT_BATCH_AXES = ("data", "fsdp")


@dataclasses.dataclass(frozen=True)
class MeshConfig(Block):
    shape: tuple[int, ...] = (-1, 1)  # -1: the remaining devices
    axes: tuple[str, ...] = ("data", "fsdp")
    rules: tuple[tuple[str, Any], ...] = DEFAULT_RULES
    batch_axes: tuple[str, ...] = DEFAULT_BATCH_AXES

    PATH: ClassVar[str] = "mesh"
    TUPLES: ClassVar[tuple[str, ...]] = ("shape", "axes", "rules", "batch_axes")

    def __post_init__(self):
        path = self._normalise_and_check_types()
        if len(self.shape) != len(self.axes):
            raise ConfigError(f"{path}.shape {self.shape} and {path}.axes {self.axes} must have "
                              "the same length")
        self._set("rules", tuple(self._rule(i, rule, path) for i, rule in enumerate(self.rules)))
        self._check_mesh_axes(self.batch_axes, f"{path}.batch_axes")

    def _rule(self, i: int, rule: Any, path: str) -> tuple[str, Optional[Any]]:
        """``(logical, mesh axes)`` normalised (lists from JSON -> tuples) and checked."""
        field = f"{path}.rules[{i}]"
        if not isinstance(rule, (list, tuple)) or len(rule) != 2:
            raise ConfigError(f"{field} must be a pair (logical axis, mesh axis or axes or None), "
                              f"got {rule!r}")
        logical, mesh_axes = rule
        if logical not in LOGICAL_AXES:
            raise ConfigError(f"{field}: {logical!r} is not a logical axis the models use; "
                              f"expected one of {LOGICAL_AXES}")
        if isinstance(mesh_axes, (list, tuple)):
            mesh_axes = tuple(mesh_axes)
            self._check_mesh_axes(mesh_axes, field)
        elif mesh_axes is not None:
            self._check_mesh_axes((mesh_axes,), field)
        return logical, mesh_axes

    def _check_mesh_axes(self, names: tuple, field: str) -> None:
        for name in names:
            if name not in self.axes:
                raise ConfigError(f"{field} names mesh axis {name!r}, which is not one of "
                                  f"mesh.axes {self.axes}: name one of those (or None to "
                                  "replicate), or add the axis to mesh.axes and mesh.shape")
