"""Monitoring: one alarm per failure mode, an encrypted SNS topic for them, and a dashboard.

Failure modes: SCP tasks saturated (CPU, memory), no or unhealthy NLB targets, SCP store failures
(the SCP's EMF metric, summed over all its dimensions with a Metrics Insights query), rejected
associations, failed or timed-out workflow executions, partially failed imports (``JobsPartial``,
``InstancesFailed``: the modality was told "stored"), a slow import (execution time from seal to
recorded results), Lambda errors per function, and anything in the dead-letter queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.iam import account_administers, document
from core.contracts import (
    SCP_COMMITMENT_UNDELIVERED_METRIC,
    SCP_DIMENSIONS,
    SCP_JOURNAL_OLDEST_AGE_METRIC,
    SCP_METRICS_NAMESPACE,
    SCP_STORE_FAILURES_METRIC,
    WORKFLOW_DIMENSIONS,
    WORKFLOW_METRICS_NAMESPACE,
)
from core.stack_settings import CostSettings, MonitoringSettings

# What the account itself may do with the alarm topic (a topic policy replaces SNS's default one).
TOPIC_OWNER_ACTIONS = (
    "sns:GetTopicAttributes",
    "sns:SetTopicAttributes",
    "sns:AddPermission",
    "sns:RemovePermission",
    "sns:DeleteTopic",
    "sns:Subscribe",
    "sns:ListSubscriptionsByTopic",
    "sns:Publish",
)


@dataclass
class MonitoringArgs:
    settings: MonitoringSettings
    region: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    nlb_arn_suffix: pulumi.Input[str]
    target_group_arn_suffixes: dict[str, pulumi.Input[str]]
    state_machine_arn: pulumi.Input[str]
    function_names: dict[str, pulumi.Input[str]]
    dlq_name: pulumi.Input[str]
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]
    cost: CostSettings = field(default_factory=CostSettings)


class Monitoring(pulumi.ComponentResource):
    topic: aws.sns.Topic
    alarms: dict[str, aws.cloudwatch.MetricAlarm]
    dashboard: aws.cloudwatch.Dashboard
    dashboard_url: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:Monitoring", name, None, opts)
        self._name, self._args = name, args
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)

        # CloudWatch cannot publish to a topic under the AWS-managed aws/sns key: a key of our own that
        # the account administers and CloudWatch may use. (Key policies say "*" for "this key".)
        self.topic_key = aws.kms.Key(
            f"{name}-alarms-key",
            description="Alarm topic",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=document(
                [
                    account_administers(args.account_id, args.partition),
                    *[
                        {
                            "Sid": f"{label}Publishes",
                            "Effect": "Allow",
                            "Principal": {"Service": service},
                            "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                            "Resource": "*",
                        }
                        for label, service in self._publishers()
                    ],
                ]
            ),
            opts=child,
        )
        self.topic = aws.sns.Topic(f"{name}-alarms", kms_master_key_id=self.topic_key.arn, opts=child)
        self.topic_policy = aws.sns.TopicPolicy(
            f"{name}-alarms-policy",
            arn=self.topic.arn,
            policy=document(self._topic_statements()),
            opts=pulumi.ResourceOptions(parent=self.topic),
        )
        if settings.alarm_email:
            aws.sns.TopicSubscription(
                f"{name}-alarm-email",
                topic=self.topic.arn,
                protocol="email",
                endpoint=settings.alarm_email,
                opts=pulumi.ResourceOptions(parent=self.topic),
            )

        self.alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}
        ecs = {"ClusterName": args.cluster_name, "ServiceName": args.service_name}
        self._alarm(
            "scp-cpu",
            "SCP tasks' average CPU is high",
            "AWS/ECS",
            "CPUUtilization",
            ecs,
            "Average",
            settings.cpu_alarm_percent,
            periods=3,
        )
        self._alarm(
            "scp-memory",
            "SCP tasks' average memory is high",
            "AWS/ECS",
            "MemoryUtilization",
            ecs,
            "Average",
            settings.memory_alarm_percent,
            periods=3,
        )
        for key, suffix in args.target_group_arn_suffixes.items():
            nlb = {"LoadBalancer": args.nlb_arn_suffix, "TargetGroup": suffix}
            self._alarm(
                f"nlb-{key}-unhealthy",
                f"An SCP task fails the {key} target group's health check",
                "AWS/NetworkELB",
                "UnHealthyHostCount",
                nlb,
                "Maximum",
                0,
                periods=2,
            )
            self._alarm(
                f"nlb-{key}-no-healthy",
                f"No healthy SCP task behind the {key} listener",
                "AWS/NetworkELB",
                "HealthyHostCount",
                nlb,
                "Minimum",
                1,
                periods=2,
                comparison="LessThanThreshold",
                missing="breaching",
            )
        workflow = {"StateMachineArn": args.state_machine_arn}
        self._alarm(
            "executions-failed",
            "An import workflow execution failed",
            "AWS/States",
            "ExecutionsFailed",
            workflow,
            "Sum",
            0,
        )
        self._alarm(
            "executions-timed-out",
            "An import workflow execution timed out",
            "AWS/States",
            "ExecutionsTimedOut",
            workflow,
            "Sum",
            0,
        )
        self._alarm(
            "import-latency",
            "An import took longer than monitoringImportLatencyAlarmSeconds",
            "AWS/States",
            "ExecutionTime",
            workflow,
            "Maximum",
            settings.import_latency_alarm_seconds * 1000,
            period=300,
        )
        self._alarm(
            "dlq-not-empty",
            "Failed batches are waiting in the dead-letter queue",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"QueueName": args.dlq_name},
            "Maximum",
            0,
        )
        for fn, fn_name in args.function_names.items():
            self._alarm(
                f"lambda-{fn.replace('_', '-')}-errors",
                f"The {fn} function raised errors",
                "AWS/Lambda",
                "Errors",
                {"FunctionName": fn_name},
                "Sum",
                0,
            )
        self._store_failures_alarm()
        # What a modality is never told: an import that left instances out of HealthImaging after
        # they were acknowledged, and associations the SCP refused (a wrong AE title, a new address).
        for key, metric, description in (
            (
                "jobs-partial",
                "JobsPartial",
                "An import job completed with instances missing from HealthImaging",
            ),
            (
                "instances-failed",
                "InstancesFailed",
                "Acknowledged instances failed to import into HealthImaging",
            ),
        ):
            self._alarm(
                f"workflow-{key}",
                f"{description} (see dicomctl status and quarantine/)",
                WORKFLOW_METRICS_NAMESPACE,
                metric,
                WORKFLOW_DIMENSIONS,
                "Sum",
                0,
                period=300,
            )
        self._alarm(
            "scp-rejected-associations",
            "The SCP rejected associations (a misconfigured modality: AE titles, or an address not allowed)",
            SCP_METRICS_NAMESPACE,
            "RejectedAssociations",
            SCP_DIMENSIONS,
            "Sum",
            0,
            period=300,
        )

        self.budget = self._budget() if args.cost.budget_enabled else None
        self._journal_backlog_alarm()

        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=f"{pulumi.get_project()}-{pulumi.get_stack()}",
            dashboard_body=pulumi.Output.json_dumps(self._dashboard_body()),
            opts=child,
        )
        self.dashboard_url = pulumi.Output.concat(
            "https://",
            args.region,
            ".console.aws.amazon.com/cloudwatch/home?region=",
            args.region,
            "#dashboards:name=",
            self.dashboard.dashboard_name,
        )
        self.register_outputs({"topicArn": self.topic.arn, "dashboardUrl": self.dashboard_url})

    def _publishers(self) -> list[tuple[str, str]]:
        """The AWS services that publish to the alarm topic (Sid label, service principal)."""
        budget = [("Budgets", "budgets.amazonaws.com")] if self._args.cost.budget_enabled else []
        return [("CloudWatch", "cloudwatch.amazonaws.com"), *budget]

    def _topic_statements(self) -> list[dict[str, Any]]:
        """The account manages the topic; only our alarms (and the budget) publish to it."""
        a = self._args
        owner = {"StringEquals": {"aws:SourceAccount": a.account_id}}
        return [
            {
                "Sid": "AccountManages",
                "Effect": "Allow",
                "Principal": {
                    "AWS": pulumi.Output.concat("arn:", a.partition, ":iam::", a.account_id, ":root")
                },
                "Action": list(TOPIC_OWNER_ACTIONS),
                "Resource": self.topic.arn,
            },
            *[
                {
                    "Sid": f"{label}Publishes",
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sns:Publish",
                    "Resource": self.topic.arn,
                    "Condition": owner,
                }
                for label, service in self._publishers()
            ],
        ]

    def _budget(self) -> aws.budgets.Budget:
        """A monthly cost budget over the resources tagged with this stack; alerts go to the topic."""
        cost = self._args.cost
        notify = {
            "comparison_operator": "GREATER_THAN",
            "threshold": cost.budget_alert_percent,
            "threshold_type": "PERCENTAGE",
            "subscriber_sns_topic_arns": [self.topic.arn],
        }
        return aws.budgets.Budget(
            f"{self._name}-budget",
            name=f"{pulumi.get_project()}-{pulumi.get_stack()}",
            budget_type="COST",
            time_unit="MONTHLY",
            limit_amount=f"{cost.budget_monthly_usd:.2f}",
            limit_unit="USD",
            cost_filters=[{"name": "TagKeyValue", "values": [f"user:stack${pulumi.get_stack()}"]}],
            notifications=[{**notify, "notification_type": kind} for kind in ("ACTUAL", "FORECASTED")],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.topic_policy]),
        )

    def _alarm(
        self,
        key: str,
        description: str,
        namespace: str,
        metric: str,
        dimensions: dict[str, Any],
        statistic: str,
        threshold: float,
        *,
        periods: int = 1,
        period: int = 60,
        comparison: str = "GreaterThanThreshold",
        missing: str = "notBreaching",
    ) -> None:
        self.alarms[key] = aws.cloudwatch.MetricAlarm(
            f"{self._name}-{key}",
            alarm_description=description,
            namespace=namespace,
            metric_name=metric,
            dimensions=dimensions,
            statistic=statistic,
            period=period,
            evaluation_periods=periods,
            threshold=threshold,
            comparison_operator=comparison,
            treat_missing_data=missing,
            alarm_actions=[self.topic.arn],
            ok_actions=[self.topic.arn],
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _store_failures_alarm(self) -> None:
        self._scp_sum_alarm(
            "scp-store-failures",
            SCP_STORE_FAILURES_METRIC,
            "The SCP could not store instances (answered 0xA700; senders will retry)",
        )
        self._scp_sum_alarm(
            "scp-commitment-undelivered",
            SCP_COMMITMENT_UNDELIVERED_METRIC,
            "Storage Commitment reports could not be delivered to the modality before their deadline",
        )

    def _scp_sum_alarm(self, key: str, metric: str, description: str) -> None:
        """An alarm on the sum of one SCP EMF metric over all tasks (Metrics Insights query)."""
        query = f'SELECT SUM({metric}) FROM "{SCP_METRICS_NAMESPACE}"'
        self.alarms[key] = aws.cloudwatch.MetricAlarm(
            f"{self._name}-{key}",
            alarm_description=description,
            metric_queries=[{"id": "failures", "expression": query, "period": 60, "return_data": True}],
            evaluation_periods=1,
            threshold=0,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[self.topic.arn],
            ok_actions=[self.topic.arn],
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _journal_backlog_alarm(self) -> None:
        query = f'SELECT MAX({SCP_JOURNAL_OLDEST_AGE_METRIC}) FROM "{SCP_METRICS_NAMESPACE}"'
        self.alarms["scp-journal-backlog-age"] = aws.cloudwatch.MetricAlarm(
            f"{self._name}-scp-journal-backlog-age",
            alarm_description="Instances wait in the SCP journal for their upload to S3 (S3 unreachable?);"
            " past the journal's limits the SCP refuses stores with 0xA700",
            metric_queries=[{"id": "age", "expression": query, "period": 60, "return_data": True}],
            evaluation_periods=1,
            threshold=self._args.settings.journal_backlog_age_alarm_seconds,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[self.topic.arn],
            ok_actions=[self.topic.arn],
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _dashboard_body(self) -> dict[str, Any]:
        a = self._args

        def widget(title: str, metrics: list[list[Any]], x: int, y: int, stat: str = "Sum") -> dict[str, Any]:
            return {
                "type": "metric",
                "x": x,
                "y": y,
                "width": 12,
                "height": 6,
                "properties": {
                    "title": title,
                    "region": a.region,
                    "stat": stat,
                    "period": 60,
                    "metrics": metrics,
                },
            }

        suffixes = list(a.target_group_arn_suffixes.values())
        return {
            "widgets": [
                widget(
                    "SCP store failures",
                    [
                        [
                            {
                                "expression": f"SELECT SUM({SCP_STORE_FAILURES_METRIC}) FROM "
                                f'"{SCP_METRICS_NAMESPACE}"',
                                "id": "f",
                            }
                        ]
                    ],
                    0,
                    0,
                ),
                widget(
                    "SCP tasks CPU / memory (%)",
                    [
                        [
                            "AWS/ECS",
                            "CPUUtilization",
                            "ClusterName",
                            a.cluster_name,
                            "ServiceName",
                            a.service_name,
                        ],
                        [".", "MemoryUtilization", ".", ".", ".", "."],
                    ],
                    12,
                    0,
                    "Average",
                ),
                widget(
                    "NLB targets",
                    [
                        ["AWS/NetworkELB", m, "LoadBalancer", a.nlb_arn_suffix, "TargetGroup", s]
                        for s in suffixes
                        for m in ("HealthyHostCount", "UnHealthyHostCount")
                    ],
                    0,
                    6,
                    "Minimum",
                ),
                widget(
                    "NLB connections",
                    [
                        ["AWS/NetworkELB", "ActiveFlowCount", "LoadBalancer", a.nlb_arn_suffix],
                        [".", "NewFlowCount", ".", "."],
                    ],
                    12,
                    6,
                ),
                widget(
                    "Import executions",
                    [
                        ["AWS/States", m, "StateMachineArn", a.state_machine_arn]
                        for m in (
                            "ExecutionsStarted",
                            "ExecutionsSucceeded",
                            "ExecutionsFailed",
                            "ExecutionsTimedOut",
                        )
                    ],
                    0,
                    12,
                ),
                widget(
                    "Import latency (ms)",
                    [["AWS/States", "ExecutionTime", "StateMachineArn", a.state_machine_arn]],
                    12,
                    12,
                    "Maximum",
                ),
                widget(
                    "Lambda errors",
                    [["AWS/Lambda", "Errors", "FunctionName", n] for n in a.function_names.values()],
                    0,
                    18,
                ),
                widget(
                    "Dead-letter queue",
                    [["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", a.dlq_name]],
                    12,
                    18,
                    "Maximum",
                ),
                widget(
                    "Partial imports, failed instances",
                    [
                        [
                            WORKFLOW_METRICS_NAMESPACE,
                            m,
                            *[x for kv in WORKFLOW_DIMENSIONS.items() for x in kv],
                        ]
                        for m in ("JobsPartial", "InstancesFailed")
                    ],
                    0,
                    24,
                ),
                widget(
                    "Rejected associations",
                    [
                        [
                            SCP_METRICS_NAMESPACE,
                            "RejectedAssociations",
                            *[x for kv in SCP_DIMENSIONS.items() for x in kv],
                        ]
                    ],
                    12,
                    24,
                ),
                widget(
                    "SCP journal backlog (files, oldest age s)",
                    [
                        [
                            {
                                "expression": f'SELECT MAX({name}) FROM "{SCP_METRICS_NAMESPACE}"',
                                "id": f"j{index}",
                            }
                        ]
                        for index, name in enumerate(("JournalFiles", SCP_JOURNAL_OLDEST_AGE_METRIC))
                    ],
                    0,
                    30,
                    "Maximum",
                ),
            ]
        }
