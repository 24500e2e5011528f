"""Hostile and broken traffic against the real ``python -m scp`` process, in rounds.

One SCP process (plain and TLS ports, at most 4 associations, 16 pending connections, ARTIM
2 s) takes every round in file order. After each round dcmtk's ``echoscu`` must be answered
within 2 s, the process RSS must stay bounded and no thread may have died (the SCP logs a
"thread died" record for any thread that ends with an exception). The generator is seeded:
``MALFORMED_SEED=<n>`` reproduces a failing run. The last test sends SIGTERM and expects a fast
exit, since none of this traffic is an association worth waiting for.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context

from tests.scp.certificates import make_pki, tls_listener_env
from tests.scp.harness import ScpProcess, http_get, wait_for

SEED = int(os.environ.get("MALFORMED_SEED", "20261201"))
ARTIM = 2.0
MAX_ASSOCIATIONS = 4
MAX_PENDING = 16
ECHO_DEADLINE = 2.0
RSS_GROWTH_LIMIT = 64 * 1024  # kB over the first measurement
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


@pytest.fixture(scope="module")
def rng() -> random.Random:
    return random.Random(SEED)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    work = tmp_path_factory.mktemp("scp-malformed")
    pki = make_pki(work / "pki")
    scp = ScpProcess(
        {
            "SCP_STORAGE_URI": f"file://{work / 'store'}",
            **tls_listener_env(pki),
            "SCP_ARTIM_TIMEOUT": str(ARTIM),
            "SCP_MAX_ASSOCIATIONS": str(MAX_ASSOCIATIONS),
            "SCP_MAX_PENDING_CONNECTIONS": str(MAX_PENDING),
        },
        work,
    )
    scp.baseline_rss = _rss_kb(scp.proc.pid)
    yield scp
    if scp.proc.poll() is None:
        scp.kill()


# --- what every round must leave behind --------------------------------------------------
def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def echo(port: int) -> float:
    """dcmtk echoscu against the gateway; returns how long it took (fails if it did not succeed)."""
    started = time.monotonic()
    result = subprocess.run(
        ["echoscu", "-to", "5", "-ta", "5", "-td", "5", "-aec", "AHI-GATEWAY", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=15,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"echoscu failed (seed {SEED}):\n{result.stdout}{result.stderr}"
    return elapsed


def assert_healthy(scp: ScpProcess) -> None:
    assert scp.proc.poll() is None, f"the SCP died (seed {SEED}):\n{scp.stderr()[-3000:]}"
    elapsed = echo(scp.port)
    assert elapsed < ECHO_DEADLINE, f"echoscu took {elapsed:.2f} s (seed {SEED})"
    growth = _rss_kb(scp.proc.pid) - scp.baseline_rss
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth} kB (seed {SEED})"
    died = [r for r in scp.logs() if r.get("message") == "thread died"]
    assert not died, f"threads died (seed {SEED}): {died[:2]}"
    assert "Traceback" not in "".join(
        line for line in scp.stderr().splitlines(keepends=True) if not line.startswith("{")
    )


def refusals(scp: ScpProcess, text: str) -> list[dict]:
    return [r for r in scp.logs() if r.get("message") == "connection refused" and text in r["reason"]]


# --- building and breaking PDUs ------------------------------------------------------------
def association_request(
    called: str = "AHI-GATEWAY", abstract_syntax: str = VERIFICATION, transfer_syntax: str = IMPLICIT_LE
) -> bytes:
    """A valid A-ASSOCIATE-RQ proposing one context (Verification by default), encoded by pynetdicom."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = "FUZZER", called
    context = build_context(abstract_syntax, [transfer_syntax])
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.9999"
    primitive.user_information = [length, implementation]
    return A_ASSOCIATE_RQ(primitive).encode()


def item_offsets(request: bytes) -> dict[int, list[int]]:
    """Where each variable item type starts in an A-ASSOCIATE-RQ (PS3.8 9.3.2), sub-items included."""
    found: dict[int, list[int]] = {}

    def walk(start: int, end: int, nested: bool) -> None:
        offset = start
        while offset + 4 <= end:
            item_type = request[offset]
            (length,) = struct.unpack_from(">H", request, offset + 2)
            found.setdefault(item_type, []).append(offset)
            if item_type == 0x20:  # presentation context: 4 bytes of fields, then sub-items
                walk(offset + 8, offset + 4 + length, True)
            elif item_type == 0x50:  # user information: sub-items
                walk(offset + 4, offset + 4 + length, True)
            offset += 4 + length

    walk(74, len(request), False)
    return found


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the gateway sends until it closes; fails if it holds the connection longer."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the gateway kept the connection open over {within} s (seed {SEED})") from None
    return data


