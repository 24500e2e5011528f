"""The security policy functions catch what they are meant to catch (on hand-made graphs)."""

import json

from tests.components import policies
from tests.components.pulumi_graph import Graph, Resource


def policy(name: str, *statements: dict) -> Resource:
    document = json.dumps({"Version": "2012-10-17", "Statement": list(statements)})
    return Resource(f"urn:{name}", "aws:iam/rolePolicy:RolePolicy", name, {"policy": document}, {})


def test_wildcard_action_and_resource_are_reported():
    graph = Graph(
        [
            policy("admin", {"Sid": "A", "Effect": "Allow", "Action": "*", "Resource": "*"}),
            policy(
                "s3all", {"Sid": "B", "Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::b"]}
            ),
            policy(
                "ok", {"Sid": "C", "Effect": "Allow", "Action": ["xray:PutTraceSegments"], "Resource": ["*"]}
            ),
            policy(
                "deny", {"Sid": "D", "Effect": "Deny", "Action": "s3:*", "Resource": "*", "Principal": "*"}
            ),
        ]
    )
    assert policies.wildcard_actions(graph) == ["admin: A allows *", "s3all: B allows s3:*"]
    assert policies.wildcard_resources(graph) == ["admin: A allows * on *"]


def test_public_bucket_and_unencrypted_stores_are_reported():
    graph = Graph(
        [
            Resource("urn:b", "aws:s3/bucket:Bucket", "b", {}, {"id": "b-id"}),
            Resource(
                "urn:pab",
                "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                "pab",
                {
                    "bucket": "b-id",
                    "blockPublicAcls": True,
                    "blockPublicPolicy": False,
                    "ignorePublicAcls": True,
                    "restrictPublicBuckets": True,
                },
                {},
            ),
            Resource("urn:q", "aws:sqs/queue:Queue", "q", {}, {}),
            Resource("urn:t", "aws:sns/topic:Topic", "t", {}, {}),
        ]
    )
    assert policies.public_buckets(graph) == ["b: public access not fully blocked"]
    assert policies.unencrypted_stores(graph) == [
        "b: no default encryption",
        "q: queue not encrypted",
        "t: topic not encrypted",
    ]


def test_world_open_ingress_is_reported_unless_public():
    graph = Graph(
        [
            Resource(
                "urn:r",
                "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
                "r",
                {"cidrIpv4": "0.0.0.0/0"},
                {},
            ),
            Resource(
                "urn:g",
                "aws:ec2/securityGroup:SecurityGroup",
                "g",
                {"ingress": [{"cidrBlocks": ["10.0.0.0/8"]}]},
                {},
            ),
        ]
    )
    assert policies.open_ingress(graph, public=False) == ["r: ingress from 0.0.0.0/0"]
    assert policies.open_ingress(graph, public=True) == []


def test_stores_without_a_customer_key_are_reported():
    sse = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"

    def encryption(bucket_id: str, default: dict) -> Resource:
        rules = {"bucket": bucket_id, "rules": [{"applyServerSideEncryptionByDefault": default}]}
        return Resource(f"urn:{bucket_id}-sse", sse, f"{bucket_id}-sse", rules, {})

    graph = Graph(
        [
            Resource("urn:a", "aws:s3/bucket:Bucket", "a", {}, {"id": "a-id"}),
            encryption("a-id", {"sseAlgorithm": "AES256"}),
            Resource("urn:b", "aws:s3/bucket:Bucket", "b", {}, {"id": "b-id"}),
            encryption("b-id", {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": "arn:aws:kms:x"}),
            Resource(
                "urn:t", "aws:dynamodb/table:Table", "t", {"serverSideEncryption": {"enabled": True}}, {}
            ),
            Resource("urn:l", "aws:cloudwatch/logGroup:LogGroup", "l", {"kmsKeyId": "arn:aws:kms:x"}, {}),
            Resource(
                "urn:r",
                "aws:ecr/repository:Repository",
                "r",
                {"encryptionConfigurations": [{"encryptionType": "AES256"}]},
                {},
            ),
        ]
    )
    assert policies.stores_without_customer_key(graph) == ["a: bucket", "t: table", "r: repository"]
