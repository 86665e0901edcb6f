"""The S3 server fixtures, for ``status`` against a real object store (moto)."""

from tests.s3.conftest import moto, s3_config  # noqa: F401
