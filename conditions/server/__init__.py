"""The conditions REST service: a FastAPI app over any :class:`~conditions.store.base.Store`.

``create_app(store)`` builds the app; ``conditionsdb serve`` runs it under uvicorn. The
native API lives under ``/api/v1``; the basf2-compatible read endpoints under ``/v2``.

Importing this package does not import FastAPI (the client only needs :mod:`.wire`).
"""

from __future__ import annotations

from typing import Any


def create_app(store: Any, **options: Any):
    """Build the FastAPI app serving ``store``; see :func:`conditions.server.app.create_app`."""
    from .app import create_app as _create_app

    return _create_app(store, **options)


__all__ = ["create_app"]
