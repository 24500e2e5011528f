"""dicomctl send / echo / load against an in-test pynetdicom SCP (real associations, real C-STORE)."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading

import pydicom

from cli.errors import EXIT_FAILED, EXIT_REJECTED, EXIT_UNREACHABLE, EXIT_USAGE
from cli.synthetic import write_study
from tests.cli.conftest import ScriptedScp, peer_args, run_dicomctl
from tests.scp.certificates import make_pki


def sop_uid(path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_send_directory_stores_every_instance(invoke, scp, ct_study):
    result = invoke("send", ct_study[0].parent.parent, *peer_args(scp), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["stored"] == 6 and document["failed"] == 0
    assert set(scp.received) == {sop_uid(p) for p in ct_study}
    assert scp.calling_aets == {"DICOMCTL"}


def test_send_files_prints_summary_table(invoke, scp, ct_study):
    result = invoke("send", *ct_study[:2], *peer_args(scp), "--calling-aet", "CT-ROOM-1")
    assert result.exit_code == 0, result.output
    assert "Stored" in result.stdout and "Images/s" in result.stdout
    assert len(scp.received) == 2 and scp.calling_aets == {"CT-ROOM-1"}


def test_send_over_parallel_associations(invoke, scp, ct_study):
    result = invoke("send", ct_study[0].parent.parent, *peer_args(scp), "--associations", "3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["associations"] == 3
    assert len(scp.received) == 6


def test_send_with_one_process_per_association(invoke, scp, ct_study):
    result = invoke("send", *ct_study, *peer_args(scp), "--associations", "2", "--processes", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stored"] == 6
    assert set(scp.received) == {sop_uid(p) for p in ct_study}


def test_synthetic_compressed_studies_are_sent_as_encoded(invoke, scp):
    result = invoke(
        "send",
        "--synthetic",
        "mr",
        "--studies",
        "2",
        "--instances",
        "3",
        "--transfer-syntax",
        "rle",
        *peer_args(scp),
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stored"] == 6
    assert len(scp.received) == 6


def test_non_dicom_file_is_listed_and_exit_is_nonzero(invoke, scp, ct_study, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    result = invoke("send", junk, *ct_study[:3], *peer_args(scp))
    assert result.exit_code == EXIT_FAILED
    assert "notes.txt" in result.stdout and "not a DICOM Part 10 file" in result.stdout
    assert "1 of 4 instances were not stored" in result.stderr
    assert len(scp.received) == 3


def test_out_of_resources_is_retried_then_stored(invoke, scp, ct_study):
    flaky = sop_uid(ct_study[1])
    scp.fail_first[flaky] = 0xA700
    result = invoke("send", *ct_study[:3], *peer_args(scp), "--json")
    assert result.exit_code == 0, result.output
    assert scp.attempts[flaky] == 2 and flaky in scp.received


def test_refused_instance_is_listed_with_its_dimse_status(invoke, scp, ct_study):
    broken = sop_uid(ct_study[2])
    scp.fail_always[broken] = 0xA702
    result = invoke("send", *ct_study[:3], *peer_args(scp), "--retries", "1", "--json")
    assert result.exit_code == EXIT_FAILED
    failures = json.loads(result.stdout)["failures"]
    assert [(f["sopInstanceUid"], f["status"], f["attempts"]) for f in failures] == [(broken, "0xA702", 2)]
    assert "out of resources" in failures[0]["reason"]


def test_wrong_called_ae_is_one_clear_message(invoke, scp, ct_study):
    result = invoke("send", ct_study[0], "--host", "127.0.0.1", "--port", scp.port, "--called-aet", "NOT-IT")
    assert result.exit_code == EXIT_REJECTED
    assert "association rejected" in result.stderr
    assert "--called-aet" in result.stderr and "NOT-IT" in result.stderr
    assert "Traceback" not in result.output
    assert not scp.received


def test_unreachable_host_is_one_clear_message(invoke, ct_study):
    with socket.socket() as probe:  # an ephemeral port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke("send", ct_study[0], "--host", "127.0.0.1", "--port", port, "--called-aet", "X")
    assert result.exit_code == EXIT_UNREACHABLE
    assert f"cannot connect to 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.output


def test_send_needs_paths_or_synthetic(invoke, scp):
    result = invoke("send", *peer_args(scp))
    assert result.exit_code == EXIT_USAGE
    assert "PATH... or --synthetic" in result.stderr


def test_send_without_host_and_no_local_stack_says_how_to_fix(invoke, ct_study, tmp_path):
    result = invoke("--project-dir", tmp_path, "send", ct_study[0])
    assert result.exit_code == EXIT_USAGE
    assert "local stack is not running" in result.stderr and "dicomctl dev" in result.stderr


def test_echo_reports_success_and_time(invoke, scp):
    result = invoke("echo", *peer_args(scp), "--count", "2", "--json")
    assert result.exit_code == 0, result.output
    echoes = json.loads(result.stdout)["echoes"]
    assert [e["status"] for e in echoes] == ["0x0000", "0x0000"]
    assert all(e["ms"] > 0 for e in echoes)


def test_load_simulates_modalities_and_reports_percentiles(invoke, scp):
    result = invoke(
        "load",
        *peer_args(scp),
        "--rate",
        "20",
        "--duration",
        "1.5",
        "--modalities",
        "2",
        "--study-size",
        "3",
        "--rows",
        "32",
        "--json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["failed"] == 0 and document["stored"] >= 6
    assert {m["callingAet"] for m in document["modalities"]} == {"SIM-CT1", "SIM-MR2"}
    assert scp.calling_aets == {"SIM-CT1", "SIM-MR2"}
    latency = document["latencyMs"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    # every simulated study is a study of its own: its own StudyInstanceUID, series and patient
    sent = [uid for m in document["modalities"] for uid in m["studyInstanceUids"]]
    assert len(sent) == len(set(sent)) == document["studies"] >= 2
    received = {study for study, _, _ in scp.studies.values()}
    assert received == set(sent)
    series_of = {serie: study for study, serie, _ in scp.studies.values()}
    assert len(series_of) == len(set(scp.studies.values()))  # no series in two studies
    patients = {(study, patient) for study, _, patient in scp.studies.values()}
    assert len(patients) == len(received) == len({patient for _, patient in patients})  # one each
    spent = document["timeSpent"]["perInstanceMs"]
    assert spent["gatewayMs"] > 0 and spent["senderPrepareMs"] > 0


def test_load_refuses_non_loopback_targets(invoke):
    result = invoke("load", "--host", "192.0.2.10", "--port", "104", "--called-aet", "X")
    assert result.exit_code == EXIT_USAGE
    assert "loopback" in result.stderr


def test_send_and_echo_over_tls_with_a_client_certificate(invoke, ct_study, tmp_path):
    pki = make_pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.verify_mode = ssl.CERT_REQUIRED  # the gateway's tlsRequireClientCert
    server = ScriptedScp(ssl_context=context)
    server.start()
    try:
        tls = [
            "--tls",
            "--ca-file",
            pki.ca_cert,
            "--cert-file",
            pki.client_cert,
            "--key-file",
            pki.client_key,
        ]
        sent = invoke("send", *ct_study[:2], *peer_args(server), *tls, "--json")
        assert sent.exit_code == 0, sent.output
        assert len(server.received) == 2
        assert invoke("echo", *peer_args(server), *tls).exit_code == 0
        half = invoke("send", ct_study[0], *peer_args(server), "--tls", "--cert-file", pki.client_cert)
        assert half.exit_code == EXIT_USAGE and "--key-file" in half.stderr
    finally:
        server.stop()


def test_a_send_of_many_studies_is_summarised_per_study_on_a_pipe(scp, tmp_path):
    studies = [write_study(tmp_path / f"s{i}", "CT", instances=2 + i, rows=32, cols=32) for i in range(3)]
    (tmp_path / "s0" / "notes.txt").write_text("not an image")
    human = run_dicomctl("send", tmp_path, *peer_args(scp), columns=60)
    assert human.returncode == EXIT_FAILED, human.stderr
    lines = human.stdout.splitlines()
    for index, paths in enumerate(studies):
        uid = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
        count = str(2 + index)
        assert next(line for line in lines if uid in line).split()[:4] == [uid, count, count, "0"]
    assert any(line.split()[:4] == ["(no", "study", "UID)", "1"] for line in lines)  # the unreadable file
    assert "notes.txt" in human.stdout and "not a DICOM Part 10 file" in human.stdout
    document = json.loads(
        run_dicomctl("--json", "send", *studies[2], *studies[2][:1], *peer_args(scp)).stdout
    )
    [study] = document["studies"]
    assert study["instances"] == 5 and study["stored"] == 5 and study["failed"] == 0 and study["bytes"] > 0
    assert document["sentMoreThanOnce"] == {sop_uid(studies[2][0]): 2}


def test_echo_at_an_http_port_says_it_speaks_http(tmp_path):
    """A real HTTP server (it waits for a line end, so it answers nothing to an association request)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        result = run_dicomctl(
            "echo", "--host", "127.0.0.1", "--port", port, "--called-aet", "X", "--timeout", "1"
        )
        as_json = run_dicomctl(
            "--json", "echo", "--host", "127.0.0.1", "--port", port, "--called-aet", "X", "--timeout", "1"
        )
    finally:
        server.shutdown()
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    assert (
        f"this port (127.0.0.1:{port}) speaks HTTP, not DICOM" in result.stderr and "--port" in result.stderr
    )
    assert "PDU type" not in result.stderr
    error = json.loads(as_json.stdout)["error"]
    assert (
        as_json.returncode == EXIT_UNREACHABLE
        and error["type"] == "Unreachable"
        and "HTTP" in error["message"]
    )
