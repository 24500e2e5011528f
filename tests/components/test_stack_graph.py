"""The whole AWS architecture, proven offline: run DicomIngest under recording mocks for three stack
shapes (new VPC = Pulumi.dev.yaml, existing VPC with TLS passthrough, production = Pulumi.prod.yaml)
and assert over every recorded resource."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pytest

from components.dicom_ingest import DicomIngest, DicomIngestArgs
from components.lambda_package import write_package
from core.asl import build_definition
from core.config import StackConfig, deployed_scp_settings, from_flat, load_stack
from core.contracts import FUNCTIONS
from core.layout import (
    BATCHES_PREFIX,
    INCOMING_PREFIX,
    MANIFEST_SUFFIX,
    QUARANTINE_PREFIX,
    STACK_OUTPUTS,
    TABLE_INDEXES,
    TABLE_PARTITION_KEY,
    TABLE_SORT_KEY,
    TTL_ATTRIBUTE,
)
from core.workflow_settings import WorkflowResources
from tests.components import policies
from tests.components.pulumi_graph import (
    ACCOUNT,
    EXISTING_S3_PREFIX_LIST,
    EXISTING_VPC_CIDR,
    REGION,
    Graph,
    run_program,
)

ROOT = Path(__file__).resolve().parents[2]
SECRETS = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:"
EXISTING_VPC = {
    "networkVpcId": "vpc-0123456789abcdef0",
    "networkPrivateSubnetIds": "subnet-0aaa1111bbbb2222c,subnet-0aaa1111bbbb2222d",
    "networkInterfaceEndpoints": "false",  # this VPC routes to AWS APIs through its own NAT
    "networkS3GatewayEndpoint": "false",  # and has its own S3 gateway endpoint
    "scpTlsEnabled": "true",
    "scpTlsCertFile": "/tmp/dicom-tls/cert.pem",
    "scpTlsKeyFile": "/tmp/dicom-tls/key.pem",
    "scpTlsCaFile": "/tmp/dicom-tls/ca.pem",
    "serviceTlsCertificateSecretArn": f"{SECRETS}dicom/tls-cert-AbC123",
    "serviceTlsKeySecretArn": f"{SECRETS}dicom/tls-key-DeF456",
    "serviceTlsCaSecretArn": f"{SECRETS}dicom/tls-ca-GhI789",
    "loadBalancerTlsMode": "passthrough",
    "healthImagingDatastoreId": "fedcba9876543210fedcba9876543210",
    "serviceImageUri": "123456789012.dkr.ecr.eu-central-1.amazonaws.com/scp:1.0.0",
}
S3 = "aws:s3/bucket:Bucket"
LAMBDA = "aws:lambda/function:Function"


def _run(config: StackConfig, package) -> Graph:
    def program() -> None:
        ingest = DicomIngest("dicom", DicomIngestArgs(config=config, package=package))
        for key, value in ingest.stack_outputs().items():
            pulumi.export(key, value)

    return run_program(program, config.stack)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return write_package(tmp_path_factory.mktemp("lambda"))


@pytest.fixture(scope="module")
def dev_config() -> StackConfig:
    return load_stack(ROOT, "dev")


@pytest.fixture(scope="module")
def prod_config() -> StackConfig:
    return load_stack(ROOT, "prod")


@pytest.fixture(scope="module")
def existing_config() -> StackConfig:
    return from_flat(EXISTING_VPC, stack="hospital")


@pytest.fixture(scope="module")
def dev(dev_config, package) -> Graph:
    return _run(dev_config, package)


@pytest.fixture(scope="module")
def prod(prod_config, package) -> Graph:
    return _run(prod_config, package)


@pytest.fixture(scope="module")
def existing(existing_config, package) -> Graph:
    return _run(existing_config, package)


@pytest.fixture(params=["dev", "prod", "existing"])
def graph(request) -> Graph:
    return request.getfixturevalue(request.param)


def statements_of(graph: Graph, role_name: str) -> list[dict]:
    return graph.one("aws:iam/rolePolicy:RolePolicy", role_name).json("policy")["Statement"]


def bucket(graph: Graph, part: str):
    (found,) = [b for b in graph.of_type(S3) if b.name == f"dicom-storage-{part}"]
    return found


def child_of_bucket(graph: Graph, type_: str, part: str):
    bucket_id = bucket(graph, part).outputs["id"]
    (found,) = [r for r in graph.of_type(type_) if r.inputs["bucket"] == bucket_id]
    return found


# --- composition ------------------------------------------------------------------------------
def test_one_component_per_block_under_dicom_ingest(dev):
    root = dev.one("dicom-ingest:index:DicomIngest")
    blocks = {r.type.rsplit(":", 1)[-1] for r in dev.resources if r.parent == root.urn}
    assert blocks == {
        "aws",  # the AWS provider with the stack's default tags
        "Network",
        "NetworkAcls",
        "Storage",
        "JobTable",
        "HealthImaging",
        "ImportWorkflow",
        "LoadBalancer",
        "ScpService",
        "Monitoring",
    }
    stack_urn = dev.one("pulumi:pulumi:Stack").urn
    orphans = [
        r.name for r in dev.resources if r.type != "pulumi:pulumi:Stack" and r.parent in ("", stack_urn)
    ]
    assert orphans == ["dicom"]


def test_stack_outputs_are_the_cli_contract(dev, prod, existing):
    assert set(dev.outputs) == set(STACK_OUTPUTS) - {"tlsPort", "endpointIps"}
    assert set(prod.outputs) == set(STACK_OUTPUTS) - {"dicomPort"}  # TLS required: no plain port
    assert set(existing.outputs) == set(STACK_OUTPUTS) - {"endpointIps"}  # AWS-assigned addresses
    nlb = dev.one("aws:lb/loadBalancer:LoadBalancer")
    assert dev.outputs["endpointHost"] == nlb.outputs["dnsName"]
    assert dev.outputs["dicomPort"] == 11112 and prod.outputs["tlsPort"] == 2762
    assert dev.outputs["aeTitle"] == "AHI-DEV"
    assert dev.outputs["dicomBucket"] == bucket(dev, "dicom").outputs["bucket"]
    assert dev.outputs["stateMachineArn"] == dev.one("aws:sfn/stateMachine:StateMachine").outputs["arn"]
    assert dev.outputs["datastoreId"] == dev.one("aws-native:healthimaging:Datastore").outputs["datastoreId"]
    assert existing.outputs["datastoreId"] == EXISTING_VPC["healthImagingDatastoreId"]
    assert dev.outputs["dlqUrl"] == dev.one("aws:sqs/queue:Queue").outputs["url"]
    assert dev.outputs["region"] == REGION
    assert dev.outputs["dashboardUrl"].endswith("#dashboards:name=dicom-ingest-dev")


# --- network ----------------------------------------------------------------------------------
def test_new_vpc_spans_two_azs_without_nat(dev):
    vpc = dev.one("awsx:ec2:Vpc")
    assert vpc.inputs["cidrBlock"] == "10.40.0.0/16"
    assert vpc.inputs["numberOfAvailabilityZones"] == 2
    assert vpc.inputs["natGateways"] == {"strategy": "None"}
    assert {s["type"] for s in vpc.inputs["subnetSpecs"]} == {"Private", "Public"}


@pytest.mark.parametrize("shape", ["dev", "prod"])
def test_endpoints_replace_a_nat_gateway(request, shape):
    graph = request.getfixturevalue(shape)
    endpoints = {e.inputs["serviceName"]: e for e in graph.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    services = {name.removeprefix(f"com.amazonaws.{REGION}.") for name in endpoints}
    # Production's tasks also read their TLS secrets at start: Secrets Manager without a NAT gateway.
    secrets = {"secretsmanager"} if shape == "prod" else set()
    assert services == {"s3", "ecr.api", "ecr.dkr", "logs", "sts"} | secrets
    assert endpoints[f"com.amazonaws.{REGION}.s3"].inputs["vpcEndpointType"] == "Gateway"
    for name, endpoint in endpoints.items():
        if not name.endswith(".s3"):
            assert endpoint.inputs["vpcEndpointType"] == "Interface" and endpoint.inputs["privateDnsEnabled"]


def test_existing_vpc_is_used_as_given(existing):
    assert existing.of_type("awsx:ec2:Vpc") == []
    flow_log = existing.one("aws:ec2/flowLog:FlowLog")
    assert flow_log.inputs["vpcId"] == EXISTING_VPC["networkVpcId"]
    service = existing.one("aws:ecs/service:Service")
    assert service.inputs["networkConfiguration"]["subnets"] == EXISTING_VPC["networkPrivateSubnetIds"].split(
        ","
    )
    # No endpoints asked for (the VPC has its own S3 gateway endpoint and a NAT): none created, and
    # the tasks' S3 egress rule names the VPC's own endpoint's prefix list.
    assert existing.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") == []
    (s3_rule,) = [
        r
        for r in existing.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        if r.name.endswith("https-s3")
    ]
    assert s3_rule.inputs["prefixListId"] == EXISTING_S3_PREFIX_LIST


def test_the_s3_gateway_endpoint_goes_into_every_route_table_unless_the_vpc_has_one(prod):
    (endpoint,) = [
        e for e in prod.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") if e.inputs["serviceName"].endswith(".s3")
    ]
    assert endpoint.inputs["routeTableIds"] == ["rtb-0aaa0000000000001", "rtb-0aaa0000000000002"]
    (s3_rule,) = [
        r
        for r in prod.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        if r.name.endswith("https-s3")
    ]
    assert s3_rule.inputs["prefixListId"] == endpoint.outputs["prefixListId"]


@pytest.fixture(scope="module")
def public_with_nat(package) -> Graph:
    config = from_flat(
        {
            "loadBalancerPublic": "true",
            "loadBalancerAllowedCidrs": "192.0.2.0/24",
            "networkNatGateways": "single",
        },
        stack="edge",
    )
    return _run(config, package)


def _acl(graph: Graph, tier: str) -> dict:
    return graph.one("aws:ec2/networkAcl:NetworkAcl", f"acls-{tier}").inputs


def _allows(entries: list[dict]) -> set[tuple]:
    return {(e["protocol"], e["cidrBlock"], e["fromPort"], e["toPort"]) for e in entries}


def test_a_new_vpc_gets_a_default_deny_acl_per_subnet_tier(dev):
    vpc = dev.one("awsx:ec2:Vpc").outputs
    private, public = _acl(dev, "private"), _acl(dev, "public")
    assert private["subnetIds"] == vpc["privateSubnetIds"] and public["subnetIds"] == vpc["publicSubnetIds"]
    assert private["vpcId"] == public["vpcId"] == vpc["vpcId"]
    # Nothing lives in the public tier (internal NLB, no NAT): no allow at all.
    assert public.get("ingress", []) == [] and public.get("egress", []) == []
    assert all(e["action"] == "allow" for e in private["ingress"] + private["egress"])  # deny = no rule
    vpc_cidr, clients = "10.40.0.0/16", "10.0.0.0/8"
    assert _allows(private["ingress"]) == {
        ("tcp", clients, 11112, 11112),  # modalities, through the NLB with their own address
        ("tcp", vpc_cidr, 8080, 8080),  # NLB health checks only from inside the VPC
        ("tcp", vpc_cidr, 443, 443),  # the interface endpoints in this tier
        ("tcp", vpc_cidr, 1024, 65535),  # answers to the NLB and from the endpoints
        ("tcp", "0.0.0.0/0", 32768, 65535),  # answers to the tasks' own connections (S3)
        ("icmp", "0.0.0.0/0", 0, 0),  # fragmentation needed
    }
    assert _allows(private["egress"]) == {
        ("tcp", clients, 1024, 65535),
        ("tcp", vpc_cidr, 1024, 65535),
        ("tcp", vpc_cidr, 11112, 11112),
        ("tcp", vpc_cidr, 8080, 8080),
        ("tcp", vpc_cidr, 443, 443),
        ("tcp", "0.0.0.0/0", 443, 443),  # S3 through the gateway endpoint
        ("icmp", "0.0.0.0/0", 0, 0),
    }
    (icmp,) = [e for e in private["ingress"] if e["protocol"] == "icmp"]
    assert (icmp["icmpType"], icmp["icmpCode"]) == (3, 4)
    numbers = [e["ruleNo"] for e in private["ingress"]]
    assert len(set(numbers)) == len(numbers)


def test_a_public_nlb_and_a_nat_gateway_open_only_their_ports_in_the_public_tier(public_with_nat):
    public = _allows(_acl(public_with_nat, "public")["ingress"])
    assert ("tcp", "192.0.2.0/24", 11112, 11112) in public  # clients to the public NLB
    assert ("tcp", "10.40.0.0/16", 443, 443) in public  # tasks to the NAT gateway
    assert ("tcp", "0.0.0.0/0", 1024, 65535) in public  # answers to the NAT gateway
    private = _allows(_acl(public_with_nat, "private")["ingress"])
    assert ("tcp", "192.0.2.0/24", 11112, 11112) in private  # client IP preserved to the tasks
    assert not any(cidr == "192.0.2.0/24" and low <= 8080 <= high for _, cidr, low, high in private)


@pytest.mark.parametrize("shape", ["dev", "public_with_nat"])
def test_no_acl_opens_a_dicom_or_health_port_to_the_world(request, shape):
    graph = request.getfixturevalue(shape)
    scp_ports = {11112, 2762, 8080}
    for acl in graph.of_type("aws:ec2/networkAcl:NetworkAcl"):
        for entry in acl.inputs.get("ingress", []):
            if entry["cidrBlock"] == "0.0.0.0/0" and entry["protocol"] == "tcp" and "public" not in acl.name:
                assert not any(entry["fromPort"] <= p <= entry["toPort"] for p in scp_ports), entry


def test_an_existing_vpc_keeps_its_own_acls(prod, existing):
    assert prod.of_type("aws:ec2/networkAcl:NetworkAcl") == []
    assert existing.of_type("aws:ec2/networkAcl:NetworkAcl") == []


def test_vpc_flow_logs_go_to_a_retained_log_group(graph):
    flow_log = graph.one("aws:ec2/flowLog:FlowLog")
    assert flow_log.inputs["trafficType"] == "ALL"
    group = graph.by_arn(flow_log.inputs["logDestination"])
    assert group.inputs["retentionInDays"] > 0


# --- storage ----------------------------------------------------------------------------------
def test_every_bucket_is_private_owned_encrypted_tls_only(graph):
    assert policies.public_buckets(graph) == []
    assert policies.unencrypted_stores(graph) == []
    for b in graph.of_type(S3):
        (ownership,) = [
            r
            for r in graph.of_type("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
            if r.inputs["bucket"] == b.outputs["id"]
        ]
        assert ownership.inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced"
        (policy,) = [
            r
            for r in graph.of_type("aws:s3/bucketPolicy:BucketPolicy")
            if r.inputs["bucket"] == b.outputs["id"]
        ]
        deny = [s for s in policy.json("policy")["Statement"] if s["Effect"] == "Deny"]
        assert deny == [
            {
                "Sid": "BucketTlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [b.outputs["arn"], b.outputs["arn"] + "/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]


def test_data_buckets_log_access_to_the_log_bucket(graph):
    log_bucket = bucket(graph, "access-logs")
    for part, prefix in (("dicom", "dicom/"), ("results", "results/")):
        logging = child_of_bucket(graph, "aws:s3/bucketLogging:BucketLogging", part)
        assert (logging.inputs["targetBucket"], logging.inputs["targetPrefix"]) == (
            log_bucket.outputs["id"],
            prefix,
        )


def test_sse_s3_by_default_and_kms_in_production(dev, prod):
    for part in ("dicom", "results"):
        rule = child_of_bucket(
            dev,
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            part,
        ).inputs["rules"][0]
        assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
        rule = child_of_bucket(
            prod,
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            part,
        ).inputs["rules"][0]
        key = prod.one("aws:kms/key:Key", "storage-key")
        assert rule["applyServerSideEncryptionByDefault"] == {
            "sseAlgorithm": "aws:kms",
            "kmsMasterKeyId": key.outputs["arn"],
        }
        assert rule["bucketKeyEnabled"] is True
    assert key.inputs["enableKeyRotation"] is True


def test_dicom_bucket_is_temporary(dev, dev_config):
    rules = {
        r["id"]: r
        for r in child_of_bucket(
            dev, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "dicom"
        ).inputs["rules"]
    }
    s = dev_config.storage
    assert rules["expire-incoming"]["filter"] == {"prefix": INCOMING_PREFIX}
    assert rules["expire-incoming"]["expiration"]["days"] == s.incoming_expiry_days == 7
    assert rules["expire-quarantine"]["filter"] == {"prefix": QUARANTINE_PREFIX}
    assert rules["expire-batches"]["filter"] == {"prefix": BATCHES_PREFIX}
    assert rules["expire-imported"]["filter"] == {"tag": {"key": "ahi-imported", "value": "true"}}
    for rule_id in ("expire-incoming", "expire-quarantine", "expire-batches"):
        assert rules[rule_id]["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}
    assert bucket(dev, "dicom").inputs["forceDestroy"] is True


def test_results_bucket_is_versioned_and_kept(graph):
    versioning = child_of_bucket(graph, "aws:s3/bucketVersioning:BucketVersioning", "results")
    assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"
    (rule,) = child_of_bucket(
        graph, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "results"
    ).inputs["rules"]
    assert rule["expiration"]["days"] == 3650 and rule["noncurrentVersionExpiration"]["noncurrentDays"] == 90


def test_production_moves_old_results_to_cheaper_storage_classes(prod, dev):
    def rule(graph):
        (found,) = child_of_bucket(
            graph, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "results"
        ).inputs["rules"]
        return found

    assert rule(prod)["transitions"] == [
        {"days": 30, "storageClass": "STANDARD_IA"},
        {"days": 180, "storageClass": "GLACIER_IR"},
    ]
    assert rule(prod)["expiration"] == {"days": 3650}  # transitions come before the expiry
    assert "transitions" not in rule(dev)


def test_production_replicates_results_to_a_second_region(prod, dev):
    assert dev.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig") == []
    provider = prod.one("pulumi:providers:aws", "replica-region")
    assert provider.inputs["region"] == "eu-west-1"
    replication = prod.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert (
        replication.inputs["bucket"] == bucket(prod, "results").outputs["id"]
        and "replica" not in bucket(prod, "results").name
    )
    (rule,) = replication.inputs["rules"]
    replica = prod.one(S3, "results-replica")
    assert rule["destination"]["bucket"] == replica.outputs["arn"]
    assert (
        rule["destination"]["encryptionConfiguration"]["replicaKmsKeyId"]
        == prod.one("aws:kms/key:Key", "replica-key").outputs["arn"]
    )
    assert child_of_bucket(prod, "aws:s3/bucketVersioning:BucketVersioning", "results-replica")


def test_production_keeps_data_when_the_stack_is_destroyed(prod, dev):
    kept = {r.type for r in prod.resources if r.retain_on_delete}
    assert {S3, "aws:dynamodb/table:Table", "aws-native:healthimaging:Datastore", EFS} <= kept
    assert prod.one("aws:kms/key:Key", "storage-key").retain_on_delete
    assert not any(r.retain_on_delete for r in dev.resources)
    assert all(b.inputs["forceDestroy"] is False for b in prod.of_type(S3))


def test_production_keeps_every_store_under_a_customer_key(prod, dev):
    # The one exception: S3 server access logs can only be delivered to an SSE-S3 bucket.
    assert policies.stores_without_customer_key(prod) == ["dicom-storage-access-logs: bucket"]
    missing = policies.stores_without_customer_key(dev)  # the defaults: AWS-managed and -owned keys
    assert {"dicom-jobs-jobs: table", "dicom-scp-repository: repository", "dicom-scp-logs: loggroup"} <= set(
        missing
    )


def test_the_stack_key_encrypts_table_datastore_repository_and_logs_in_production(prod):
    key = prod.one("aws:kms/key:Key", "storage-key")
    arn = key.outputs["arn"]
    assert prod.one("aws:dynamodb/table:Table").inputs["serverSideEncryption"] == {
        "enabled": True,
        "kmsKeyArn": arn,
    }
    assert prod.one("aws-native:healthimaging:Datastore").inputs["kmsKeyArn"] == arn
    assert prod.one("aws:ecr/repository:Repository").inputs["encryptionConfigurations"] == [
        {"encryptionType": "KMS", "kmsKey": arn}
    ]
    assert {g.inputs["kmsKeyId"] for g in prod.of_type("aws:cloudwatch/logGroup:LogGroup")} == {arn}
    # CloudWatch Logs may use the key, for this account's log groups in this region only.
    statements = {s["Sid"]: s for s in key.json("policy")["Statement"]}
    logs = statements["CloudWatchLogsEncrypts"]
    assert logs["Principal"] == {"Service": f"logs.{REGION}.amazonaws.com"}
    assert logs["Condition"] == {
        "ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:*"}
    }
    assert statements["AccountAdministers"]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}


def test_functions_use_the_table_and_datastore_keys_only_through_those_services(prod, dev):
    key = prod.one("aws:kms/key:Key", "storage-key").outputs["arn"]

    def sids(graph, fn):
        return {s["Sid"]: s for s in statements_of(graph, f"workflow-{fn}-policy")}

    for fn in ("trigger", "start-import", "check-status", "record-results", "failure"):
        table_key = sids(prod, fn)["JobTableKey"]
        assert table_key["Resource"] == [key]
        assert table_key["Condition"] == {
            "StringEquals": {"kms:ViaService": f"dynamodb.{REGION}.amazonaws.com"}
        }
    for fn in ("start-import", "check-status", "record-results"):
        datastore_key = sids(prod, fn)["DatastoreKey"]
        assert "kms:CreateGrant" in datastore_key["Action"] and datastore_key["Resource"] == [key]
        assert (
            datastore_key["Condition"]["StringEquals"]["kms:ViaService"]
            == f"medical-imaging.{REGION}.amazonaws.com"
        )
    assert {"JobTableKey", "DatastoreKey"}.isdisjoint(sids(prod, "sweeper"))  # touches neither
    assert {"JobTableKey", "DatastoreKey"}.isdisjoint(sids(dev, "start-import"))


# --- job table --------------------------------------------------------------------------------
def test_job_table_follows_the_layout(dev, prod):
    table = dev.one("aws:dynamodb/table:Table")
    assert (table.inputs["hashKey"], table.inputs["rangeKey"]) == (TABLE_PARTITION_KEY, TABLE_SORT_KEY)
    assert table.inputs["billingMode"] == "PAY_PER_REQUEST"
    indexes = {
        i["name"]: (i["hashKey"], i["rangeKey"], i["projectionType"])
        for i in table.inputs["globalSecondaryIndexes"]
    }
    assert indexes == {name: (*keys, "ALL") for name, keys in TABLE_INDEXES.items()}
    declared = {a["name"] for a in table.inputs["attributes"]}
    assert declared == {TABLE_PARTITION_KEY, TABLE_SORT_KEY} | {
        k for keys in TABLE_INDEXES.values() for k in keys
    }
    assert table.inputs["ttl"] == {"attributeName": TTL_ATTRIBUTE, "enabled": True}
    assert table.inputs["pointInTimeRecovery"] == {"enabled": True}
    assert table.inputs["serverSideEncryption"]["enabled"] is True
    assert table.inputs["deletionProtectionEnabled"] is False
    assert prod.one("aws:dynamodb/table:Table").inputs["deletionProtectionEnabled"] is True


# --- backup -----------------------------------------------------------------------------------
def test_production_backs_up_exactly_the_job_table_and_the_results_bucket(prod, prod_config, dev, existing):
    assert dev.of_type("aws:backup/plan:Plan") == [] and existing.of_type("aws:backup/plan:Plan") == []
    selection = prod.one("aws:backup/selection:Selection").inputs
    assert selection["resources"] == [
        prod.one("aws:dynamodb/table:Table").outputs["arn"],
        bucket(prod, "results").outputs["arn"],
    ]
    (rule,) = prod.one("aws:backup/plan:Plan").inputs["rules"]
    vault = prod.one("aws:backup/vault:Vault", "backup-vault")
    assert rule["targetVaultName"] == vault.outputs["name"]
    assert rule["schedule"] == prod_config.backup.schedule == "cron(0 3 * * ? *)"
    assert rule["lifecycle"] == {"deleteAfter": 35}
    assert rule["enableContinuousBackup"] is True  # the results bucket restores to a point in time
    # Recovery points are copied to a vault in a second region, under a key of that region.
    copy_vault = prod.one("aws:backup/vault:Vault", "copy-vault")
    assert copy_vault.inputs["region"] == "eu-west-1"
    assert rule["copyActions"] == [
        {"destinationVaultArn": copy_vault.outputs["arn"], "lifecycle": {"deleteAfter": 35}}
    ]
    # Both vaults are under customer keys with rotation, kept when the stack is destroyed.
    for name, region in (("backup-vault-key", None), ("copy-vault-key", "eu-west-1")):
        key = prod.one("aws:kms/key:Key", name)
        assert key.inputs["enableKeyRotation"] is True and key.inputs.get("region") == region
        assert key.retain_on_delete
    assert vault.inputs["kmsKeyArn"] == prod.one("aws:kms/key:Key", "backup-vault-key").outputs["arn"]
    assert vault.retain_on_delete and copy_vault.retain_on_delete


def test_the_backup_role_is_aws_backups_with_exactly_the_vault_keys(prod):
    role = prod.one("aws:iam/role:Role", "backup-role")
    (trust,) = role.json("assumeRolePolicy")["Statement"]
    assert trust["Principal"] == {"Service": "backup.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    assert prod.one("aws:backup/selection:Selection").inputs["iamRoleArn"] == role.outputs["arn"]
    attached = {
        a.inputs["policyArn"] for a in prod.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    }
    assert attached == {
        "arn:aws:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup",
        "arn:aws:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores",
        "arn:aws:iam::aws:policy/AWSBackupServiceRolePolicyForS3Backup",
        "arn:aws:iam::aws:policy/AWSBackupServiceRolePolicyForS3Restore",
    }
    (keys,) = statements_of(prod, "backup-role-policy")
    assert keys["Resource"] == [
        prod.one("aws:kms/key:Key", "backup-vault-key").outputs["arn"],
        prod.one("aws:kms/key:Key", "copy-vault-key").outputs["arn"],
    ]


def test_production_runs_at_least_two_tasks(prod_config, prod):
    assert prod_config.service.autoscale_min_capacity >= 2
    assert prod.one("aws:ecs/service:Service").inputs["desiredCount"] >= 2
    assert len(prod_config.network.private_subnet_ids) >= 2  # spread over availability zones


# --- HealthImaging ----------------------------------------------------------------------------
def test_import_role_reads_input_and_writes_results_only(dev, prod):
    role = dev.one("aws:iam/role:Role", "ahi-import")
    (trust,) = role.json("assumeRolePolicy")["Statement"]
    assert trust["Principal"] == {"Service": "medical-imaging.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    dicom, results = bucket(dev, "dicom").outputs["arn"], bucket(dev, "results").outputs["arn"]
    grants = {s["Sid"]: (s["Action"], s["Resource"]) for s in statements_of(dev, "ahi-import")}
    assert grants == {
        "ReadImportInput": (["s3:GetObject"], [f"{dicom}/{INCOMING_PREFIX}*"]),
        "ListImportInput": (["s3:ListBucket"], [dicom]),
        "WriteImportResults": (["s3:PutObject"], [f"{results}/*"]),
    }
    prod_grants = {s["Sid"] for s in statements_of(prod, "ahi-import")}
    assert prod_grants == set(grants) | {"UseDataKeys"}


def test_datastore_is_created_or_taken_from_config(dev, existing):
    datastore = dev.one("aws-native:healthimaging:Datastore")
    assert datastore.inputs["datastoreName"] == "dicom-ingest-dev"
    assert existing.of_type("aws-native:healthimaging:Datastore") == []


# --- import workflow --------------------------------------------------------------------------
def _functions(graph: Graph) -> dict[str, object]:
    return {f.name.removeprefix("dicom-workflow-").replace("-", "_"): f for f in graph.of_type(LAMBDA)}


def test_one_function_per_spec_with_its_sizes(dev, dev_config, package):
    functions = _functions(dev)
    assert set(functions) == {spec.name for spec in FUNCTIONS}
    for spec in FUNCTIONS:
        fn = functions[spec.name].inputs
        assert fn["handler"] == spec.handler
        assert (fn["timeout"], fn["memorySize"]) == (spec.timeout_seconds, spec.memory_mb)
        assert fn["reservedConcurrentExecutions"] == (spec.reserved_concurrency or -1)
        assert fn["runtime"] == "python3.12" and fn["architectures"] == ["arm64"]
        assert fn["tracingConfig"] == {"mode": "Active"}
        assert fn["sourceCodeHash"] == package.sha256_base64
        assert fn["layers"] == [
            f"arn:aws:lambda:{REGION}:017000801446:layer:AWSLambdaPowertoolsPythonV3-python312-arm64:"
            f"{dev_config.functions.powertools_layer_version}"
        ]
        group = dev.one("aws:cloudwatch/logGroup:LogGroup", f"{functions[spec.name].name}-logs")
        assert fn["loggingConfig"] == {"logFormat": "JSON", "logGroup": group.outputs["name"]}
        assert group.inputs["retentionInDays"] == 14
    assert functions["start_import"].inputs["reservedConcurrentExecutions"] == 1


def test_function_memory_is_configurable_per_function(prod, prod_config):
    functions = _functions(prod)
    assert (
        functions["start_import"].inputs["memorySize"] == prod_config.functions.start_import_memory_mb == 2048
    )
    for spec in FUNCTIONS:
        assert functions[spec.name].inputs["memorySize"] == prod_config.functions.memory_mb(spec.name)
        if spec.name != "start_import":
            assert functions[spec.name].inputs["memorySize"] == spec.memory_mb


def test_function_environment_is_the_workflow_model(dev, dev_config):
    resources = WorkflowResources(
        dicom_bucket=bucket(dev, "dicom").outputs["bucket"],
        results_bucket=bucket(dev, "results").outputs["bucket"],
        job_table=dev.one("aws:dynamodb/table:Table").outputs["name"],
        state_machine_arn=dev.one("aws:sfn/stateMachine:StateMachine").outputs["arn"],
        datastore_id=dev.one("aws-native:healthimaging:Datastore").outputs["datastoreId"],
        import_role_arn=dev.one("aws:iam/role:Role", "ahi-import").outputs["arn"],
        dlq_url=dev.one("aws:sqs/queue:Queue").outputs["url"],
    )
    expected = {
        **resources.to_env("workflow"),
        **dev_config.workflow.to_env("workflow"),
        "POWERTOOLS_SERVICE_NAME": "dicom-ingest",
        "POWERTOOLS_METRICS_NAMESPACE": "DicomIngest/Workflow",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
    }
    assert expected["WORKFLOW_POLL_SECONDS"] == "20"
    for fn in dev.of_type(LAMBDA):
        assert fn.inputs["environment"]["variables"] == expected


def test_state_machine_runs_the_asl_builders_definition(graph, request):
    config = {"dev": "dev_config", "prod": "prod_config", "existing": "existing_config"}
    settings = request.getfixturevalue(config[request.node.callspec.params["graph"]]).workflow
    machine = graph.one("aws:sfn/stateMachine:StateMachine")
    arns = {name: fn.outputs["arn"] for name, fn in _functions(graph).items()}
    assert machine.json("definition") == json.loads(json.dumps(build_definition(arns, settings)))
    assert machine.inputs["loggingConfiguration"]["level"] == "ALL"
    assert machine.inputs["tracingConfiguration"] == {"enabled": True}
    log_group = graph.one("aws:cloudwatch/logGroup:LogGroup", "state-machine-logs")
    assert machine.inputs["loggingConfiguration"]["logDestination"] == log_group.outputs["arn"] + ":*"


def test_manifests_trigger_the_trigger_function(dev):
    notification = dev.one("aws:s3/bucketNotification:BucketNotification")
    assert notification.inputs["bucket"] == bucket(dev, "dicom").outputs["id"]
    (target,) = notification.inputs["lambdaFunctions"]
    trigger = _functions(dev)["trigger"]
    assert target["lambdaFunctionArn"] == trigger.outputs["arn"]
    assert (target["filterPrefix"], target["filterSuffix"]) == (BATCHES_PREFIX, MANIFEST_SUFFIX)
    assert target["events"] == ["s3:ObjectCreated:*"]
    permission = dev.one("aws:lambda/permission:Permission", "s3-invokes-trigger")
    assert permission.inputs["principal"] == "s3.amazonaws.com"
    assert permission.inputs["sourceArn"] == bucket(dev, "dicom").outputs["arn"]


def test_sweeper_runs_on_a_schedule(dev):
    rule = dev.one("aws:cloudwatch/eventRule:EventRule")
    assert rule.inputs["scheduleExpression"] == "rate(15 minutes)"
    target = dev.one("aws:cloudwatch/eventTarget:EventTarget")
    assert target.inputs["arn"] == _functions(dev)["sweeper"].outputs["arn"]
    assert (
        dev.one("aws:lambda/permission:Permission", "invokes-sweeper").inputs["principal"]
        == "events.amazonaws.com"
    )


def test_dlq_is_encrypted_and_catches_failed_async_triggers(dev, prod):
    queue = dev.one("aws:sqs/queue:Queue")
    assert queue.inputs["sqsManagedSseEnabled"] is True
    assert _functions(dev)["trigger"].inputs["deadLetterConfig"] == {"targetArn": queue.outputs["arn"]}
    assert (
        prod.one("aws:sqs/queue:Queue").inputs["kmsMasterKeyId"]
        == prod.one("aws:kms/key:Key", "storage-key").outputs["arn"]
    )


def test_functions_get_only_what_they_do(dev):
    def actions(fn: str) -> set[str]:
        return {a for s in statements_of(dev, f"workflow-{fn}-policy") for a in s["Action"]}

    assert "medical-imaging:StartDICOMImportJob" in actions("start-import")
    assert "iam:PassRole" in actions("start-import")
    assert "medical-imaging:StartDICOMImportJob" not in actions("check-status")
    assert "states:StartExecution" in actions("trigger") and "states:StartExecution" not in actions("sweeper")
    assert "sqs:SendMessage" in actions("failure")
    (pass_role,) = [
        s for s in statements_of(dev, "workflow-start-import-policy") if s["Sid"] == "PassImportRole"
    ]
    assert pass_role["Resource"] == [dev.one("aws:iam/role:Role", "ahi-import").outputs["arn"]]


# --- load balancer ----------------------------------------------------------------------------
def test_nlb_is_internal_in_private_subnets(graph):
    nlb = graph.one("aws:lb/loadBalancer:LoadBalancer")
    assert nlb.inputs["loadBalancerType"] == "network" and nlb.inputs["internal"] is True
    service = graph.one("aws:ecs/service:Service")
    subnets = nlb.inputs.get("subnets") or [m["subnetId"] for m in nlb.inputs["subnetMappings"]]
    assert subnets == service.inputs["networkConfiguration"]["subnets"]


def test_fixed_private_addresses_are_one_subnet_mapping_each_and_an_output(prod, prod_config, dev, existing):
    nlb = prod.one("aws:lb/loadBalancer:LoadBalancer").inputs
    subnets = prod_config.network.private_subnet_ids
    addresses = ["10.20.1.10", "10.20.2.10", "10.20.3.10"]
    assert "subnets" not in nlb
    assert nlb["subnetMappings"] == [
        {"subnetId": s, "privateIpv4Address": a} for s, a in zip(subnets, addresses, strict=True)
    ]
    assert prod.outputs["endpointIps"] == addresses == prod_config.loadBalancer.private_ips
    for graph in (dev, existing):  # AWS-assigned addresses: plain subnets, no output
        assert "subnetMappings" not in graph.one("aws:lb/loadBalancer:LoadBalancer").inputs
        assert "endpointIps" not in graph.outputs


def test_a_public_nlb_takes_elastic_ips_per_subnet(package):
    allocations = ["eipalloc-0aaa1111bbbb2222c", "eipalloc-0aaa1111bbbb2222d"]
    public = from_flat(
        {
            "loadBalancerPublic": "true",
            "loadBalancerAllowedCidrs": "192.0.2.0/24",
            "loadBalancerEipAllocationIds": ",".join(allocations),
        },
        stack="edge",
    )
    graph = _run(public, package)
    nlb = graph.one("aws:lb/loadBalancer:LoadBalancer").inputs
    vpc = graph.one("awsx:ec2:Vpc").outputs
    assert nlb["internal"] is False
    assert nlb["subnetMappings"] == [
        {"subnetId": s, "allocationId": a} for s, a in zip(vpc["publicSubnetIds"], allocations, strict=True)
    ]
    assert graph.outputs["endpointIps"] == ["198.51.100.44", "198.51.100.45"]  # the EIPs' public IPs


def _listeners(graph: Graph) -> dict[int, dict]:
    return {
        int(listener.inputs["port"]): listener.inputs
        for listener in graph.of_type("aws:lb/listener:Listener")
    }


def test_listeners_per_stack(dev, prod, existing):
    assert {p: lis["protocol"] for p, lis in _listeners(dev).items()} == {11112: "TCP"}
    assert {p: lis["protocol"] for p, lis in _listeners(prod).items()} == {2762: "TCP"}  # TLS passed through
    assert {p: lis["protocol"] for p, lis in _listeners(existing).items()} == {11112: "TCP", 2762: "TCP"}


@pytest.fixture(scope="module")
def terminating(package) -> Graph:
    """TLS terminated on the NLB with an ACM certificate, forwarded to the SCP's plain port."""
    certificate = "arn:aws:acm:eu-central-1:123456789012:certificate/0b9a5f1e-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
    config = from_flat(
        {
            "loadBalancerPlainListener": "false",
            "loadBalancerTlsMode": "terminate",
            "loadBalancerCertificateArn": certificate,
        },
        stack="acm",
    )
    return _run(config, package)


