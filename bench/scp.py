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
import statistics
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
from local.credentials import FAKE_AWS_ENV, LOCAL_REGION, local_client

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "docs" / "benchmarks" / "scp.md"
CT_INSTANCES = 500
LARGE_OBJECTS = 20
LARGE_SIDE = 5000  # 5000 x 5000 x 16 bit = 50 MB of pixel data
CALLED_AE = "AHI-GATEWAY"
FAKE_AWS = {**FAKE_AWS_ENV, "AWS_DEFAULT_REGION": LOCAL_REGION}
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
def our_scp(
    work: Path, storage: str, workers: int, extra_env: dict[str, str], source: Path = ROOT
) -> Iterator[Receiver]:
    """``python -m scp`` from ``source`` (this tree, or a baseline revision's export); storage is
    ``file`` or an ``s3://`` URI (moto endpoint in extra_env)."""
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
        cwd=source,  # python -m finds the scp package of the working directory first
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
    with _listening([*command, str(port)], port, out, env) as receiver:
        yield receiver


@contextmanager
def pynetdicom_storescp(work: Path, associations: int) -> Iterator[Receiver]:
    out = work / "out"
    out.mkdir()
    port = _free_port()
    command = [sys.executable, "-m", "pynetdicom", "storescp", "-aet", CALLED_AE, "-od", str(out)]
    with _listening([*command, str(port)], port, out) as receiver:
        yield receiver


@contextmanager
def _listening(
    command: list[str], port: int, out: Path, env: dict[str, str] | None = None
) -> Iterator[Receiver]:
    """A third-party receiver writing one file per instance into ``out``, once it listens on ``port``."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
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
    return local_client("s3", endpoint)


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
    load: float = 0.0  # 1-minute load average at the end of the row (the bench's own processes count)
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


def send(port: int, parts: list[Path], nodelay: bool = False) -> float:
    """One storescu per directory, all at once; seconds until the last one exits."""
    command = ["storescu", "-aet", "BENCH-SCU", "-aec", CALLED_AE, "+sd", "+r", "-R"]
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}  # dcmtk default: Nagle on
    if nodelay:
        env["TCP_NODELAY"] = "1"
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


def measure(
    row: Row, receiver: Receiver, parts: list[Path], files: list[Path], sender_nodelay: bool = False
) -> Row:
    cpu_before = tree_cpu_seconds(receiver.proc.pid)
    with TreeRss(receiver.proc.pid) as rss:
        row.seconds = send(receiver.port, parts, sender_nodelay)
        row.stored = _wait_stored(receiver, len(files))
    row.cpu_seconds = tree_cpu_seconds(receiver.proc.pid) - cpu_before
    row.images = len(files)
    row.mbytes = sum(p.stat().st_size for p in files) / 1e6
    row.peak_rss_mib = rss.peak_kib / 1024
    row.load = load_average()
    if row.stored != row.images:
        row.notes.append(f"only {row.stored} of {row.images} stored")
    print(
        f"  {row.receiver:38} {row.workload:14} x{row.associations}: {row.images_per_second:7.1f} img/s "
        f"{row.mb_per_second:7.1f} MB/s  CPU {row.cpu_ms_per_image:6.1f} ms/img  "
        f"peak RSS {row.peak_rss_mib:6.1f} MiB  stored {row.stored}  load {row.load:.2f}",
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
DISK_WRITES = 200


@dataclass
class Disk:
    fsync_ms: float  # write 0.5 MB and fsync it
    durable_ms: float  # what our SCP does per image: fsync the spooled 0.5 MB, rename, fsync the directory
    sequential_mb_s: float  # 200 MB written and fsynced

    def bound(self, cpu_ms_per_image: float) -> float:
        """Images/s of one association with a synchronous sender: one durable write + the CPU, serially."""
        return 1000 / (self.durable_ms + cpu_ms_per_image)


def _fsync_path(path: Path, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def measure_disk(directory: Path) -> Disk:
    """The durable-write costs that bound any receiver that fsyncs, on the bench's own disk."""
    spool, store = directory / "spool", directory / "store"
    spool.mkdir(parents=True)
    store.mkdir()
    data = os.urandom(512 * 1024)
    started = time.perf_counter()
    for index in range(DISK_WRITES):
        with (spool / f"f{index}").open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    fsync_ms = (time.perf_counter() - started) / DISK_WRITES * 1000
    for index in range(DISK_WRITES):  # not timed: the spool file is written before the handler runs
        (spool / f"d{index}").write_bytes(data)
    started = time.perf_counter()
    for index in range(DISK_WRITES):
        _fsync_path(spool / f"d{index}")
        os.replace(spool / f"d{index}", store / f"{index}.dcm")
        _fsync_path(store, os.O_DIRECTORY)
    durable_ms = (time.perf_counter() - started) / DISK_WRITES * 1000
    block = os.urandom(4 * 1024 * 1024)
    started = time.perf_counter()
    with (directory / "sequential").open("wb") as out:
        for _ in range(50):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    sequential = 50 * len(block) / 1e6 / (time.perf_counter() - started)
    shutil.rmtree(directory)
    return Disk(fsync_ms, durable_ms, sequential)


