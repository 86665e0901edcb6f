"""What the suite cannot know about WebDAV: the config's checks, the files on the server,
temporary names, collections, TLS with a private CA."""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from service_backup_webdav import WebDAVConfig
from service_backup_webdav.destination import PARTIAL_MARK, WebDAVDestination
from webdav_server import WebDAVServer, webdav_server

from service_backup.config import parse_config, structure_destination_config
from service_backup.destination import DestinationContext
from service_backup.errors import ConfigError, DestinationError, ObjectNotFound, SourceError
from service_backup.plugins import load_registry
from service_backup.source import Source


def raw_request(dav: WebDAVServer, method: str, path: str, body: bytes = b"") -> int:
    """One request made without the plugin, as another WebDAV client (or a crash) would."""
    token = base64.b64encode(f"{dav.username}:{dav.password}".encode()).decode()
    conn = http.client.HTTPConnection(urlsplit(dav.url).netloc, timeout=10)
    try:
        conn.request(method, quote(path), body=body, headers={"Authorization": f"Basic {token}"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def open_dest(raw: dict) -> WebDAVDestination:
    config = structure_destination_config(raw, WebDAVConfig)
    return WebDAVDestination(config, DestinationContext("nas"))


def served_path(dav: WebDAVServer, config: dict, key: str = "") -> Path:
    base = config["url"].removeprefix(dav.url + "/")
    return dav.root / base / key


# --------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("ftp://host/backups", "expected http://host"),
        ("dav.example.com/backups", "expected http://host"),
        ("https://user:pw@dav.example.com/backups", "put the user name and password"),
        ("https://dav.example.com/backups?x=1", "query"),
        ("https://dav.example.com:99999/backups", "port"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "destinations": [{"type": "webdav", "config": {"url": url}}],
                "source_folder": "/var/vcap/store",
                "cron_schedule": "@daily",
            },
            load_registry(hook_plugins=False),
        )
    message = str(info.value)
    assert "destinations[0].config" in message and "url" in message
    assert complaint in message
    assert ":pw@" not in message, "a password inside the url must not be echoed"


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="timeout_seconds"):
        structure_destination_config(
            {"url": "http://127.0.0.1:1/x", "timeout_seconds": 0}, WebDAVConfig
        )


def test_describe_names_the_collection_without_credentials(fresh_config: dict) -> None:
    with open_dest(fresh_config) as dest:
        text = dest.describe("deploy/2026/11/26")
    assert text == f"{fresh_config['url']}/deploy/2026/11/26"
    assert fresh_config["password"] not in text


# ----------------------------------------------------------------- what lands on the server
def test_objects_are_plain_files_under_the_collection(dav: WebDAVServer, fresh_config) -> None:
    with open_dest(fresh_config) as dest:
        dest.ensure_location()
        info = dest.write("2026/11/26/dump 1%?#.rdb", Source.from_bytes(b"redis dump"))
    assert info.size == 10
    stored = served_path(dav, fresh_config, "2026/11/26/dump 1%?#.rdb")
    assert stored.read_bytes() == b"redis dump"
    leftovers = [p.name for p in stored.parent.iterdir() if p.name.startswith(PARTIAL_MARK)]
    assert leftovers == [], "the temporary upload name was left behind after the MOVE"


def test_temporary_names_are_never_listed(dav: WebDAVServer, fresh_config) -> None:
    with open_dest(fresh_config) as dest:
        dest.ensure_location()
        dest.write("2026/11/26/complete.rdb", Source.from_bytes(b"whole"))
        # what an upload cut off by a crash leaves behind: a temporary name, never MOVEd
        base = urlsplit(fresh_config["url"]).path
        partial = f"{base}/2026/11/26/{PARTIAL_MARK}0123abcd"
        assert raw_request(dav, "PUT", partial, b"half an upload") in (200, 201, 204)
        assert served_path(dav, fresh_config, f"2026/11/26/{PARTIAL_MARK}0123abcd").exists()
        assert [o.key for o in dest.list("")] == ["2026/11/26/complete.rdb"]


