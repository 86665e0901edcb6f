"""The one private part of azure-storage-blob the plugin relies on is still there.

``AzureDestination.pipeline_run`` sends reads (``_download``) and listings (``_listing``)
through ``ContainerClient._pipeline`` (the SDK has no public ``send_request`` on its storage
clients), so credentials, retries and the abortable transport stay the SDK's. The package is
pinned to the minor version tested; when it is upgraded these tests fail first and say what
moved, before any restore does.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from azure.storage.blob import ContainerClient
from packaging.requirements import Requirement
from packaging.version import Version

import service_backup_azure

PLUGIN = Path(service_backup_azure.__file__).parent


def test_container_client_still_has_a_runnable_pipeline() -> None:
    client = ContainerClient("http://127.0.0.1:1/account", "container")
    pipeline = getattr(client, "_pipeline", None)
    assert pipeline is not None, (
        f"azure-storage-blob {importlib.metadata.version('azure-storage-blob')} has no "
        "ContainerClient._pipeline: adapt AzureDestination.pipeline_run before widening the pin"
    )
    assert callable(getattr(pipeline, "run", None)), "ContainerClient._pipeline.run is gone"


def test_installed_sdk_is_within_the_pin() -> None:
    requires = importlib.metadata.requires("service-backup-azure") or []
    pin = next(Requirement(r) for r in requires if Requirement(r).name == "azure-storage-blob")
    installed = Version(importlib.metadata.version("azure-storage-blob"))
    assert installed in pin.specifier, f"azure-storage-blob {installed} is outside {pin.specifier}"
    low, high = sorted(Version(s.version) for s in pin.specifier)
    assert (high.major, high.minor) == (low.major, low.minor + 1), (
        f"azure-storage-blob must be pinned to one tested minor version, not {pin.specifier}"
    )


def test_only_pipeline_run_touches_the_private_pipeline() -> None:
    users = {
        f"{path.name}:{number}"
        for path in PLUGIN.glob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\._pipeline\b", line)
    }
    assert len(users) == 1 and next(iter(users)).startswith("destination.py:"), (
        f"ContainerClient._pipeline is used in {sorted(users)}: keep it in pipeline_run only"
    )