# --- a quiet machine ---------------------------------------------------------------------
QUIET_LOAD = 1.0
QUIET_POLL_SECONDS = 30.0
QUIET_WAIT_SECONDS = 20 * 60


def load_average() -> float:
    return os.getloadavg()[0]


def wait_until_quiet() -> float:
    """Other work on the machine (tests, other benchmarks) skews every figure: wait for a 1-minute
    load average <= QUIET_LOAD, at most QUIET_WAIT_SECONDS; returns the load the run starts at."""
    deadline = time.monotonic() + QUIET_WAIT_SECONDS
    while (load := load_average()) > QUIET_LOAD and time.monotonic() < deadline:
        print(f"load average {load:.2f} > {QUIET_LOAD}: waiting for a quiet machine ...", flush=True)
        time.sleep(QUIET_POLL_SECONDS)  # polling interval of the load check
    if load > QUIET_LOAD:
        print(f"still busy (load {load:.2f}); measuring anyway, the figures will say so", flush=True)
    return load


def median_spread(values: list[float], digits: int = 0, unit: str = "") -> str:
    """``median (min-max)`` of repeated measurements: how the rounds-based benchmarks report."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f}{unit} ({low:.{digits}f}-{high:.{digits}f})"


SETTLE_TIMEOUT = 60.0
SETTLED_DIRTY_KIB = 16 * 1024
SETTLE_PAUSE = 3.0


def settle_disk() -> float:
    """Flush what earlier rows wrote and deleted, and wait until the kernel has written it back.

    A row that starts while gigabytes of an earlier row are still being written back (or
    discarded: the disk is mounted with ``discard``) pays for them: its fsyncs wait and its
    writes contend for the page cache's locks (measured: 1.5 -> 2.8 ms of CPU per image, 2x the
    wall time). Returns the seconds waited.
    """
    started = time.monotonic()
    os.sync()
    while time.monotonic() - started < SETTLE_TIMEOUT:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        dirty_kib = int(meminfo["Dirty"].split()[0]) + int(meminfo["Writeback"].split()[0])
        if dirty_kib <= SETTLED_DIRTY_KIB:
            break
        time.sleep(0.2)  # polling interval of the writeback check
    time.sleep(SETTLE_PAUSE)  # the discards of deleted files follow the writeback
    return time.monotonic() - started


# --- the completeness walk ------------------------------------------------------------------
WALK_ROUNDS = 9  # medians and spread over this many rounds
WALK_REPEATS = 200  # walks per round
PDU_OVERHEAD = 12  # PDU header (6) + PDV item header (6): a PDU of N bytes carries N - 12 of dataset
WALK_FRAGMENTS = (16384 - PDU_OVERHEAD, 1024 * 1024 - PDU_OVERHEAD)  # storescu's default PDU, and 1 MiB


@dataclass
class Walk:
    fragment: int
    median_us: float
    low_us: float
    high_us: float


def measure_completeness(path: Path) -> tuple[int, list[Walk]]:
    """CPU of scp/completeness.py over one CT dataset, fed as the receive path feeds it."""
    from pydicom import dcmread

    from scp.completeness import Completeness
    from scp.spool import dataset_offset

    data = path.read_bytes()
    body = memoryview(data)[dataset_offset(data) :]
    syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    elements = len(dcmread(path))
    walks = []
    for fragment in WALK_FRAGMENTS:
        per_walk = []
        for _ in range(WALK_ROUNDS):
            started = time.perf_counter()
            for _ in range(WALK_REPEATS):
                check = Completeness(syntax)
                for offset in range(0, len(body), fragment):
                    check.feed(body[offset : offset + fragment])
                assert check.problem() is None
            per_walk.append((time.perf_counter() - started) / WALK_REPEATS * 1e6)
        per_walk.sort()
        walks.append(Walk(fragment, per_walk[len(per_walk) // 2], per_walk[0], per_walk[-1]))
    return elements, walks


# --- the runs -----------------------------------------------------------------------------
def export_revision(revision: str, directory: Path) -> Path:
    """The repository at ``revision`` (``git archive``), to run its SCP next to this one."""
    directory.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    return directory


def run_all(tmp: Path, baseline: str | None) -> tuple[list[Row], tuple[int, list[Walk]]]:
    print("generating data ...", flush=True)
    ct = make_ct_study(tmp / "ct")
    walk = measure_completeness(ct[0])
    large = make_large_objects(tmp / "big")
    ct_parts = {1: split(ct, 1, tmp / "ct1"), 4: split(ct, 4, tmp / "ct4")}
    large_parts = split(large, 1, tmp / "large1")
    stock = {"DICOM_SCP_STOCK_RECEIVE": "1"}
    before = export_revision(baseline, tmp / "baseline") if baseline else None
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
        with dcmtk_storescp(work(), associations, nodelay=True) as r:
            name = "dcmtk storescp, TCP_NODELAY=1 on both ends"
            rows.append(measure(Row(name, ct_load, associations), r, parts, ct, sender_nodelay=True))
        with pynetdicom_storescp(work(), associations) as r:
            rows.append(measure(Row("pynetdicom storescp app", ct_load, associations), r, parts, ct))
        with our_scp(work(), "file", 1, stock) as r:
            rows.append(measure(Row("ours, file, stock receive path", ct_load, associations), r, parts, ct))
        if before:
            with our_scp(work(), "file", 1, {}, source=before) as r:
                rows.append(
                    measure(Row(f"ours @{baseline}, file, 1 worker", ct_load, associations), r, parts, ct)
                )
        for workers in (1, 2) if associations > 1 else (1,):
            with our_scp(work(), "file", workers, {}) as r:
                name = f"ours, file, {workers} worker{'s' if workers > 1 else ''}"
                rows.append(measure(Row(name, ct_load, associations), r, parts, ct))
        with our_scp(work(), "file", 1, {}) as r:
            name = "ours, file, 1 worker, storescu TCP_NODELAY=1"
            rows.append(measure(Row(name, ct_load, associations), r, parts, ct, sender_nodelay=True))
    with dcmtk_storescp(work(), 1) as r:
        rows.append(measure(Row("dcmtk storescp (reference)", large_load, 1), r, large_parts, large))
    with our_scp(work(), "file", 1, stock) as r:
        rows.append(measure(Row("ours, file, stock receive path", large_load, 1), r, large_parts, large))
    if before:
        with our_scp(work(), "file", 1, {}, source=before) as r:
            name = f"ours @{baseline}, file, 1 worker"
            rows.append(measure(Row(name, large_load, 1), r, large_parts, large))
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
    return rows, walk


def walk_text(walk: tuple[int, list[Walk]]) -> str:
    elements, walks = walk
    figures = "; ".join(
        f"{w.median_us:.0f} µs with {(w.fragment + PDU_OVERHEAD) // 1024} KB PDUs "
        f"({w.low_us:.0f}-{w.high_us:.0f})"
        for w in walks
    )
    return (
        f"Completeness walk (`scp/completeness.py`, target < 100 µs per 0.5 MB image): one CT dataset of "
        f"this study ({elements} top-level elements), fed as the receive path feeds it, median per image "
        f"over {WALK_ROUNDS} rounds of {WALK_REPEATS} (min-max): {figures}."
    )


def table(
    rows: list[Row], disk: Disk, load_before: float, baseline: str | None, walk: tuple[int, list[Walk]]
) -> str:
    ours = next(
        (
            r
            for r in rows
            if r.receiver == "ours, file, 1 worker" and r.associations == 1 and r.workload[:2] == "CT"
        ),
        None,
    )
    bound = ""
    if ours:
        cpu = ours.cpu_ms_per_image
        bound = (
            " With one association and a synchronous sender (the next image is sent after the response), "
            "images/s <= 1 / (durable write + CPU per image), roughly (the CPU figure also counts the "
            "kernel's share of the writes): for ours on the file backend "
            f"1000 / ({disk.durable_ms:.1f} + {cpu:.1f}) = {disk.bound(cpu):.0f} images/s on this disk "
            f"(measured: {ours.images_per_second:.0f})."
        )
    lines = [
        "## Store SCP",
        "",
        f"Measured on {os.cpu_count()} CPUs ({platform.machine()}, Linux), loopback, dcmtk `storescu` as the "
        "sender (`+sd +r -R`: required presentation contexts only, Explicit VR Little Endian files), "
        "one `storescu` process per association. Targets for ours on the filesystem backend: >= 250 "
        "images/s on one association, >= 450 images/s on 4, >= 400 MB/s for 50 MB objects with peak RSS "
        "<= 64 MiB.",
        "",
        f"Load: the 1-minute load average was {load_before:.2f} when the run started (the bench waits for "
        f"<= {QUIET_LOAD} before it starts); the load column is the 1-minute load average at the end of "
        "each row, which includes the bench's own sender and receiver (about 1-2 while they run).",
        "",
        f"This disk, measured by the bench ({DISK_WRITES} writes each): writing 0.5 MB and fsyncing it takes "
        f"{disk.fsync_ms:.1f} ms; what our SCP does per image before it answers (fsync the spooled 0.5 MB, "
        f"rename it into the store, fsync the directory) takes {disk.durable_ms:.1f} ms; sequential writes "
        f"with fsync reach {disk.sequential_mb_s:.0f} MB/s. The other receivers do not fsync.{bound}",
        "",
        walk_text(walk),
        "",
    ]
    if baseline:
        lines += [
            f'"ours @{baseline}" rows run the SCP of revision `{baseline}` (before this round\'s changes) '
            "in the same run, for a before/after under the same conditions.",
            "",
        ]
    lines += [
        "| receiver | workload | associations | images/s | MB/s | receiver CPU ms/image | peak RSS (MiB) "
        "| stored | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stored = f"{r.stored}/{r.images}" + (f" ({'; '.join(r.notes)})" if r.notes else "")
        lines.append(
            f"| {r.receiver} | {r.workload} | {r.associations} | {r.images_per_second:.0f} "
            f"| {r.mb_per_second:.0f} | {r.cpu_ms_per_image:.1f} | {r.peak_rss_mib:.0f} | {stored} "
            f"| {r.load:.1f} |"
        )
    lines += ["", *against_targets(rows, disk, baseline), "", HOW_MEASURED, "", FINDINGS]
    return "\n".join(lines) + "\n"


def _row(rows: list[Row], receiver: str, workload: str, associations: int) -> Row | None:
    return next(
        (
            r
            for r in rows
            if r.receiver == receiver and r.workload.startswith(workload) and r.associations == associations
        ),
        None,
    )


def against_targets(rows: list[Row], disk: Disk, baseline: str | None) -> list[str]:
    """Our file-backend rows against the targets, with the baseline's where it ran, from this run."""
    before = f"ours @{baseline}, file, 1 worker" if baseline else None

    def figure(receiver: str | None, workload: str, associations: int, unit: str) -> str:
        row = _row(rows, receiver, workload, associations) if receiver else None
        if row is None:
            return "-"
        value = row.images_per_second if unit == "images/s" else row.mb_per_second
        return (
            f"{value:.0f} {unit} (peak RSS {row.peak_rss_mib:.0f} MiB)"
            if unit == "MB/s"
            else f"{value:.0f} {unit}"
        )

    best_four = max(
        (
            r
            for r in rows
            if r.receiver.startswith("ours, file, ")
            and "storescu" not in r.receiver  # the targets are for storescu as shipped
            and r.workload.startswith("CT")
            and r.associations == 4
        ),
        key=lambda r: r.images_per_second,
        default=None,
    )
    four = f"{best_four.images_per_second:.0f} images/s ({best_four.receiver})" if best_four else "-"
    one = _row(rows, "ours, file, 1 worker", "CT", 1)
    bound = f"{disk.bound(one.cpu_ms_per_image):.0f} images/s" if one else "-"
    return [
        "### Against the targets (file backend, this run)",
        "",
        "| target | before" + (f" (`{baseline}`)" if baseline else "") + " | now | what this disk allows |",
        "|---|---|---|---|",
        f"| >= 250 images/s, 1 association | {figure(before, 'CT', 1, 'images/s')} "
        f"| {figure('ours, file, 1 worker', 'CT', 1, 'images/s')} "
        f"| {bound} (1 / (durable write + CPU per image)) |",
        f"| >= 450 images/s, 4 associations | {figure(before, 'CT', 4, 'images/s')} | {four} "
        "| more than one association: fsyncs of different associations can share a journal commit |",
        f"| >= 400 MB/s for 50 MB objects, peak RSS <= 64 MiB | {figure(before, '20 x', 1, 'MB/s')} "
        f"| {figure('ours, file, 1 worker', '20 x', 1, 'MB/s')} "
        f"| {disk.sequential_mb_s:.0f} MB/s (sequential write + fsync) |",
    ]


