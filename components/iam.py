"""Small IAM helpers shared by the components: service roles with one inline least-privilege policy.

Statements are plain dicts (``Sid``/``Effect``/``Action``/``Resource``/``Condition``) whose values
may be pulumi Outputs; ``pulumi.Output.json_dumps`` serializes them, so no resource is ever built
inside an ``apply``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

Statement = dict[str, Any]

# Actions AWS offers no resource-level permission for: ``Resource: "*"`` is their only possible form.
# The policy tests allow a wildcard resource for exactly these.
ECR_LOGIN_ACTIONS = ("ecr:GetAuthorizationToken",)
XRAY_ACTIONS = (
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
)
# What Step Functions needs to deliver a state machine's execution logs to CloudWatch Logs.
LOG_DELIVERY_ACTIONS = (
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
)
WILDCARD_ONLY_ACTIONS = frozenset(ECR_LOGIN_ACTIONS + XRAY_ACTIONS + LOG_DELIVERY_ACTIONS)


def allow(
    sid: str, actions: Sequence[str], resources: Sequence[Any], condition: Mapping | None = None
) -> Statement:
    statement: Statement = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(actions),
        "Resource": list(resources),
    }
    if condition:
        statement["Condition"] = dict(condition)
    return statement


def document(statements: Sequence[Statement]) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def trust_policy(service: str, condition: Mapping | None = None) -> pulumi.Output[str]:
    statement: Statement = {
        "Effect": "Allow",
        "Principal": {"Service": service},
        "Action": "sts:AssumeRole",
    }
    if condition:
        statement["Condition"] = dict(condition)
    return document([statement])


def service_role(
    name: str,
    service: str,
    statements: Sequence[Statement],
    parent: pulumi.Resource,
    *,
    condition: Mapping | None = None,
    description: str = "",
) -> aws.iam.Role:
    """A role ``service`` can assume, with exactly ``statements`` as its only permissions."""
    role = aws.iam.Role(
        name,
        assume_role_policy=trust_policy(service, condition),
        description=description,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    aws.iam.RolePolicy(
        f"{name}-policy",
        role=role.id,
        policy=document(statements),
        opts=pulumi.ResourceOptions(parent=role),
    )
    return role


def tls_only(sid_prefix: str, resources: Sequence[Any], action: str) -> Statement:
    """Deny any request that does not use TLS (S3, SQS, SNS resource policies)."""
    return {
        "Sid": f"{sid_prefix}TlsOnly",
        "Effect": "Deny",
        "Principal": "*",
        "Action": action,
        "Resource": list(resources),
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def kms_use(key_arns: Sequence[Any], *, encrypt: bool, decrypt: bool) -> list[Statement]:
    """Data-key use of customer KMS keys (none when the stores use AWS-managed keys)."""
    if not key_arns:
        return []
    actions = (["kms:GenerateDataKey"] if encrypt else []) + (["kms:Decrypt"] if decrypt else [])
    return [allow("UseDataKeys", actions, key_arns)]


def account_administers(account_id: pulumi.Input[str], partition: pulumi.Input[str]) -> Statement:
    """The first statement of every key policy we write: the account administers the key, so IAM
    policies decide who uses it (in a key policy ``Resource: "*"`` means "this key")."""
    return {
        "Sid": "AccountAdministers",
        "Effect": "Allow",
        "Principal": {"AWS": pulumi.Output.concat("arn:", partition, ":iam::", account_id, ":root")},
        "Action": "kms:*",
        "Resource": "*",
    }


def logs_encrypt(
    region: pulumi.Input[str], account_id: pulumi.Input[str], partition: pulumi.Input[str]
) -> Statement:
    """Key policy statement that lets CloudWatch Logs encrypt this account's log groups in ``region``."""
    return {
        "Sid": "CloudWatchLogsEncrypts",
        "Effect": "Allow",
        "Principal": {"Service": pulumi.Output.concat("logs.", region, ".amazonaws.com")},
        "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
        "Resource": "*",
        "Condition": {
            "ArnLike": {
                "kms:EncryptionContext:aws:logs:arn": pulumi.Output.concat(
                    "arn:", partition, ":logs:", region, ":", account_id, ":log-group:*"
                )
            }
        },
    }


def key_use_via(
    sid: str, key_arn: pulumi.Input[str], actions: Sequence[str], service: str, region: pulumi.Input[str]
) -> Statement:
    """Use of a customer key only through one AWS service (``kms:ViaService``), e.g. dynamodb."""
    via = pulumi.Output.concat(f"{service}.", region, ".amazonaws.com")
    return allow(sid, actions, [key_arn], {"StringEquals": {"kms:ViaService": via}})
