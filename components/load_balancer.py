"""Load balancer: the NLB modalities connect to, internal unless the stack says public.

Listeners: TCP on ``scpPort`` (plain DICOM) and, optionally, DICOM TLS on ``scpTlsPort`` either
terminated on the NLB with an ACM certificate (forwarded to the SCP's plain port) or passed through
as TCP to the SCP's own TLS port. IP target groups health-check the SCP's HTTP ``/readyz`` (false
while a task drains), and keep client IPs so the SCP's peer checks and audit see the modality.
The NLB's security group admits only the configured client CIDRs (default: the VPC's CIDR).
Fixed addresses (for hospital firewalls and VPN policies that allow-list IPs): one private IP per
subnet for an internal NLB, or one Elastic IP allocation per subnet for a public one, as subnet
mappings; ``fixed_ips`` are the addresses clients see (the stack output ``endpointIps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from core.config import listener_ports
from core.scp_settings import ScpSettings
from core.stack_settings import LoadBalancerSettings

READINESS_PATH = "/readyz"


@dataclass(frozen=True)
class ListenerPlan:
    """One NLB listener and the SCP port its target group forwards to."""

    key: str  # "dicom" or "tls"
    port: int
    protocol: str  # TCP or TLS
    target_port: int


def listener_plan(lb: LoadBalancerSettings, scp: ScpSettings) -> list[ListenerPlan]:
    return [ListenerPlan(*ports) for ports in listener_ports(lb, scp)]


@dataclass
class LoadBalancerArgs:
    settings: LoadBalancerSettings
    scp: ScpSettings
    vpc_id: pulumi.Input[str]
    vpc_cidr: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]


class LoadBalancer(pulumi.ComponentResource):
    nlb: aws.lb.LoadBalancer
    security_group: aws.ec2.SecurityGroup
    target_groups: dict[str, aws.lb.TargetGroup]
    listeners: dict[str, aws.lb.Listener]
    plan: list[ListenerPlan]

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:LoadBalancer", name, None, opts)
        settings, scp = args.settings, args.scp
        child = pulumi.ResourceOptions(parent=self)
        self.plan = listener_plan(settings, scp)
        client_cidrs = list(settings.allowed_cidrs) or [args.vpc_cidr]

        # Rules are separate resources so the SCP's security group can reference this one both ways.
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-nlb", vpc_id=args.vpc_id, description="DICOM clients to the gateway NLB", opts=child
        )
        for listener in self.plan:
            for index, cidr in enumerate(client_cidrs):
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-{listener.key}-from-{index}",
                    security_group_id=self.security_group.id,
                    ip_protocol="tcp",
                    from_port=listener.port,
                    to_port=listener.port,
                    cidr_ipv4=cidr,
                    description=f"DICOM {listener.key} clients",
                    opts=pulumi.ResourceOptions(parent=self.security_group),
                )

        self.nlb = aws.lb.LoadBalancer(
            f"{name}-nlb",
            load_balancer_type="network",
            internal=not settings.public,
            **self._placement(settings, args.subnet_ids),
            security_groups=[self.security_group.id],
            enable_cross_zone_load_balancing=settings.cross_zone,
            enforce_security_group_inbound_rules_on_private_link_traffic="on",
            opts=child,
        )

        self.target_groups, self.listeners = {}, {}
        for listener in self.plan:
            group = aws.lb.TargetGroup(
                f"{name}-{listener.key}",
                port=listener.target_port,
                protocol="TCP",
                target_type="ip",
                vpc_id=args.vpc_id,
                deregistration_delay=settings.deregistration_delay_seconds,
                preserve_client_ip="true",
                connection_termination=False,
                health_check={
                    "enabled": True,
                    "protocol": "HTTP",
                    "port": str(scp.health_port),
                    "path": READINESS_PATH,
                    "matcher": "200",
                    "interval": 10,
                    "timeout": 5,
                    "healthy_threshold": 2,
                    "unhealthy_threshold": 2,
                },
                opts=child,
            )
            protocol_args = (
                {"certificate_arn": settings.certificate_arn, "ssl_policy": settings.tls_policy}
                if listener.protocol == "TLS"
                else {"tcp_idle_timeout_seconds": settings.tcp_idle_timeout_seconds}
            )
            self.target_groups[listener.key] = group
            self.listeners[listener.key] = aws.lb.Listener(
                f"{name}-{listener.key}",
                load_balancer_arn=self.nlb.arn,
                port=listener.port,
                protocol=listener.protocol,
                default_actions=[{"type": "forward", "target_group_arn": group.arn}],
                opts=pulumi.ResourceOptions(parent=self.nlb),
                **protocol_args,
            )

        self.fixed_ips = self._fixed_ips(settings)
        self.register_outputs({"dnsName": self.nlb.dns_name, "arn": self.nlb.arn, "fixedIps": self.fixed_ips})

    @staticmethod
    def _placement(settings: LoadBalancerSettings, subnet_ids: pulumi.Input[list[str]]) -> dict[str, Any]:
        """The NLB's subnets, or with fixed addresses one subnet mapping per subnet (same order)."""
        if not settings.fixed_addresses:
            return {"subnets": subnet_ids}
        key = "private_ipv4_address" if settings.private_ips else "allocation_id"
        addresses = settings.fixed_addresses
        mappings = pulumi.Output.from_input(subnet_ids).apply(
            lambda ids: [{"subnet_id": s, key: a} for s, a in zip(ids, addresses, strict=True)]
        )
        return {"subnet_mappings": mappings}

    def _fixed_ips(self, settings: LoadBalancerSettings) -> pulumi.Output[list[str]] | None:
        """The addresses clients allow-list: the private IPs, or the public IPs of the Elastic IPs."""
        if settings.private_ips:
            return pulumi.Output.from_input(list(settings.private_ips))
        if settings.eip_allocation_ids:
            invoke = pulumi.InvokeOutputOptions(parent=self)
            return pulumi.Output.all(
                *[
                    aws.ec2.get_elastic_ip_output(id=a, opts=invoke).public_ip
                    for a in settings.eip_allocation_ids
                ]
            )
        return None