HOW_MEASURED = """\
How measured (`python -m bench.scp`, about 4-6 minutes once the machine is quiet;
`BENCH_SCP_BASELINE=<git revision>` adds rows for that revision's SCP):
- Data is generated once (`cli/synthetic.py`): 500 CT images of 512x512x16 bit (~0.5 MB each), and
  one 5000x5000x16 bit CT image copied to 20 objects of ~50 MB with fresh SOP Instance UIDs.
- Each receiver is started as its own process on a free loopback port: our SCP with `python -m scp`
  (SCP_* environment, default 1 MiB maximum PDU, spool and store directories on the same
  filesystem; the bench waits for its readiness line), dcmtk `storescp -od <dir>` (default 16 KB
  PDU; `--fork` for 4 associations, since it serves one association at a time otherwise),
  `python -m pynetdicom storescp -od <dir>`. S3 rows run moto server in a separate process.
  Baseline rows run `python -m scp` from a `git archive` of the baseline revision.
- images/s and MB/s: files / bytes (10^6) divided by the wall clock from starting the `storescu`
  processes to the last one's exit. 4 associations = 4 `storescu` processes on 4 quarters of the files.
- receiver CPU ms/image: user + system CPU of the receiver's process tree during the row, per
  image; it is less sensitive than images/s to other load on the machine.
- The sender is dcmtk `storescu` as shipped (Nagle's algorithm on). dcmtk `storescp` also leaves
  Nagle on unless `TCP_NODELAY=1` is set in its environment, and writes each C-STORE response in
  more than one piece, so with its defaults every image waits for a delayed ACK (~40 ms): both
  settings are shown, and a row with `TCP_NODELAY=1` for `storescu` too (what this machine does
  for a receiver that does not fsync and a sender without Nagle).
- peak RSS: the largest sum of VmRSS over the receiver's process tree, sampled every 50 ms, and at
  least the largest VmHWM of one process. The senders are not counted.
- stored: files found in the receiver's storage afterwards. Our SCP fsyncs each object (and its
  directory) before it answers 0x0000; dcmtk and pynetdicom's apps write without fsync.
- "stock receive path" rows run our SCP with `DICOM_SCP_STOCK_RECEIVE=1`: pynetdicom 3.0.4's own
  DUL and DIMSE after negotiation instead of `scp/association_loop.py`.
- The machine is shared by sender, receiver (and moto): on 2 cores the sender's CPU is part of
  every figure."""


