"""Store SCP benchmark (``python -m bench.scp``; part of ``make bench``).

A synthetic 500-instance CT study (512x512, 16-bit) is sent with dcmtk ``storescu`` over loopback to
our SCP (filesystem backend, S3 backend on moto server), to dcmtk ``storescp`` (the reference) and to
pynetdicom's own ``storescp`` app, over 1 and 4 parallel associations (4 ``storescu`` processes on
4 quarters of the files); then 20 x 50 MB objects over one association. Each receiver runs as its
own process; moto runs in its own process too, so its CPU is not the bench's.

Per row: images/s and MB/s (10^6 bytes of Part 10 files sent, over the wall clock from starting the
sender(s) to the last sender's exit) and the peak RSS of the receiver's process tree (sampled sum
of VmRSS over the receiver and its children, at least the largest single VmHWM). Every row checks
that every file arrived in storage. Prints a Markdown table and writes docs/benchmarks/scp.md.

``DICOM_SCP_STOCK_RECEIVE=1`` in our SCP's environment turns the event-driven receive path off
(pynetdicom's own polling loops): the "stock receive path" rows show what that work buys.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cli.synthetic import write_study

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "docs" / "benchmarks" / "scp.md"
CT_INSTANCES = 500
LARGE_OBJECTS = 20
LARGE_SIDE = 5000  # 5000 x 5000 x 16 bit = 50 MB of pixel data
CALLED_AE = "AHI-GATEWAY"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
STARTUP_TIMEOUT = 60.0
RSS_SAMPLE_SECONDS = 0.05


# --- data --------------------------------------------------------------------------------
def make_ct_study(directory: Path) -> list[Path]:
    return write_study(directory, "CT", instances=CT_INSTANCES, rows=512, cols=512)


def make_large_objects(directory: Path) -> list[Path]:
    """One 50 MB CT image from the synthetic generator, copied with fresh SOP Instance UIDs."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    first = write_study(directory / "seed", "CT", instances=1, rows=LARGE_SIDE, cols=LARGE_SIDE)[0]
    ds = dcmread(first)
    paths = []
    for index in range(LARGE_OBJECTS):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        path = directory / "large" / f"{index:02d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    shutil.rmtree(directory / "seed")
    return paths


def split(files: list[Path], parts: int, directory: Path) -> list[Path]:
    """Hard-link ``files`` into ``parts`` directories of (nearly) equal size, one per sender."""
    dirs = []
    for part in range(parts):
        target = directory / f"part{part}"
        target.mkdir(parents=True)
        for index, path in enumerate(files[part::parts]):
            os.link(path, target / f"{index:05d}.dcm")
        dirs.append(target)
    return dirs


# --- process tree memory ------------------------------------------------------------------
def _status_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process tree so far: live processes, plus the children the root has reaped."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _descendants(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if pid == root:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / ticks


class TreeRss:
    """Peak resident memory of a process and its descendants, sampled in a thread."""

    def __init__(self, root: int):
        self.root = root
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def _sample(self) -> None:
        pids = _descendants(self.root)
        total = sum(_status_kib(pid, "VmRSS") for pid in pids)
        largest = max(_status_kib(pid, "VmHWM") for pid in pids)
        self.peak_kib = max(self.peak_kib, total, largest)

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            self._sample()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# --- receivers ----------------------------------------------------------------------------
@dataclass
class Receiver:
    proc: subprocess.Popen
    port: int
    count_stored: object  # () -> int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # polling interval while the receiver starts
    raise RuntimeError("receiver did not start listening")


def _count_files(directory: Path, pattern: str = "*") -> int:
    return sum(1 for p in directory.rglob(pattern) if p.is_file() and not p.name.startswith("."))


