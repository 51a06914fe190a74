#!/usr/bin/env python3
"""Draw docs/architecture.png from the synthesized app (`make diagram`).

Synthesizes one team stage of the example config, groups each stack's resources by the construct that owns
them (two levels below the stack), and draws references between groups (Ref, Fn::GetAtt, and cross-stack
Fn::ImportValue) with Graphviz. The picture is derived from the code, never drawn by hand.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGE = "search-dev"
SKIP_TYPES = {"AWS::CDK::Metadata"}
STACK_COLOURS = {
    "Data": "#e8f1fb",
    "Training": "#eaf7ea",
    "Inference": "#fff4e0",
    "Hosts": "#f6e8f7",
    "Monitoring": "#f0f0f0",
}


def group_of(path: str) -> str:
    """`/search-dev/Data/Buckets/DataBucket/Resource` -> `Buckets/DataBucket`."""
    parts = [p for p in path.strip("/").split("/")[2:] if p not in ("Resource", "Default")]
    if not parts:
        return "(stack)"
    if parts[0].endswith("Parameter"):
        return "SSM parameters"
    if parts[0].startswith("Custom::") or parts[0].startswith("AWS"):
        return "CDK-managed helpers"
    return "/".join(parts[:2])


def references(value, found: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::ImportValue" and isinstance(inner, str):
                found.add(f"import:{inner}")
            elif key == "Fn::GetStackOutput" and isinstance(inner, dict):
                found.add(f"import:{inner.get('OutputName', '')}")
            references(inner, found)
    elif isinstance(value, list):
        for inner in value:
            references(inner, found)
    return found


def build_dot(outdir: Path) -> str:
    from scripts.cloud_assembly import read_assembly

    assembly = read_assembly(outdir)
    groups: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    owner: dict[tuple[str, str], tuple[str, str]] = {}  # (stack, logical id) -> (stack, group)
    for (stage, stack_name), stack in assembly.stacks.items():
        if stage != STAGE:
            continue
        for path, entries in stack.metadata.items():
            for entry in entries:
                if entry["type"] == "aws:cdk:logicalId":
                    owner[(stack_name, entry["data"])] = (stack_name, group_of(path))
        for logical_id, resource in stack.template["Resources"].items():
            if resource["Type"] not in SKIP_TYPES and (stack_name, logical_id) in owner:
                groups[owner[(stack_name, logical_id)]][resource["Type"].split("::")[-1]] += 1

    edges: set[tuple[tuple[str, str], tuple[str, str]]] = set()
    for (stage, stack_name), stack in assembly.stacks.items():
        if stage != STAGE:
            continue
        for logical_id, resource in stack.template["Resources"].items():
            source = owner.get((stack_name, logical_id))
            if source is None or source not in groups:
                continue
            for ref in references(resource.get("Properties", {}), set()):
                if ref.startswith("import:"):
                    # CDK export names embed the exporting stack and logical id.
                    target = next(
                        (
                            o
                            for (s, lid), o in owner.items()
                            if s != stack_name and re.search(rf"{re.escape(lid)}", ref)
                        ),
                        None,
                    )
                else:
                    target = owner.get((stack_name, ref))
                if target and target != source and target in groups:
                    edges.add((source, target))

    def node_id(key: tuple[str, str]) -> str:
        return re.sub(r"[^A-Za-z0-9]", "_", f"{key[0]}_{key[1]}")

    lines = [
        "digraph finetune_stack {",
        '  rankdir=LR; compound=true; fontname="Helvetica";',
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica", fontsize=10];',
        '  edge [color="#777777", arrowsize=0.6];',
        f'  label="finetune-stack: one team stage ({STAGE}), generated from the synthesized app"; labelloc=t;',
    ]
    for stack_name in STACK_COLOURS:
        members = sorted(key for key in groups if key[0] == stack_name)
        if not members:
            continue
        lines.append(
            f'  subgraph cluster_{stack_name} {{ label="{stack_name} stack"; style=filled; '
            f'color="{STACK_COLOURS[stack_name]}";'
        )
        for key in members:
            kinds = ", ".join(f"{n}×{k}" if n > 1 else k for k, n in sorted(groups[key].items()))
            lines.append(f'    {node_id(key)} [label="{key[1]}\\n{kinds}"];')
        lines.append("  }")
    for source, target in sorted(edges):
        lines.append(f"  {node_id(source)} -> {node_id(target)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    from app import build_app
    from tests.conftest import EXAMPLE_CONFIG

    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        team, stage = STAGE.split("-")
        build_app(EXAMPLE_CONFIG, teams=team, stage_names=stage, outdir=tmp).synth()
        dot = build_dot(Path(tmp))
    (docs / "architecture.dot").write_text(dot, encoding="utf-8")
    if shutil.which("dot") is None:
        print(
            "Graphviz `dot` is not installed (apt-get install graphviz); wrote docs/architecture.dot only",
            file=sys.stderr,
        )
        return 1
    subprocess.run(
        ["dot", "-Tpng", "-Gdpi=110", "-o", str(docs / "architecture.png"), str(docs / "architecture.dot")], check=True
    )
    print("wrote docs/architecture.dot and docs/architecture.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
