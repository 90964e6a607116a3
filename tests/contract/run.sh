#!/usr/bin/env bash
# The admin API against its own contract: starts a throwaway node (free loopback ports, a
# temporary data folder, a known admin token), deploys a few examples so there is data,
# checks that GET /v1/openapi.json is a valid OpenAPI 3.1 document, then lets schemathesis
# (property-based tests generated from that document) call every operation: no answer may
# be a 5xx, and none may break the document (status code, content type, headers, body).
# Exits non-zero on any failure, with the node's log.
#
#   tests/contract/run.sh                  # about two minutes once built
#   RUNWAY_CONTRACT_EXAMPLES=500 RUNWAY_CONTRACT_SEED=7 tests/contract/run.sh
#   RUNWAY_CONTRACT_ARGS="--report har"    # more schemathesis options (reports land in
#                                          # the temporary folder unless given a path)
#
# CI runs it from .ci/run. Needs python3 with venv; schemathesis and
# openapi-spec-validator are installed, pinned, into a venv in the cargo target folder.
set -euo pipefail
cd "$(dirname "$0")/../.."

SCHEMATHESIS=4.32.5
OPENAPI_SPEC_VALIDATOR=0.9.0
# Cases per operation and phase: about a minute and a half of testing on two cores.
EXAMPLES=${RUNWAY_CONTRACT_EXAMPLES:-100}
# Fixed, so a failure reproduces; set RUNWAY_CONTRACT_SEED to explore.
SEED=${RUNWAY_CONTRACT_SEED:-20261129}

say() { printf 'contract: %s\n' "$*"; }
# GET a URL, or POST the second argument to it, with what is sure to be here: python3.
fetch() {
  python3 -c 'import sys, urllib.request as u
body = [a.encode() for a in sys.argv[2:]]
sys.stdout.buffer.write(u.urlopen(sys.argv[1], *body).read())' "$@"
}

target=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
work=$(mktemp -d)
node=
finish() {
  status=$?
  if [ -n "$node" ]; then
    kill -INT "$node" 2>/dev/null || true
    wait "$node" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$work/node.log" ]; then
    say "FAILED; the node's log:"
    tail -n 200 "$work/node.log" | sed 's/^/  node| /'
  fi
  rm -rf "$work"
  exit "$status"
}
trap finish EXIT

say "building the runway binary"
cargo build --quiet -p runway-cli
# A copy: a build sharing the target folder cannot swap the binary under this run.
cp "$target/debug/runway" "$work/runway"
runway=$work/runway

say "building the example functions"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
# The examples' manifests name components under examples/target.
(cd examples && env -u CARGO_TARGET_DIR cargo build --quiet --release --target wasm32-wasip2 \
  -p hello -p echo -p nightly)

venv=$target/contract-venv
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS\$" ||
  ! "$venv/bin/pip" show openapi-spec-validator 2>/dev/null | grep -q "^Version: $OPENAPI_SPEC_VALIDATOR\$"; then
  say "installing schemathesis $SCHEMATHESIS into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS" "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR"
fi

token=contract-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
say "starting a node in $work"
RUNWAY_ADMIN_TOKEN=$token RUST_LOG=${RUST_LOG:-warn} "$runway" serve \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$work/data" \
  >"$work/node.log" 2>&1 &
node=$!
admin=
for _ in $(seq 600); do
  admin=$(sed -n 's|^runway: admin API listening on http://||p' "$work/node.log")
  gateway=$(sed -n 's|^runway: gateway listening on http://||p' "$work/node.log")
  [ -n "$admin" ] && [ -n "$gateway" ] && break
  kill -0 "$node" 2>/dev/null || { say "the node exited at start"; exit 1; }
  sleep 0.1
done
[ -n "$admin" ] || { say "the node did not say where it listens"; exit 1; }
say "admin API on $admin, gateway on $gateway"

export RUNWAY_SERVER=http://$admin RUNWAY_TOKEN=$token
unset RUNWAY_ENV
for example in hello echo nightly; do
  "$runway" deploy --no-build "examples/$example" >/dev/null
done
# Something to report and act on: invocations and logs, a job that succeeds and one that
# is dead-lettered (four attempts over about seven seconds), a second environment to
# promote from, an API key, a budget and a secret.
"$runway" invoke hello >/dev/null
fetch "http://$gateway/echo/contract" ping >/dev/null
"$runway" invoke nightly --async >/dev/null
"$runway" invoke nightly --async --path '/nightly?fail=1' >/dev/null
"$runway" env create staging --from prod >/dev/null
"$runway" key create --function nightly --rate 10/min >/dev/null
"$runway" budget set function hello --monthly "20 USD" >/dev/null
printf %s contract-value | "$runway" secret set CONTRACT_SECRET >/dev/null

fetch "http://$admin/v1/openapi.json" >"$work/openapi.json"
say "validating the document against the OpenAPI 3.1 schema"
"$venv/bin/openapi-spec-validator" --schema 3.1 "$work/openapi.json"

# Left out, and why:
# - DELETE /v1/tokens/{id}: revoking the token this run uses would turn every later call
#   into a 401 and test nothing more (schemathesis's stateful phase can find its id in
#   GET /v1/tokens).
say "running schemathesis $SCHEMATHESIS ($EXAMPLES cases per operation and phase, seed $SEED)"
# From the work folder: schemathesis and Hypothesis leave nothing in the repository.
(cd "$work" && "$venv/bin/schemathesis" --no-color run "$work/openapi.json" \
  --url "http://$admin" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method,allow_header_conformance \
  --exclude-operation-id revoke_token \
  --max-examples "$EXAMPLES" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 60 \
  --suppress-health-check too_slow,filter_too_much \
  --generation-with-security-parameters false \
  --generation-database none \
  --warnings off \
  ${RUNWAY_CONTRACT_ARGS:-})
say "passed"
