"""Run a Pulumi program offline under recording mocks and return the whole resource graph.

``RecordingMocks`` fills the computed outputs a real provider would (arn, id, name, dnsName, ...);
``RecordingMonitor`` also keeps each registration's options (parent, retainOnDelete). Inputs are
recorded as the engine would receive them: camelCase keys, numbers as floats, Outputs resolved.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ACCOUNT = "123456789012"
REGION = "eu-central-1"
EXISTING_VPC_CIDR = "10.20.0.0/16"
EXISTING_S3_PREFIX_LIST = "pl-0e5a4c3b2a1f09876"  # of an existing VPC's own S3 gateway endpoint


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    parent: str = ""
    retain_on_delete: bool = False
    provider: str = ""  # the provider reference ("<urn>::<id>") a custom resource was registered with
    providers: dict[str, str] = field(default_factory=dict)  # a component's package -> provider reference

    def json(self, key: str) -> Any:
        """An input holding a JSON document (policies, container definitions, ASL), parsed."""
        return json.loads(self.inputs[key])


@dataclass
class Graph:
    resources: list[Resource]
    outputs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what `pulumi up` would print as warnings

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name_part: str = "") -> Resource:
        found = [r for r in self.of_type(type_) if name_part in r.name]
        assert len(found) == 1, f"expected one {type_} named *{name_part}*, found {[r.name for r in found]}"
        return found[0]

    def by_id(self, id_: Any) -> Resource:
        found = [r for r in self.resources if r.outputs.get("id") == id_]
        assert len(found) == 1, f"no single resource with id {id_!r}"
        return found[0]

    def by_arn(self, arn: Any) -> Resource:
        found = [r for r in self.resources if r.outputs.get("arn") == arn]
        assert len(found) == 1, f"no single resource with arn {arn!r}"
        return found[0]

    def children(self, parent: Resource, type_: str) -> list[Resource]:
        return [r for r in self.of_type(type_) if r.parent == parent.urn]


def _computed(type_: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The outputs a provider would compute, deterministic from the logical name."""
    service = type_.split(":")[1].split("/")[0]
    physical = inputs.get("name") or f"{name}-1a2b3c"
    out: dict[str, Any] = {
        "arn": f"arn:aws:{service}:{REGION}:{ACCOUNT}:{type_.rsplit(':', 1)[-1].lower()}/{physical}",
        "name": physical,
    }
    if type_ == "aws:s3/bucket:Bucket":
        out.update(bucket=physical, arn=f"arn:aws:s3:::{physical}")
    elif type_ == "aws:sfn/stateMachine:StateMachine":
        out["arn"] = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{physical}"
    elif type_ == "aws:lambda/function:Function":
        out["arn"] = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{physical}"
    elif type_ == "aws:sqs/queue:Queue":
        out["url"] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical}"
    elif type_ == "aws:lb/loadBalancer:LoadBalancer":
        out.update(
            dnsName=f"{physical}.elb.{REGION}.amazonaws.com", arnSuffix=f"net/{physical}/0123456789abcdef"
        )
    elif type_ == "aws:lb/targetGroup:TargetGroup":
        out["arnSuffix"] = f"targetgroup/{physical}/fedcba9876543210"
    elif type_ == "aws:ec2/vpcEndpoint:VpcEndpoint":
        out["prefixListId"] = "pl-6ea54007"
    elif type_ == "aws:ecr/repository:Repository":
        out["repositoryUrl"] = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{physical}"
    elif type_ == "aws:cloudwatch/dashboard:Dashboard":
        out["dashboardName"] = inputs.get("dashboardName")
    elif type_ == "aws:cloudwatch/logGroup:LogGroup":
        out["arn"] = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{physical}"
    elif type_ == "aws-native:healthimaging:Datastore":
        out.update(
            datastoreId="0123456789abcdef0123456789abcdef",
            datastoreArn=f"arn:aws:medical-imaging:{REGION}:{ACCOUNT}:datastore/0123456789abcdef0123456789abcdef",
        )
    elif type_ == "awsx:ec2:Vpc":
        out.update(
            vpcId="vpc-0new0000000000001",
            privateSubnetIds=["subnet-0priv0000000001", "subnet-0priv0000000002"],
            publicSubnetIds=["subnet-0pub00000000001", "subnet-0pub00000000002"],
        )
    elif type_ == "awsx:ecr:Image":
        out["imageUri"] = f"{inputs['repositoryUrl']}@sha256:{'ab' * 32}"
    return out


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.created: dict[tuple[str, str], tuple[dict, dict]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        computed = _computed(args.typ, args.name, args.inputs)
        # awsx components' outputs are other resources, not echoes of their inputs.
        outputs = computed if args.typ.startswith("awsx:") else {**computed, **args.inputs}
        self.created[(args.typ, args.name)] = (dict(args.inputs), outputs)
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        token = args.token
        if token == "aws:index/getRegion:getRegion":
            return {"region": REGION, "name": REGION, "id": REGION}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/test",
                "id": ACCOUNT,
                "userId": "X",
            }
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if token == "aws:ec2/getVpc:getVpc":
            return {"id": args.args["id"], "cidrBlock": EXISTING_VPC_CIDR}
        if token == "aws:ec2/getElasticIp:getElasticIp":  # a documentation address per allocation
            allocation = args.args["id"]
            return {"id": allocation, "publicIp": f"198.51.100.{int(allocation[-2:], 16)}"}
        if token == "aws:ec2/getPrefixList:getPrefixList":
            assert args.args["name"] == f"com.amazonaws.{REGION}.s3"
            return {"id": EXISTING_S3_PREFIX_LIST, "name": args.args["name"], "cidrBlocks": ["52.219.0.0/16"]}
        if token == "aws:ec2/getRouteTables:getRouteTables":
            return {"ids": ["rtb-0aaa0000000000001", "rtb-0aaa0000000000002"], "id": "rt"}
        raise AssertionError(f"unexpected invoke {token}")


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        # urn -> (type, name, parent, retainOnDelete, provider, providers)
        self.options: dict[str, tuple[str, str, str, bool, str, dict[str, str]]] = {}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        self.options[response.urn] = (
            request.type,
            request.name,
            request.parent,
            bool(request.retainOnDelete),
            request.provider,
            dict(request.providers),
        )
        return response


