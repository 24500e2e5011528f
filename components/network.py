"""Network: a new VPC (awsx.ec2.Vpc) or an existing one, VPC endpoints so no NAT is needed, flow logs.

awsx.ec2.Vpc is a remote component (opaque under mocks), so everything the tests must see (endpoints,
their security group, flow logs) is built here from plain pulumi_aws resources on the VPC's ids.
The S3 gateway endpoint goes into every route table of the VPC; an existing VPC that already has
one keeps it (``s3GatewayEndpoint`` false) and only its prefix list is looked up.
The Lambda functions run outside the VPC (they reach only AWS APIs); the SCP tasks inside it call
ECR (image pull), CloudWatch Logs, STS and S3, which is exactly the endpoint set below.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_awsx as awsx

from components.iam import allow, service_role
from core.stack_settings import NetworkSettings

# Interface endpoints the SCP tasks need without a NAT gateway (S3 is a gateway endpoint).
INTERFACE_ENDPOINT_SERVICES = ("ecr.api", "ecr.dkr", "logs", "sts")
NAT_STRATEGY = {"none": "None", "single": "Single", "one-per-az": "OnePerAz"}


@dataclass
class NetworkArgs:
    settings: NetworkSettings
    region: pulumi.Input[str]
    extra_endpoint_services: tuple[str, ...] = ()  # e.g. secretsmanager when the task reads secrets
    logs_kms_key_arn: pulumi.Input[str] | None = None  # of the flow logs' group
    dynamodb_endpoint: bool = False  # the SCP tasks use the job table (Storage Commitment)


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    vpc_cidr: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    public_subnet_ids: pulumi.Output[list[str]]
    s3_prefix_list_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:Network", name, None, opts)
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self)

        if settings.existing:
            self.vpc = None
            self.vpc_id = pulumi.Output.from_input(settings.vpc_id)
            self.private_subnet_ids = pulumi.Output.from_input(list(settings.private_subnet_ids))
            self.public_subnet_ids = pulumi.Output.from_input(list(settings.public_subnet_ids))
            existing = aws.ec2.get_vpc_output(
                id=settings.vpc_id, opts=pulumi.InvokeOutputOptions(parent=self)
            )
            self.vpc_cidr = existing.cidr_block
        else:
            self.vpc = awsx.ec2.Vpc(
                f"{name}-vpc",
                cidr_block=settings.vpc_cidr,
                number_of_availability_zones=settings.availability_zones,
                nat_gateways={"strategy": NAT_STRATEGY[settings.nat_gateways]},
                subnet_strategy="Auto",
                subnet_specs=[
                    {"type": "Private", "cidr_mask": 20},
                    {"type": "Public", "cidr_mask": 24},
                ],
                enable_dns_hostnames=True,
                enable_dns_support=True,
                opts=child,
            )
            self.vpc_id = self.vpc.vpc_id
            self.private_subnet_ids = self.vpc.private_subnet_ids
            self.public_subnet_ids = self.vpc.public_subnet_ids
            self.vpc_cidr = pulumi.Output.from_input(settings.vpc_cidr)

        s3_service = pulumi.Output.concat("com.amazonaws.", args.region, ".s3")
        route_tables = aws.ec2.get_route_tables_output(
            vpc_id=self.vpc_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )

        def gateway_endpoint(service: str) -> aws.ec2.VpcEndpoint:
            return aws.ec2.VpcEndpoint(
                f"{name}-{service}",
                vpc_id=self.vpc_id,
                service_name=pulumi.Output.concat("com.amazonaws.", args.region, f".{service}"),
                vpc_endpoint_type="Gateway",
                route_table_ids=route_tables.ids,
                opts=child,
            )

        self.s3_endpoint = None
        if settings.s3_gateway_endpoint:
            self.s3_endpoint = gateway_endpoint("s3")
            self.s3_prefix_list_id = self.s3_endpoint.prefix_list_id
        else:  # the VPC's own S3 gateway endpoint: only its prefix list, for the tasks' egress rule
            self.s3_prefix_list_id = aws.ec2.get_prefix_list_output(
                name=s3_service, opts=pulumi.InvokeOutputOptions(parent=self)
            ).id
        self.dynamodb_prefix_list_id: pulumi.Output[str] | None = None
        if args.dynamodb_endpoint:  # the SCP tasks' Storage Commitment reporter uses the job table
            self.dynamodb_endpoint = gateway_endpoint("dynamodb")
            self.dynamodb_prefix_list_id = self.dynamodb_endpoint.prefix_list_id

        self.endpoint_security_group = None
        self.interface_endpoints: list[aws.ec2.VpcEndpoint] = []
        if settings.interface_endpoints:
            self.endpoint_security_group = aws.ec2.SecurityGroup(
                f"{name}-endpoints",
                vpc_id=self.vpc_id,
                description="HTTPS from inside the VPC to the AWS service endpoints",
                ingress=[
                    {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": [self.vpc_cidr]}
                ],
                opts=child,
            )
            self.interface_endpoints = [
                aws.ec2.VpcEndpoint(
                    f"{name}-{service.replace('.', '-')}",
                    vpc_id=self.vpc_id,
                    service_name=pulumi.Output.concat("com.amazonaws.", args.region, ".", service),
                    vpc_endpoint_type="Interface",
                    private_dns_enabled=True,
                    subnet_ids=self.private_subnet_ids,
                    security_group_ids=[self.endpoint_security_group.id],
                    opts=child,
                )
                for service in (*INTERFACE_ENDPOINT_SERVICES, *args.extra_endpoint_services)
            ]

        self.flow_log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            retention_in_days=settings.flow_logs_retention_days,
            kms_key_id=args.logs_kms_key_arn,
            opts=child,
        )
        self.flow_log_role = service_role(
            f"{name}-flow-logs",
            "vpc-flow-logs.amazonaws.com",
            [
                allow(
                    "WriteFlowLogs",
                    ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    [self.flow_log_group.arn, pulumi.Output.concat(self.flow_log_group.arn, ":*")],
                )
            ],
            self,
            description="VPC flow logs delivery into one log group",
        )
        self.flow_log = aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=self.vpc_id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=self.flow_log_group.arn,
            iam_role_arn=self.flow_log_role.arn,
            opts=child,
        )

        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )
