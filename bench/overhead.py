"""What the daemon costs when it is not uploading: start-up and the idle process.

Start-up is ``service-backup validate`` on a config naming all five destination types (so
every destination plugin is imported and every config class built), measured as a whole
process like the uploads. The idle daemon is ``service-backup daemon`` on the same config with
a schedule that does not fire during the window: its RSS and the CPU it burns while waiting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import yaml

from .measure import GNU_TIME, Summary, _children, _rss_kib, parse_time_report, run_measured

NEVER = "0 0 1 1 *"  # 1 January, midnight: does not fire during a benchmark


def _keys() -> tuple[str, str]:
    """A throwaway RSA key (PKCS#8 PEM) and Ed25519 key (OpenSSH), so validation sees real keys."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    ed = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    return rsa_pem, ed


def all_types_config(work: Path, source: Path, types: list[str] | None = None) -> Path:
    """A config with one destination of each type (values well-formed, servers not needed)."""
    rsa_pem, ed = _keys()
    account = {
        "type": "service_account",
        "project_id": "bench-project",
        "private_key_id": "bench",
        "private_key": rsa_pem,
        "client_email": "bench@bench-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",
    }
    destinations: list[dict[str, Any]] = [
        {"type": "local", "name": "nfs", "config": {"path": str(work / "dest" / "idle")}},
        {
            "type": "s3",
            "name": "primary-s3",
            "config": {
                "bucket_name": "bench-backups",
                "bucket_path": "redis",
                "access_key_id": "AKIABENCH",
                "secret_access_key": "bench-secret",
                "endpoint_url": "http://127.0.0.1:9",
                "region": "",
            },
        },
        {
            "type": "azure",
            "name": "dr-azure",
            "config": {
                "storage_account": "devstoreaccount1",
                "storage_access_key": "YmVuY2gta2V5",
                "container": "bench",
                "path": "redis",
                "endpoint": "http://127.0.0.1:9/devstoreaccount1",
            },
        },
        {
            "type": "gcs",
            "name": "gcs",
            "config": {
                "service_account_json": json.dumps(account),
                "project_id": "bench-project",
                "bucket_name": "bench-backups",
            },
        },
        {
            "type": "scp",
            "name": "onprem",
            "config": {
                "user": "backup",
                "server": "127.0.0.1",
                "destination": "/srv/backups",
                "fingerprint": "",
                "key": ed,
                "port": 9,
            },
        },
    ]
    if types is not None:
        destinations = [d for d in destinations if d["type"] in types]
    document = {
        "destinations": destinations,
        "source_folder": str(source),
        "cron_schedule": NEVER,
        "deployment_name": "bench",
        "add_deployment_name_to_backup_path": True,
    }
    name = "all-types" if types is None else "-".join(types)
    path = work / "configs" / f"overhead-{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@attrs.frozen
class StartupResult:
    label: str
    summary: Summary | None
    note: str = ""


def measure_startup(bin_dir: Path, config: Path, label: str, runs: int) -> StartupResult:
    argv = [str(bin_dir / "service-backup"), "validate", str(config)]
    run_measured(argv)  # warm-up: bytecode and page cache
    results = [run_measured(argv) for _ in range(runs)]
    bad = [m for m in results if not m.ok]
    note = f"validate failed: {bad[0].stderr_tail[-200:]}" if bad else ""
    return StartupResult(label, Summary.of(results), note)


@attrs.frozen
class IdleResult:
    seconds: float
    ready_seconds: float
    rss_start_kib: int
    rss_end_kib: int
    max_rss_kib: int
    cpu_seconds: float
    note: str = ""

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu_seconds / self.seconds if self.seconds else 0.0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_idle(bin_dir: Path, config: Path, seconds: float) -> IdleResult:
    """Start the daemon under ``time -v``, wait for its start line, watch it idle, stop it."""
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        report = Path(tmp) / "time.txt"
        started = time.monotonic()
        process = subprocess.Popen(
            [
                GNU_TIME,
                "-v",
                "-o",
                str(report),
                str(bin_dir / "service-backup"),
                "daemon",
                str(config),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        ready = threading.Event()

        def watch() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if b"Service-backup Started" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        err_chunks: list[bytes] = []
        threading.Thread(
            target=lambda: err_chunks.append(process.stderr.read()),  # type: ignore[union-attr]
            daemon=True,
        ).start()
        deadline = time.monotonic() + 60
        while not ready.wait(0.05) and process.poll() is None and time.monotonic() < deadline:
            pass  # waiting for the start line; give up early if the daemon exited
        if not ready.is_set():
            if process.poll() is None:
                process.kill()
            process.wait()
            stderr = b"".join(err_chunks).decode(errors="replace").strip()[-300:]
            return IdleResult(
                seconds, 0, 0, 0, 0, 0, f"daemon did not log 'Service-backup Started': {stderr}"
            )
        ready_at = time.monotonic() - started
        children = _children(process.pid)
        if not children:
            process.wait()
            stderr = b"".join(err_chunks).decode(errors="replace")[-200:]
            return IdleResult(seconds, ready_at, 0, 0, 0, 0, f"daemon exited: {stderr}")
        pid = children[0]
        rss_start = _rss_kib(pid)
        cpu_start = _cpu_seconds(pid)
        window_start = time.monotonic()
        time.sleep(seconds)  # the measurement window itself, not synchronisation
        cpu_end = _cpu_seconds(pid)
        window = time.monotonic() - window_start
        rss_end = _rss_kib(pid)
        os.kill(pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        values = parse_time_report(report.read_text() if report.exists() else "")
    note = "" if process.returncode == 0 else f"daemon exit status {process.returncode}"
    return IdleResult(
        window,
        ready_at,
        rss_start,
        rss_end,
        int(values.get("max_rss_kib", 0)),
        cpu_end - cpu_start,
        note,
    )


if __name__ == "__main__":  # pragma: no cover - manual check
    print(all_types_config(Path(sys.argv[1]), Path(sys.argv[2])))
