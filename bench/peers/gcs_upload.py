"""The plain google-cloud-storage baseline: what a script using the SDK with defaults does.

``python -m bench.peers.gcs_upload SOURCE BUCKET PREFIX``; the emulator's endpoint comes from
``BENCH_GCS_ENDPOINT`` and the service-account key JSON from ``BENCH_GCS_KEY`` (the same
credential path ours uses: a signed JWT exchanged at the key's ``token_uri``). Files are
uploaded one after another with ``Blob.upload_from_filename`` and the SDK's default settings
(no chunk size set, default retry), as the quick-start documentation shows.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(source: str, bucket_name: str, prefix: str) -> int:
    from google.cloud import storage
    from google.oauth2 import service_account

    info = json.loads(os.environ["BENCH_GCS_KEY"])
    credentials = service_account.Credentials.from_service_account_info(info)
    client = storage.Client(
        project=info["project_id"],
        credentials=credentials,
        client_options={"api_endpoint": os.environ["BENCH_GCS_ENDPOINT"]},
    )
    bucket = client.bucket(bucket_name)
    root = Path(source)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        bucket.blob(f"{prefix}/{path.relative_to(root).as_posix()}").upload_from_filename(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
