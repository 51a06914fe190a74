"""cdk-nag rule packs, each checking exactly one team stage.

cdk-nag v3 packs walk the whole app from the validation context (``appConstruct``), whichever stage they are
registered on. finetune-stack runs different packs on different stages (NIST 800-53 R5 and HIPAA only where a
stage lists them), so each pack is wrapped to validate its own stage's construct tree only. Registration is
still the v3 API: ``Validations.of(stage).add_plugins(...)``; acknowledgements are
``Validations.of(construct).acknowledge(...)`` on the one resource they concern.
"""

from __future__ import annotations

import jsii
from aws_cdk import IPolicyValidationContext, IPolicyValidationPlugin, PolicyValidationPluginReport, Stage, Validations
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NagPack, NIST80053R5Checks
from constructs import IConstruct

PACKS_BY_COMPLIANCE_NAME: dict[str, type[NagPack]] = {
    "nist-800-53-r5": NIST80053R5Checks,
    "hipaa": HIPAASecurityChecks,
}


@jsii.implements(IPolicyValidationPlugin)
class StageRulePack:
    """A cdk-nag pack that validates one stage's constructs (or one top-level stack's), not the whole app."""

    def __init__(self, pack: NagPack, stage: IConstruct) -> None:
        self._pack = pack
        self._stage = stage

    @property
    def name(self) -> str:
        # The pack's own name: the CDK report then reads as cdk-nag's does.
        return self._pack.name

    @property
    def version(self) -> str | None:
        return self._pack.version

    @property
    def rule_ids(self) -> list[str] | None:
        return self._pack.rule_ids

    def validate(self, context: IPolicyValidationContext) -> PolicyValidationPluginReport:
        return self._pack.validate_scope(self._stage)


def register_rule_packs(stage: Stage, compliance: tuple[str, ...]) -> None:
    """AwsSolutions on every stage, plus the compliance packs the stage lists; a finding fails synthesis."""
    packs: list[NagPack] = [AwsSolutionsChecks(stage)]
    packs += [PACKS_BY_COMPLIANCE_NAME[name](stage) for name in compliance]
    Validations.of(stage).add_plugins(*(StageRulePack(pack, stage) for pack in packs))


def register_stack_rule_pack(app: Stage, stack: IConstruct) -> None:
    """AwsSolutions on a stack outside every team stage (the delivery pipeline), registered on the app."""
    Validations.of(app).add_plugins(StageRulePack(AwsSolutionsChecks(stack), stack))
