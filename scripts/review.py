#!/usr/bin/env python3
"""`make review`: what a change does to every team stage, offline, as Markdown for a pull request and JSON.

Synthesizes the base ref (in a temporary git worktree; the result is cached under build/review/ by base commit,
config and toolchain, so a second review against the same base synthesizes once) and the working tree, then
compares every stack of every stage with the AWS CDK's own diff engine (scripts/template_diff.cjs over
@aws-cdk/cloudformation-diff), which knows CloudFormation's replacement rules and where IAM statements and
security-group rules hide in a template. Asset hashes are taken out of the templates before the comparison and
reported once per asset ("the training image changes"), so a training-code edit is one line, not noise in every
stack.

Usage: review.py [--base REF] [--config PATH] [--team NAMES] [--stage NAMES] [--out DIR]
                 [--fail-on stateful-replacement,iam-widening,...]
Exit status: 0; 1 when a --fail-on policy is violated; 2 when the review cannot be made (bad ref, failed synth).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.cloud_assembly import Assembly, acknowledgements, read_app_stacks, read_assembly  # noqa: E402

# Resources whose replacement or removal loses data or identity: a new bucket is empty, a new key cannot decrypt
# what the old one encrypted, a new log group starts without history, a new model package group has no versions.
STATEFUL_TYPES = frozenset(
    {
        "AWS::S3::Bucket",
        "AWS::KMS::Key",
        "AWS::Logs::LogGroup",
        "AWS::SageMaker::ModelPackageGroup",
        "AWS::DynamoDB::Table",
        "AWS::EFS::FileSystem",
        "AWS::ECR::Repository",
        "AWS::RDS::DBInstance",
        "AWS::RDS::DBCluster",
        "AWS::EC2::Volume",
    }
)
POLICIES = {
    "stateful-replacement": "a stateful resource (bucket, key, log group, model package group, ...) is replaced",
    "stateful-removal": "a stateful resource is removed",
    "replacement": "any resource is replaced",
    "iam-widening": "IAM permissions are added or broadened",
    "security-group-widening": "security-group rules are added",
}
REVIEW_MARKER = "<!-- finetune-stack-review -->"
# The "stage" of the delivery pipeline stack and its support stacks, which belong to no team stage.
PIPELINE = "(delivery pipeline)"
# GitHub refuses comments over 65,536 characters; past this many rows a table names how many more are in the JSON.
MAX_ROWS = 60


class ReviewError(Exception):
    """The review cannot be made: a bad ref, a config the tree rejects, a failed synthesis."""


# ---------------------------------------------------------------------------------------------------- synthesis


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None, what: str | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ReviewError(
            f"{what or '`' + ' '.join(command) + '`'} in {cwd} failed (exit {result.returncode}):\n"
            f"{(result.stderr or result.stdout).strip()[-4000:]}"
        )
    return result.stdout


def git(*args: str, cwd: Path = ROOT) -> str:
    return _run(["git", *args], cwd=cwd).strip()


def resolve_base(ref: str | None, *, cwd: Path = ROOT) -> str:
    """The base commit: REF, or the merge base of HEAD with main (origin/main where there is no local main)."""
    if ref:
        try:
            return git("rev-parse", "--verify", f"{ref}^{{commit}}", cwd=cwd)
        except ReviewError:
            raise ReviewError(f"--base {ref}: not a commit in this repository") from None
    for main in ("main", "origin/main"):
        try:
            return git("merge-base", "HEAD", main, cwd=cwd)
        except ReviewError:
            continue
    raise ReviewError("no merge base with main or origin/main: pass BASE=<git ref>")


def _tool_env(root: Path) -> dict[str, str]:
    """The environment `make synth` runs the CLI in: the project's Node and venv first, no network from the CLI."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(root / "node_modules" / ".bin"), str(root / ".venv" / "bin"), env["PATH"]])
    env["JSII_NODE"] = str(root / "node_modules" / ".bin" / "node")
    env["CDK_DISABLE_CLI_TELEMETRY"] = "true"
    env["CDK_DISABLE_VERSION_CHECK"] = "true"
    return env