def test_tls_terminated_on_the_nlb_uses_the_acm_certificate(terminating):
    (listener,) = terminating.of_type("aws:lb/listener:Listener")
    assert (int(listener.inputs["port"]), listener.inputs["protocol"]) == (2762, "TLS")
    assert listener.inputs["certificateArn"].startswith("arn:aws:acm:")
    assert listener.inputs["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    (group,) = terminating.of_type("aws:lb/targetGroup:TargetGroup")
    assert int(group.inputs["port"]) == 11112  # decrypted traffic to the plain port
    (container,) = terminating.one("aws:ecs/taskDefinition:TaskDefinition").json("containerDefinitions")
    assert container["secrets"] == []


def test_tcp_listeners_state_the_idle_timeout_the_keepalive_stays_under(graph, request):
    config = request.getfixturevalue(f"{request.node.callspec.params['graph']}_config")
    for listener in _listeners(graph).values():
        if listener["protocol"] == "TCP":
            assert listener["tcpIdleTimeoutSeconds"] == config.loadBalancer.tcp_idle_timeout_seconds == 350
        else:  # TLS listeners have a fixed 350 s; AWS refuses the setting there
            assert "tcpIdleTimeoutSeconds" not in listener
    assert config.scp.keepalive_idle_seconds < 350


def test_target_groups_forward_to_the_scp_and_check_readiness(dev, prod, existing, dev_config, prod_config):
    for graph, forwards in (
        (dev, {11112: 11112}),
        (prod, {2762: 2762}),
        (existing, {11112: 11112, 2762: 2762}),
    ):
        groups = {g.outputs["arn"]: g.inputs for g in graph.of_type("aws:lb/targetGroup:TargetGroup")}
        for port, listener in _listeners(graph).items():
            group = groups[listener["defaultActions"][0]["targetGroupArn"]]
            assert int(group["port"]) == forwards[port]
            assert group["targetType"] == "ip" and group["protocol"] == "TCP"
            assert group["healthCheck"]["port"] == "8080" and group["healthCheck"]["path"] == "/readyz"
    assert all(
        g.inputs["deregistrationDelay"] >= dev_config.scp.drain_seconds
        for g in dev.of_type("aws:lb/targetGroup:TargetGroup")
    )
    (prod_group,) = prod.of_type("aws:lb/targetGroup:TargetGroup")
    assert int(prod_group.inputs["deregistrationDelay"]) == 90 >= prod_config.scp.drain_seconds


def test_nlb_admits_only_configured_clients(dev, prod, existing):
    def ingress(graph: Graph) -> set[tuple[int, str]]:
        nlb_group = graph.one("aws:ec2/securityGroup:SecurityGroup", "lb-nlb")
        return {
            (int(r.inputs["fromPort"]), r.inputs["cidrIpv4"])
            for r in graph.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
            if r.inputs["securityGroupId"] == nlb_group.outputs["id"]
        }

    assert ingress(dev) == {(11112, "10.0.0.0/8")}
    assert ingress(prod) == {(2762, "10.20.0.0/16"), (2762, "10.30.4.0/24")}
    assert ingress(existing) == {(11112, EXISTING_VPC_CIDR), (2762, EXISTING_VPC_CIDR)}  # default: the VPC


# --- SCP service ------------------------------------------------------------------------------
def _container(graph: Graph) -> dict:
    (container,) = graph.one("aws:ecs/taskDefinition:TaskDefinition").json("containerDefinitions")
    return container


def test_image_is_built_from_the_scp_dockerfile_or_taken_prebuilt(dev, existing):
    image = dev.one("awsx:ecr:Image")
    assert image.inputs["dockerfile"] == str(ROOT / "scp" / "Dockerfile")
    assert image.inputs["context"] == str(ROOT)
    assert image.inputs["repositoryUrl"] == dev.one("aws:ecr/repository:Repository").outputs["repositoryUrl"]
    assert _container(dev)["image"].startswith(image.inputs["repositoryUrl"] + "@sha256:")
    assert (
        existing.of_type("awsx:ecr:Image") == [] and existing.of_type("aws:ecr/repository:Repository") == []
    )
    assert _container(existing)["image"] == EXISTING_VPC["serviceImageUri"]


def test_cluster_has_container_insights(graph):
    assert graph.one("aws:ecs/cluster:Cluster").inputs["settings"] == [
        {"name": "containerInsights", "value": "enabled"}
    ]


def test_task_definition_is_a_hardened_fargate_task(dev, prod, prod_config):
    for graph, cpu, memory in ((dev, "1024", "2048"), (prod, "2048", "4096")):
        task = graph.one("aws:ecs/taskDefinition:TaskDefinition").inputs
        assert (task["cpu"], task["memory"]) == (cpu, memory)
        assert task["requiresCompatibilities"] == ["FARGATE"] and task["networkMode"] == "awsvpc"
        assert task["ephemeralStorage"] == {"sizeInGib": 50}
        container = _container(graph)
        assert container["readonlyRootFilesystem"] is True
        assert container["user"] and not container["user"].startswith(("0", "root"))
        assert {"/tmp"} <= {m["containerPath"] for m in container["mountPoints"]}
        assert (
            container["healthCheck"]["command"][0] == "CMD"
            and "/healthz" in container["healthCheck"]["command"][-1]
        )
        assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert _container(prod)["stopTimeout"] == 90 >= prod_config.scp.drain_seconds


@pytest.mark.parametrize("shape", ["dev", "prod", "existing"])
def test_container_environment_is_the_config_models(request, shape):
    graph = request.getfixturevalue(shape)
    config = request.getfixturevalue(f"{shape}_config")
    settings = deployed_scp_settings(config.scp, bucket(graph, "dicom").outputs["bucket"])
    environment = {e["name"]: e["value"] for e in _container(graph)["environment"]}
    assert environment == settings.to_env("scp")
    assert environment["SCP_STORAGE_URI"] == f"s3://{bucket(graph, 'dicom').outputs['bucket']}"
    assert environment["SCP_AE_TITLE"] == config.scp.ae_title


def test_tls_material_reaches_the_task_only_as_secrets(prod, existing, prod_config, existing_config):
    for graph, config in ((prod, prod_config), (existing, existing_config)):
        container = _container(graph)
        expected = {
            "SCP_TLS_CERT_PEM": config.service.tls_certificate_secret_arn,
            "SCP_TLS_KEY_PEM": config.service.tls_key_secret_arn,
        }
        if config.service.tls_ca_secret_arn:
            expected["SCP_TLS_CA_PEM"] = config.service.tls_ca_secret_arn
        assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == expected
        environment = {e["name"]: e["value"] for e in container["environment"]}
        assert not any(name.endswith("_PEM") for name in environment)  # never in clear
        assert environment["SCP_TLS_KEY_FILE"].startswith("/tmp/")  # where the SCP writes it, then removes it
        assert "/tmp" in {m["containerPath"] for m in container["mountPoints"]}
    assert len(existing_config.service.tls_secrets) == 3


def test_execution_role_reads_exactly_the_tls_secrets_and_decrypts_through_secrets_manager(
    prod, existing, dev, prod_config, existing_config
):
    def grants(graph):
        return {s["Sid"]: s for s in statements_of(graph, "scp-execution-policy")}

    for graph, config in ((prod, prod_config), (existing, existing_config)):
        read = grants(graph)["ReadTlsSecrets"]
        assert read["Action"] == ["secretsmanager:GetSecretValue"]
        assert read["Resource"] == sorted(config.service.tls_secrets.values())
    decrypt = grants(prod)["DecryptTlsSecrets"]
    assert decrypt["Action"] == ["kms:Decrypt"]
    assert decrypt["Resource"] == [prod_config.service.secrets_kms_key_arn]
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}
    }
    assert "DecryptTlsSecrets" not in grants(existing)  # the AWS-managed key needs no grant
    assert {"ReadTlsSecrets", "DecryptTlsSecrets"}.isdisjoint(grants(dev))
    # The task role (the SCP's own code) gets no access to the secrets at all.
    for graph in (prod, existing):
        assert all(
            "secretsmanager" not in a for s in statements_of(graph, "scp-task-policy") for a in s["Action"]
        )


