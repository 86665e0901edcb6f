"""Every real destination server, for tests that run the same scenario on each type.

The servers and fresh locations are the manifest tests' ``backend`` fixture; each
parametrized ``destination_entry`` is a destination entry for an empty location on one of them.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.manifests.conftest import Backend, azurite_server, backend, gcs_server, moto, sshd

__all__ = ["azurite_server", "backend", "gcs_server", "moto", "sshd"]


@pytest.fixture
def destination_entry(backend: Backend) -> dict[str, Any]:
    """``{"type", "name", "config"}`` of an empty location on one real server."""
    return {"type": backend.type, "name": f"{backend.type}-dest", "config": backend.fresh()}
