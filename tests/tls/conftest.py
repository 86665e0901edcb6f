"""The three object stores, each behind a TLS relay whose certificate a private CA signed.

The stores themselves are the real emulators (moto, Azurite, gcp-storage-emulator with the
signed-JWT token endpoint), one of each for the session, on plain HTTP; the relays give each
an ``https://127.0.0.1:<port>`` endpoint. The private CA is written only into test
"OS-style" bundles (the public roots the machine trusts, plus or minus that CA): never into
certifi, never passed as the plugin's own ``ca_cert``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from tests.azure.server import AzuriteServer, AzuriteUnavailable, azurite
from tests.gcs.server import EmulatorUnavailable, GCSServer, gcs_emulator
from tests.s3.server import MotoServer, ServerError, moto_server
from tests.servers import unavailable
from tests.tls.relay import PrivateCA, TlsRelay


@pytest.fixture(scope="session")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return PrivateCA.create(tmp_path_factory.mktemp("private-ca"))


@pytest.fixture(scope="session")
def os_bundles(tmp_path_factory: pytest.TempPathFactory, private_ca: PrivateCA) -> dict[str, Path]:
    """``with_ca``: the public roots followed by the private CA, as ``update-ca-certificates``
    leaves the store after BOSH installed ``trusted_certs``; ``without_ca``: the roots only."""
    folder = tmp_path_factory.mktemp("os-trust-store")
    roots = Path(certifi.where()).read_text()
    without = folder / "ca-certificates-without.crt"
    without.write_text(roots)
    with_ca = folder / "ca-certificates.crt"
    with_ca.write_text(roots.rstrip("\n") + "\n" + private_ca.ca_file.read_text())
    return {"with_ca": with_ca, "without_ca": without}


@pytest.fixture(scope="session")
def moto_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    try:
        with moto_server(tmp_path_factory.mktemp("moto-behind-tls")) as server:
            yield server
    except ServerError as exc:
        unavailable(f"moto server: {exc}")


@pytest.fixture(scope="session")
def azurite_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    try:
        with azurite(tmp_path_factory.mktemp("azurite-behind-tls")) as server:
            yield server
    except AzuriteUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def gcs_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    try:
        with gcs_emulator(tmp_path_factory.mktemp("gcs-behind-tls")) as server:
            yield server
    except EmulatorUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def relay_to(private_ca: PrivateCA) -> Iterator[object]:
    """``relay_to(port, https_locations=False)``: a TLS relay to a local port, closed when
    the test ends."""
    relays: list[TlsRelay] = []

    def start(port: int, https_locations: bool = False) -> TlsRelay:
        relay = TlsRelay(port, private_ca, https_locations).__enter__()
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        relay.__exit__(None, None, None)
