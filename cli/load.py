"""``dicomctl load``: modality traffic against a gateway on this machine.

Several simulated modalities (distinct calling AE titles, one per modality type in turn) each
send synthetic studies over their own associations, paced so that together they offer
``--rate`` instances per second for ``--duration`` seconds. Reports C-STORE latency
percentiles, failures and the rate achieved. Bounded (at most 10 minutes, 100,000 instances)
and loopback only: it is a test tool, not a way to flood a hospital network.
"""

from __future__ import annotations

import ipaddress
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli import peer as peer_opts
from cli.context import AppContext, JsonOption
from cli.errors import OperationFailed, UsageProblem
from cli.sender import AssociationFailed, InstanceResult, Peer, scan, send_files
from cli.synthetic import write_study

MODALITY_CYCLE = ("CT", "MR", "CR", "US")
MAX_DURATION = 600.0
MAX_INSTANCES = 100_000


@dataclass
class ModalityRun:
    calling_aet: str
    modality: str
    results: list[InstanceResult] = field(default_factory=list)
    studies: int = 0
    errors: list[str] = field(default_factory=list)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def require_loopback(host: str) -> None:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise UsageProblem(f"cannot resolve {host!r}: {exc}") from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise UsageProblem(
            f"load only targets this machine (loopback), and {host!r} is not",
            fix="run the gateway locally (`dicomctl dev`) and load it on 127.0.0.1",
        )


def _run_modality(run: ModalityRun, files, target: Peer, per_study_seconds: float, deadline: float, stop):
    next_start = time.monotonic()
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            report = send_files(files, target, associations=1, retries=1, stop=stop)
            run.results += report.results
        except AssociationFailed as exc:
            run.errors.append(exc.detail)
        run.studies += 1
        next_start += per_study_seconds
        stop.wait(max(0.0, next_start - time.monotonic()))


def load(
    ctx: typer.Context,
    rate: Annotated[
        float, typer.Option(min=0.1, max=2000, help="Instances per second, all modalities.")
    ] = 20,
    duration: Annotated[float, typer.Option(min=1, max=MAX_DURATION, help="Seconds of traffic.")] = 30,
    modalities: Annotated[int, typer.Option(min=1, max=16, help="Simulated modalities (calling AEs).")] = 3,
    study_size: Annotated[int, typer.Option(min=1, max=500, help="Instances per study.")] = 10,
    rows: Annotated[
        int, typer.Option(min=16, max=1024, help="Image rows/columns of the synthetic studies.")
    ] = 256,
    host: peer_opts.HostOption = None,
    port: peer_opts.PortOption = None,
    called_aet: peer_opts.CalledOption = None,
    json_output: JsonOption = False,
) -> None:
    """Simulate several modalities sending studies over time; report latency percentiles and failures."""
    app: AppContext = ctx.obj
    if rate * duration > MAX_INSTANCES:
        raise UsageProblem(
            f"--rate x --duration offers more than {MAX_INSTANCES} instances; lower one of them"
        )
    base = peer_opts.resolve_peer(app, host, port, "LOAD", called_aet)
    require_loopback(base.host)
    per_modality_rate = rate / modalities
    per_study_seconds = study_size / per_modality_rate
    runs: list[ModalityRun] = []
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="dicomctl-load-") as tmp:
        threads = []
        for index in range(modalities):
            modality = MODALITY_CYCLE[index % len(MODALITY_CYCLE)]
            run = ModalityRun(calling_aet=f"SIM-{modality}{index + 1}", modality=modality)
            paths = write_study(
                Path(tmp) / run.calling_aet, modality, instances=study_size, rows=rows, cols=rows
            )
            files, _ = scan(paths)
            target = Peer(base.host, base.port, base.called_aet, calling_aet=run.calling_aet, tls=base.tls)
            runs.append(run)
            threads.append((run, files, target))
        started = time.monotonic()
        deadline = started + duration
        workers = [
            threading.Thread(
                target=_run_modality, args=(r, f, t, per_study_seconds, deadline, stop), daemon=True
            )
            for r, f, t in threads
        ]
        for worker in workers:
            worker.start()
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(timeout=0.2)
        except KeyboardInterrupt:
            stop.set()
            for worker in workers:
                worker.join()
        elapsed = time.monotonic() - started
    document = summarise(runs, elapsed, rate)
    if app.wants_json(json_output):
        app.print_json(document)
    else:
        print_summary(app, document)
    if document["failed"] or document["associationErrors"]:
        raise OperationFailed(
            f"{document['failed']} instances not stored, {document['associationErrors']} association errors"
        )


def _latency(results: list[InstanceResult]) -> dict[str, float]:
    ms = [r.seconds * 1000 for r in results if r.stored]
    return {f"p{p}": round(percentile(ms, p), 2) for p in (50, 90, 99)} | {
        "max": round(max(ms, default=0), 2)
    }


def summarise(runs: list[ModalityRun], elapsed: float, offered: float) -> dict[str, Any]:
    results = [r for run in runs for r in run.results]
    stored = [r for r in results if r.stored]
    return {
        "offeredRate": offered,
        "achievedRate": round(len(stored) / elapsed, 2) if elapsed else 0.0,
        "seconds": round(elapsed, 2),
        "instances": len(results),
        "stored": len(stored),
        "failed": len(results) - len(stored),
        "associationErrors": sum(len(run.errors) for run in runs),
        "latencyMs": _latency(results),
        "modalities": [
            {
                "callingAet": run.calling_aet,
                "modality": run.modality,
                "studies": run.studies,
                "instances": len(run.results),
                "failed": sum(1 for r in run.results if not r.stored),
                "errors": run.errors[:5],
                "latencyMs": _latency(run.results),
            }
            for run in runs
        ],
    }


def print_summary(app: AppContext, document: dict[str, Any]) -> None:
    table = Table(title=f"Load: {document['achievedRate']} of {document['offeredRate']} instances/s offered")
    for column in (
        "Calling AE",
        "Modality",
        "Studies",
        "Instances",
        "Failed",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
    ):
        table.add_column(column, justify="right")
    for m in document["modalities"]:
        lat = m["latencyMs"]
        table.add_row(
            m["callingAet"],
            m["modality"],
            str(m["studies"]),
            str(m["instances"]),
            str(m["failed"]),
            *(f"{lat[k]:.1f}" for k in ("p50", "p90", "p99", "max")),
        )
    lat = document["latencyMs"]
    table.add_row(
        "all",
        "",
        "",
        str(document["instances"]),
        str(document["failed"]),
        *(f"{lat[k]:.1f}" for k in ("p50", "p90", "p99", "max")),
    )
    app.console.print(table)
