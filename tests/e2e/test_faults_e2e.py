"""Faults through the local stack: throttling, a failed import job, an SCP killed before sealing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from pydicom import dcmread
from pynetdicom import AE

from core.layout import manifest_key
from tests.e2e.conftest import dlq_messages, execution_names, finished, history, job, new_executions, storescu


def test_throttled_start_is_retried_then_succeeds(stack, make_study):
    stack.ahi.inject(throttle_next_starts=2)
    try:
        before, calls = execution_names(stack), stack.ahi.start_import_calls
        storescu(stack, make_study(2))
        [batch_id] = new_executions(stack, before, 1)
        described = finished(stack, batch_id)
    finally:
        stack.ahi.reset_faults()
    assert described["status"] == "SUCCEEDED"
    assert job(stack, batch_id)["summary"]["currentStatus"] == "COMPLETED"
    events = history(stack, described["executionArn"])
    failed = [e for e in events if e["type"] == "LambdaFunctionFailed"]
    assert [e["lambdaFunctionFailedEventDetails"]["error"] for e in failed] == ["Throttled", "Throttled"]
    assert stack.ahi.start_import_calls == calls + 1


def test_a_failed_import_job_goes_to_the_dlq_and_is_recorded_failed(stack, make_study):
    stack.ahi.inject(fail_next_jobs=1)
    try:
        before = execution_names(stack)
        storescu(stack, make_study(2))
        [batch_id] = new_executions(stack, before, 1)
        described = finished(stack, batch_id)
    finally:
        stack.ahi.reset_faults()
    assert described["status"] == "FAILED"
    summary = job(stack, batch_id)["summary"]
    assert summary["currentStatus"] == "FAILED" and summary["error"] == "ImportJobFailed"
    [message] = [m for m in dlq_messages(stack) if m["batchId"] == batch_id]
    assert message["state"] == "ImportJobFailed" and message["error"] == "ImportJobFailed"
    assert message["cause"] and message["manifestKey"] == manifest_key(batch_id)
    assert message["executionArn"] == described["executionArn"]

    # a redrive (what `dicomctl dlq redrive` starts) imports again under its own name
    calls = stack.ahi.start_import_calls
    sfn = stack.client("stepfunctions")
    redrive = sfn.start_execution(
        stateMachineArn=stack.outputs["stateMachineArn"],
        name=f"{batch_id}-redrive-1",
        input=described["input"],
    )
    assert finished(stack, f"{batch_id}-redrive-1")["status"] == "SUCCEEDED", redrive
    summary = job(stack, batch_id)["summary"]
    assert summary["currentStatus"] == "COMPLETED" and summary["attempt"] == f"{batch_id}-redrive-1"
    assert "error" not in summary
    assert stack.ahi.start_import_calls == calls + 1


def _start_scp_process(stack, tmp_path) -> tuple[subprocess.Popen, int]:
    env = {
        **os.environ,
        **stack.environment,
        "SCP_STORAGE_URI": f"s3://{stack.outputs['dicomBucket']}",
        "SCP_PORT": "0",
        "SCP_HEALTH_PORT": "0",
        "SCP_BIND_ADDRESS": "127.0.0.1",
        "SCP_SPOOL_DIR": str(tmp_path / "spool"),
        "SCP_TASK_ID": "doomed-task",
        "SCP_WORKERS": "1",  # one process, killed: nothing left to seal but the sweeper
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "scp"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    ready = json.loads(process.stdout.readline())  # blocks until the readiness line
    assert ready["event"] == "listening"
    return process, ready["port"]


def test_an_scp_killed_before_sealing_is_sealed_by_the_sweeper_and_imported(stack, make_study, tmp_path):
    files = make_study(3)
    process, port = _start_scp_process(stack, tmp_path)
    try:
        ae = AE(ae_title="DOOMED-SCU")
        ae.add_requested_context(dcmread(files[0]).SOPClassUID, dcmread(files[0]).file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title=stack.outputs["aeTitle"])
        assert assoc.is_established
        statuses = [assoc.send_c_store(dcmread(f)).Status for f in files]
        assert statuses == [0x0000] * 3  # acknowledged: durable in S3
        process.send_signal(signal.SIGKILL)  # the task dies with the association open: no manifest
        process.wait(timeout=10)
        assoc.abort()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    before = execution_names(stack)
    sealed = stack.run_sweeper(min_age_seconds=0)["sealed"]
    assert len(sealed) == 1
    [batch_id] = sealed
    assert new_executions(stack, before, 1) == [batch_id]
    assert finished(stack, batch_id)["status"] == "SUCCEEDED"
    summary = job(stack, batch_id)["summary"]
    assert summary["currentStatus"] == "COMPLETED" and summary["importedCount"] == 3
    s3 = stack.client("s3")
    manifest = json.loads(
        s3.get_object(Bucket=stack.outputs["dicomBucket"], Key=manifest_key(batch_id))["Body"].read()
    )
    assert manifest["sealReason"] == "sweeper"
    assert sorted(i["sopInstanceUid"] for i in manifest["instances"]) == sorted(
        str(dcmread(f).SOPInstanceUID) for f in files
    )