def _context_args(config: str, teams: str | None, stages: str | None) -> list[str]:
    args = ["-c", f"config={config}"]
    if teams:
        args += ["-c", f"team={teams}"]
    if stages:
        args += ["-c", f"stage={stages}"]
    return args


# Run in each tree with that tree's own settings model: the base config is read the way the base code read it.
_CONFIG_DUMP = """\
import json, sys
sys.path.insert(0, '.')
from stacks.settings import ConfigError, load_config
try:
    stages = load_config(sys.argv[1])
except ConfigError as error:
    sys.exit(f"the configuration has problems:\\n{error}")
print(json.dumps([stage.model_dump(mode='json') for stage in stages]))
"""


def synthesize(
    tree: Path, outdir: Path, *, config: str, teams: str | None, stages: str | None, tools: Path = ROOT
) -> list[dict[str, Any]]:
    """`cdk synth` of TREE into OUTDIR with the given selection; returns the tree's resolved config (stage dicts)."""
    env = _tool_env(tools)
    if not (tree / config).is_file():
        raise ReviewError(f"{tree}: no config file {config}")
    stage_dicts = json.loads(
        _run(
            [str(tools / ".venv" / "bin" / "python"), "-c", _CONFIG_DUMP, config],
            cwd=tree,
            env=env,
            what=f"reading {config}",
        )
    )
    shutil.rmtree(outdir, ignore_errors=True)
    _run(
        ["cdk", "--no-notices", "synth", "--quiet", "--output", str(outdir), *_context_args(config, teams, stages)],
        cwd=tree,
        env=env,
        what="cdk synth",
    )
    return stage_dicts


def _cache_key(commit: str, config: str, teams: str | None, stages: str | None) -> str:
    """Base commit, selection and the toolchain that synthesizes it: any of them changes the synthesized app."""
    digest = hashlib.sha256()
    for part in (commit, config, teams or "", stages or ""):
        digest.update(part.encode() + b"\0")
    for pinned in ("requirements.txt", "package-lock.json"):
        path = ROOT / pinned
        digest.update(path.read_bytes() if path.exists() else b"")
    return f"{commit[:12]}-{digest.hexdigest()[:12]}"


def synthesize_base(
    commit: str, cache: Path, *, repo: Path, config: str, teams: str | None, stages: str | None
) -> tuple[Path, list[dict[str, Any]], bool]:
    """The base commit's cloud assembly and config, from the cache or from a fresh git worktree (then cached)."""
    entry = cache / f"base-{_cache_key(commit, config, teams, stages)}"
    if (entry / "complete").exists():
        return entry / "cdk.out", json.loads((entry / "config.json").read_text()), True
    shutil.rmtree(entry, ignore_errors=True)
    entry.mkdir(parents=True)
    worktree = Path(tempfile.mkdtemp(prefix="review-base-")) / "tree"
    git("worktree", "add", "--detach", "--quiet", str(worktree), commit, cwd=repo)
    try:
        # The base tree synthesizes with this checkout's installed Python and Node environments.
        for shared in (".venv", "node_modules"):
            if not (worktree / shared).exists():
                (worktree / shared).symlink_to((ROOT / shared).resolve())
        stage_dicts = synthesize(worktree, entry / "cdk.out", config=config, teams=teams, stages=stages)
    finally:
        git("worktree", "remove", "--force", str(worktree), cwd=repo)
        shutil.rmtree(worktree.parent, ignore_errors=True)
    (entry / "config.json").write_text(json.dumps(stage_dicts))
    (entry / "complete").write_text(commit + "\n")
    return entry / "cdk.out", stage_dicts, False


# ---------------------------------------------------------------------------------------------------- assets


