"""Sender benchmark (``python -m bench.sender``; part of ``make bench``).

A synthetic 500-instance CT study (512x512, 16-bit, ~0.5 MB per file) is sent over loopback to
dcmtk ``storescp`` (writing to a temporary directory, one process per association with
``--fork``) by:
- dicomctl's sender (``cli/sender.py``) on 1 and 4 associations, threads and processes;
- dcmtk ``storescu`` on one association, the reference;
- a naive pynetdicom sender (read, decode, ``send_c_store(dataset)``), on the first 100 files;
- dicomctl's sender against a ``storescp`` that keeps Nagle's algorithm on, on 100 files.
Targets (issue 5): >= 150 images/s on one association, >= 300 with 4. dcmtk as packaged here
leaves Nagle on unless ``TCP_NODELAY=1`` is in its environment, so every other row sets it for
both storescp and storescu. Each row checks that storescp wrote every file. Prints a Markdown
table and writes docs/benchmarks/sender.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, build_context

from cli.sender import DicomFile, Peer, scan, send_files
from cli.synthetic import write_study

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "docs" / "benchmarks" / "sender.md"
INSTANCES = 500
SHORT = 100  # rows that are slow by design
CALLED_AE = "STORESCP"


NOTES = [
    "Where the time goes (profiled with yappi, CPU clock, and a stack sampler):",
    "",
    "- pynetdicom 3.0.4 spends about 4-5 ms of Python CPU per C-STORE even for an 8 KB image: the",
    "  C-STORE-RQ command set is built and encoded as a pydicom Dataset, the response decoded the same",
    "  way, `send_c_store(path)` re-reads the file meta (`split_dataset`), and every PDU fires events.",
    "  Its polling loops add latency: the DUL sleeps 1 ms whenever idle, the association reactor sleeps",
    "  1 ms per loop and `send_c_store` spins until that reactor pauses. A 512 KB image costs 8-10 ms on",
    "  one association here, hence ~110-120 images/s; storescu (C++) spends ~2.5 ms.",
    "- Threads share the GIL, so 4 associations give 1.2-1.4x one. One process per association",
    "  (`--processes`) avoids the GIL, but on 2 cores shared with storescp, and paying the process start",
    "  (spawn re-imports pydicom/pynetdicom), it did not pay off here; it should on more cores.",
    "- dcmtk as packaged here keeps Nagle's algorithm on unless `TCP_NODELAY=1` is in its environment:",
    "  the last row shows the ~45 ms stall per image that follows.",
    "- Occasionally, against `storescp --fork`, one of 4 concurrent associations gets no C-STORE response:",
    "  the sender waits the DIMSE timeout (60 s), associates again and resends, so every instance is",
    "  stored but that row takes ~60 s. Not seen against a pynetdicom SCP under the same load.",
    "- Tried: scp/fast_transport.py's event-driven DUL on the sending side (an AE whose associations wait",
    "  on the socket instead of polling). It was slower here (8.8 vs 6.7 ms of CPU per image): a wake-up",
    "  per PDU costs more than the polling it replaces. The per-message CPU in pynetdicom is the limit.",
    "",
]


@dataclass
class Row:
    sender: str
    associations: int
    instances: int
    seconds: float
    megabytes: float
    target: float | None = None

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    def markdown(self) -> str:
        target = (
            ""
            if self.target is None
            else f">= {self.target:.0f} ({'met' if self.rate >= self.target else 'missed'})"
        )
        return (
            f"| {self.sender} | {self.associations} | {self.instances} | {self.seconds:.2f} | "
            f"{self.rate:.0f} | {self.megabytes / self.seconds:.0f} | {target} |"
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def storescp(out_dir: Path, nodelay: bool = True, options: tuple[str, ...] = ()) -> Iterator[int]:
    """dcmtk storescp on a free loopback port, writing into ``out_dir``; killed with its children.

    ``options`` go to storescp as well (the tests use ``+B``, ``--max-pdu``, ``+xa``).
    """
    port = _free_port()
    env = os.environ | ({"TCP_NODELAY": "1"} if nodelay else {})
    process = subprocess.Popen(
        [
            "storescp",
            "--fork",
            "--disable-host-lookup",
            "-aet",
            CALLED_AE,
            *options,
            "-od",
            str(out_dir),
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("storescp did not start") from None
            time.sleep(0.05)
    try:
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()


def measure(name: str, files: list[DicomFile], associations: int, run: Callable[[int], None], **kw) -> Row:
    with tempfile.TemporaryDirectory(prefix="bench-storescp-") as out, storescp(Path(out), **kw) as port:
        started = time.perf_counter()
        run(port)
        seconds = time.perf_counter() - started
        stored = sum(1 for p in Path(out).iterdir() if p.is_file())
    if stored != len(files):
        raise RuntimeError(f"{name}: storescp stored {stored} of {len(files)} files")
    target = (
        {1: 150.0, 4: 300.0}.get(associations)
        if name.startswith("dicomctl") and len(files) == INSTANCES
        else None
    )
    return Row(name, associations, len(files), seconds, sum(f.size for f in files) / 1e6, target)


def ours(files: list[DicomFile], associations: int, processes: bool) -> Callable[[int], None]:
    def run(port: int) -> None:
        report = send_files(
            files, Peer("127.0.0.1", port, CALLED_AE), associations=associations, processes=processes
        )
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} not stored: {report.failed[0].reason}")

    return run


def storescu(directory: Path) -> Callable[[int], None]:
    def run(port: int) -> None:
        subprocess.run(
            ["storescu", "-aec", CALLED_AE, "+sd", "+r", "127.0.0.1", str(port), str(directory)],
            env=os.environ | {"TCP_NODELAY": "1"},
            check=True,
            capture_output=True,
        )

    return run


def naive(files: list[DicomFile]) -> Callable[[int], None]:
    """What a first pynetdicom sender does: read and decode each file, let pynetdicom re-encode it."""

    def run(port: int) -> None:
        contexts = [build_context(c) for c in sorted({f.sop_class_uid for f in files})]
        assoc = AE(ae_title="NAIVE").associate("127.0.0.1", port, contexts, ae_title=CALLED_AE)
        if not assoc.is_established:
            raise RuntimeError(
                f"naive: no association (rejected={assoc.is_rejected}, aborted={assoc.is_aborted})"
            )
        try:
            for item in files:
                assoc.send_c_store(dcmread(item.path))
        finally:
            assoc.release()

    return run


def main() -> int:
    if not shutil.which("storescp") or not shutil.which("storescu"):
        print("dcmtk (storescp, storescu) is needed: `make dcmtk`")
        return 2
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-sender-") as tmp:
        study = Path(tmp) / "ct"
        write_study(study, "CT", instances=INSTANCES)
        files, _ = scan([study])
        rows = [
            measure("dicomctl sender (threads)", files, 1, ours(files, 1, False)),
            measure("dicomctl sender (threads)", files, 4, ours(files, 4, False)),
            measure("dicomctl sender (processes)", files, 4, ours(files, 4, True)),
            measure("dcmtk storescu (reference)", files, 1, storescu(study)),
            measure("naive pynetdicom (dcmread + send dataset)", files[:SHORT], 1, naive(files[:SHORT])),
            measure(
                "dicomctl sender, storescp with Nagle on",
                files[:SHORT],
                1,
                ours(files[:SHORT], 1, False),
                nodelay=False,
            ),
        ]
    lines = [
        "## Sender (`dicomctl send`) against dcmtk storescp",
        "",
        f"500 synthetic CT instances, 512x512 16-bit, {rows[0].megabytes:.0f} MB in total; loopback; "
        f"{os.cpu_count()} cores; 1-minute load average {load:.1f} when the run started (other work on the "
        "machine lowers every row). Images/s and MB/s over the wall clock of the whole send, process start "
        "included for the process rows.",
        "",
        "| Sender | Associations | Instances | Seconds | Images/s | MB/s | Target |",
        "|---|---|---|---|---|---|---|",
        *(row.markdown() for row in rows),
        "",
        *NOTES,
    ]
    text = "\n".join(lines)
    print(text)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