def test_deploy_time_keys_are_the_fields_the_program_sets():
    from core.config import DEPLOY_TIME_KEYS, flat_keys
    from core.scp_settings import ScpSettings

    stack = ScpSettings(storage_uri="file:///x", task_id="me", bind_address="127.0.0.1")
    deployed = deployed_scp_settings(stack, "bucket-1", commitment_table="jobs")
    changed = {f for f in ScpSettings.model_fields if getattr(stack, f) != getattr(deployed, f)}
    assert {flat_keys()[k][1] for k in DEPLOY_TIME_KEYS} == changed


def test_service_runs_privately_with_rollback(graph):
    service = graph.one("aws:ecs/service:Service").inputs
    assert service["networkConfiguration"]["assignPublicIp"] is False
    assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert service["launchType"] == "FARGATE"
    groups = {g.outputs["arn"]: g for g in graph.of_type("aws:lb/targetGroup:TargetGroup")}
    for attachment in service["loadBalancers"]:
        assert attachment["containerName"] == "scp"
        assert attachment["containerPort"] == groups[attachment["targetGroupArn"]].inputs["port"]
    assert len(service["loadBalancers"]) == len(groups)


def test_task_role_writes_only_incoming_and_batches(graph):
    dicom = bucket(graph, "dicom").outputs["arn"]
    grants = [s for s in statements_of(graph, "scp-task-policy") if s["Sid"] != "UseDataKeys"]
    assert grants == [
        {
            "Sid": "WriteIncomingAndManifests",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": [f"{dicom}/{INCOMING_PREFIX}*", f"{dicom}/{BATCHES_PREFIX}*"],
        },
        {"Sid": "ReadinessCheck", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [dicom]},
        {
            "Sid": "MountJournal",
            "Effect": "Allow",
            "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"],
            "Resource": [graph.one(EFS).outputs["arn"]],
        },
    ]


