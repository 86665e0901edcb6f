"""List Blobs answers read straight from their XML.

The SDK turns every listed blob into a ``BlobProperties`` through its generic XML model
deserializer: about a quarter of a millisecond of client CPU per blob, as much as a sixth of
reading a small blob back. ``list`` needs three fields of each (name, size, last modified),
so the page is parsed here with ``ElementTree`` (as the SDK itself parses it) and only those
are read. The request goes through the container client's pipeline like every other.
"""

from __future__ import annotations

import datetime
import email.utils
import urllib.parse
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator

import attrs


@attrs.frozen
class Listed:
    name: str
    size: int
    modified: datetime.datetime | None


@attrs.frozen
class Page:
    blobs: list[Listed]
    next_marker: str
    #: The folders of a listing with a delimiter (``BlobPrefix`` names, ending with it).
    prefixes: list[str] = attrs.Factory(list)


def list_url(
    container_url: str, prefix: str, page_size: int, marker: str, delimiter: str = ""
) -> str:
    """The List Blobs URL of one page (``marker``: where the previous page stopped); with a
    ``delimiter``, the names below the next one come back as folders (``BlobPrefix``)."""
    query = {"restype": "container", "comp": "list", "maxresults": str(page_size)}
    if prefix:
        query["prefix"] = prefix
    if delimiter:
        query["delimiter"] = delimiter
    if marker:
        query["marker"] = marker
    base, sep, existing = container_url.partition("?")
    extra = f"&{existing}" if sep and existing else ""
    return f"{base}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}{extra}"


def parse_page(body: bytes) -> Page:
    """A List Blobs answer: its blobs and the marker of the next page ('' on the last)."""
    root = ElementTree.fromstring(body)  # noqa: S314 - the storage service's answer
    prefixes = [_name(element) for element in root.iterfind("Blobs/BlobPrefix/Name")]
    return Page(list(_blobs(root)), (root.findtext("NextMarker") or "").strip(), prefixes)


def _name(element: ElementTree.Element) -> str:
    name = element.text or ""
    if element.get("Encoded", "").lower() == "true":
        return urllib.parse.unquote(name)  # names with characters XML cannot carry
    return name


def _blobs(root: ElementTree.Element) -> Iterator[Listed]:
    for blob in root.iterfind("Blobs/Blob"):
        element = blob.find("Name")
        name = _name(element) if element is not None else ""
        size = blob.findtext("Properties/Content-Length") or "0"
        modified = blob.findtext("Properties/Last-Modified")
        yield Listed(name, int(size), _http_date(modified))


def _http_date(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
