"""What ``promote_by_copy`` costs a same-day re-run on S3 (moto), Azure (Azurite) and GCS (the
emulator): ``python -m bench.promote_cost [--stores s3,azure,gcs] [--sets big,many] [--runs N]
[--files N]``.

For each store and data set two locations get a first run of the day; then same-day re-runs
alternate between the location without the option (the earlier manifest is withdrawn, files
overwritten in place) and the one with it (staged, then promoted by server-side copy and the
staged objects deleted), so that load on a shared machine falls on both alike. Each re-run
reports wall time, the client's CPU (this process: user+sys of all its threads) and the
server's CPU (its process and children, from /proc). The servers are the test suite's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service_backup.config import parse_config
from service_backup.plugins import load_registry
from service_backup.processes import ProcessManager
from service_backup.run import run_backup

KiB, MiB = 1024, 1024 * 1024


def data_sets(files: int) -> dict[str, list[tuple[str, int]]]:
    """``big``: one 1 GiB file; ``many``: ``files`` files of 16 KiB in folders of 100."""
    return {
        "big": [("big.bin", 1024 * MiB)],
        "many": [(f"d{i // 100}/f{i}.dat", 16 * KiB) for i in range(files)],
    }


def server_cpu(pid: int) -> float:
    """User+sys seconds of ``pid`` and its reaped children, plus its live children."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / tick
    return total


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def server(store: str, folder: Path) -> Iterator[tuple[int, Any]]:
    if store == "s3":
        from tests.s3.conftest import new_bucket_name
        from tests.s3.server import moto_server

        with moto_server(folder) as moto:
            yield (
                moto.pid,
                lambda: {
                    "bucket_name": new_bucket_name(),
                    "bucket_path": "backups",
                    "access_key_id": moto.access_key_id,
                    "secret_access_key": moto.secret_access_key,
                    "endpoint_url": moto.endpoint,
                },
            )
    elif store == "azure":
        from tests.azure.server import azurite

        with azurite(folder) as az:
            yield (
                az.pid,
                lambda: {
                    "storage_account": az.account_name,
                    "storage_access_key": az.account_key,
                    "container": f"pc-{uuid.uuid4().hex[:20]}",
                    "path": "backups",
                    "endpoint": az.account_url,
                },
            )
    else:
        from tests.gcs.server import gcs_emulator

        with gcs_emulator(folder) as gcs:
            yield gcs.pid, lambda: gcs.config(f"sb-pc-{uuid.uuid4().hex[:16]}", bucket_path="b")


def write_set(root: Path, files: list[tuple[str, int]]) -> None:
    for relative, size in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            left = size
            while left:
                chunk = os.urandom(min(left, 8 * MiB))
                out.write(chunk)
                left -= len(chunk)


def one_run(store: str, raw: dict[str, Any], source: Path, pid: int) -> dict[str, float]:
    registry = load_registry(hook_plugins=False)
    document = {
        "destinations": [{"type": store, "name": "bench", "config": raw}],
        "source_folder": str(source),
        "cron_schedule": "@daily",
    }
    config = parse_config(json.loads(json.dumps(document)), registry)
    wall, cpu, srv = time.monotonic(), client_cpu(), server_cpu(pid)
    result = run_backup(config, registry, ProcessManager())
    if not result.ok:
        raise SystemExit(f"{store}: run failed: {result.error}")
    return {
        "wall": time.monotonic() - wall,
        "client": client_cpu() - cpu,
        "server": server_cpu(pid) - srv,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="s3,azure,gcs")
    parser.add_argument("--sets", default="big,many")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(
        "--files",
        type=int,
        default=1000,
        help="files in the many set (the GCS emulator "
        "rewrites a metadata file of every object it holds on each write: keep it small there)",
    )
    args = parser.parse_args()
    sets = data_sets(args.files)
    rows = []
    with tempfile.TemporaryDirectory(prefix="promote-cost-") as tmp:
        work = Path(tmp)
        for store in args.stores.split(","):
            with server(store, work / f"{store}-server") as (pid, fresh):
                for name in args.sets.split(","):
                    source = work / f"src-{name}"
                    if not source.exists():
                        write_set(source, sets[name])
                    raws = {False: fresh(), True: {**fresh(), "promote_by_copy": True}}
                    for raw in raws.values():
                        one_run(store, raw, source, pid)  # the day's first, complete run
                    seen: dict[bool, list[dict[str, float]]] = {False: [], True: []}
                    for _ in range(args.runs):
                        for option in (False, True):
                            seen[option].append(one_run(store, raws[option], source, pid))
                    med = {
                        option: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                        for option, runs in seen.items()
                    }
                    rows.append((store, name, med[False], med[True]))
                    print(json.dumps({"store": store, "set": name, "runs": seen}), flush=True)
    print()
    print("| store | data set | option | wall s | client CPU s | server CPU s | CPU total x")
    print("|---|---|---|---:|---:|---:|---:|")
    for store, name, off, on in rows:
        base = off["client"] + off["server"]
        for label, figures in (("off", off), ("on", on)):
            ratio = (figures["client"] + figures["server"]) / base if base else float("nan")
            print(
                f"| {store} | {name} | {label} | {figures['wall']:.1f} | "
                f"{figures['client']:.2f} | {figures['server']:.2f} | {ratio:.2f} |"
            )


if __name__ == "__main__":
    main()