@dataclass(frozen=True)
class Asset:
    stage: str
    stack: str
    name: str  # the asset's display name without the stage prefix, e.g. "TrainingImage/Asset"
    kind: str  # "image" or "file"
    digest: str


def read_assets(outdir: Path) -> list[Asset]:
    """Every container image and file asset of every stack (stack templates themselves excluded)."""
    assets = []
    for stage_dir in sorted(outdir.glob("assembly-*")):
        manifest = json.loads((stage_dir / "manifest.json").read_text())
        artifacts = manifest["artifacts"]
        for artifact in artifacts.values():
            if artifact["type"] != "aws:cloudformation:stack":
                continue
            stage, stack = artifact["displayName"].split("/", 1)
            for dependency in artifact.get("dependencies", []):
                dep = artifacts.get(dependency, {})
                if dep.get("type") != "cdk:asset-manifest":
                    continue
                asset_manifest = json.loads((stage_dir / dep["properties"]["file"]).read_text())
                for kind, section in (("image", "dockerImages"), ("file", "files")):
                    for digest, entry in asset_manifest.get(section, {}).items():
                        if str(entry["source"].get("path", "")).endswith(".template.json"):
                            continue
                        name = entry.get("displayName") or entry["source"].get("path") or digest
                        name = re.sub(rf"^{re.escape(stage)}/", "", name)
                        assets.append(Asset(stage, stack, name, kind, digest))
    return assets


def describe_asset(asset: Asset) -> str:
    """An asset in a reviewer's words."""
    if asset.kind == "image" and asset.name.startswith("TrainingImage"):
        return "the training image (training_code/)"
    if asset.kind == "image":
        return f"the container image {asset.name.removesuffix('/Asset')}"
    if asset.name.endswith("Code"):
        return f"the code of the Lambda function {asset.stack}/{asset.name.removesuffix('Code').rstrip('/ ')}"
    return f"the file asset {asset.name}"


def neutral_templates(assembly: Assembly, assets: list[Asset]) -> dict[tuple[str, str], dict]:
    """Templates with every asset hash replaced by the asset's name: content changes are reported per asset."""
    by_stage: dict[str, dict[str, str]] = {}
    for asset in assets:
        by_stage.setdefault(asset.stage, {})[asset.digest] = f"<asset {asset.stack}/{asset.name}>"
        # The delivery pipeline publishes every stage's assets: its build specs name them all (without the stage:
        # stages that share an asset share its digest).
        by_stage.setdefault(PIPELINE, {})[asset.digest] = f"<asset {asset.stack}/{asset.name}>"
    templates = {}
    for key, stack in assembly.stacks.items():
        text = json.dumps(stack.template)
        for digest, placeholder in by_stage.get(key[0], {}).items():
            text = text.replace(digest, placeholder)
        templates[key] = json.loads(text)
    return templates


def asset_changes(old: list[Asset], new: list[Asset]) -> list[dict[str, Any]]:
    """One entry per asset (in words) whose content changed, appeared or disappeared, with the stages concerned."""
    old_by_key = {(a.stage, a.stack, a.name): a for a in old}
    new_by_key = {(a.stage, a.stack, a.name): a for a in new}
    grouped: dict[tuple[str, str], set[str]] = {}
    for key in old_by_key.keys() | new_by_key.keys():
        before, after = old_by_key.get(key), new_by_key.get(key)
        if before and after and before.digest == after.digest:
            continue
        change = "changes" if before and after else "is added" if after else "is removed"
        grouped.setdefault((describe_asset(after or before), change), set()).add(key[0])
    return [
        {"asset": name, "change": change, "stages": sorted(stages)}
        for (name, change), stages in sorted(grouped.items())
    ]


# ---------------------------------------------------------------------------------------------------- comparison


