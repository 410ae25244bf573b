"""Backends: one file per runtime behind edge.backends.base.Backend, picked from edge.formats.FORMATS."""
from __future__ import annotations

import importlib

from edge.backends.base import Backend, BackendUnavailable
from edge.formats import get_format


def backend_class(name: str) -> type[Backend]:
    fmt = get_format(name)
    module = importlib.import_module(f"edge.backends.{fmt.module}")
    return module.BACKEND


__all__ = ["Backend", "BackendUnavailable", "backend_class"]
