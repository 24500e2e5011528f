"""``dicomctl load``: modality traffic against a gateway on this machine.

Several simulated modalities (distinct calling AE titles, one per modality type in turn) each
send studies over their own associations, one association per study, paced so that together
they offer ``--rate`` instances per second for ``--duration`` seconds. Every study is a new one,
as real traffic has: its own patient and Study/Series/SOP Instance UIDs, and a size typical of
its modality unless ``--study-size`` is given (cli/synthetic.py ``StudyStream``).

It reports C-STORE latency percentiles, failures and the rate achieved; when the rate falls
short of the offer it says where the time went: the sender (writing each study's files, its own
work per C-STORE), the gateway (the C-STORE round trip) and, when the gateway's ``/metrics`` can
be read (``--metrics-url``, or the running local stack's), the gateway's store step (header
parse and the durable write). Bounded (at most 10 minutes, 100,000 instances) and loopback
only: it is a test tool, not a way to flood a hospital network.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import peer as peer_opts
from cli import render
from cli.context import LOCAL_STACK, AppContext, JsonOption
from cli.errors import OperationFailed, UsageProblem
from cli.render import Column
from cli.sender import AssociationFailed, InstanceResult, Peer, scan, send_files
from cli.synthetic import StudyStream

MODALITY_CYCLE = ("CT", "MR", "CR", "US")
MAX_DURATION = 600.0
MAX_INSTANCES = 100_000
MET = 0.95  # an achieved rate at least this share of the offer counts as reached
STORE_LATENCY = "dicom_scp_store_latency_seconds"  # the SCP's histogram (scp/metrics.py)


@dataclass
class ModalityRun:
    calling_aet: str
    modality: str
    results: list[InstanceResult] = field(default_factory=list)
    studies: int = 0
    study_uids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    prepare_seconds: float = 0.0  # writing the studies' files
    send_seconds: float = 0.0  # inside the sender: associations, C-STOREs, release
    idle_seconds: float = 0.0  # ahead of the schedule, waiting


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


def _run_modality(
    run: ModalityRun,
    studies: StudyStream,
    study_size: int | None,
    target: Peer,
    per_modality_rate: float,
    deadline: float,
    stop: threading.Event,
) -> None:
    next_start = time.monotonic()
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        study_uid, paths = studies.next_study(study_size)
        files, _ = scan(paths)
        prepared = time.monotonic()
        run.prepare_seconds += prepared - started
        try:
            report = send_files(files, target, associations=1, retries=1, stop=stop)
            run.results += report.results
        except AssociationFailed as exc:
            run.errors.append(exc.detail)
        run.send_seconds += time.monotonic() - prepared
        studies.discard(paths)
        run.studies += 1
        run.study_uids.append(study_uid)
        next_start += len(files) / per_modality_rate
        wait = max(0.0, min(next_start, deadline) - time.monotonic())
        run.idle_seconds += wait
        stop.wait(wait)


def store_step_seconds(url: str | None) -> tuple[float, int] | None:
    """(sum of seconds, count) of the gateway's store step so far, from its /metrics; None if unknown."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except (OSError, ValueError):
        return None
    found = dict(re.findall(rf"^{STORE_LATENCY}_(sum|count) ([0-9.eE+-]+)$", text, re.MULTILINE))
    if "sum" not in found or "count" not in found:
        return None
    return float(found["sum"]), int(float(found["count"]))


def metrics_url(app: AppContext, given: str | None) -> str | None:
    """--metrics-url, else the running local stack's health port (``dicomctl dev`` publishes it)."""
    if given:
        return given
    local = app.local_state if app.stack == LOCAL_STACK and not app.outputs_file else None
    port = ((local or {}).get("effectiveConfig") or {}).get("scpHealthPort")
    return f"http://127.0.0.1:{port}/metrics" if port else None