EFS = "aws:efs/fileSystem:FileSystem"


def test_journal_is_an_encrypted_elastic_efs_mounted_in_every_private_subnet(dev, prod, existing):
    for graph, subnets in ((dev, 2), (prod, 3), (existing, 2)):
        fs = graph.one(EFS)
        assert fs.inputs["encrypted"] is True and fs.inputs["throughputMode"] == "elastic"
        assert fs.inputs["performanceMode"] == "generalPurpose"
        targets = graph.of_type("aws:efs/mountTarget:MountTarget")
        assert len(targets) == subnets and len({t.inputs["subnetId"] for t in targets}) == subnets
        point = graph.one("aws:efs/accessPoint:AccessPoint").inputs
        assert point["posixUser"] == {"uid": 10001.0, "gid": 10001.0}
        volume = next(
            v
            for v in graph.one("aws:ecs/taskDefinition:TaskDefinition").inputs["volumes"]
            if v["name"] == "journal"
        )
        efs = volume["efsVolumeConfiguration"]
        assert efs["transitEncryption"] == "ENABLED" and efs["authorizationConfig"]["iam"] == "ENABLED"
        [container] = json.loads(
            graph.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
        )
        assert container["readonlyRootFilesystem"] is True
        mount = next(m for m in container["mountPoints"] if m["sourceVolume"] == "journal")
        assert mount["readOnly"] is False
        env = {e["name"]: e["value"] for e in container["environment"]}
        assert env["SCP_JOURNAL_DIR"] == mount["containerPath"]


