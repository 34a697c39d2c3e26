"""What every typed config block shares: the dotted path its errors name, the normalisation of
list / number / bool fields, and the conversions to and from a ConfigDict / plain dict.

A block is a frozen dataclass whose ``__post_init__`` checks its fields, so building one (from
Python, :meth:`Block.from_dict` of a ConfigDict after ``--config.x.y=v`` overrides, or a stored
``config.json``'s block) is the one validation; the library then reads its fields as they are.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, ClassVar, Optional

from nuwa_xl_jax.configuration.checks import ConfigError, check_fields

# The dotted name errors use for the block being checked: "local_train" for a train block read
# under that name, the file's name for a converted checkpoint's config.json, ...
_PATH: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("config_path", default=None)


@contextlib.contextmanager
def at(path: str):
    token = _PATH.set(path)
    try:
        yield
    finally:
        _PATH.reset(token)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value, field: str) -> None:
    if not is_int(value) or value <= 0:
        raise ConfigError(f"{field} must be a positive integer, got {value!r}")


def int_at_least(value, field: str, minimum: int) -> None:
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{field} must be an integer >= {minimum}, got {value!r}")


class Block:
    """Base of the typed blocks. Subclasses are frozen dataclasses naming their default ``PATH``
    and which fields are tuples, floats, bools and strings (checked and normalised here)."""
    PATH: ClassVar[str]
    TUPLES: ClassVar[tuple[str, ...]] = ()
    FLOATS: ClassVar[tuple[str, ...]] = ()
    BOOLS: ClassVar[tuple[str, ...]] = ()
    STRINGS: ClassVar[tuple[str, ...]] = ()

    @property
    def _path(self) -> str:
        return _PATH.get() or self.PATH

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen instance in __post_init__

    def _normalise_and_check_types(self) -> str:
        """Lists -> tuples, ints -> floats where a float is meant; bools, numbers and strings
        must be what they say. Returns the path errors name."""
        path = self._path
        for f in self.TUPLES:
            v = getattr(self, f)
            if isinstance(v, (list, tuple)):
                self._set(f, tuple(v))
            else:
                raise ConfigError(f"{path}.{f} must be a list of values, got {v!r}")
        for f in self.FLOATS:
            v = getattr(self, f)
            if not is_number(v):
                raise ConfigError(f"{path}.{f} must be a number, got {v!r}")
            self._set(f, float(v))
        for f in self.BOOLS:
            if not isinstance(getattr(self, f), bool):
                raise ConfigError(f"{path}.{f} must be True or False, got {getattr(self, f)!r}")
        for f in self.STRINGS:
            if not isinstance(getattr(self, f), str):
                raise ConfigError(f"{path}.{f} must be a string, got {getattr(self, f)!r}")
        return path

    @classmethod
    def from_dict(cls, block: Any, path: Optional[str] = None):
        """The typed block for a ConfigDict / dict (e.g. a stored ``config.json``'s block): an
        unknown field is an error, a missing one takes its default (files written before it
        existed). A block that is already typed is returned as it is (no second check)."""
        if isinstance(block, cls):
            return block
        path = path or cls.PATH
        names = [f.name for f in dataclasses.fields(cls)]
        check_fields(block, names, path)
        with at(path):
            return cls(**{k: block[k] for k in block.keys()})

    def to_dict(self) -> dict:
        """The block as a plain dict (tuples kept): ``ConfigDict(c.to_dict())`` is its config
        block."""
        return dataclasses.asdict(self)
