#!/usr/bin/env bash
# Makes a user of a deployed Tether and prints its secret (shown once):
#
#   infra/mint-user.sh ada            # an admin (the first user should be)
#   infra/mint-user.sh bob --user     # an ordinary user
#   infra/mint-user.sh ada --reset    # a new secret for ada (her open connections close)
#   infra/mint-user.sh bob --remove   # removes bob, revokes his workers, closes their connections
#
# Runs tether-admin on this machine with your AWS credentials, against the
# table in the stack's outputs (TETHER_STACK, default: samconfig.toml's
# stack_name). Needs the AWS CLI and Rust.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
name="${1:?usage: infra/mint-user.sh NAME [--user|--reset|--remove]}"
mode="${2:---admin}"
stack="$(sed -n 's/^stack_name *= *"\(.*\)"/\1/p' "$root/infra/samconfig.toml" | head -1)"
stack="${TETHER_STACK:-${stack:-tether}}"
table="$(aws cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].Outputs[?OutputKey=='TableName'].OutputValue" --output text)"
if [ -z "$table" ] || [ "$table" = "None" ]; then
    echo "infra/mint-user.sh: stack $stack has no TableName output: deploy first (infra/deploy.sh)" >&2
    exit 1
fi
# Reset and remove close the user's websockets through the WebSocket API's
# Management API (your credentials need execute-api:ManageConnections on it).
endpoint="$(aws cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].Outputs[?OutputKey=='ManagementEndpoint'].OutputValue" --output text)"
if [ "$endpoint" = "None" ]; then endpoint=""; fi
# The region of the stack is the region of the table.
export AWS_REGION="${AWS_REGION:-$(aws configure get region || true)}"
admin=(cargo run --quiet --release --manifest-path "$root/Cargo.toml" -p tether-functions --bin tether-admin -- --table "$table")
if [ -n "$endpoint" ]; then admin+=(--management-endpoint "$endpoint"); fi
case "$mode" in
    --admin) exec "${admin[@]}" user add "$name" --admin ;;
    --user) exec "${admin[@]}" user add "$name" ;;
    --reset) exec "${admin[@]}" user reset "$name" ;;
    --remove) exec "${admin[@]}" user remove "$name" ;;
    *) echo "infra/mint-user.sh: unknown option $mode (--admin, --user, --reset or --remove)" >&2; exit 1 ;;
esac