def diff_templates(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the CDK's diff engine (scripts/template_diff.cjs) over [{stage, stack, old, new}]."""
    if not pairs:
        return []
    node = ROOT / "node_modules" / ".bin" / "node"
    result = subprocess.run(
        [str(node), str(ROOT / "scripts" / "template_diff.cjs")],
        input=json.dumps(pairs),
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise ReviewError(
            f"the CDK diff engine failed (is @aws-cdk/cloudformation-diff installed? "
            f"run `npm ci`):\n{result.stderr.strip()[-4000:]}"
        )
    return json.loads(result.stdout)


_CHANGE_OF_IMPACT = {
    "WILL_CREATE": "added",
    "WILL_DESTROY": "removed",
    "WILL_ORPHAN": "removed (retained)",
    "WILL_UPDATE": "changed",
    "WILL_REPLACE": "replaced",
    "MAY_REPLACE": "may be replaced",
    "WILL_IMPORT": "imported",
    "NO_CHANGE": "changed",
}


def classify_stack(result: dict[str, Any]) -> dict[str, Any]:
    """Resource rows of one stack, with logical-id renames of stateful resources paired into replacements."""
    rows = []
    for resource in result["resources"]:
        if resource["type"] == "AWS::CDK::Metadata":
            continue  # the CDK's construct-usage analytics: changes with every construct added, deploys nothing
        change = _CHANGE_OF_IMPACT.get(resource["impact"], resource["impact"].lower())
        rows.append(
            {
                **resource,
                "stage": result["stage"],
                "stack": result["stack"],
                "change": change,
                "stateful": resource["type"] in STATEFUL_TYPES,
                "renamed_from": None,
            }
        )
    # A stateful resource whose logical id changed shows as a removal and an addition of the same type: to
    # CloudFormation that is a new, empty resource and the old one deleted (or orphaned), i.e. a replacement.
    removed = sorted(
        (r for r in rows if r["stateful"] and r["change"].startswith("removed")), key=lambda r: r["path"] or ""
    )
    added = [r for r in rows if r["stateful"] and r["change"] == "added"]
    paired = set()
    for gone in removed:
        match = next((a for a in added if a["type"] == gone["type"] and id(a) not in paired), None)
        if match is None:
            continue
        paired.add(id(match))
        match["change"] = "replaced (logical id renamed)"
        match["renamed_from"] = gone["logicalId"]
        gone["paired"] = True
    rows = [r for r in rows if not r.get("paired")]
    return {
        "stage": result["stage"],
        "stack": result["stack"],
        "resources": rows,
        "iam": result["iam"],
        "securityGroups": result["securityGroups"],
        "outputs": result["outputs"],
    }


def _is_replacement(row: dict[str, Any]) -> bool:
    return row["change"].startswith("replaced") or row["change"] == "may be replaced"


# ---------------------------------------------------------------------------------------------------- config


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else key))
        return flat
    return {prefix: value}


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return "none" if value is None else str(value)


def _named_changes(what: str, where: str, old: list[dict], new: list[dict], summary: list[str]) -> list[str]:
    lines = []
    old_by_name, new_by_name = {e["name"]: e for e in old}, {e["name"]: e for e in new}
    for name in sorted(new_by_name.keys() - old_by_name.keys()):
        lines.append(f"{what} `{name}` added to {where} ({_describe(new_by_name[name], summary)})")
    for name in sorted(old_by_name.keys() - new_by_name.keys()):
        lines.append(f"{what} `{name}` removed from {where}")
    for name in sorted(old_by_name.keys() & new_by_name.keys()):
        lines += [
            f"{what} `{name}` of {where}: {text}" for text in _field_changes(old_by_name[name], new_by_name[name])
        ]
    return lines