def load(
    ctx: typer.Context,
    rate: Annotated[
        float, typer.Option(min=0.1, max=2000, help="Instances per second, all modalities.")
    ] = 20,
    duration: Annotated[float, typer.Option(min=1, max=MAX_DURATION, help="Seconds of traffic.")] = 30,
    modalities: Annotated[int, typer.Option(min=1, max=16, help="Simulated modalities (calling AEs).")] = 3,
    study_size: Annotated[
        int | None,
        typer.Option(
            min=1, max=500, help="Instances per study (default: typical of each modality, e.g. CT 60-240)."
        ),
    ] = None,
    rows: Annotated[
        int, typer.Option(min=16, max=1024, help="Image rows/columns of the synthetic studies.")
    ] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the simulated study sizes.")] = 0,
    host: peer_opts.HostOption = None,
    port: peer_opts.PortOption = None,
    called_aet: peer_opts.CalledOption = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics-url",
            help="The gateway's Prometheus /metrics, to split its time (default: the local stack's).",
        ),
    ] = None,
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
    runs: list[ModalityRun] = []
    stop = threading.Event()
    store_url = metrics_url(app, metrics)
    with tempfile.TemporaryDirectory(prefix="dicomctl-load-") as tmp:
        plans = []
        for index in range(modalities):
            modality = MODALITY_CYCLE[index % len(MODALITY_CYCLE)]
            run = ModalityRun(calling_aet=f"SIM-{modality}{index + 1}", modality=modality)
            studies = StudyStream(Path(tmp) / run.calling_aet, modality, rows, seed=seed + index)
            target = Peer(base.host, base.port, base.called_aet, calling_aet=run.calling_aet, tls=base.tls)
            runs.append(run)
            plans.append((run, studies, target))
        before = store_step_seconds(store_url)
        started = time.monotonic()
        deadline = started + duration
        workers = [
            threading.Thread(
                target=_run_modality,
                args=(run, studies, study_size, target, per_modality_rate, deadline, stop),
                daemon=True,
            )
            for run, studies, target in plans
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
        after = store_step_seconds(store_url)
    store_seconds = after[0] - before[0] if before and after else None
    document = summarise(runs, elapsed, rate, store_seconds)
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


def time_spent(runs: list[ModalityRun], elapsed: float, store_seconds: float | None) -> dict[str, Any]:
    """Where the modalities' time went, in seconds summed over them, and per stored instance in ms."""
    results = [r for run in runs for r in run.results]
    round_trips = sum(r.seconds for r in results)
    spent = {
        "senderPrepareSeconds": sum(run.prepare_seconds for run in runs),
        "senderOverheadSeconds": max(0.0, sum(run.send_seconds for run in runs) - round_trips),
        "gatewaySeconds": round_trips,
        "gatewayStoreStepSeconds": store_seconds,
        "idleSeconds": sum(run.idle_seconds for run in runs),
    }
    stored = sum(1 for r in results if r.stored) or 1
    per_instance = {
        key.replace("Seconds", "Ms"): round(value * 1000 / stored, 2)
        for key, value in spent.items()
        if value is not None and key != "idleSeconds"
    }
    busy = 1 - spent["idleSeconds"] / (elapsed * len(runs)) if elapsed and runs else 0.0
    return {
        "seconds": {k: None if v is None else round(v, 3) for k, v in spent.items()},
        "perInstanceMs": per_instance,
        "busyShare": round(busy, 3),
    }


def shortfall(offered: float, achieved: float, spent: dict[str, Any]) -> str | None:
    """Why the offered rate was not reached, from where the time went; None when it was."""
    if achieved >= MET * offered:
        return None
    per = spent["perInstanceMs"]
    sender = per["senderPrepareMs"] + per["senderOverheadMs"]
    parts = {
        "the sender (writing studies, its own work per C-STORE)": sender,
        "the gateway (C-STORE round trips)": per["gatewayMs"],
    }
    store = per.get("gatewayStoreStepMs")
    gateway = f"gateway {per['gatewayMs']:.1f} ms"
    if store is not None:
        gateway += f" (its store step: header parse and durable write, {store:.1f} ms)"
        parts["the gateway's store step (parse and durable write)"] = store
        parts["the gateway (C-STORE round trips)"] = per["gatewayMs"] - store
    largest = max(parts, key=parts.get)
    return (
        f"reached {achieved:g} of {offered:g} instances/s ({achieved / offered:.0%}): the modalities were "
        f"busy {spent['busyShare']:.0%} of the time (one synchronous association each, so the rate is "
        f"bounded by the time per instance); per instance: sender {sender:.1f} ms (writing studies "
        f"{per['senderPrepareMs']:.1f} ms), {gateway}; most of it went to {largest}. The sender and "
        "the gateway share this machine's CPU."
    )


def summarise(
    runs: list[ModalityRun], elapsed: float, offered: float, store_seconds: float | None = None
) -> dict[str, Any]:
    results = [r for run in runs for r in run.results]
    stored = [r for r in results if r.stored]
    achieved = round(len(stored) / elapsed, 2) if elapsed else 0.0
    spent = time_spent(runs, elapsed, store_seconds)
    return {
        "offeredRate": offered,
        "achievedRate": achieved,
        "seconds": round(elapsed, 2),
        "studies": sum(run.studies for run in runs),
        "instances": len(results),
        "stored": len(stored),
        "failed": len(results) - len(stored),
        "associationErrors": sum(len(run.errors) for run in runs),
        "latencyMs": _latency(results),
        "timeSpent": spent,
        "shortfall": shortfall(offered, achieved, spent),
        "modalities": [
            {
                "callingAet": run.calling_aet,
                "modality": run.modality,
                "studies": run.studies,
                "studyInstanceUids": run.study_uids,
                "instances": len(run.results),
                "failed": sum(1 for r in run.results if not r.stored),
                "errors": run.errors[:5],
                "latencyMs": _latency(run.results),
            }
            for run in runs
        ],
    }


def print_summary(app: AppContext, document: dict[str, Any]) -> None:
    console = app.console
    columns = ["Calling AE", "Modality"] + [
        Column(name, "right")
        for name in ("Studies", "Instances", "Failed", "p50 ms", "p90 ms", "p99 ms", "max ms")
    ]

    def latencies(lat: dict[str, float]) -> list[str]:
        return [f"{lat[k]:.1f}" for k in ("p50", "p90", "p99", "max")]

    rows = [
        [m["callingAet"], m["modality"], str(m["studies"]), str(m["instances"]), str(m["failed"])]
        + latencies(m["latencyMs"])
        for m in document["modalities"]
    ]
    rows.append(
        ["all", "", str(document["studies"]), str(document["instances"]), str(document["failed"])]
        + latencies(document["latencyMs"])
    )
    title = f"Load: {document['achievedRate']} of {document['offeredRate']} instances/s offered"
    console.print(render.table(console, title, columns, rows))
    if document["shortfall"]:
        console.print(render.notes("Shortfall", [("why:", document["shortfall"])]))