def run_program(build: Callable[[], Any], stack: str, config: dict[str, str] | None = None) -> Graph:
    """Run ``build`` as a Pulumi program of stack ``stack``; return every registered resource."""
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    engine_log = _RecordingLog()
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_all_config({f"dicom-ingest:{k}": v for k, v in (config or {}).items()})
    pulumi.runtime.set_mocks(
        mocks, project="dicom-ingest", stack=stack, preview=False, monitor=monitor, logger=engine_log
    )
    _sync_await(run_pulumi_func(build))

    resources = []
    for urn, (type_, name, parent, retain, provider, providers) in monitor.options.items():
        inputs, outputs = mocks.created.get((type_, name), ({}, {}))  # components have neither
        outputs = {**outputs, "id": f"{name}-id"}
        resources.append(Resource(urn, type_, name, inputs, outputs, parent, retain, provider, providers))
    root = runtime_settings.get_root_resource()
    stack_outputs = {
        key: _sync_await(pulumi.Output.from_input(value).future()) for key, value in root.outputs.items()
    }
    return Graph(resources, stack_outputs, engine_log.warnings)


class _RecordingLog(logging.Logger):
    """The mock engine's logger: keeps the program's warnings (``pulumi.log.warn``)."""

    def __init__(self) -> None:
        super().__init__("pulumi-engine", logging.WARNING)
        self.warnings: list[str] = []

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.warnings.append(str(msg))
