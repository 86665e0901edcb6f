"""A network failure that escapes the retries is one line naming the GCS endpoint.

``Translator.translate`` once raised ``TypeError`` for these (a tuple of exception types
``|``-ed with a class), so the run reported ``TypeError: unsupported operand ...`` instead.
"""

from __future__ import annotations

import requests
import urllib3

from service_backup_gcs._errors import Translator


def translator() -> Translator:
    return Translator(
        bucket="b", endpoint="https://gcs.example", principal="p", token_uri="t", secrets=[]
    )


def test_connection_errors_name_the_endpoint() -> None:
    for exc in (
        requests.ConnectionError(
            "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
        ),
        urllib3.exceptions.ProtocolError("Connection reset by peer"),
        ConnectionResetError(104, "Connection reset by peer"),
    ):
        text = str(translator().translate(exc, "upload of b/k"))
        assert (
            text
            == "upload of b/k failed: cannot reach GCS at https://gcs.example: connection reset"
        ), text
