"""``dicomctl send``: C-STORE files, directories or synthetic studies to the gateway.

Exit 0 only when every instance was stored (DIMSE success or warning); any failure is listed
with its DIMSE status and the exit code is 1. Nothing from inside the files is printed (no PHI):
only paths, SOP Instance UIDs, sizes and statuses.
"""

from __future__ import annotations

import tempfile
import threading
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli import peer as peer_opts
from cli import render
from cli.context import AppContext, JsonOption
from cli.errors import OperationFailed, UsageProblem
from cli.render import Column
from cli.sender import AssociationFailed, InstanceResult, Peer, SendReport, scan, send_files
from cli.synthetic import TRANSFER_SYNTAXES, write_study

MAX_LISTED_FAILURES = 50


class Modality(StrEnum):
    ct = "ct"
    mr = "mr"
    cr = "cr"
    us = "us"


TransferSyntax = Enum("TransferSyntax", {name: name for name in TRANSFER_SYNTAXES}, type=str)


def generate(
    directory: Path, modality: str, studies: int, instances: int, transfer_syntax: str
) -> list[Path]:
    """Write ``studies`` synthetic studies of ``instances`` each; returns the files."""
    files: list[Path] = []
    for index in range(1, studies + 1):
        files += write_study(
            directory,
            modality.upper(),
            instances=instances,
            transfer_syntax=transfer_syntax,
            study_index=index,
        )
    return files


def transmit(
    app: AppContext, paths: list[Path], target: Peer, associations: int, retries: int, processes: bool = False
) -> SendReport:
    """Scan, send with a progress bar (humans) and return every per-instance result."""
    files, unreadable = scan(paths)
    if not files and not unreadable:
        raise UsageProblem("nothing to send: no files found under the given paths")
    total_bytes = sum(f.size for f in files)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[done]}/{task.fields[count]} instances"),
        DownloadColumn(),
        TextColumn("{task.fields[rate]:.0f} img/s"),
        TimeRemainingColumn(),
        console=app.err,
        disable=app.json or not app.err.is_terminal,
    )
    done = {"n": 0}
    lock = threading.Lock()
    report = SendReport()
    with progress:
        task = progress.add_task("sending", total=total_bytes or 1, done=0, count=len(files), rate=0.0)

        def on_result(result: InstanceResult) -> None:
            with lock:
                done["n"] += 1
                elapsed = progress.tasks[0].elapsed or 0.0
                rate = done["n"] / elapsed if elapsed else 0.0
                progress.update(task, advance=result.size, done=done["n"], rate=rate)

        if files:
            try:
                report = send_files(
                    files,
                    target,
                    associations=associations,
                    retries=retries,
                    on_result=on_result,
                    processes=processes,
                )
            except AssociationFailed as exc:
                raise peer_opts.explain(exc, target) from None
    report.results = unreadable + report.results
    return report


def report_document(report: SendReport, target: Peer) -> dict[str, Any]:
    return {
        "peer": {"host": target.host, "port": target.port, "calledAet": target.called_aet},
        "instances": len(report.results),
        "stored": len(report.stored),
        "failed": len(report.failed),
        "bytes": report.bytes_stored,
        "seconds": round(report.seconds, 3),
        "imagesPerSecond": round(report.rate, 1),
        "associations": report.associations,
        "studies": report.studies(),
        "sentMoreThanOnce": report.sent_more_than_once(),
        "failures": [
            {
                "path": str(r.path),
                "sopInstanceUid": r.sop_instance_uid,
                "status": None if r.status is None else f"0x{r.status:04X}",
                "reason": r.reason,
                "attempts": r.attempts,
            }
            for r in report.failed
        ],
    }


def print_report(app: AppContext, report: SendReport, target: Peer) -> None:
    console = app.console
    numbers = ("Instances", "Stored", "Failed", "MB", "Seconds", "Images/s", "Associations")
    summary = [
        str(len(report.results)),
        str(len(report.stored)),
        str(len(report.failed)),
        f"{report.bytes_stored / 1e6:.1f}",
        f"{report.seconds:.2f}",
        f"{report.rate:.1f}",
        str(report.associations),
    ]
    title = f"C-STORE to {escape(target.called_aet)}@{target.host}:{target.port}"
    console.print(render.table(console, title, [Column(n, "right") for n in numbers], [summary]))
    studies = report.studies()
    rows = [
        [study["studyInstanceUid"] or "(no study UID)"]
        + [str(study[k]) for k in ("instances", "stored", "failed")]
        + [f"{study['bytes'] / 1e6:.1f}"]
        for study in studies
    ]
    columns = ["Study Instance UID", *(Column(n, "right") for n in ("Instances", "Stored", "Failed", "MB"))]
    console.print(render.table(console, f"Studies ({len(studies)})", columns, rows))
    again = report.sent_more_than_once()
    if again:
        title = f"Sent more than once ({len(again)} SOP Instance UIDs): the gateway keeps one instance each"
        console.print(render.notes(title, [(uid, f"{count} times") for uid, count in again.items()]))
    if report.failed:
        failures = [
            (escape(str(r.path)), f"{r.sop_instance_uid or '-'}: {r.reason} ({r.attempts} attempts)")
            for r in report.failed[:MAX_LISTED_FAILURES]
        ]
        console.print(render.notes(f"Not stored ({len(report.failed)})", failures))
        if len(report.failed) > MAX_LISTED_FAILURES:
            console.print(f"... and {len(report.failed) - MAX_LISTED_FAILURES} more (use --json for all)")