def associate_raw(port: int, **context: str) -> socket.socket:
    """An established association (Verification by default; its context id is 1) on a raw socket,
    the A-ASSOCIATE-AC read."""
    sock = connect(port)
    sock.sendall(association_request(**context))
    header = sock.recv(6, socket.MSG_WAITALL)
    assert header[0] == 0x02, f"not accepted: {header!r}"
    (length,) = struct.unpack(">L", header[2:])
    sock.recv(length, socket.MSG_WAITALL)
    return sock


def hang_up_allowed() -> contextlib.AbstractContextManager:
    """The gateway may close (reset) the connection while we are still sending our garbage."""
    return contextlib.suppress(ConnectionError)


def is_abort(data: bytes) -> bool:
    return data[:1] == b"\x07" and len(data) >= 10


# --- the rounds ----------------------------------------------------------------------------
def test_random_bytes(gateway, rng):
    for _ in range(60):
        with connect(gateway.port) as sock, hang_up_allowed():
            sock.sendall(rng.randbytes(rng.randrange(0, 64 * 1024)))
    assert_healthy(gateway)


def test_corrupted_association_requests(gateway, rng):
    request = association_request()
    offsets = item_offsets(request)
    assert {0x10, 0x20, 0x30, 0x40, 0x50, 0x51, 0x52} <= set(offsets)
    for item_type, starts in sorted(offsets.items()):
        for _ in range(6):
            corrupted = bytearray(request)
            start = rng.choice(starts)
            for _ in range(rng.randrange(1, 4)):  # flip bits in the item's header or first bytes
                position = start + rng.randrange(0, 8)
                corrupted[position] ^= 1 << rng.randrange(8)
            with connect(gateway.port) as sock:
                with hang_up_allowed():
                    sock.sendall(corrupted)
                    answer = sock.recv(6)  # an A-ASSOCIATE-AC/RJ or an A-ABORT, or a close
                assert answer[:1] in (b"", b"\x02", b"\x03", b"\x07"), f"item 0x{item_type:02X}: {answer!r}"
    assert_healthy(gateway)


def test_declared_lengths_up_to_4_gb(gateway, rng):
    for pdu_type in range(0x00, 0x09):
        for length in (0xFFFFFFFF, 0x80000000, 1_000_000_000, 1024 * 1024 + 1):
            with connect(gateway.port) as sock, hang_up_allowed():
                sock.sendall(struct.pack(">BBL", pdu_type, 0, length) + rng.randbytes(100))
                answer = read_until_closed(sock, within=1.5)
                assert answer == b"" or is_abort(answer), f"type {pdu_type}: {answer[:16]!r}"
    assert_healthy(gateway)


def test_garbage_after_a_valid_association_is_aborted_at_once(gateway, rng):
    def pdata(body: bytes) -> bytes:
        return struct.pack(">BBL", 0x04, 0, len(body)) + body

    garbage = [
        pdata(struct.pack(">LB", 5000, 1) + b"\x03" + rng.randbytes(10)),  # PDV longer than its PDU
        pdata(rng.randbytes(300)),
        rng.randbytes(2000),
        struct.pack(">BBL", 0x0B, 0, 4) + b"abcd",  # unrecognized PDU type
        association_request(),  # a second A-ASSOCIATE-RQ
        struct.pack(">BBL", 0x04, 0, 0xFFFFFFFF),  # P-DATA of 4 GB
    ]
    for _ in range(2):
        for payload in garbage:
            sock = associate_raw(gateway.port)
            with sock, hang_up_allowed():
                sock.sendall(payload)
                answer = read_until_closed(sock, within=1.5)  # not ARTIM, not the network timeout
                assert answer == b"" or is_abort(answer), f"{payload[:8]!r}: {answer[:16]!r}"
    assert_healthy(gateway)


