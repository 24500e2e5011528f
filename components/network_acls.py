"""Network ACLs of a new VPC: one default-deny ACL per subnet tier, with exactly the allows the
traffic needs (``core.config.network_acl_plan``): DICOM and health ports from the allowed
client CIDRs, the NLB's and the tasks' return traffic, HTTPS to the VPC endpoints and to S3 (and
to a NAT gateway). A custom ACL denies whatever its rules do not allow. Security groups stay the
precise, stateful control; the ACLs are the stateless second layer a hospital's review asks for.
An existing VPC keeps the ACLs its owners manage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from core.config import AclRule

FIRST_RULE_NUMBER = 100
RULE_NUMBER_STEP = 10


def acl_entries(rules: list[AclRule]) -> list[dict[str, Any]]:
    """Inline ACL entries, numbered in order (all allows: the order does not change the outcome)."""
    entries = []
    for index, rule in enumerate(rules):
        entry: dict[str, Any] = {
            "rule_no": FIRST_RULE_NUMBER + RULE_NUMBER_STEP * index,
            "action": "allow",
            "protocol": rule.protocol,
            "cidr_block": rule.cidr,
            "from_port": rule.from_port,
            "to_port": rule.to_port,
        }
        if rule.protocol == "icmp":
            entry.update(icmp_type=rule.icmp_type, icmp_code=rule.icmp_code)
        entries.append(entry)
    return entries


@dataclass
class NetworkAclsArgs:
    plan: dict[str, dict[str, list[AclRule]]]  # tier -> ingress/egress -> rules
    vpc_id: pulumi.Input[str]
    subnet_ids: dict[str, pulumi.Input[list[str]]]  # tier -> its subnets


class NetworkAcls(pulumi.ComponentResource):
    acls: dict[str, aws.ec2.NetworkAcl]

    def __init__(self, name: str, args: NetworkAclsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("dicom-ingest:index:NetworkAcls", name, None, opts)
        self.acls = {
            tier: aws.ec2.NetworkAcl(
                f"{name}-{tier}",
                vpc_id=args.vpc_id,
                subnet_ids=args.subnet_ids[tier],
                ingress=acl_entries(rules["ingress"]),
                egress=acl_entries(rules["egress"]),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for tier, rules in args.plan.items()
        }
        self.register_outputs({tier: acl.id for tier, acl in self.acls.items()})
