"""Acknowledging rule-pack findings on one construct, one finding and one reason at a time."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct


def acknowledge(construct: IConstruct, reasons: Mapping[str, str]) -> None:
    """Acknowledge each finding id (``Pack-Rule`` or ``Pack-Rule[finding]``) on ``construct`` with its reason.

    Findings of packs a stage does not run are never reported, so acknowledging them there is harmless; the
    acknowledgement test lists every one of them for review.
    """
    for finding, reason in reasons.items():
        Validations.of(construct).acknowledge(Acknowledgment(id=finding, reason=reason))
