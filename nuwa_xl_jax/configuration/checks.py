"""The error every config check raises, and the unknown-field check every block uses."""
from __future__ import annotations

from typing import Any, Iterable


class ConfigError(ValueError):
    """A config value that cannot work. The message names the field and the fix."""


def check_fields(section: Any, allowed: Iterable[str], path: str) -> None:
    """Raises ConfigError for any field of ``section`` not in ``allowed``."""
    allowed = set(allowed)
    unknown = sorted(set(section.keys()) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {', '.join(f'{path}.{k}' for k in unknown)}; "
            f"known fields of {path}: {', '.join(sorted(allowed))}")
