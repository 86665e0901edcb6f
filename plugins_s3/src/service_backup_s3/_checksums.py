"""What an upload carries for the store to verify, and the check of what the store answers.

One request's body (a PUT's whole object, or one part) goes with either its ``Content-MD5``,
which every S3-compatible store verifies, or its ``x-amz-checksum-crc32c`` (``upload_checksum``),
which S3 verifies before storing anything and answers back. CRC32C costs 0.08 s of CPU per GiB
where MD5 costs 1.45 s (google-crc32c uses the CPU's CRC32 instruction): CPU that a backup on
the service's own VM takes from the service.

What the store answers is then checked (``problem``): a CRC32C answered with another value is
corruption; a store that answered none ignored the header and verified nothing, so the body's
MD5 is computed then, from the bytes still in memory, and must be the ETag, as when the MD5 was
sent. ETags under SSE-KMS, and ETags that are not plain MD5s, are not compared.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import google_crc32c

Chunks = Sequence[bytes | memoryview]

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


@attrs.frozen
class Sent:
    """The checksum one request carried: ``md5`` hex or ``crc32c`` base64, and its body."""

    chunks: Chunks
    md5: str | None = None
    crc32c: str | None = None

    @classmethod
    def for_body(cls, chunks: Chunks, checksum: str) -> Sent:
        if checksum == "crc32c":
            crc = 0
            for chunk in chunks:
                crc = google_crc32c.extend(crc, _bytes(chunk))
            return cls(chunks, crc32c=base64.b64encode(crc.to_bytes(4, "big")).decode())
        return cls(chunks, md5=_md5(chunks))

    def params(self) -> dict[str, str]:
        """The request parameters that carry it."""
        if self.crc32c is not None:
            # The algorithm too: S3 then answers the checksum back (as it must be declared
            # at CreateMultipartUpload for the parts).
            return {"ChecksumAlgorithm": "CRC32C", "ChecksumCRC32C": self.crc32c}
        assert self.md5 is not None
        return {"ContentMD5": base64.b64encode(bytes.fromhex(self.md5)).decode()}

    def problem(self, answer: Mapping[str, Any], kms: bool) -> str | None:
        """Why the store's answer shows it did not keep what was sent; None when it did."""
        if self.crc32c is not None:
            answered = answer.get("ChecksumCRC32C")
            if answered == self.crc32c:
                return None
            if answered:
                return (
                    f"the store reports CRC32C {answered}, the data sent has CRC32C {self.crc32c}"
                )
        md5 = self.md5 if self.md5 is not None else _md5(self.chunks)
        etag = str(answer.get("ETag", "")).strip('"').lower()
        if kms or not _PLAIN_MD5.match(etag) or etag == md5:
            return None
        return f"the store reports MD5 {etag}, the data sent has MD5 {md5}"


def _md5(chunks: Chunks) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    for chunk in chunks:
        md5.update(chunk)
    return md5.hexdigest()


def _bytes(chunk: bytes | memoryview) -> bytes:
    """What google-crc32c takes (it refuses memoryviews): the buffer itself when the slice is
    all of it (the usual case: one read returns a whole part), else a copy."""
    if isinstance(chunk, memoryview):
        whole = chunk.obj
        if isinstance(whole, bytes) and chunk.nbytes == len(whole):
            return whole
        return chunk.tobytes()
    return bytes(chunk)
