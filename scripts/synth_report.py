#!/usr/bin/env python3
"""After `cdk synth`: run cfn-lint on every template and print one row per team stage.

Usage: synth_report.py CDK_OUT_DIR
Exits 1 if cfn-lint reports anything (errors, warnings or informational findings).
Rule-pack findings never reach this point: an unacknowledged finding already failed `cdk synth`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stacks.settings import load_config  # noqa: E402


def main(outdir: Path) -> int:
    from cfnlint.api import ManualArgs, lint

    stages = {stage.qualified_name: stage for stage in load_config(ROOT / "config" / "teams.yaml")}
    rows, problems = [], []
    for stage_dir in sorted(outdir.glob("assembly-*")):
        manifest = json.loads((stage_dir / "manifest.json").read_text())
        stacks, resources, acknowledged, lint_findings = [], 0, 0, 0
        stage_name = ""
        for artifact in manifest["artifacts"].values():
            if artifact["type"] != "aws:cloudformation:stack":
                continue
            stage_name, stack_name = artifact["displayName"].split("/", 1)
            template_path = stage_dir / artifact["properties"]["templateFile"]
            template = json.loads(template_path.read_text())
            stacks.append(stack_name)
            resources += len(template["Resources"])
            metadata_path = template_path.with_name(template_path.name.replace(".template.json", ".metadata.json"))
            if metadata_path.exists():
                for entries in json.loads(metadata_path.read_text()).values():
                    acknowledged += sum(len(e["data"]) for e in entries if e["type"] == "aws:cdk:acknowledged-rules")
            region = stages[stage_name].region if stage_name in stages else "us-east-1"
            for match in lint(template_path.read_text(), config=ManualArgs(regions=[region])):
                lint_findings += 1
                problems.append(f"{template_path.name}:{match.linenumber}: {match.rule.id} {match.message}")
        packs = ["AwsSolutions"] + [p.upper() for p in stages[stage_name].compliance] if stage_name in stages else []
        rows.append((stage_name, ", ".join(stacks), str(resources), "+".join(packs), "0", str(acknowledged),
                     str(lint_findings)))

    header = ("stage", "stacks", "resources", "rule packs", "findings", "acknowledged", "cfn-lint")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "cdk.out")))
