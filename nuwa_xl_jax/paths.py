"""Workdir and artifact paths: local folders or bucket URLs (``gs://bucket/run``), one type for
both, ``etils.epath`` (which Orbax uses). A URL is never made absolute (``os.path.abspath`` turns
``gs://b/x`` into ``./gs:/b/x``, a local folder on each worker)."""
from __future__ import annotations

import os

from etils import epath


def is_url(path) -> bool:
    """Whether ``path`` names a remote file system (``scheme://...``)."""
    return "://" in os.fspath(path)


def absolute(path) -> str:
    """``path`` as an absolute local path, or the URL unchanged."""
    path = os.fspath(path)
    return path if is_url(path) else os.path.abspath(os.path.expanduser(path))


def as_path(path) -> epath.Path:
    """An ``epath.Path`` for a local path (made absolute) or a URL (as it is)."""
    return epath.Path(absolute(path))
