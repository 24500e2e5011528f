"""Security rules as pure functions over a recorded resource graph: each returns its violations.

Justified exceptions (AWS offers no resource-level permission for these actions, so ``Resource: "*"``
is the only possible form): ECR login, X-Ray segments and sampling, Step Functions' log delivery.
KMS key policies are not scanned: there ``Resource: "*"`` means "this key", and the account root
must hold ``kms:*`` or the key becomes unmanageable.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from typing import Any

from components.iam import WILDCARD_ONLY_ACTIONS
from tests.components.pulumi_graph import Graph, Resource

POLICY_INPUTS = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/role:Role": "assumeRolePolicy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
    "aws:sqs/queuePolicy:QueuePolicy": "policy",
    "aws:sns/topicPolicy:TopicPolicy": "policy",
}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def statements(graph: Graph) -> Iterator[tuple[Resource, dict]]:
    for type_, key in POLICY_INPUTS.items():
        for resource in graph.of_type(type_):
            for statement in json.loads(resource.inputs[key])["Statement"]:
                yield resource, statement


def wildcard_actions(graph: Graph) -> list[str]:
    return [
        f"{r.name}: {s.get('Sid', '')} allows {a}"
        for r, s in statements(graph)
        if s["Effect"] == "Allow"
        for a in _list(s.get("Action", []))
        if a == "*" or a.endswith(":*")
    ]


def wildcard_resources(graph: Graph) -> list[str]:
    return [
        f"{r.name}: {s.get('Sid', '')} allows {a} on *"
        for r, s in statements(graph)
        if s["Effect"] == "Allow" and "*" in _list(s.get("Resource", []))
        for a in _list(s["Action"])
        if a not in WILDCARD_ONLY_ACTIONS
    ]


def public_principals(graph: Graph) -> list[str]:
    """Resource policies may name ``*`` only to deny (TLS-only statements)."""
    return [
        f"{r.name}: {s.get('Sid', '')} allows principal *"
        for r, s in statements(graph)
        if s["Effect"] == "Allow" and s.get("Principal") in ("*", {"AWS": "*"})
    ]


def _bucket_children(graph: Graph, type_: str) -> dict[str, Resource]:
    return {r.inputs["bucket"]: r for r in graph.of_type(type_)}


def public_buckets(graph: Graph) -> list[str]:
    blocks = _bucket_children(graph, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    problems = []
    for bucket in graph.of_type("aws:s3/bucket:Bucket"):
        block = blocks.get(bucket.outputs["id"])
        if block is None or not all(block.inputs.get(f) is True for f in flags):
            problems.append(f"{bucket.name}: public access not fully blocked")
    return problems


def unencrypted_stores(graph: Graph) -> list[str]:
    problems = []
    sse = _bucket_children(
        graph, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    for bucket in graph.of_type("aws:s3/bucket:Bucket"):
        rules = sse.get(bucket.outputs["id"])
        algorithms = [
            r["applyServerSideEncryptionByDefault"]["sseAlgorithm"]
            for r in (rules.inputs["rules"] if rules else [])
        ]
        if not algorithms or not set(algorithms) <= {"AES256", "aws:kms"}:
            problems.append(f"{bucket.name}: no default encryption")
    for table in graph.of_type("aws:dynamodb/table:Table"):
        if not table.inputs.get("serverSideEncryption", {}).get("enabled"):
            problems.append(f"{table.name}: table not encrypted with a KMS key")
    for queue in graph.of_type("aws:sqs/queue:Queue"):
        if not (queue.inputs.get("sqsManagedSseEnabled") or queue.inputs.get("kmsMasterKeyId")):
            problems.append(f"{queue.name}: queue not encrypted")
    for topic in graph.of_type("aws:sns/topic:Topic"):
        if not topic.inputs.get("kmsMasterKeyId"):
            problems.append(f"{topic.name}: topic not encrypted")
    for repository in graph.of_type("aws:ecr/repository:Repository"):
        if not repository.inputs.get("encryptionConfigurations"):
            problems.append(f"{repository.name}: repository encryption not set")
    return problems


def open_ingress(graph: Graph, public: bool) -> list[str]:
    """Ingress from the whole internet only when the stack says public (and then only to the NLB)."""
    problems = []
    rules = [
        (r.name, r.inputs.get("cidrIpv4"))
        for r in graph.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    ]
    for group in graph.of_type("aws:ec2/securityGroup:SecurityGroup"):
        rules += [
            (group.name, c) for rule in group.inputs.get("ingress", []) for c in rule.get("cidrBlocks", [])
        ]
    for name, cidr in rules:
        if cidr and ipaddress.ip_network(cidr).prefixlen == 0 and not public:
            problems.append(f"{name}: ingress from {cidr}")
    return problems


def stores_without_customer_key(graph: Graph) -> list[str]:
    """Every store whose data is not under a customer-managed KMS key (SSE-S3, AWS-owned or
    AWS-managed keys). The S3 access-log bucket can only be SSE-S3 (S3 log delivery needs it)."""
    problems = []
    sse = _bucket_children(
        graph, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    )
    for bucket in graph.of_type("aws:s3/bucket:Bucket"):
        rules = sse[bucket.outputs["id"]].inputs["rules"]
        if any(r["applyServerSideEncryptionByDefault"].get("kmsMasterKeyId") is None for r in rules):
            problems.append(f"{bucket.name}: bucket")
    checks = {
        "aws:dynamodb/table:Table": lambda i: i.get("serverSideEncryption", {}).get("kmsKeyArn"),
        "aws-native:healthimaging:Datastore": lambda i: i.get("kmsKeyArn"),
        "aws:ecr/repository:Repository": lambda i: all(
            c.get("encryptionType") == "KMS" and c.get("kmsKey")
            for c in i.get("encryptionConfigurations", [])
        ),
        "aws:cloudwatch/logGroup:LogGroup": lambda i: i.get("kmsKeyId"),
        "aws:sqs/queue:Queue": lambda i: i.get("kmsMasterKeyId"),
        "aws:sns/topic:Topic": lambda i: i.get("kmsMasterKeyId"),
    }
    for type_, has_key in checks.items():
        for resource in graph.of_type(type_):
            if not has_key(resource.inputs):
                problems.append(f"{resource.name}: {type_.rsplit(':', 1)[-1].lower()}")
    return problems