def _describe(entry: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{key} {_show(entry[key])}" for key in keys if entry.get(key) not in (None, [], False))


def _field_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    flat_old, flat_new = _flatten(old), _flatten(new)
    for key in sorted(flat_old.keys() | flat_new.keys()):
        before, after = flat_old.get(key), flat_new.get(key)
        if before == after:
            continue
        if isinstance(before, list) and isinstance(after, list):
            added = [v for v in after if v not in before]
            removed = [v for v in before if v not in after]
            parts = ([f"+ {_show(added)}"] if added else []) + ([f"- {_show(removed)}"] if removed else [])
            lines.append(f"{key} {' '.join(parts) or 'reordered'}")
        else:
            lines.append(f"{key} {_show(before)} → {_show(after)}")
    return lines


def config_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """Teams, stages, endpoints, hosts, instance types and every other resolved setting that changed, in words."""
    lines = []
    old_teams, new_teams = {s["team"] for s in old}, {s["team"] for s in new}
    for team in sorted(new_teams - old_teams):
        stages = [s["name"] for s in new if s["team"] == team]
        lines.append(f"team `{team}` added (stages {', '.join(stages)})")
    for team in sorted(old_teams - new_teams):
        lines.append(f"team `{team}` removed")
    old_stages = {f"{s['team']}-{s['name']}": s for s in old}
    new_stages = {f"{s['team']}-{s['name']}": s for s in new}
    for name in sorted(new_stages.keys() - old_stages.keys()):
        stage = new_stages[name]
        if stage["team"] in old_teams:
            lines.append(f"stage `{name}` added (account {stage['account']}, {stage['region']})")
    for name in sorted(old_stages.keys() - new_stages.keys()):
        if old_stages[name]["team"] in new_teams:
            lines.append(f"stage `{name}` removed")
    for name in sorted(old_stages.keys() & new_stages.keys()):
        before, after = dict(old_stages[name]), dict(new_stages[name])
        lines += _named_changes(
            "endpoint",
            f"`{name}`",
            before.pop("endpoints", []),
            after.pop("endpoints", []),
            ["kind", "instance_type", "min_instances", "max_instances", "serverless"],
        )
        lines += _named_changes(
            "host",
            f"`{name}`",
            before.pop("hosts", []),
            after.pop("hosts", []),
            ["instance_type", "volume_gb", "owner"],
        )
        lines += [f"`{name}`: {text}" for text in _field_changes(before, after)]
    return lines


# ---------------------------------------------------------------------------------------------------- report


@dataclass
class Review:
    base: str
    head: str
    stacks: list[dict[str, Any]] = field(default_factory=list)
    stacks_added: list[str] = field(default_factory=list)
    stacks_removed: list[str] = field(default_factory=list)
    assets: list[dict[str, Any]] = field(default_factory=list)
    acknowledgements_added: list[dict[str, str]] = field(default_factory=list)
    acknowledgements_removed: list[dict[str, str]] = field(default_factory=list)
    config: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [row for stack in self.stacks for row in stack["resources"]]

    def stateful_replacements(self) -> list[dict[str, Any]]:
        return [r for r in self.rows() if r["stateful"] and _is_replacement(r)]

    def stateful_removals(self) -> list[dict[str, Any]]:
        return [r for r in self.rows() if r["stateful"] and r["change"].startswith("removed")]

    def violations(self, policies: list[str]) -> list[str]:
        """The --fail-on policies this change violates, each with what violates it."""
        found = {
            "stateful-replacement": [_where(r) for r in self.stateful_replacements()],
            "stateful-removal": [_where(r) for r in self.stateful_removals()],
            "replacement": [_where(r) for r in self.rows() if _is_replacement(r)],
            "iam-widening": [f"{s['stage']}/{s['stack']}" for s in self.stacks if s["iam"]["broadened"]],
            "security-group-widening": [
                f"{s['stage']}/{s['stack']}" for s in self.stacks if s["securityGroups"]["rulesAdded"]
            ],
        }
        return [f"{policy}: {', '.join(found[policy])}" for policy in policies if found[policy]]

    def summary(self) -> dict[str, Any]:
        per_stage: dict[str, dict[str, Any]] = {}
        for stack in self.stacks:
            entry = per_stage.setdefault(
                stack["stage"],
                {
                    "stacks_added": [],
                    "stacks_removed": [],
                    "stacks_changed": [],
                    "resources_added": 0,
                    "resources_removed": 0,
                    "resources_changed": 0,
                    "replacements": 0,
                    "stateful_replacements": 0,
                    "iam_statements_added": 0,
                    "iam_statements_removed": 0,
                    "iam_broadened": False,
                    "security_group_rules_added": 0,
                    "security_group_rules_removed": 0,
                },
            )
            qualified = f"{stack['stage']}/{stack['stack']}"
            bucket = (
                "stacks_added"
                if qualified in self.stacks_added
                else "stacks_removed"
                if qualified in self.stacks_removed
                else "stacks_changed"
            )
            if bucket != "stacks_changed" or stack["resources"] or stack["outputs"]:
                entry[bucket].append(stack["stack"])
            for row in stack["resources"]:
                if row["change"] == "added":
                    entry["resources_added"] += 1
                elif row["change"].startswith("removed"):
                    entry["resources_removed"] += 1
                elif _is_replacement(row):
                    entry["replacements"] += 1
                    entry["stateful_replacements"] += row["stateful"]
                else:
                    entry["resources_changed"] += 1
            entry["iam_statements_added"] += len(stack["iam"]["statementsAdded"])
            entry["iam_statements_removed"] += len(stack["iam"]["statementsRemoved"])
            entry["iam_broadened"] |= stack["iam"]["broadened"]
            entry["security_group_rules_added"] += len(stack["securityGroups"]["rulesAdded"])
            entry["security_group_rules_removed"] += len(stack["securityGroups"]["rulesRemoved"])
        return {
            "base": self.base,
            "head": self.head,
            "stages": per_stage,
            "stateful_replacements": [_brief(r) for r in self.stateful_replacements()],
            "stateful_removals": [_brief(r) for r in self.stateful_removals()],
            "replacements": [_brief(r) for r in self.rows() if _is_replacement(r)],
            "assets": self.assets,
            "config": self.config,
            "acknowledgements_added": self.acknowledgements_added,
            "acknowledgements_removed": self.acknowledgements_removed,
            "stacks": self.stacks,
        }


def _where(row: dict[str, Any]) -> str:
    return f"{row['stage']}/{row['stack']} {row['logicalId']} ({row['type']})"


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: row[key]
        for key in ("stage", "stack", "logicalId", "type", "path", "change", "renamed_from", "replacingProperties")
    }