def test_truncated_pdus_left_idle_do_not_hold_slots(gateway, rng):
    idle = []
    for _ in range(MAX_PENDING - 4):
        sock = connect(gateway.port)
        sock.sendall(association_request()[: rng.randrange(1, 60)])
        idle.append(sock)
    try:
        assert_healthy(gateway)  # while they wait
        started = time.monotonic()
        for sock in idle:  # ARTIM closes every one of them
            read_until_closed(sock, within=ARTIM + 3 - (time.monotonic() - started))
    finally:
        for sock in idle:
            sock.close()
    assert refusals(gateway, "ARTIM")
    assert_healthy(gateway)


def _pending(scp: ScpProcess) -> int:
    text = http_get(scp.health_port, "/metrics")[1]
    return int(
        float(next(line.split()[1] for line in text.splitlines() if line.startswith("dicom_scp_pending_")))
    )


def test_past_the_pending_bound_the_oldest_waiting_connection_is_dropped(tmp_path):
    """Its own SCP: a long ARTIM, so that only the bound can close a waiting connection."""
    scp = ScpProcess(
        {
            "SCP_STORAGE_URI": f"file://{tmp_path / 'store'}",
            "SCP_ARTIM_TIMEOUT": "60",
            "SCP_MAX_PENDING_CONNECTIONS": "4",
            "SCP_MAX_ASSOCIATIONS": "1",
        },
        tmp_path,
    )
    try:
        waiting = []
        for count in range(1, 5):
            waiting.append(connect(scp.port))
            wait_for(lambda count=count: _pending(scp) == count, what=f"{count} pending")
        newest = connect(scp.port)
        read_until_closed(waiting[0], within=5)  # the oldest is dropped, the others wait on
        wait_for(lambda: refusals(scp, "dropped: more than 4 connections without an association request"))
        elapsed = echo(scp.port)  # an association still gets the one slot
        assert elapsed < ECHO_DEADLINE
        for sock in [*waiting, newest]:
            sock.close()
    finally:
        scp.kill()


def test_connect_and_close_bursts(gateway):
    def burst() -> None:
        for _ in range(50):
            socket.create_connection(("127.0.0.1", gateway.port), timeout=10).close()

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert_healthy(gateway)


def test_http_requests(gateway):
    for path in ("/", "/healthz", "/metrics"):
        with connect(gateway.port) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
            assert read_until_closed(sock, within=1.5) == b""
    assert refusals(gateway, "an HTTP request on the DICOM port")
    assert_healthy(gateway)


def test_tls_garbage_on_both_ports(gateway, rng):
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    # A TLS client on the plain port: its ClientHello is answered with an A-ABORT and a close.
    with connect(gateway.port) as raw, pytest.raises((ssl.SSLError, ConnectionError)):
        client.wrap_socket(raw, server_hostname="localhost")
    # Plain DICOM on the TLS port: an unencrypted A-ABORT it can show, then a close.
    with connect(gateway.tls_port) as sock:
        sock.sendall(association_request())
        assert is_abort(read_until_closed(sock, within=1.5))
    # HTTP, random bytes, and nothing at all on the TLS port.
    with connect(gateway.tls_port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert read_until_closed(sock, within=1.5) == b""
    for _ in range(10):
        with connect(gateway.tls_port) as sock, hang_up_allowed():
            sock.sendall(rng.randbytes(rng.randrange(1, 4096)))
            read_until_closed(sock, within=1.5)
    with connect(gateway.tls_port) as silent:
        assert_healthy(gateway)
        read_until_closed(silent, within=ARTIM + 2)
    # After a good handshake, garbage instead of an association request.
    with client.wrap_socket(connect(gateway.tls_port), server_hostname="localhost") as tls, hang_up_allowed():
        tls.sendall(rng.randbytes(500))
        read_until_closed(tls, within=1.5)
    assert refusals(gateway, "a TLS handshake on the plain DICOM port")
    assert refusals(gateway, "plain DICOM on the TLS port")
    assert refusals(gateway, "an HTTP request on the TLS port")
    assert refusals(gateway, "no TLS handshake within the ARTIM timeout")
    assert_healthy(gateway)


def test_sigterm_after_the_rounds_exits_fast(gateway):
    started = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(10) == 0
    assert time.monotonic() - started < 3.0, "SIGTERM waited for connections that are not associations"
    draining = wait_for(lambda: [r for r in gateway.logs() if r.get("message") == "draining"])
    assert draining[0]["associations"] == 0
