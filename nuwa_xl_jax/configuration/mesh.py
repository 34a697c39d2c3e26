"""The typed ``mesh`` block (:class:`MeshConfig`): the device mesh's shape and axis names."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from nuwa_xl_jax.configuration.block import Block
from nuwa_xl_jax.configuration.checks import ConfigError


@dataclasses.dataclass(frozen=True)
class MeshConfig(Block):
    shape: tuple[int, ...] = (-1, 1)  # -1: the remaining devices
    axes: tuple[str, ...] = ("data", "fsdp")

    PATH: ClassVar[str] = "mesh"
    TUPLES: ClassVar[tuple[str, ...]] = ("shape", "axes")

    def __post_init__(self):
        path = self._normalise_and_check_types()
        if len(self.shape) != len(self.axes):
            raise ConfigError(f"{path}.shape {self.shape} and {path}.axes {self.axes} must have "
                              "the same length")
