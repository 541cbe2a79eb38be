#!/usr/bin/env bash
# Builds and deploys Tether to AWS, then uploads the web UI.
#
#   infra/deploy.sh            # what infra/samconfig.toml says: stack
#                              # "tether", in your AWS CLI's region
#   infra/deploy.sh --parameter-overrides WafRateLimit=500
#                              # with options (template.yaml's Parameters;
#                              # later deploys keep them unless overridden)
#   infra/deploy.sh --guided   # asks for stack name, region, every parameter
#
# Not guided by default: SAM's guided mode asks for every parameter and
# cannot leave the NoEcho one (OriginSecret) empty, while the template
# derives that secret itself when it is. In --guided, paste a long random
# value there (`openssl rand -base64 48`), or use the default mode.
#
# Needs: the AWS SAM CLI, cargo-lambda (`pip install cargo-lambda` pulls zig
# for the arm64 cross build), the AWS CLI with credentials and a region,
# Node.js/npm. Extra arguments go to `sam deploy`. Afterwards, make the
# first user with infra/mint-user.sh NAME.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
config="$root/infra/samconfig.toml"
build_dir="${TETHER_SAM_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tether/sam-build}"

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "infra/deploy.sh: $1 is missing: $2" >&2; exit 1; }
}
need sam "install the AWS SAM CLI (pip install aws-sam-cli)"
need cargo "install Rust (https://rustup.rs)"
need cargo-lambda "install cargo-lambda (pip install cargo-lambda)"
need aws "install the AWS CLI and configure credentials"
need npm "install Node.js 20.19 or newer"

guided=()
args=()
for a in "$@"; do
    case "$a" in
        --guided) guided=(--guided) ;;
        --no-guided) guided=() ;; # the default (kept for older instructions)
        *) args+=("$a") ;;
    esac
done

echo "== build the functions (cargo lambda, arm64)"
rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true
sam build --config-file "$config" --template-file "$root/template.yaml" --build-dir "$build_dir"

echo "== deploy the stack"
sam deploy --config-file "$config" --template-file "$build_dir/template.yaml" ${guided[@]+"${guided[@]}"} ${args[@]+"${args[@]}"}

stack="$(sed -n 's/^stack_name *= *"\(.*\)"/\1/p' "$config" | head -1)"
stack="${TETHER_STACK:-${stack:-tether}}"
output() {
    aws cloudformation describe-stacks --stack-name "$stack" \
        --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
bucket="$(output UiBucketName)"
distribution="$(output DistributionId)"
ui="$(output UiUrl)"

echo "== build and upload the web UI"
(cd web && npm ci --no-audit --no-fund && npm run build)
# Hashed assets never change meaning: cache them for good. Everything else
# is revalidated on each use, as the embedded host serves them.
aws s3 sync web/dist/assets "s3://$bucket/assets" --delete \
    --cache-control "public, max-age=31536000, immutable"
aws s3 sync web/dist "s3://$bucket" --delete --exclude "assets/*" \
    --cache-control "no-cache"
aws cloudfront create-invalidation --distribution-id "$distribution" --paths "/*" >/dev/null

cat <<DONE

Tether is deployed.
  Web UI and worker address: $ui
  Make the first user:       infra/mint-user.sh NAME
  Then, on each machine:     tether-worker --server $ui
DONE
