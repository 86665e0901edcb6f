"""Every real destination server behind ``backend`` (the manifests suite's fixture, reused)."""

from __future__ import annotations

from tests.manifests.conftest import azurite_server, backend, gcs_server, moto, sshd

__all__ = ["azurite_server", "backend", "gcs_server", "moto", "sshd"]
