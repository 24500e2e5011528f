"""Import workflow: the Lambda functions, the state machine, the S3 trigger, the sweeper schedule, the DLQ.

One function per ``contracts.FUNCTIONS`` entry, all from one reproducible package (``lambda_package``)
with the AWS-managed Powertools v3 layer; X-Ray active; JSON logs into a log group with retention;
one role per function with only what that function does (``FUNCTION_ACCESS``). The state machine
definition is ``asl.build_definition`` of the deployed ARNs, serialized with ``Output.json_dumps``.
The state machine has a fixed name, so its ARN is known before it exists and every function can
carry the full ``WorkflowResources`` environment without a dependency cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.iam import (
    LOG_DELIVERY_ACTIONS,
    XRAY_ACTIONS,
    allow,
    document,
    key_use_via,
    kms_use,
    service_role,
    tls_only,
)
from components.lambda_package import LambdaPackage
from core.asl import build_definition
from core.contracts import (
    FUNCTIONS,
    LAMBDA_RUNTIME,
    POWERTOOLS_NAMES,
    STATE_MACHINE_FUNCTIONS,
    function_environment,
)
from core.layout import BATCHES_PREFIX, INCOMING_PREFIX, MANIFEST_SUFFIX, QUARANTINE_PREFIX
from core.stack_settings import FunctionsSettings
from core.workflow_settings import WorkflowResources, WorkflowSettings

POWERTOOLS_ACCOUNT = "017000801446"  # publisher of the AWS-managed Powertools for AWS Lambda layers
# Powertools' variables of the deployed functions.
POWERTOOLS_ENV = {
    **POWERTOOLS_NAMES,
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",  # responses may carry DICOM attributes
}
# What a caller needs of a customer key through DynamoDB (the job table) and HealthImaging (the
# datastore: its developer guide lists DescribeKey, GenerateDataKey, Decrypt and CreateGrant).
TABLE_KEY_ACTIONS = ("kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey")
DATASTORE_KEY_ACTIONS = ("kms:DescribeKey", "kms:GenerateDataKey", "kms:Decrypt", "kms:CreateGrant")

# What each function may touch. A function missing here fails the deployment (and a test).
FUNCTION_ACCESS: dict[str, frozenset[str]] = {
    "trigger": frozenset({"read_batches", "start_execution", "table", "dlq"}),
    "start_import": frozenset({"read_dicom", "stage_dicom", "table", "start_import_job", "pass_import_role"}),
    "check_status": frozenset({"table", "get_import_job"}),
    "record_results": frozenset({"read_dicom", "stage_dicom", "read_results", "table", "get_import_job"}),
    "failure": frozenset({"table", "dlq"}),
    "sweeper": frozenset({"read_dicom", "write_batches"}),
}


def powertools_layer_arn(
    region: pulumi.Input[str], partition: pulumi.Input[str], settings: FunctionsSettings
):
    arch = "arm64" if settings.architecture == "arm64" else "x86_64"
    return pulumi.Output.concat(
        "arn:",
        partition,
        ":lambda:",
        region,
        f":{POWERTOOLS_ACCOUNT}:layer:AWSLambdaPowertoolsPythonV3-",
        LAMBDA_RUNTIME.replace(".", ""),
        f"-{arch}:{settings.powertools_layer_version}",
    )


@dataclass
class WorkflowArgs:
    settings: WorkflowSettings
    functions: FunctionsSettings
    package: LambdaPackage
    dicom_bucket: aws.s3.Bucket
    results_bucket: aws.s3.Bucket
    table: aws.dynamodb.Table
    datastore_id: pulumi.Input[str]
    datastore_arn: pulumi.Input[str]
    import_role_arn: pulumi.Input[str]
    account_id: pulumi.Input[str]
    region: pulumi.Input[str]
    partition: pulumi.Input[str]
    kms_key_arn: pulumi.Input[str] | None = None
    logs_kms_key_arn: pulumi.Input[str] | None = None  # of every log group (None: CloudWatch Logs' own)
    table_kms_key_arn: pulumi.Input[str] | None = None  # the job table's customer key
    datastore_kms_key_arn: pulumi.Input[str] | None = None  # the datastore's customer key


class ImportWorkflow(pulumi.ComponentResource):
    functions: dict[str, aws.lambda_.Function]
    log_groups: dict[str, aws.cloudwatch.LogGroup]
    state_machine: aws.sfn.StateMachine
    dlq: aws.sqs.Queue

    def __init__(self, name: str, args: WorkflowArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:ImportWorkflow", name, None, opts)
        self._args = args
        child = pulumi.ResourceOptions(parent=self)

        self.dlq = aws.sqs.Queue(
            f"{name}-dlq",
            message_retention_seconds=14 * 24 * 3600,
            sqs_managed_sse_enabled=args.kms_key_arn is None,
            kms_master_key_id=args.kms_key_arn,
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-dlq-policy",
            queue_url=self.dlq.url,
            policy=document([tls_only("Queue", [self.dlq.arn], "sqs:*")]),
            opts=pulumi.ResourceOptions(parent=self.dlq),
        )

        self.state_machine_name = f"{pulumi.get_project()}-{pulumi.get_stack()}-import"
        self.state_machine_arn = pulumi.Output.concat(
            "arn:",
            args.partition,
            ":states:",
            args.region,
            ":",
            args.account_id,
            ":stateMachine:",
            self.state_machine_name,
        )
        self.resources = pulumi.Output.all(
            args.dicom_bucket.bucket,
            args.results_bucket.bucket,
            args.table.name,
            self.state_machine_arn,
            args.datastore_id,
            args.import_role_arn,
            self.dlq.url,
        ).apply(
            lambda v: WorkflowResources(
                dicom_bucket=v[0],
                results_bucket=v[1],
                job_table=v[2],
                state_machine_arn=v[3],
                datastore_id=v[4],
                import_role_arn=v[5],
                dlq_url=v[6],
            )
        )
        environment = self.resources.apply(lambda r: function_environment(r, args.settings, POWERTOOLS_ENV))
        layer = powertools_layer_arn(args.region, args.partition, args.functions)

        self.functions, self.log_groups, self.roles = {}, {}, {}
        for spec in FUNCTIONS:
            fn_name = spec.resource_name(name)
            log_group = aws.cloudwatch.LogGroup(
                f"{fn_name}-logs",
                retention_in_days=args.functions.log_retention_days,
                kms_key_id=args.logs_kms_key_arn,
                opts=child,
            )
            role = service_role(
                fn_name,
                "lambda.amazonaws.com",
                self._statements(spec.name, log_group),
                self,
                description=spec.description[:1000],
            )
            self.functions[spec.name] = aws.lambda_.Function(
                fn_name,
                description=spec.description[:256],
                runtime=LAMBDA_RUNTIME,
                architectures=[args.functions.architecture],
                handler=spec.handler,
                code=pulumi.FileArchive(str(args.package.path)),
                source_code_hash=args.package.sha256_base64,
                role=role.arn,
                timeout=spec.timeout_seconds,
                memory_size=args.functions.memory_mb(spec.name),
                reserved_concurrent_executions=spec.reserved_concurrency
                if spec.reserved_concurrency is not None
                else -1,
                layers=[layer],
                tracing_config={"mode": "Active"},
                logging_config={"log_format": "JSON", "log_group": log_group.name},
                environment={"variables": environment},
                dead_letter_config={"target_arn": self.dlq.arn} if spec.name == "trigger" else None,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group]),
            )
            self.log_groups[spec.name] = log_group
            self.roles[spec.name] = role

        self._state_machine(name)
        self._s3_trigger(name)
        self._sweeper_schedule(name)
        self.register_outputs(
            {"stateMachineArn": self.state_machine.arn, "dlqUrl": self.dlq.url, "dlqArn": self.dlq.arn}
        )

    def _statements(self, function_name: str, log_group: aws.cloudwatch.LogGroup) -> list[dict]:
        if function_name not in FUNCTION_ACCESS:
            raise KeyError(f"no permissions defined for Lambda function {function_name!r} (FUNCTION_ACCESS)")
        a = self._args
        dicom, results = a.dicom_bucket.arn, a.results_bucket.arn
        table = a.table.arn

        def objects(bucket, prefix: str) -> pulumi.Output[str]:
            return pulumi.Output.concat(bucket, "/", prefix, "*")

        grants = {
            "read_batches": [allow("ReadManifests", ["s3:GetObject"], [objects(dicom, BATCHES_PREFIX)])],
            "write_batches": [allow("WriteManifests", ["s3:PutObject"], [objects(dicom, BATCHES_PREFIX)])],
            "read_dicom": [
                allow("ListDicom", ["s3:ListBucket"], [dicom]),
                allow(
                    "ReadDicom",
                    ["s3:GetObject", "s3:GetObjectTagging"],
                    [objects(dicom, p) for p in (INCOMING_PREFIX, BATCHES_PREFIX, QUARANTINE_PREFIX)],
                ),
            ],
            "stage_dicom": [
                allow(
                    "MoveDicom",
                    ["s3:PutObject", "s3:DeleteObject", "s3:PutObjectTagging"],
                    [objects(dicom, p) for p in (INCOMING_PREFIX, QUARANTINE_PREFIX)],
                )
            ],
            "read_results": [
                allow("ListResults", ["s3:ListBucket"], [results]),
                allow("ReadResults", ["s3:GetObject"], [objects(results, "")]),
            ],
            "table": [
                allow(
                    "JobTable",
                    [
                        "dynamodb:GetItem",
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:Query",
                        "dynamodb:BatchWriteItem",
                        "dynamodb:ConditionCheckItem",
                    ],
                    [table, pulumi.Output.concat(table, "/index/*")],
                )
            ],
            "dlq": [allow("DeadLetters", ["sqs:SendMessage"], [self.dlq.arn])],
            "start_execution": [
                allow("StartImportWorkflow", ["states:StartExecution"], [self.state_machine_arn])
            ],
            "start_import_job": [
                allow("StartImportJob", ["medical-imaging:StartDICOMImportJob"], [a.datastore_arn])
            ],
            "get_import_job": [
                allow(
                    "ReadImportJob",
                    ["medical-imaging:GetDICOMImportJob"],
                    [a.datastore_arn, pulumi.Output.concat(a.datastore_arn, "/*")],
                )
            ],
            "pass_import_role": [
                allow(
                    "PassImportRole",
                    ["iam:PassRole"],
                    [a.import_role_arn],
                    {"StringEquals": {"iam:PassedToService": "medical-imaging.amazonaws.com"}},
                )
            ],
        }
        statements = [
            allow(
                "WriteLogs",
                ["logs:CreateLogStream", "logs:PutLogEvents"],
                [pulumi.Output.concat(log_group.arn, ":*")],
            ),
            allow("Tracing", ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], ["*"]),
        ]
        for grant in sorted(FUNCTION_ACCESS[function_name]):
            statements += grants[grant]
        uses_kms = FUNCTION_ACCESS[function_name] & {
            "read_dicom",
            "stage_dicom",
            "read_results",
            "read_batches",
            "write_batches",
            "dlq",
        }
        if uses_kms and a.kms_key_arn is not None:
            statements += kms_use([a.kms_key_arn], encrypt=True, decrypt=True)
        access = FUNCTION_ACCESS[function_name]
        if "table" in access and a.table_kms_key_arn is not None:
            statements.append(
                key_use_via("JobTableKey", a.table_kms_key_arn, TABLE_KEY_ACTIONS, "dynamodb", a.region)
            )
        if access & {"start_import_job", "get_import_job"} and a.datastore_kms_key_arn is not None:
            statements.append(
                key_use_via(
                    "DatastoreKey",
                    a.datastore_kms_key_arn,
                    DATASTORE_KEY_ACTIONS,
                    "medical-imaging",
                    a.region,
                )
            )
        return statements

    def _state_machine(self, name: str) -> None:
        a = self._args
        self.state_machine_log_group = aws.cloudwatch.LogGroup(
            f"{name}-state-machine-logs",
            name=f"/aws/vendedlogs/states/{self.state_machine_name}",
            retention_in_days=a.functions.log_retention_days,
            kms_key_id=a.logs_kms_key_arn,
            opts=pulumi.ResourceOptions(parent=self),
        )
        invoked = [self.functions[n].arn for n in STATE_MACHINE_FUNCTIONS]
        self.state_machine_role = service_role(
            f"{name}-state-machine",
            "states.amazonaws.com",
            [
                allow(
                    "InvokeSteps",
                    ["lambda:InvokeFunction"],
                    invoked + [pulumi.Output.concat(arn, ":*") for arn in invoked],
                ),
                # Log delivery and X-Ray APIs do not support resource-level permissions.
                allow("DeliverLogs", LOG_DELIVERY_ACTIONS, ["*"]),
                allow("Tracing", XRAY_ACTIONS, ["*"]),
            ],
            self,
            condition={"StringEquals": {"aws:SourceAccount": a.account_id}},
            description="Import workflow state machine",
        )
        definition = build_definition({n: self.functions[n].arn for n in self.functions}, a.settings)
        self.state_machine = aws.sfn.StateMachine(
            f"{name}-import",
            name=self.state_machine_name,
            type="STANDARD",
            role_arn=self.state_machine_role.arn,
            definition=pulumi.Output.json_dumps(definition),
            logging_configuration={
                "level": "ALL",
                "include_execution_data": True,
                "log_destination": pulumi.Output.concat(self.state_machine_log_group.arn, ":*"),
            },
            tracing_configuration={"enabled": True},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _s3_trigger(self, name: str) -> None:
        a = self._args
        trigger = self.functions["trigger"]
        permission = aws.lambda_.Permission(
            f"{name}-s3-invokes-trigger",
            action="lambda:InvokeFunction",
            function=trigger.name,
            principal="s3.amazonaws.com",
            source_arn=a.dicom_bucket.arn,
            source_account=a.account_id,
            opts=pulumi.ResourceOptions(parent=trigger),
        )
        self.notification = aws.s3.BucketNotification(
            f"{name}-manifest-created",
            bucket=a.dicom_bucket.id,
            lambda_functions=[
                {
                    "lambda_function_arn": trigger.arn,
                    "events": ["s3:ObjectCreated:*"],
                    "filter_prefix": BATCHES_PREFIX,
                    "filter_suffix": MANIFEST_SUFFIX,
                }
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]),
        )

    def _sweeper_schedule(self, name: str) -> None:
        sweeper = self.functions["sweeper"]
        self.sweeper_rule = aws.cloudwatch.EventRule(
            f"{name}-sweeper-schedule",
            description="Seal batches a crashed SCP task left without a manifest",
            schedule_expression=self._args.functions.sweeper_schedule,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.cloudwatch.EventTarget(
            f"{name}-sweeper-target",
            rule=self.sweeper_rule.name,
            arn=sweeper.arn,
            opts=pulumi.ResourceOptions(parent=self.sweeper_rule),
        )
        aws.lambda_.Permission(
            f"{name}-schedule-invokes-sweeper",
            action="lambda:InvokeFunction",
            function=sweeper.name,
            principal="events.amazonaws.com",
            source_arn=self.sweeper_rule.arn,
            opts=pulumi.ResourceOptions(parent=sweeper),
        )
