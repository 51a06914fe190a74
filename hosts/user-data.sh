#!/usr/bin/env bash
# First-boot setup of a finetune-stack GPU host (runs once, as root, under cloud-init).
#
# The CDK app prepends a preamble that writes /etc/finetune-stack/host.env (region, buckets, training image,
# host name, log group), /opt/finetune-stack/finetune-host and /opt/finetune-stack/cloudwatch-agent.json;
# this script installs them. The host has no internet route: everything it fetches comes through the VPC's
# endpoints (S3 gateway, ECR, CloudWatch, SSM).
set -euo pipefail

# shellcheck source=/dev/null
source /etc/finetune-stack/host.env

install -m 0755 /opt/finetune-stack/finetune-host /usr/local/bin/finetune-host
install -d -m 0755 /opt/finetune/runs

# CloudWatch agent: GPU utilisation (nvidia_gpu) feeds the idle alarm that stops this host; logs go to the
# host's own log group. Installed from the region's agent bucket (through the S3 gateway endpoint) when the
# AMI does not ship it.
agent_ctl=/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl
if [[ ! -x "$agent_ctl" ]]; then
  package=/tmp/amazon-cloudwatch-agent.deb
  aws s3 cp "s3://amazoncloudwatch-agent-$FINETUNE_REGION/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb" \
    "$package" --only-show-errors --region "$FINETUNE_REGION"
  dpkg -i -E "$package"
  rm -f "$package"
fi
"$agent_ctl" -a fetch-config -m ec2 -s -c file:/opt/finetune-stack/cloudwatch-agent.json

# finetune-host runs docker, so Session Manager users run it with sudo (ssm-user has sudo on this AMI).
echo "finetune-stack host $FINETUNE_HOST_NAME ready: run 'sudo finetune-host --help'"
