"""The plain google-cloud-storage download baseline: what a script using the SDK does.

``python -m bench.peers.gcs_download BUCKET PREFIX INTO``: every object under ``PREFIX/`` is
written to the same relative path under ``INTO``, one after another, with
``Blob.download_to_filename`` and the SDK's defaults. Endpoint and key as ``gcs_upload``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(bucket_name: str, prefix: str, into: str) -> int:
    from google.cloud import storage
    from google.oauth2 import service_account

    info = json.loads(os.environ["BENCH_GCS_KEY"])
    credentials = service_account.Credentials.from_service_account_info(info)
    client = storage.Client(
        project=info["project_id"],
        credentials=credentials,
        client_options={"api_endpoint": os.environ["BENCH_GCS_ENDPOINT"]},
    )
    root = Path(into)
    for blob in client.list_blobs(bucket_name, prefix=f"{prefix}/"):
        path = root / blob.name[len(prefix) + 1 :]
        path.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
