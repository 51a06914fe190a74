#!/usr/bin/env python3
"""Benchmark: wall time of synthesizing 1, 4 and 16 team stages (generated configs), with every rule pack.

Each size runs `python app.py` in a fresh process as the CDK CLI would, so the time includes starting jsii/Node
and importing aws-cdk-lib. Prints JSON: seconds per size, and the marginal seconds per stage from a least-squares
line through the points. A benchmark, not a test: `make bench` or `python bench/synth.py [--repeat N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generated_config(stages: int) -> str:
    """`stages` team stages: four stages per team (dev, test, stage, prod), prod with the compliance packs."""
    lines = ["teams:"]
    names = ["dev", "test", "stage", "prod"]
    for team_index in range((stages + 3) // 4):
        lines += [
            f"  - name: team{team_index}",
            "    cost_center: CC-BENCH",
            "    email: bench@example.com",
            "    defaults: {region: eu-west-1}",
            "    stages:",
        ]
        for stage_index in range(min(4, stages - team_index * 4)):
            name = names[stage_index]
            extra = ", compliance: [nist-800-53-r5, hipaa]" if name == "prod" else ", ephemeral: true"
            account = f"{100000000000 + team_index * 4 + stage_index}"
            lines.append(
                f'      {name}: {{account: "{account}", new_vpc: {{cidr: 10.{team_index % 250}.0.0/16}}{extra}}}'
            )
    return "\n".join(lines) + "\n"


def synth_seconds(stages: int, workdir: Path) -> float:
    config = workdir / f"teams-{stages}.yaml"
    config.write_text(generated_config(stages))
    outdir = workdir / f"out-{stages}"
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({"config": str(config)}), "CDK_OUTDIR": str(outdir)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"synthesis of {stages} stages failed:\n{result.stderr[-3000:]}")
    produced = len(list(outdir.glob("assembly-*")))
    if produced != stages:
        raise SystemExit(f"expected {stages} stage assemblies, found {produced}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the minimum is reported")
    args = parser.parse_args()
    node = ROOT / "node_modules" / ".bin" / "node"
    if node.exists():
        os.environ.setdefault("JSII_NODE", str(node))
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {n: min(synth_seconds(n, Path(tmp)) for _ in range(args.repeat)) for n in args.sizes}
    xs, ys = list(seconds), list(seconds.values())
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    slope = (
        sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / denominator
        if denominator
        else float("nan")
    )
    print(
        json.dumps(
            {
                "benchmark": "synth",
                "stages": {str(n): round(s, 2) for n, s in seconds.items()},
                "marginal_seconds_per_stage": round(slope, 3),
                "fixed_seconds": round(mean_y - slope * mean_x, 2),
                "repeat": args.repeat,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
