"""The local stack builds what the Pulumi program builds, from the same contracts, and cleans up."""

from __future__ import annotations

import json
import os

import pytest

from cli.config_cmd import OPTIONAL_OUTPUTS
from core.asl import build_definition
from core.config import from_flat
from core.contracts import FUNCTIONS
from core.layout import STACK_OUTPUTS, TABLE_INDEXES, TTL_ATTRIBUTE
from local.stack import LocalStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    before = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    config = from_flat({"workflowMaxPollAttempts": "7", "scpAeTitle": "LOCAL-GW"}, stack="unit")
    with LocalStack(
        config, scp_port=0, poll_seconds=0.4, data_dir=tmp_path_factory.mktemp("data")
    ) as running:
        yield running
    after = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    assert after == before  # every variable the stack set is restored


def test_outputs_and_environment_are_what_clients_need(stack):
    assert set(STACK_OUTPUTS) - OPTIONAL_OUTPUTS <= set(stack.outputs) <= set(STACK_OUTPUTS)
    assert stack.outputs["aeTitle"] == "LOCAL-GW" and stack.outputs["dicomPort"] == stack.scp.port > 0
    assert stack.scp.journal is not None  # acknowledged once in the journal under the data directory
    assert stack.scp.journal.directory.parent.name == "journal"
    env = stack.environment
    assert env["AWS_ENDPOINT_URL_MEDICAL_IMAGING"] == stack.ahi.url
    assert env["AWS_DISABLE_HOST_PREFIX_INJECTION"] == "true"
    assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"} <= set(
        env
    )


def test_resources_follow_the_shared_contracts(stack):
    table = stack.client("dynamodb").describe_table(TableName=stack.outputs["jobTable"])["Table"]
    indexes = {
        i["IndexName"]: tuple(k["AttributeName"] for k in i["KeySchema"])
        for i in table["GlobalSecondaryIndexes"]
    }
    assert indexes == TABLE_INDEXES
    ttl = stack.client("dynamodb").describe_time_to_live(TableName=stack.outputs["jobTable"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == TTL_ATTRIBUTE

    lam = stack.client("lambda")
    handlers = {
        lam.get_function(FunctionName=arn)["Configuration"]["Handler"] for arn in stack.function_arns.values()
    }
    assert handlers == {f.handler for f in FUNCTIONS}
    variables = lam.get_function(FunctionName=stack.function_arns["start_import"])["Configuration"][
        "Environment"
    ]["Variables"]
    assert variables["WORKFLOW_DATASTORE_ID"] == stack.outputs["datastoreId"]
    # polls every second locally but keeps the deployed polling budget: 30 s x 7 attempts
    assert variables["WORKFLOW_POLL_SECONDS"] == "1" and variables["WORKFLOW_MAX_POLL_ATTEMPTS"] == str(
        30 * 7
    )

    described = stack.client("stepfunctions").describe_state_machine(
        stateMachineArn=stack.outputs["stateMachineArn"]
    )
    assert json.loads(described["definition"]) == build_definition(stack.function_arns, stack.workflow)

    notification = stack.client("s3").get_bucket_notification_configuration(
        Bucket=stack.outputs["dicomBucket"]
    )
    [wired] = notification["LambdaFunctionConfigurations"]
    assert wired["LambdaFunctionArn"] == stack.function_arns["trigger"]
    rules = {r["Name"].lower(): r["Value"] for r in wired["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "batches/", "suffix": ".json"}


def test_sweeper_runs_on_demand(stack):
    assert stack.run_sweeper() == {"sealed": [], "waiting": 0}
