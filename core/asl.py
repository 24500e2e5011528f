"""The import workflow's state machine, built as plain data (DESIGN decision 7).

Pure: no pulumi, no boto3. The Pulumi program serializes the dict with ``pulumi.Output.json_dumps``
and the local stack with ``json.dumps``, so both run exactly the same definition. JSONPath only
(moto's interpreter cannot run JSONata).

Shape::

    StartImport -> InitPolling -> WaitForImport -> CheckStatus -> ImportDone?
        COMPLETED -> RecordResults -> Imported (Succeed)
        FAILED    -> ImportJobFailed (Pass) -> RecordFailure -> Failed (Fail)
        attempts exhausted -> PollingExhausted (Pass) -> RecordFailure -> Failed
        otherwise -> WaitForImport
    any Task error (after its retries) -> <State>Caught (Pass, names the state) -> RecordFailure -> Failed

The execution input (``contracts.execution_input``) is ``{"batchId", "bucket", "manifestKey",
"pollSeconds"}``; ``pollSeconds`` drives the Wait (``SecondsPath``), so tests and the local stack
can poll fast.
Every Task also gets the execution name: the original execution is named after the batch, a
redrive from the DLQ (``dicomctl dlq redrive``) gets a new name, which becomes its import
clientToken and its attempt in the job table, so a redrive really imports again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.contracts import STATE_MACHINE_FUNCTIONS, Throttled, TransientError, function
from core.workflow_settings import WorkflowSettings

# Error names our handlers raise (the Lambda ``errorType`` is the exception class name);
# ASL Retry and Catch match on them.
THROTTLED = Throttled.__name__
TRANSIENT = TransientError.__name__
LAMBDA_TRANSIENT = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]
IMPORT_JOB_FAILED = "ImportJobFailed"
POLLING_EXHAUSTED = "PollingExhausted"

# Seconds added to the worst-case polling time for the whole execution's TimeoutSeconds.
EXECUTION_MARGIN_SECONDS = 3600


def _retry_transient() -> dict[str, Any]:
    return {
        "ErrorEquals": [TRANSIENT, *LAMBDA_TRANSIENT, "States.Timeout"],
        "IntervalSeconds": 1,
        "MaxAttempts": 3,
        "BackoffRate": 2.0,
        "MaxDelaySeconds": 20,
        "JitterStrategy": "FULL",
    }


def _retry_throttled() -> dict[str, Any]:
    # StartDICOMImportJob allows ~1 request/s per account: back off exponentially with jitter.
    return {
        "ErrorEquals": [THROTTLED],
        "IntervalSeconds": 1,
        "MaxAttempts": 8,
        "BackoffRate": 2.0,
        "MaxDelaySeconds": 60,
        "JitterStrategy": "FULL",
    }


def _task(
    arn: str,
    name: str,
    *,
    next_state: str | None,
    result_path: str | None,
    parameters: dict[str, Any] | None = None,
    catch_to: str,
) -> dict[str, Any]:
    spec = function(name)
    state: dict[str, Any] = {
        "Type": "Task",
        "Resource": arn,
        "TimeoutSeconds": spec.timeout_seconds + 30,
        "Retry": [_retry_throttled(), _retry_transient()],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": catch_to}],
    }
    if parameters is not None:
        state["Parameters"] = parameters
    if result_path is not None:
        state["ResultPath"] = result_path
    if next_state is None:
        state["End"] = True
    else:
        state["Next"] = next_state
    return state


def _annotate(state_name: str) -> dict[str, Any]:
    """A Pass state that records which state failed, so the failure handler can say so."""
    return {"Type": "Pass", "Result": state_name, "ResultPath": "$.failedState", "Next": "RecordFailure"}


def _raise(error: str, cause_path: str, state_name: str) -> dict[str, Any]:
    """Turn a non-exception outcome (job FAILED, polling exhausted) into the $.error shape a Catch writes."""
    return {
        "Type": "Pass",
        "Parameters": {"Error": error, "Cause.$": cause_path},
        "ResultPath": "$.error",
        "Next": f"{state_name}Caught",
    }


def build_definition(functions: Mapping[str, str], settings: WorkflowSettings) -> dict[str, Any]:
    """The ASL document for ``functions`` (FunctionSpec name -> Lambda ARN) and ``settings``."""
    missing = set(STATE_MACHINE_FUNCTIONS) - set(functions)
    if missing:
        raise ValueError(f"build_definition needs ARNs for: {', '.join(sorted(missing))}")

    caught = {name: f"{name}Caught" for name in ("StartImport", "CheckStatus", "RecordResults")}
    caught.update({"ImportJobFailed": "ImportJobFailedCaught", "PollingExhausted": "PollingExhaustedCaught"})
    states: dict[str, Any] = {
        "StartImport": _task(
            functions["start_import"],
            "start_import",
            next_state="InitPolling",
            result_path="$.import",
            parameters={
                "batchId.$": "$.batchId",
                "bucket.$": "$.bucket",
                "manifestKey.$": "$.manifestKey",
                "executionName.$": "$$.Execution.Name",
            },
            catch_to=caught["StartImport"],
        ),
        "InitPolling": {
            "Type": "Pass",
            "Result": {"attempt": 0, "jobStatus": "SUBMITTED"},
            "ResultPath": "$.poll",
            "Next": "WaitForImport",
        },
        "WaitForImport": {"Type": "Wait", "SecondsPath": "$.pollSeconds", "Next": "CheckStatus"},
        "CheckStatus": _task(
            functions["check_status"],
            "check_status",
            next_state="ImportDone?",
            result_path="$.poll",
            parameters={
                "batchId.$": "$.batchId",
                "executionName.$": "$$.Execution.Name",
                "importJobId.$": "$.import.importJobId",
                "datastoreId.$": "$.import.datastoreId",
                "attempt.$": "States.MathAdd($.poll.attempt, 1)",
            },
            catch_to=caught["CheckStatus"],
        ),
        "ImportDone?": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.poll.jobStatus", "StringEquals": "COMPLETED", "Next": "RecordResults"},
                {"Variable": "$.poll.jobStatus", "StringEquals": "FAILED", "Next": "ImportJobFailed"},
                {
                    "Variable": "$.poll.attempt",
                    "NumericGreaterThanEquals": settings.max_poll_attempts,
                    "Next": "PollingExhausted",
                },
            ],
            "Default": "WaitForImport",
        },
        "RecordResults": _task(
            functions["record_results"],
            "record_results",
            next_state="Imported",
            result_path="$.result",
            parameters={
                "batchId.$": "$.batchId",
                "executionName.$": "$$.Execution.Name",
                "bucket.$": "$.bucket",
                "manifestKey.$": "$.manifestKey",
                "importJobId.$": "$.import.importJobId",
                "datastoreId.$": "$.import.datastoreId",
                "outputS3Uri.$": "$.import.outputS3Uri",
            },
            catch_to=caught["RecordResults"],
        ),
        "Imported": {"Type": "Succeed"},
        "ImportJobFailed": _raise(IMPORT_JOB_FAILED, "$.poll.message", "ImportJobFailed"),
        "PollingExhausted": _raise(POLLING_EXHAUSTED, "$.poll.jobStatus", "PollingExhausted"),
        "RecordFailure": _task(
            functions["failure"],
            "failure",
            next_state="Failed",
            result_path="$.failure",
            parameters={
                "batchId.$": "$.batchId",
                "executionName.$": "$$.Execution.Name",
                "manifestKey.$": "$.manifestKey",
                "failedState.$": "$.failedState",
                "error.$": "$.error",
                "executionArn.$": "$$.Execution.Id",
            },
            catch_to="Failed",
        ),
        "Failed": {"Type": "Fail", "Error": "BatchImportFailed", "Cause": "see the job table and the DLQ"},
    }
    for state_name, annotate_name in caught.items():
        states[annotate_name] = _annotate(state_name)

    worst_case_polling = settings.poll_seconds * settings.max_poll_attempts
    return {
        "Comment": "DICOM batch -> AWS HealthImaging import (one execution and one import job per batch)",
        "StartAt": "StartImport",
        "TimeoutSeconds": worst_case_polling + EXECUTION_MARGIN_SECONDS,
        "States": states,
    }