def _ingress_rules(graph, group) -> list[dict]:
    return [
        r.inputs
        for r in graph.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["securityGroupId"] == group.outputs["id"]
    ]


def test_journal_accepts_nfs_only_from_the_scp_tasks(graph):
    tasks = graph.one("aws:ec2/securityGroup:SecurityGroup", "scp-tasks")
    nfs = graph.one("aws:ec2/securityGroup:SecurityGroup", "scp-journal-nfs")
    rules = _ingress_rules(graph, nfs)
    assert [(r["referencedSecurityGroupId"], int(r["fromPort"]), int(r["toPort"])) for r in rules] == [
        (tasks.outputs["id"], 2049, 2049)
    ]
    for target in graph.of_type("aws:efs/mountTarget:MountTarget"):
        assert target.inputs["securityGroups"] == [nfs.outputs["id"]]


def test_journal_none_creates_no_file_system(package):
    config = from_flat({"scpJournal": "none"}, stack="nojournal")
    graph = _run(config, package)
    assert not graph.of_type(EFS)
    [container] = json.loads(
        graph.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"]
    )
    assert "SCP_JOURNAL_DIR" not in {e["name"] for e in container["environment"]}


def test_tasks_accept_only_the_nlb(graph):
    tasks = graph.one("aws:ec2/securityGroup:SecurityGroup", "scp-tasks")
    nlb = graph.one("aws:ec2/securityGroup:SecurityGroup", "lb-nlb")
    rules = _ingress_rules(graph, tasks)
    assert rules and all(r["referencedSecurityGroupId"] == nlb.outputs["id"] for r in rules)
    assert 8080 in {int(r["fromPort"]) for r in rules}