def send(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, typer.Argument(help="Files and directories (recursive).")] = None,
    synthetic: Annotated[
        Modality | None, typer.Option(help="Send synthetic studies of this modality.")
    ] = None,
    studies: Annotated[int, typer.Option(min=1, max=100, help="Synthetic studies to send.")] = 1,
    instances: Annotated[int, typer.Option(min=1, max=5000, help="Instances per synthetic study.")] = 20,
    transfer_syntax: Annotated[
        TransferSyntax, typer.Option(help="Encoding of synthetic instances.")
    ] = TransferSyntax.explicit,  # type: ignore[attr-defined]
    host: peer_opts.HostOption = None,
    port: peer_opts.PortOption = None,
    calling_aet: peer_opts.CallingOption = "DICOMCTL",
    called_aet: peer_opts.CalledOption = None,
    tls: peer_opts.TlsOption = False,
    ca_file: peer_opts.CaOption = None,
    cert_file: peer_opts.CertOption = None,
    key_file: peer_opts.KeyOption = None,
    associations: Annotated[int, typer.Option(min=1, max=32, help="Parallel associations.")] = 1,
    processes: Annotated[
        bool, typer.Option("--processes", help="One process per association (else threads).")
    ] = False,
    retries: Annotated[
        int, typer.Option(min=0, max=10, help="Retries of an instance refused with 0xA7xx.")
    ] = 3,
    commit: Annotated[
        bool,
        typer.Option(
            "--commit",
            help="Then ask for Storage Commitment of what was stored, wait for the report and print "
            "committed/failed per instance (exit 1 if any failed).",
        ),
    ] = False,
    commit_aet: Annotated[
        str | None,
        typer.Option(
            help="AE title of the report listener (default: --calling-aet).", envvar="DICOMCTL_COMMIT_AET"
        ),
    ] = None,
    commit_port: Annotated[
        int,
        typer.Option(
            min=1,
            max=65535,
            help="Port the report listener binds (the gateway's scpCommitmentPeers entry for the calling "
            "AE must point here).",
            envvar="DICOMCTL_COMMIT_PORT",
        ),
    ] = 11113,
    commit_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the commitment report.")
    ] = 900.0,
    json_output: JsonOption = False,
) -> None:
    """Send DICOM files, directories or synthetic studies (C-STORE); exit 1 if anything was not stored."""
    app: AppContext = ctx.obj
    app.json = app.wants_json(json_output)
    if bool(paths) == bool(synthetic):
        raise UsageProblem("give PATH... or --synthetic MODALITY (one of the two)")
    target = peer_opts.resolve_peer(
        app, host, port, calling_aet, called_aet, tls, ca_file, cert_file, key_file
    )
    with tempfile.TemporaryDirectory(prefix="dicomctl-synthetic-") as tmp:
        if synthetic:
            paths = [Path(tmp)]
            generate(Path(tmp), synthetic.value, studies, instances, transfer_syntax.value)
        report = transmit(app, list(paths or []), target, associations, retries, processes)
        committed = None
        if commit and report.stored:
            stored, _ = scan([r.path for r in report.stored])
            references = [(f.sop_class_uid, f.sop_instance_uid) for f in stored]
            committed = ask_commitment(app, target, references, commit_aet, commit_port, commit_timeout)
    document = report_document(report, target)
    if committed is not None:
        document["commitment"] = commitment_document(committed)
    if app.json:
        app.print_json(document)
    else:
        print_report(app, report, target)
        if committed is not None:
            print_commitment(app, committed)
    if report.failed:
        raise OperationFailed(f"{len(report.failed)} of {len(report.results)} instances were not stored")
    if committed is not None and committed.failed:
        raise OperationFailed(f"{len(committed.failed)} instances were not committed")


def ask_commitment(
    app: AppContext,
    target: Peer,
    references: list[tuple[str, str]],
    aet: str | None,
    port: int,
    timeout: float,
) -> Any:
    from cli.commitment import CommitmentFailed, request_commitment

    app.err.print(f"asking for commitment of {len(references)} instances; report listener on port {port}")
    try:
        return request_commitment(
            target, references, listen_aet=aet or target.calling_aet, listen_port=port, timeout=timeout
        )
    except CommitmentFailed as exc:
        raise OperationFailed(
            str(exc), fix="check the gateway's scpCommitmentPeers has CALLING_AE=this-host:--commit-port"
        ) from None
    except OSError as exc:
        raise OperationFailed(
            f"report listener on port {port}: {exc}", fix="choose another --commit-port"
        ) from None


def commitment_document(committed: Any) -> dict[str, Any]:
    from cli.commitment import FAILURE_REASONS

    return {
        "transactionUid": committed.transaction_uid,
        "eventType": committed.event_type,
        "via": committed.via,
        "committed": committed.committed,
        "failed": [
            {"sopInstanceUid": uid, "reason": f"0x{code:04X}", "meaning": FAILURE_REASONS.get(code, "")}
            for uid, code in sorted(committed.failed.items())
        ],
    }


def print_commitment(app: AppContext, committed: Any) -> None:
    document = commitment_document(committed)
    table = Table(title=f"Storage Commitment {committed.transaction_uid} ({committed.via})", show_header=True)
    for column in ("SOP Instance UID", "Result"):
        table.add_column(column, overflow="fold")
    for uid in committed.committed:
        table.add_row(uid, "[green]committed[/]")
    for failed in document["failed"]:
        table.add_row(failed["sopInstanceUid"], f"[red]failed {failed['reason']} {failed['meaning']}[/]")
    app.console.print(table)