@contextmanager
def our_scp(work: Path, storage: str, workers: int, extra_env: dict[str, str]) -> Iterator[Receiver]:
    """``python -m scp``; storage is ``file`` or an ``s3://`` URI (moto endpoint in extra_env)."""
    store = work / "store"
    uri = f"file://{store}" if storage == "file" else storage
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCP_")}
    env.update(
        SCP_PORT="0",
        SCP_HEALTH_PORT="0",
        SCP_BIND_ADDRESS="127.0.0.1",
        SCP_STORAGE_URI=uri,
        SCP_SPOOL_DIR=str(work / "spool"),
        SCP_WORKERS=str(workers),
        SCP_LOG_LEVEL="WARNING",
        SCP_DRAIN_SECONDS="5",
    )
    env.update(extra_env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scp"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(work / "scp.stderr").open("w"),
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # keep reading stdout (EMF lines) so the SCP never blocks on the pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        ready = json.loads(lines.get(timeout=STARTUP_TIMEOUT))
    except queue.Empty:
        proc.kill()
        raise RuntimeError(f"SCP did not start: {(work / 'scp.stderr').read_text()[-2000:]}") from None
    if storage == "file":
        counter = lambda: _count_files(store / "incoming", "*.dcm")  # noqa: E731
    else:
        counter = lambda: _count_s3_objects(extra_env["AWS_ENDPOINT_URL"], storage)  # noqa: E731
    receiver = Receiver(proc, ready["port"], counter)
    try:
        yield receiver
    finally:
        receiver.stop()


@contextmanager
def dcmtk_storescp(work: Path, associations: int, nodelay: bool = False) -> Iterator[Receiver]:
    out = work / "out"
    out.mkdir()
    port = _free_port()
    command = ["storescp", "-aet", CALLED_AE, "-od", str(out)]
    if associations > 1:
        command.append("--fork")  # storescp serves one association at a time otherwise
    # dcmtk leaves Nagle on unless TCP_NODELAY=1; it writes each response in pieces, so it stalls.
    env = {**os.environ, "TCP_NODELAY": "1" if nodelay else "0"}
    proc = subprocess.Popen(
        [*command, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    receiver = Receiver(proc, port, lambda: _count_files(out))
    try:
        _wait_listening(port, proc)
        yield receiver
    finally:
        receiver.stop()


@contextmanager
def pynetdicom_storescp(work: Path, associations: int) -> Iterator[Receiver]:
    out = work / "out"
    out.mkdir()
    port = _free_port()
    command = [sys.executable, "-m", "pynetdicom", "storescp", "-aet", CALLED_AE, "-od", str(out)]
    proc = subprocess.Popen([*command, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    receiver = Receiver(proc, port, lambda: _count_files(out))
    try:
        _wait_listening(port, proc)
        yield receiver
    finally:
        receiver.stop()


# --- moto (S3) in its own process --------------------------------------------------------
MOTO_SERVER = """
import sys, threading
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
server.start()
print("PORT", server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the bench closes our stdin
server.stop()
"""


@contextmanager
def moto_server() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", MOTO_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # moto logs every request
        text=True,
        env={**os.environ, **FAKE_AWS},
    )
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("PORT "):  # moto prints its own banner first
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("moto server did not start")
        port = int(line.split()[1])
        yield f"http://127.0.0.1:{port}"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
    )


def new_bucket(endpoint: str) -> str:
    name = f"bench-{secrets.token_hex(6)}"
    _s3_client(endpoint).create_bucket(Bucket=name)
    return f"s3://{name}/dicom"


def _count_s3_objects(endpoint: str, uri: str) -> int:
    bucket, prefix = uri[len("s3://") :].split("/", 1)
    pages = (
        _s3_client(endpoint)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix=f"{prefix}/incoming/")
    )
    return sum(page.get("KeyCount", 0) for page in pages)


# --- one measured row --------------------------------------------------------------------
@dataclass
class Row:
    receiver: str
    workload: str
    associations: int
    images: int = 0
    stored: int = 0
    seconds: float = 0.0
    mbytes: float = 0.0
    peak_rss_mib: float = 0.0
    cpu_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_image(self) -> float:
        return self.cpu_seconds * 1000 / self.images if self.images else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.mbytes / self.seconds if self.seconds else 0.0


def send(port: int, parts: list[Path]) -> float:
    """One storescu per directory, all at once; seconds until the last one exits."""
    command = ["storescu", "-aet", "BENCH-SCU", "-aec", CALLED_AE, "+sd", "+r", "-R"]
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}  # dcmtk default: Nagle on
    started = time.monotonic()
    senders = [
        subprocess.Popen(
            [*command, "127.0.0.1", str(port), str(part)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in parts
    ]
    failures = []
    for sender in senders:
        _, err = sender.communicate()
        if sender.returncode != 0:
            failures.append(err.strip()[-500:])
    elapsed = time.monotonic() - started
    if failures:
        raise RuntimeError("storescu failed: " + " | ".join(failures))
    return elapsed


def measure(row: Row, receiver: Receiver, parts: list[Path], files: list[Path]) -> Row:
    cpu_before = tree_cpu_seconds(receiver.proc.pid)
    with TreeRss(receiver.proc.pid) as rss:
        row.seconds = send(receiver.port, parts)
        row.stored = _wait_stored(receiver, len(files))
    row.cpu_seconds = tree_cpu_seconds(receiver.proc.pid) - cpu_before
    row.images = len(files)
    row.mbytes = sum(p.stat().st_size for p in files) / 1e6
    row.peak_rss_mib = rss.peak_kib / 1024
    if row.stored != row.images:
        row.notes.append(f"only {row.stored} of {row.images} stored")
    print(
        f"  {row.receiver:38} {row.workload:14} x{row.associations}: {row.images_per_second:7.1f} img/s "
        f"{row.mb_per_second:7.1f} MB/s  CPU {row.cpu_ms_per_image:6.1f} ms/img  "
        f"peak RSS {row.peak_rss_mib:6.1f} MiB  stored {row.stored}",
        flush=True,
    )
    return row


def _wait_stored(receiver: Receiver, expected: int, timeout: float = 10.0) -> int:
    """Files a receiver wrote after acknowledging can lag its response by a moment (dcmtk --fork)."""
    deadline = time.monotonic() + timeout
    while True:
        stored = receiver.count_stored()
        if stored >= expected or time.monotonic() > deadline:
            return stored
        time.sleep(0.1)  # polling interval of the check


# --- what the disk allows ----------------------------------------------------------------
@dataclass
class Disk:
    fsync_ms: float  # write 0.5 MB, fsync it, rename it into place, fsync the directory
    sequential_mb_s: float  # 200 MB written and fsynced


def measure_disk(directory: Path) -> Disk:
    """The durable-write costs that bound any receiver that fsyncs, on the bench's own disk."""
    directory.mkdir()
    data = os.urandom(512 * 1024)
    started = time.perf_counter()
    for index in range(50):
        partial, final = directory / f"{index}.partial", directory / f"{index}.dcm"
        with partial.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, final)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
    fsync_ms = (time.perf_counter() - started) / 50 * 1000
    block = os.urandom(4 * 1024 * 1024)
    started = time.perf_counter()
    with (directory / "sequential").open("wb") as out:
        for _ in range(50):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    sequential = 50 * len(block) / 1e6 / (time.perf_counter() - started)
    shutil.rmtree(directory)
    return Disk(fsync_ms, sequential)


# --- the runs -----------------------------------------------------------------------------
def run_all(tmp: Path) -> list[Row]:
    print("generating data ...", flush=True)
    ct = make_ct_study(tmp / "ct")
    large = make_large_objects(tmp / "big")
    ct_parts = {1: split(ct, 1, tmp / "ct1"), 4: split(ct, 4, tmp / "ct4")}
    large_parts = split(large, 1, tmp / "large1")
    stock = {"DICOM_SCP_STOCK_RECEIVE": "1"}
    rows: list[Row] = []
    counter = iter(range(1000))

    def work() -> Path:
        path = tmp / f"run{next(counter)}"
        path.mkdir()
        return path

    ct_load = f"CT {CT_INSTANCES} x 512 KB"
    large_load = f"{LARGE_OBJECTS} x 50 MB"
    for associations in (1, 4):
        parts = ct_parts[associations]
        with dcmtk_storescp(work(), associations) as r:
            rows.append(measure(Row("dcmtk storescp (reference)", ct_load, associations), r, parts, ct))
        with dcmtk_storescp(work(), associations, nodelay=True) as r:
            name = "dcmtk storescp, TCP_NODELAY=1"
            rows.append(measure(Row(name, ct_load, associations), r, parts, ct))
        with pynetdicom_storescp(work(), associations) as r:
            rows.append(measure(Row("pynetdicom storescp app", ct_load, associations), r, parts, ct))
        with our_scp(work(), "file", 1, stock) as r:
            rows.append(measure(Row("ours, file, stock receive path", ct_load, associations), r, parts, ct))
        for workers in (1, 2) if associations > 1 else (1,):
            with our_scp(work(), "file", workers, {}) as r:
                name = f"ours, file, {workers} worker{'s' if workers > 1 else ''}"
                rows.append(measure(Row(name, ct_load, associations), r, parts, ct))
    with dcmtk_storescp(work(), 1) as r:
        rows.append(measure(Row("dcmtk storescp (reference)", large_load, 1), r, large_parts, large))
    with our_scp(work(), "file", 1, stock) as r:
        rows.append(measure(Row("ours, file, stock receive path", large_load, 1), r, large_parts, large))
    with our_scp(work(), "file", 1, {}) as r:
        rows.append(measure(Row("ours, file, 1 worker", large_load, 1), r, large_parts, large))
    with moto_server() as endpoint:
        s3_env = {"AWS_ENDPOINT_URL": endpoint, **FAKE_AWS}
        for associations, workers in ((1, 1), (4, 2)):
            with our_scp(work(), new_bucket(endpoint), workers, s3_env) as r:
                name = f"ours, S3 on moto, {workers} worker{'s' if workers > 1 else ''}"
                parts = ct_parts[associations]
                rows.append(measure(Row(name, ct_load, associations), r, parts, ct))
        with our_scp(work(), new_bucket(endpoint), 1, s3_env) as r:
            rows.append(measure(Row("ours, S3 on moto, 1 worker", large_load, 1), r, large_parts, large))
    return rows


def table(rows: list[Row], disk: Disk) -> str:
    lines = [
        "## Store SCP",
        "",
        f"Measured on {os.cpu_count()} CPUs ({platform.machine()}, Linux), loopback, dcmtk `storescu` as the "
        "sender (`+sd +r -R`: required presentation contexts only, Explicit VR Little Endian files), "
        "one `storescu` process per association. Targets for ours on the filesystem backend: >= 250 "
        "images/s on one association, >= 450 images/s on 4, >= 400 MB/s for 50 MB objects with peak RSS "
        "<= 64 MiB.",
        "",
        f"This disk, measured by the bench: one durable 0.5 MB write (write, fsync, rename, fsync the "
        f"directory) takes {disk.fsync_ms:.1f} ms; sequential writes with fsync reach "
        f"{disk.sequential_mb_s:.0f} MB/s. Our SCP does that for every image before it answers; the "
        "other receivers do not fsync.",
        "",
        "| receiver | workload | associations | images/s | MB/s | receiver CPU ms/image | peak RSS (MiB) "
        "| stored |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stored = f"{r.stored}/{r.images}" + (f" ({'; '.join(r.notes)})" if r.notes else "")
        lines.append(
            f"| {r.receiver} | {r.workload} | {r.associations} | {r.images_per_second:.0f} "
            f"| {r.mb_per_second:.0f} | {r.cpu_ms_per_image:.1f} | {r.peak_rss_mib:.0f} | {stored} |"
        )
    lines += ["", HOW_MEASURED, "", FINDINGS]
    return "\n".join(lines) + "\n"


HOW_MEASURED = """\
How measured (`python -m bench.scp`, about 2-3 minutes):
- Data is generated once (`cli/synthetic.py`): 500 CT images of 512x512x16 bit (~0.5 MB each), and
  one 5000x5000x16 bit CT image copied to 20 objects of ~50 MB with fresh SOP Instance UIDs.
- Each receiver is started as its own process on a free loopback port: our SCP with `python -m scp`
  (SCP_* environment, default 1 MiB maximum PDU; the bench waits for its readiness line), dcmtk
  `storescp -od <dir>` (default 16 KB PDU; `--fork` for 4 associations, since it serves one
  association at a time otherwise), `python -m pynetdicom storescp -od <dir>`. S3 rows run moto
  server in a separate process.
- images/s and MB/s: files / bytes (10^6) divided by the wall clock from starting the `storescu`
  processes to the last one's exit. 4 associations = 4 `storescu` processes on 4 quarters of the files.
- receiver CPU ms/image: user + system CPU of the receiver's process tree during the row, per
  image; it is less sensitive than images/s to other load on the machine.
- The sender is dcmtk `storescu` as shipped (Nagle's algorithm on). dcmtk `storescp` also leaves
  Nagle on unless `TCP_NODELAY=1` is set in its environment, and writes each C-STORE response in
  more than one piece, so with its defaults every image waits for a delayed ACK (~40 ms): both
  settings are shown.
- peak RSS: the largest sum of VmRSS over the receiver's process tree, sampled every 50 ms, and at
  least the largest VmHWM of one process. The senders are not counted.
- stored: files found in the receiver's storage afterwards. Our SCP fsyncs each object (and its
  directory) before it answers 0x0000; dcmtk and pynetdicom's apps write without fsync.
- "stock receive path" rows run our SCP with `DICOM_SCP_STOCK_RECEIVE=1`: pynetdicom 3.0.4's own
  polling reactors and 4 KB socket reads instead of `scp/fast_transport.py`.
- The machine is shared by sender, receiver (and moto): on 2 cores the sender's CPU is part of
  every figure."""


FINDINGS = """\
### Where the time goes, what changed, and the targets

- Per 0.5 MB image our SCP spends its CPU on: pynetdicom receiving and decoding the P-DATA PDUs and
  writing its spool file (with a file meta header built by pydicom), pydicom reading the header
  for the Study/Series UIDs, copying the spool file into the store while hashing it, the response,
  and hand-offs between the two threads of each association. Then it waits for the durable write
  (the disk line above), serially: the sender waits for each response before the next image.
- `scp/fast_transport.py` (compare the "stock receive path" rows): the DUL thread blocks in
  `select` on the socket and a wake-up socket instead of 1 ms sleeps, reads each PDU with one
  `recv_into` instead of 4 KB reads, sets TCP_QUICKACK before reads (a sender with Nagle on would
  otherwise wait for our delayed ACK at the end of each PDU); the association thread is woken by
  the DUL instead of polling; plain C-STORE responses are encoded to bytes directly (pydicom
  Dataset encoding cost ~2 ms per image), one write each. TCP_NODELAY is set on accepted sockets.
- `SCP_WORKERS` > 1 runs several processes on the port (SO_REUSEPORT), so associations can use
  more than one core; it only pays off when a second core is free for the SCP (the senders run on
  the same 2 cores here).
- The targets (>= 250 images/s on one association, >= 450 on 4, >= 400 MB/s for 50 MB objects at
  <= 64 MiB) are not reached on this machine. One association is bounded by CPU per image plus one
  fsync'ed write per image; 50 MB objects are written twice (spool, then store), each fsynced by
  the end, on a disk that writes at the sequential rate shown above. Peak RSS does not grow with
  the object size: it is the process baseline (Python, pydicom, pynetdicom, pydantic).
- Next steps, by expected gain: move the spool file into the store by rename instead of copying it
  (same filesystem; halves the disk writes of large objects); hash while spooling; read the UIDs
  from the first PDU's bytes instead of re-opening the file with pydicom."""


def main() -> int:
    missing = [tool for tool in ("storescu", "storescp") if shutil.which(tool) is None]
    if missing:
        print(f"dcmtk tools missing: {', '.join(missing)} (make dcmtk)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-scp-") as tmp:
        disk = measure_disk(Path(tmp) / "disk")
        rows = run_all(Path(tmp))
    text = table(rows, disk)
    print(text)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)
    return 0 if all(r.stored == r.images for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