def compare(
    base: str, head: str, old_dir: Path, new_dir: Path, old_config: list[dict], new_config: list[dict]
) -> Review:
    """Compare two synthesized apps: resources by the CDK diff engine, assets, acknowledgements, config."""
    old_assembly, new_assembly = read_assembly(old_dir), read_assembly(new_dir)
    for assembly in (old_assembly, new_assembly):
        assembly.stacks.update({(PIPELINE, name): stack for name, stack in read_app_stacks(assembly.outdir).items()})
    old_assets, new_assets = read_assets(old_dir), read_assets(new_dir)
    old_templates = neutral_templates(old_assembly, old_assets)
    new_templates = neutral_templates(new_assembly, new_assets)
    review = Review(base=base, head=head)
    pairs = []
    for key in sorted(old_templates.keys() | new_templates.keys()):
        if key not in old_templates:
            review.stacks_added.append("/".join(key))
        elif key not in new_templates:
            review.stacks_removed.append("/".join(key))
        pairs.append(
            {"stage": key[0], "stack": key[1], "old": old_templates.get(key, {}), "new": new_templates.get(key, {})}
        )
    review.stacks = [classify_stack(result) for result in diff_templates(pairs)]
    review.assets = asset_changes(old_assets, new_assets)

    def readable(rows: list[dict[str, str]]) -> dict[tuple[str, ...], dict[str, str]]:
        # The assembly records "Annotation::AwsSolutions-S1"; reviewers know the rule as AwsSolutions-S1.
        rows = [{**row, "rule": row["rule"].removeprefix("Annotation::")} for row in rows]
        return {(r["stage"], r["path"], r["rule"], r["reason"]): r for r in rows}

    old_acks, new_acks = readable(acknowledgements(old_assembly)), readable(acknowledgements(new_assembly))
    review.acknowledgements_added = [new_acks[k] for k in sorted(new_acks.keys() - old_acks.keys())]
    review.acknowledgements_removed = [old_acks[k] for k in sorted(old_acks.keys() - new_acks.keys())]
    review.config = config_changes(old_config, new_config)
    return review