FINDINGS = """\
### Where the time goes

- Per image our SCP receives the PDUs, spools the dataset, answers, and in between makes it
  durable: fsync the spooled file, rename it into the store, fsync the directory. The sender waits
  for each response before it sends the next image, so one association runs these in series; the
  durable write alone is the "durable write" figure above.
- After negotiation one loop per association (`scp/association_loop.py`) reads whole PDUs into one
  buffer, decodes command sets itself and spools, hashes (SHA-256) and walks each dataset as its
  fragments arrive (`scp/spool.py`, `scp/completeness.py`); the Study/Series UIDs come from the
  first 64 KB (`scp/header.py`); the file backend renames the spool file into place. The "stock
  receive path" rows are pynetdicom's own machinery after the same negotiation.
- What is left per image is the bytes and the disk: copying the dataset out of the socket and into
  the file, its SHA-256 (kept: S3 verifies it and the import validates it), and the two fsyncs.
  Both fsyncs are kept on purpose: the data must be durable before the rename makes it visible
  under its key, and the directory entry before the response; acknowledgements are not batched.
- `SCP_WORKERS` (default: one process per CPU) runs several processes on the port
  (SO_REUSEPORT); on these 2 cores the senders take part of the second one.

### Reading these figures

- One run per row. This machine's speed changes from minute to minute (other tenants, writeback of
  what earlier rows wrote): the same row varies by 2x between runs, dcmtk's too. The rounds-based
  comparison with dcmtk (medians, spread, ratios per round) is docs/benchmarks/receive-path.md, and
  the journal against S3 latency is docs/benchmarks/journal.md.
- dcmtk's best figures are dcmtk without Nagle's algorithm at both ends and without fsync
  ("TCP_NODELAY=1 on both ends" rows). `storescu` as shipped keeps Nagle on, which costs dcmtk
  `storescp` most of its speed; it costs ours little (TCP_QUICKACK before each read).
- 50 MB objects: the data is written once (renamed into place) and fsynced; the sender
  (`storescu` reading 50 MB files) and the disk's sequential rate with fsync cap every receiver
  that makes objects durable."""


BASELINE_ENV = "BENCH_SCP_BASELINE"  # a git revision whose SCP runs next to this one (before/after)


def main() -> int:
    missing = [tool for tool in ("storescu", "storescp") if shutil.which(tool) is None]
    if missing:
        print(f"dcmtk tools missing: {', '.join(missing)} (make dcmtk)", file=sys.stderr)
        return 2
    baseline = os.environ.get(BASELINE_ENV) or None
    load_before = wait_until_quiet()
    with tempfile.TemporaryDirectory(prefix="bench-scp-") as tmp:
        disk = measure_disk(Path(tmp) / "disk")
        rows, walk = run_all(Path(tmp), baseline)
        text = table(rows, disk, load_before, baseline, walk)
    print(text)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text)
    return 0 if all(r.stored == r.images for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
