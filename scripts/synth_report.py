#!/usr/bin/env python3
"""After `cdk synth`: run cfn-lint on every template, validate every Step Functions state machine, and print one
row per team stage.

Usage: synth_report.py CDK_OUT_DIR
Exits 1 if cfn-lint reports anything (errors, warnings or informational findings) or if any state machine
definition is not valid States Language (asl-validator or moto's parser; scripts/asl_check.py), naming the stage,
state machine, state and field. Unacknowledged rule-pack findings (from the validation
report the app writes into CDK_OUT_DIR) fail it too: the CDK CLI itself exits 0 after a failed validation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import asl_check  # noqa: E402
from scripts.cloud_assembly import acknowledgements, read_app_stacks, read_assembly  # noqa: E402
from stacks.settings import load_config  # noqa: E402


def rule_pack_violations(outdir: Path) -> list[tuple[str, str, str, str]]:
    """(plugin, rule, description, construct path) of every unacknowledged finding in the validation report.

    The app exits non-zero when a validation plugin fails, but the CDK CLI (2.1148) still reports a successful
    synthesis and exits 0, so the report the app writes is the record this check enforces.
    """
    report_file = outdir / "validation-report.json"
    if not report_file.exists():
        return []
    report = json.loads(report_file.read_text(encoding="utf-8"))
    return [
        (plugin["pluginName"], violation["ruleName"], violation["description"], construct["constructPath"])
        for plugin in report.get("pluginReports", [])
        for violation in plugin.get("violations", [])
        for construct in violation.get("violatingConstructs", [])
    ]


def main(outdir: Path) -> int:
    from cfnlint.api import ManualArgs, lint

    stages = {stage.qualified_name: stage for stage in load_config(ROOT / "config" / "teams.yaml")}
    assembly = read_assembly(outdir)
    acknowledged_by_stage: dict[str, int] = {}
    for row in acknowledgements(assembly):
        acknowledged_by_stage[row["stage"]] = acknowledged_by_stage.get(row["stage"], 0) + 1
    rows, problems = [], []
    violations = rule_pack_violations(outdir)
    problems.extend(f"{path}: {plugin}: {rule} {description}" for plugin, rule, description, path in violations)

    def findings_of(prefix: str) -> str:
        return str(sum(1 for *_, path in violations if path == prefix or path.startswith(f"{prefix}/")))

    machines, asl_findings = asl_check.check(assembly)
    for stage_name in sorted({stage for stage, _ in assembly.stacks}):
        stacks = [stack for (stage, _), stack in assembly.stacks.items() if stage == stage_name]
        region = stages[stage_name].region if stage_name in stages else "us-east-1"
        lint_findings = 0
        for stack in stacks:
            for match in lint(json.dumps(stack.template), config=ManualArgs(regions=[region])):
                lint_findings += 1
                problems.append(f"{stage_name}/{stack.name}:{match.linenumber}: {match.rule.id} {match.message}")
        packs = ["AwsSolutions"] + [p.upper() for p in stages[stage_name].compliance] if stage_name in stages else []
        stage_machines = [m for m in machines if m.stage == stage_name]
        invalid = {f.state_machine for f in asl_findings} & {m.name for m in stage_machines}
        rows.append(
            (
                stage_name,
                ", ".join(stack.name for stack in stacks),
                str(sum(len(stack.template["Resources"]) for stack in stacks)),
                "+".join(packs),
                findings_of(stage_name),
                str(acknowledged_by_stage.get(stage_name, 0)),
                str(lint_findings),
                f"{len(stage_machines) - len(invalid)}/{len(stage_machines)} valid",
            )
        )
    problems.extend(str(finding) for finding in asl_findings)

    # The delivery pipeline (when enabled) and its support stacks: AwsSolutions already ran at synth; lint them too.
    for name, stack in sorted(read_app_stacks(outdir).items()):
        region = _stack_region(outdir, name)
        lint_findings = 0
        for match in lint(json.dumps(stack.template), config=ManualArgs(regions=[region])):
            lint_findings += 1
            problems.append(f"{name}:{match.linenumber}: {match.rule.id} {match.message}")
        acknowledged = sum(
            len(entry["data"])
            for entries in stack.metadata.values()
            for entry in entries
            if entry["type"] == "aws:cdk:acknowledged-rules"
        )
        rows.append(
            (
                name,
                "(delivery pipeline)",
                str(len(stack.template["Resources"])),
                "AwsSolutions",
                findings_of(name),
                str(acknowledged),
                str(lint_findings),
                "none",
            )
        )

    header = ("stage", "stacks", "resources", "rule packs", "findings", "acknowledged", "cfn-lint", "state machines")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


def _stack_region(outdir: Path, name: str) -> str:
    """The region of a top-level stack from the manifest's environment (aws://account/region)."""
    manifest = json.loads((outdir / "manifest.json").read_text())
    for artifact in manifest["artifacts"].values():
        if artifact.get("displayName") == name and artifact["type"] == "aws:cloudformation:stack":
            region = artifact["environment"].rsplit("/", 1)[-1]
            return region if region != "unknown-region" else "us-east-1"
    return "us-east-1"


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "cdk.out")))