def test_source_shrinking_mid_upload_fails_as_a_source_error(fresh_config) -> None:
    with open_dest(fresh_config) as dest:
        dest.ensure_location()
        with pytest.raises(SourceError, match=r"short\.bin ended early"):
            dest.write("short.bin", Source("short.bin", 10, data=b"12345"))
        assert list(dest.list("")) == []
        with pytest.raises(ObjectNotFound):
            dest.stat("short.bin")


def test_collections_are_not_objects(dav: WebDAVServer, fresh_config) -> None:
    with open_dest(fresh_config) as dest:
        dest.ensure_location()
        dest.write("dir/inside.txt", Source.from_bytes(b"kept"))
        with pytest.raises(ObjectNotFound):
            dest.stat("dir")
        with pytest.raises(ObjectNotFound):
            dest.delete("dir")  # must not remove the whole tree
        assert [o.key for o in dest.list("dir/")] == ["dir/inside.txt"]
    assert served_path(dav, fresh_config, "dir/inside.txt").read_bytes() == b"kept"


def test_listing_a_partial_name_prefix_finds_only_matching_keys(fresh_config) -> None:
    with open_dest(fresh_config) as dest:
        dest.ensure_location()
        for key in ("2026/11/25/a", "2026/11/26/b", "2026/12/01/c", "2027/01/01/d"):
            dest.write(key, Source.from_bytes(b"x"))
        assert sorted(o.key for o in dest.list("2026/11/2")) == ["2026/11/25/a", "2026/11/26/b"]
        assert sorted(o.key for o in dest.list("2026/")) == [
            "2026/11/25/a", "2026/11/26/b", "2026/12/01/c",
        ]  # fmt: skip
        assert list(dest.list("nothing-here/")) == []


def test_a_file_where_the_collection_should_be_is_reported(dav: WebDAVServer, fresh_config):
    base = urlsplit(fresh_config["url"]).path
    assert raw_request(dav, "MKCOL", base.rsplit("/", 1)[0]) == 201
    assert raw_request(dav, "PUT", base, b"not a folder") in (200, 201, 204)
    with open_dest(fresh_config) as dest, pytest.raises(DestinationError, match="not a collection"):
        dest.ensure_location()


def test_wrong_password_names_server_and_user_not_password(fresh_config) -> None:
    wrong = {**fresh_config, "password": "definitely-wrong-password"}
    with open_dest(wrong) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()
    message = str(info.value)
    assert "401" in message and "backup-user" in message
    assert "definitely-wrong-password" not in message
    assert fresh_config["password"] not in message


# ---------------------------------------------------------------------------------- TLS
@pytest.fixture(scope="module")
def tls_dav(tmp_path_factory: pytest.TempPathFactory):
    """The same server over HTTPS with a certificate from a throwaway private CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "server.key", folder / "server.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with webdav_server(extra_args=["--cert", str(cert), "--key", str(key)]) as server:
        yield server, cert.read_text()


def test_https_with_a_private_ca(tls_dav) -> None:
    server, ca_pem = tls_dav
    raw = server.config("tls-backups")
    assert raw["url"].startswith("https://")
    with open_dest({**raw, "ca_cert": ca_pem}) as dest:
        dest.ensure_location()
        dest.write("secure.txt", Source.from_bytes(b"over tls"))
        with dest.open_read("secure.txt") as stream:
            assert stream.read() == b"over tls"
    with open_dest(raw) as dest, pytest.raises(DestinationError) as info:
        dest.ensure_location()  # the private CA is not in the system trust store
    assert "certificate" in str(info.value) and "\n" not in str(info.value)


def test_a_server_that_never_answers_fails_within_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        raw = {"url": f"http://127.0.0.1:{port}/backups", "timeout_seconds": 1}
        started = time.monotonic()
        with open_dest(raw) as dest, pytest.raises(DestinationError, match="no answer within 1s"):
            dest.ensure_location()
        assert time.monotonic() - started < 10