def _cell(value: Any) -> str:
    text = str(value).replace("|", "\\|").replace("\n", "<br>")
    return text if text.strip() else " "


def _table(header: list[str], rows: list[list[Any]], more_in: str = "review.json") -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        lines.append(f"\n… and {len(rows) - MAX_ROWS} more rows in {more_in}")
    return [*lines, ""]


def render_markdown(review: Review) -> str:
    """The pull-request comment: what matters most first, details per stage in collapsed sections."""
    summary = review.summary()
    out = [REVIEW_MARKER, f"## finetune-stack review: `{review.base[:12]}` → {review.head}", ""]
    stateful = review.stateful_replacements() + review.stateful_removals()
    if stateful:
        out += ["**Stateful resources replaced or removed (their data does not move with them):**", ""]
        for row in stateful:
            renamed = f", logical id renamed from `{row['renamed_from']}`" if row["renamed_from"] else ""
            because = ", ".join(p["property"] for p in row["replacingProperties"])
            because = f", because {because} changed" if because else ""
            out.append(
                f"- **{row['change']}: {row['stage']}/{row['stack']} `{row['logicalId']}` ({row['type']})"
                f"{renamed}{because}**"
            )
        out.append("")
    nothing = (
        not any(s["resources"] or s["outputs"] for s in review.stacks)
        and not review.assets
        and not review.acknowledgements_added
        and not review.acknowledgements_removed
        and not review.config
    )
    if nothing:
        out += ["No change to any synthesized stack, asset, acknowledgement or configuration.", ""]
        return "\n".join(out)
    if summary["stages"]:
        rows = []
        for stage, entry in sorted(summary["stages"].items()):
            stacks = (
                ", ".join(
                    [f"+{s}" for s in entry["stacks_added"]]
                    + [f"-{s}" for s in entry["stacks_removed"]]
                    + [f"~{s}" for s in entry["stacks_changed"]]
                )
                or "none"
            )
            rows.append(
                [
                    stage,
                    stacks,
                    entry["resources_added"],
                    entry["resources_removed"],
                    entry["resources_changed"],
                    entry["replacements"],
                    f"+{entry['iam_statements_added']} -{entry['iam_statements_removed']}"
                    + (" (broadened)" if entry["iam_broadened"] else ""),
                    f"+{entry['security_group_rules_added']} -{entry['security_group_rules_removed']}",
                ]
            )
        out += _table(
            ["stage", "stacks", "added", "removed", "changed", "replaced", "IAM statements", "SG rules"], rows
        )
    if review.config:
        out += ["### Configuration", ""] + [f"- {line}" for line in review.config] + [""]
    if review.assets:
        out += ["### Assets", ""]
        out += [f"- {a['asset']} {a['change']} ({', '.join(a['stages'])})" for a in review.assets] + [""]
    iam_rows, managed_rows, sg_rows = [], [], []
    for stack in review.stacks:
        where = f"{stack['stage']}/{stack['stack']}"
        for sign, key in (("+", "statementsAdded"), ("-", "statementsRemoved")):
            iam_rows += [
                [sign, where, s["effect"], s["principal"], s["action"], s["resource"], s["condition"]]
                for s in stack["iam"][key]
            ]
        for sign, key in (("+", "managedPoliciesAdded"), ("-", "managedPoliciesRemoved")):
            managed_rows += [[sign, where, p["identity"], p["policy"]] for p in stack["iam"][key]]
        for sign, key in (("+", "rulesAdded"), ("-", "rulesRemoved")):
            sg_rows += [
                [sign, where, r["group"], r["direction"], r["protocol"], r["peer"]]
                for r in stack["securityGroups"][key]
            ]
    if iam_rows or managed_rows:
        out += ["### IAM", ""]
        if iam_rows:
            out += _table(["", "stack", "effect", "principal", "action", "resource", "condition"], iam_rows)
        if managed_rows:
            out += _table(["", "stack", "identity", "managed policy"], managed_rows)
    if sg_rows:
        out += ["### Security groups", "", *_table(["", "stack", "group", "direction", "protocol", "peer"], sg_rows)]
    if review.acknowledgements_added or review.acknowledgements_removed:
        out += ["### Rule-pack acknowledgements", ""]
        out += _table(
            ["", "stage", "resource", "rule", "reason"],
            [["+", a["stage"], a["path"], a["rule"], a["reason"]] for a in review.acknowledgements_added]
            + [["-", a["stage"], a["path"], a["rule"], a["reason"]] for a in review.acknowledgements_removed],
        )
    for stage in sorted(summary["stages"]):
        rows = [
            [r["change"], r["stack"], r["logicalId"], r["type"], ", ".join(r["changedProperties"] + r["otherChanges"])]
            for stack in review.stacks
            if stack["stage"] == stage
            for r in stack["resources"]
        ]
        if not rows:
            continue
        out += [f"<details><summary>{stage}: {len(rows)} resource change(s)</summary>", ""]
        out += [*_table(["change", "stack", "logical id", "type", "properties"], rows), "</details>", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------- main


def parse_policies(text: str | None) -> list[str]:
    policies = [p.strip() for p in (text or "").split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise ReviewError(
            f"--fail-on: unknown polic{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)} "
            f"(known: {', '.join(POLICIES)})"
        )
    return policies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=None, help="git ref to compare against (default: merge base with main)")
    parser.add_argument("--config", default="config/teams.yaml", help="teams file, relative to each tree's root")
    parser.add_argument("--team", default=None, help="only these teams (comma-separated), as -c team=")
    parser.add_argument("--stage", default=None, help="only these stage names (comma-separated), as -c stage=")
    parser.add_argument("--out", default="build/review", help="where review.md, review.json and the cache go")
    parser.add_argument("--fail-on", default=None, help="exit 1 when the change does any of: " + ", ".join(POLICIES))
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    timings: dict[str, float] = {}
    try:
        policies = parse_policies(args.fail_on)
        base = resolve_base(args.base)
        started = time.perf_counter()
        old_dir, old_config, cached = synthesize_base(
            base, out / "cache", repo=ROOT, config=args.config, teams=args.team, stages=args.stage
        )
        timings["base_synth_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        new_config = synthesize(ROOT, out / "head" / "cdk.out", config=args.config, teams=args.team, stages=args.stage)
        timings["head_synth_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        head = "the working tree" + (f" (on `{git('rev-parse', '--short=12', 'HEAD')}`)")
        review = compare(base, head, old_dir, out / "head" / "cdk.out", old_config, new_config)
        timings["compare_s"] = round(time.perf_counter() - started, 1)
    except ReviewError as error:
        print(f"make review: {error}", file=sys.stderr)
        return 2
    markdown = render_markdown(review)
    summary = review.summary()
    violations = review.violations(policies)
    summary.update(base_cached=cached, timings=timings, fail_on=policies, violations=violations)
    (out / "review.md").write_text(markdown + "\n", encoding="utf-8")
    (out / "review.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(markdown)
    print(
        f"\nmake review: wrote {out / 'review.md'} and {out / 'review.json'} (base synth "
        f"{'from cache' if cached else 'fresh'}: {timings['base_synth_s']} s, head synth "
        f"{timings['head_synth_s']} s, compare {timings['compare_s']} s)",
        file=sys.stderr,
    )
    for violation in violations:
        print(f"make review: --fail-on {violation}", file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