def test_autoscaling_tracks_cpu(dev, prod):
    for graph, low, high in ((dev, 1, 3), (prod, 2, 6)):
        target = graph.one("aws:appautoscaling/target:Target").inputs
        assert (target["minCapacity"], target["maxCapacity"]) == (low, high)
        assert target["scalableDimension"] == "ecs:service:DesiredCount"
        tracking = graph.one("aws:appautoscaling/policy:Policy").inputs[
            "targetTrackingScalingPolicyConfiguration"
        ]
        assert tracking["targetValue"] == 50
        assert (
            tracking["predefinedMetricSpecification"]["predefinedMetricType"]
            == "ECSServiceAverageCPUUtilization"
        )
        assert (tracking["scaleInCooldown"], tracking["scaleOutCooldown"]) == (60, 60)


# --- monitoring -------------------------------------------------------------------------------
def test_every_failure_mode_has_an_alarm_to_the_topic(dev):
    topic = dev.one("aws:sns/topic:Topic")
    alarms = dev.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    watched = {(a.inputs.get("namespace"), a.inputs.get("metricName")) for a in alarms}
    assert {
        ("AWS/ECS", "CPUUtilization"),
        ("AWS/ECS", "MemoryUtilization"),
        ("AWS/NetworkELB", "UnHealthyHostCount"),
        ("AWS/NetworkELB", "HealthyHostCount"),
        ("AWS/States", "ExecutionsFailed"),
        ("AWS/States", "ExecutionsTimedOut"),
        ("AWS/States", "ExecutionTime"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/Lambda", "Errors"),
    } <= watched
    lambda_alarms = {
        a.inputs["dimensions"]["FunctionName"] for a in alarms if a.inputs.get("metricName") == "Errors"
    }
    assert lambda_alarms == {f.outputs["name"] for f in dev.of_type(LAMBDA)}
    (store,) = [a for a in alarms if "store-failures" in a.name]
    assert (
        store.inputs["metricQueries"][0]["expression"] == 'SELECT SUM(StoreFailures) FROM "DicomIngest/Scp"'
    )
    (backlog,) = [a for a in alarms if "journal-backlog-age" in a.name]
    assert (
        backlog.inputs["metricQueries"][0]["expression"]
        == 'SELECT MAX(JournalOldestAge) FROM "DicomIngest/Scp"'
    )
    assert backlog.inputs["threshold"] == 300
    assert all(a.inputs["alarmActions"] == [topic.outputs["arn"]] for a in alarms)
    # CloudWatch can publish only to topics under a customer key whose policy lets it.
    key = dev.by_arn(topic.inputs["kmsMasterKeyId"])
    grants = {st["Principal"].get("Service"): st["Action"] for st in key.json("policy")["Statement"]}
    assert set(grants["cloudwatch.amazonaws.com"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}


@pytest.mark.parametrize(
    ("alarm", "namespace", "metric", "dimensions"),
    [
        ("workflow-jobs-partial", "DicomIngest/Workflow", "JobsPartial", {"service": "dicom-ingest"}),
        ("workflow-instances-failed", "DicomIngest/Workflow", "InstancesFailed", {"service": "dicom-ingest"}),
        ("scp-rejected-associations", "DicomIngest/Scp", "RejectedAssociations", {"Service": "dicom-scp"}),
    ],
)
def test_what_nobody_is_told_raises_an_alarm(graph, alarm, namespace, metric, dimensions):
    found = graph.one("aws:cloudwatch/metricAlarm:MetricAlarm", f"monitoring-{alarm}").inputs
    assert (found["namespace"], found["metricName"], found["dimensions"]) == (namespace, metric, dimensions)
    assert (found["statistic"], found["threshold"], found["comparisonOperator"]) == (
        "Sum",
        0,
        "GreaterThanThreshold",
    )
    assert found["treatMissingData"] == "notBreaching"
    assert found["alarmActions"] == [graph.one("aws:sns/topic:Topic").outputs["arn"]]


def test_alarmed_metrics_are_the_ones_the_code_emits():
    """The alarms' dimensions are core/contracts.py's; these are the metric names the code emits."""
    record_results = (ROOT / "handlers" / "record_results.py").read_text()
    assert '"InstancesFailed"' in record_results and 'f"Jobs{status.title()}"' in record_results
    assert "PARTIAL" in record_results  # -> JobsPartial
    assert '"RejectedAssociations"' in (ROOT / "scp" / "metrics.py").read_text()
    assert "drain_emf(SCP_DIMENSIONS" in (ROOT / "scp" / "server.py").read_text()


def test_pulumi_up_warns_when_nobody_gets_the_alarms(dev, prod):
    assert any(w.startswith("monitoringAlarmEmail is empty") for w in dev.warnings)
    assert prod.warnings == []  # an e-mail address and two tasks


def test_alarm_email_and_dashboard(dev, prod):
    assert dev.of_type("aws:sns/topicSubscription:TopicSubscription") == []
    subscription = prod.one("aws:sns/topicSubscription:TopicSubscription")
    assert (subscription.inputs["protocol"], subscription.inputs["endpoint"]) == (
        "email",
        "imaging-ops@example.org",
    )
    body = dev.one("aws:cloudwatch/dashboard:Dashboard").json("dashboardBody")
    titles = {w["properties"]["title"] for w in body["widgets"]}
    assert {"SCP store failures", "Import executions", "Dead-letter queue", "NLB targets"} <= titles
    assert {"Partial imports, failed instances", "Rejected associations"} <= titles
    assert "SCP journal backlog (files, oldest age s)" in titles


# --- cost -------------------------------------------------------------------------------------
def _provider_tags(graph: Graph) -> dict[str, dict[str, str]]:
    """Provider reference -> the default tags it puts on every resource it manages."""
    return {
        f"{p.urn}::{p.outputs['id']}": json.loads(p.inputs["defaultTags"])["tags"]
        for p in graph.of_type("pulumi:providers:aws")
    }


def test_every_resource_carries_the_stacks_cost_allocation_tags(graph, request):
    config = request.getfixturevalue(f"{request.node.callspec.params['graph']}_config")
    expected = {"project": "dicom-ingest", "stack": config.stack}
    if config.cost.center:
        expected["cost-center"] = config.cost.center
    providers = _provider_tags(graph)
    assert providers and all(tags == expected for tags in providers.values())
    custom = [r for r in graph.resources if r.type.startswith("aws:")]
    assert custom and [r.name for r in custom if providers.get(r.provider) != expected] == []
    for component in [r for r in graph.resources if r.type.startswith("awsx:")]:  # remote components
        assert providers[component.providers["aws"]] == expected
    for native in [r for r in graph.resources if r.type.startswith("aws-native:")]:
        assert native.inputs["tags"] == expected  # aws-native takes no AWS provider default tags
    overridden = [
        f"{r.name}:{k}"
        for r in custom
        for k, v in (r.inputs.get("tags") or {}).items()
        if expected.get(k, v) != v
    ]
    assert overridden == []


def test_production_has_a_cost_center_and_a_monthly_budget_alerting_the_topic(prod, dev):
    assert dev.of_type("aws:budgets/budget:Budget") == []
    budget = prod.one("aws:budgets/budget:Budget").inputs
    topic = prod.one("aws:sns/topic:Topic").outputs["arn"]
    assert (budget["budgetType"], budget["timeUnit"]) == ("COST", "MONTHLY")
    assert (budget["limitAmount"], budget["limitUnit"]) == ("1500.00", "USD")
    assert budget["costFilters"] == [{"name": "TagKeyValue", "values": ["user:stack$prod"]}]
    assert {n["notificationType"] for n in budget["notifications"]} == {"ACTUAL", "FORECASTED"}
    for notification in budget["notifications"]:
        assert notification["subscriberSnsTopicArns"] == [topic]
        assert (notification["threshold"], notification["thresholdType"]) == (80, "PERCENTAGE")
    # Budgets may publish to the (KMS-encrypted) topic: in the topic policy and in the key policy.
    statements = {
        s["Sid"]: s for s in prod.one("aws:sns/topicPolicy:TopicPolicy").json("policy")["Statement"]
    }
    assert statements["BudgetsPublishes"]["Principal"] == {"Service": "budgets.amazonaws.com"}
    assert statements["BudgetsPublishes"]["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    key = prod.by_arn(prod.one("aws:sns/topic:Topic").inputs["kmsMasterKeyId"])
    assert "BudgetsPublishes" in {s["Sid"] for s in key.json("policy")["Statement"]}
    dev_statements = {
        s["Sid"] for s in dev.one("aws:sns/topicPolicy:TopicPolicy").json("policy")["Statement"]
    }
    assert dev_statements == {"AccountManages", "CloudWatchPublishes"}


# --- security policies over the whole graph ---------------------------------------------------
def test_no_wildcard_actions(graph):
    assert policies.wildcard_actions(graph) == []


def test_no_wildcard_resources_except_justified(graph):
    assert policies.wildcard_resources(graph) == []


def test_no_resource_policy_allows_everyone(graph):
    assert policies.public_principals(graph) == []


def test_no_security_group_open_to_the_world(graph):
    assert policies.open_ingress(graph, public=False) == []


def test_a_public_stack_must_say_so(dev_config, package):
    public = from_flat({"loadBalancerPublic": "true", "loadBalancerAllowedCidrs": "0.0.0.0/0"}, stack="edge")
    graph = _run(public, package)
    assert graph.one("aws:lb/loadBalancer:LoadBalancer").inputs["internal"] is False
    assert policies.open_ingress(graph, public=False) == ["dicom-lb-dicom-from-0: ingress from 0.0.0.0/0"]
    assert policies.open_ingress(graph, public=True) == []


def test_commitment_peers_get_the_job_table_an_egress_rule_and_a_dynamodb_endpoint(package):
    config = from_flat({**EXISTING_VPC, "scpCommitmentPeers": "CT-1=10.20.30.40:104"}, stack="hospital")
    graph = _run(config, package)
    environment = {e["name"]: e["value"] for e in _container(graph)["environment"]}
    assert environment["SCP_COMMITMENT_TABLE"] == graph.one("aws:dynamodb/table:Table").outputs["name"]
    assert environment["SCP_COMMITMENT_PEERS"] == "CT-1=10.20.30.40:104"
    egress = [r.inputs for r in graph.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")]
    assert {"cidrIpv4": "10.20.30.40/32", "fromPort": 104, "toPort": 104} in [
        {k: e.get(k) for k in ("cidrIpv4", "fromPort", "toPort")} for e in egress
    ]
    endpoints = [r.inputs["serviceName"] for r in graph.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")]
    assert any(str(name).endswith(".dynamodb") for name in endpoints)
    sids = {
        s["Sid"]
        for r in graph.of_type("aws:iam/rolePolicy:RolePolicy")
        for s in r.json("policy")["Statement"]
    }
    assert {"CommitmentItems", "CommitmentQueue"} <= sids
    alarms = {r.name for r in graph.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert any(name.endswith("scp-commitment-undelivered") for name in alarms)


def test_no_commitment_without_peers(dev):
    environment = {e["name"]: e["value"] for e in _container(dev)["environment"]}
    assert environment.get("SCP_COMMITMENT_TABLE", "") == ""
