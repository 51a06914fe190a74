#!/usr/bin/env node
// Compare pairs of CloudFormation templates with the AWS CDK's own diff engine (@aws-cdk/cloudformation-diff, the
// library behind `cdk diff`), offline. It knows which property changes replace a resource (from the CloudFormation
// resource specification) and how IAM statements and security-group rules are spread over a template; this script
// only turns its answer into JSON for scripts/review.py.
//
// stdin:  [{"stage": "search-dev", "stack": "Data", "old": {...template or {}}, "new": {...}}, ...]
// stdout: [{"stage", "stack", "resources": [...], "iam": {...}, "securityGroups": {...}, "outputs": [...]}, ...]
'use strict';

const { fullDiff } = require('@aws-cdk/cloudformation-diff');

function readStdin() {
  return require('fs').readFileSync(0, 'utf8');
}

function cdkPath(resource) {
  return (resource && resource.Metadata && resource.Metadata['aws:cdk:path']) || null;
}

function resourceChanges(diff) {
  const rows = [];
  diff.resources.forEachDifference((logicalId, change) => {
    if (!change.isDifferent) return;
    const replacing = [];
    for (const [name, property] of Object.entries(change.propertyUpdates)) {
      if (property.changeImpact === 'WILL_REPLACE' || property.changeImpact === 'MAY_REPLACE') {
        replacing.push({ property: name, impact: property.changeImpact });
      }
    }
    rows.push({
      logicalId,
      type: change.resourceType || change.newResourceType || change.oldResourceType,
      impact: change.changeImpact,
      path: cdkPath(change.newValue) || cdkPath(change.oldValue),
      changedProperties: Object.keys(change.propertyUpdates).sort(),
      otherChanges: Object.keys(change.otherChanges).filter((key) => key !== 'Metadata').sort(),
      replacingProperties: replacing,
    });
  });
  return rows;
}

function statements(collection) {
  return collection.map((statement) => {
    const rendered = statement.render();
    return {
      effect: rendered.effect,
      principal: rendered.principal,
      action: rendered.action,
      resource: rendered.resource,
      condition: rendered.condition,
      negative: statement.isNegativeStatement,
    };
  });
}

function securityGroupRules(collection, direction) {
  return collection.map((rule) => ({
    group: rule.groupId, direction, protocol: rule.describeProtocol(), peer: rule.describePeer(),
  }));
}

function compare(pair) {
  const diff = fullDiff(pair.old || {}, pair.new || {});
  const iam = diff.iamChanges;
  const groups = diff.securityGroupChanges;
  const outputs = [];
  diff.outputs.forEachDifference((name, change) => {
    outputs.push({ name, change: change.isAddition ? 'added' : change.isRemoval ? 'removed' : 'changed' });
  });
  return {
    stage: pair.stage,
    stack: pair.stack,
    resources: resourceChanges(diff),
    iam: {
      broadened: iam.permissionsBroadened,
      statementsAdded: statements(iam.statements.additions),
      statementsRemoved: statements(iam.statements.removals),
      managedPoliciesAdded: iam.managedPolicies.additions.map((a) => ({ identity: a.identityArn, policy: a.managedPolicyArn })),
      managedPoliciesRemoved: iam.managedPolicies.removals.map((a) => ({ identity: a.identityArn, policy: a.managedPolicyArn })),
    },
    securityGroups: {
      rulesAdded: [...securityGroupRules(groups.ingress.additions, 'in'), ...securityGroupRules(groups.egress.additions, 'out')],
      rulesRemoved: [...securityGroupRules(groups.ingress.removals, 'in'), ...securityGroupRules(groups.egress.removals, 'out')],
    },
    outputs,
  };
}

const pairs = JSON.parse(readStdin());
process.stdout.write(JSON.stringify(pairs.map(compare)));
