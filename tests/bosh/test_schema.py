"""The schema the director checks manifests with (embedded in backup.yml.erb) is exactly what
``service-backup schema --json`` generates from the daemon's config classes. When a config
class changes, this fails until ``bosh/scripts/update-schema`` is run and the result committed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

from .job import JOB_SRC

TEMPLATE = JOB_SRC / "templates" / "backup.yml.erb"
BLOCK = re.compile(r"  schema = JSON\.parse\(<<~'SCHEMA'\)\n(.*?)  SCHEMA\n", re.S)


def embedded_schema_text() -> str:
    found = BLOCK.findall(TEMPLATE.read_text())
    assert len(found) == 1, f"expected one schema block in {TEMPLATE.name}, found {len(found)}"
    return textwrap.dedent(found[0])


def test_embedded_schema_matches_the_config_classes() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "service_backup.cli", "schema", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stderr
    embedded = embedded_schema_text()
    assert embedded == generated.stdout, (
        "the schema in backup.yml.erb and the config classes differ: run bosh/scripts/update-schema"
        " and commit the template"
    )


def test_embedded_schema_covers_every_built_in_type_and_section() -> None:
    schema = json.loads(embedded_schema_text())
    assert set(schema["destination_types"]) >= {"s3", "azure", "gcs", "scp", "local"}
    top = schema["config"]["fields"]
    for section in ("alerts", "healthchecks", "apprise"):
        assert top[section]["kind"] == "object", section
    retention = schema["destination"]["fields"]["retention"]["fields"]
    assert set(retention) == {f"keep_{k}" for k in ("last", "daily", "weekly", "monthly", "yearly")}
    assert all(node == {"kind": "integer", "minimum": 0} for node in retention.values())
