#!/usr/bin/env bash
# CI test of the compose cluster, as an operator runs it and partitioned as an operator would.
#
#   docker/test-compose.sh [path/to/tally-node]      # default: target/debug/tally-node
#
# Offline on purpose (no image registry on this project's machines): debian:bookworm-slim
# from docker/base-image.sh, the host binary staged into docker/stage/, the image built by
# compose through docker/compose.ci.yml (target `prebuilt`), and only node1..node3 started:
# prometheus and grafana need registry images. Then:
#   votes through every node; the leader cut off with `docker network disconnect`; the two
#   others must keep recording votes (same Idempotency-Key retried on 503/504 until a
#   deadline) and the isolated one must answer 503 or 504, never 200; reconnected with its
#   alias; all three must reach the same applied_index and state_hash and count exactly the
#   acknowledged votes (a 503 is not recorded; a 504 is resolved by retrying its key); then
#   the demo profile's `simulator` service (the `tally` CLI staged beside the node binary)
#   runs a short simulated election on the same network, which must count exactly; and
#   last, the cluster again in TLS mode (docker/compose.tls.yml, certificates from
#   `tally certs`): ready over https, plain HTTP refused, votes through every node counted
#   exactly on each.
# Prints PASS/FAIL lines and ends with `docker-compose: 1 passed, 0 failed` (or 0 passed,
# 1 failed; exit 1). Always removes its containers, network and volumes. Every wait has a
# deadline and a watchdog bounds the whole run (TALLY_CI_BUDGET seconds, default 300).
# Needs docker, docker-compose 1.29 or the `docker compose` plugin, curl, python3, and root
# only if debian:bookworm-slim must be made (debootstrap).
# shellcheck disable=SC2317  # functions called indirectly (trap, wait_until)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BINARY=${1:-target/debug/tally-node}
PROJECT=${TALLY_CI_PROJECT:-tallyci}   # no '-': Compose 1 would strip it from resource names
BUDGET=${TALLY_CI_BUDGET:-300}
export TALLY_IMAGE=${TALLY_IMAGE:-tally-node:ci}
export TALLY_CLUSTER_SECRET="ci-$$-$RANDOM$RANDOM"
export TALLY_NODE1_PORT=${TALLY_NODE1_PORT:-7001} TALLY_NODE2_PORT=${TALLY_NODE2_PORT:-7002} \
    TALLY_NODE3_PORT=${TALLY_NODE3_PORT:-7003}
PORTS=("" "$TALLY_NODE1_PORT" "$TALLY_NODE2_PORT" "$TALLY_NODE3_PORT")
STAGED=docker/stage/tally-node
STAGED_CLI=docker/stage/tally
TMP=$(mktemp -d)
T0=$SECONDS

# Compose v2 (plugin) if present, else Compose 1 (the Debian package on these machines).
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
COMPOSE_FILES=(-f docker-compose.yml -f docker/compose.ci.yml)
compose() { timeout 300 "${COMPOSE[@]}" -p "$PROJECT" "${COMPOSE_FILES[@]}" "$@"; }

FAILED=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; FAILED=1; }
die() { fail "$*"; exit 1; }
note() { printf '  [%3ss] %s\n' "$((SECONDS - T0))" "$*"; }

# --- teardown, always: containers, network, volumes; then the one summary line ---------------
WATCHDOG=
finish() {
    local rc=$?
    trap - EXIT INT TERM
    [ "$rc" -eq 0 ] || FAILED=1
    [ -z "$WATCHDOG" ] || kill -TERM "$WATCHDOG" 2>/dev/null || true
    if [ "$FAILED" -ne 0 ] && [ -n "${UP:-}" ]; then
        echo "--- last log lines of the nodes"
        compose logs --no-color --tail 25 node1 node2 node3 2>&1 | tail -n 90 || true
    fi
    compose down -v --remove-orphans --timeout 10 >"$TMP/down.log" 2>&1 || { cat "$TMP/down.log"; }
    local left
    left=$( { docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"
              docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"
              docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT"; } 2>/dev/null | wc -l)
    if [ "$left" -eq 0 ]; then pass "teardown: no container, network or volume of project $PROJECT left"
    else fail "teardown: $left containers/networks/volumes of project $PROJECT left"; fi
    rm -f "$STAGED" "$STAGED_CLI"
    [ -z "${TALLY_CERTS_DIR:-}" ] || rm -rf "$TALLY_CERTS_DIR"
    rm -rf "$TMP"
    echo "took $((SECONDS - T0))s"
    if [ "$FAILED" -eq 0 ]; then echo "docker-compose: 1 passed, 0 failed"; exit 0
    else echo "docker-compose: 0 passed, 1 failed"; exit 1; fi
}
trap finish EXIT
trap 'fail "interrupted (or over the ${BUDGET}s budget)"; exit 1' INT TERM
# The watchdog: every wait below has its own deadline, this bounds their sum.
# TERM from finish() ends it quietly (and its sleep); otherwise it fails the run at the budget.
( trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep "$BUDGET" & sp=$!; wait "$sp"
  echo "FAIL the whole run is over its ${BUDGET}s budget"; kill -TERM $$ ) &
WATCHDOG=$!

# --- helpers -----------------------------------------------------------------------------
# json EXPR: evaluates a Python expression over the JSON document on stdin (as `d`).
json() { python3 -c 'import json, sys; d = json.load(sys.stdin); v = eval(sys.argv[1]); print("" if v is None else v)' "$1"; }

SCHEME=http CURL_TLS=()   # https and the CA in the TLS pass (section 7)
# http NODE METHOD PATH [BODY [IDEMPOTENCY-KEY]]: the status code on stdout (000 when no
# answer), the body in $TMP/body.
http() {
    local node=$1 method=$2 path=$3 body=${4:-} key=${5:-}
    local args=(-s -m 15 -o "$TMP/body" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json')
    [ -n "$key" ] && args+=(-H "Idempotency-Key: $key")
    [ -n "$body" ] && args+=(--data "$body")
    curl "${args[@]}" "${CURL_TLS[@]}" "$SCHEME://127.0.0.1:${PORTS[$node]}$path" || true
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls the command every half second.
wait_until() {
    local limit=$(( SECONDS + $1 )) what=$2; shift 2
    until "$@"; do
        [ "$SECONDS" -lt "$limit" ] || { fail "timed out waiting for $what"; return 1; }
        sleep 0.5
    done
}

ACKED=0            # votes acknowledged with 200 "recorded": the exact count every node must show
declare -A SEEN=() # status codes met along the way, for the log

# vote_recorded SECONDS VOTER OPTION NODE...: one voter, one Idempotency-Key, retried on
# 503/504/no answer, round robin over the nodes, until 200. Any 4xx is a definite refusal.
vote_recorded() {
    local limit=$(( SECONDS + $1 )) voter=$2 option=$3; shift 3
    local nodes=("$@") i=0 code
    while [ "$SECONDS" -lt "$limit" ]; do
        code=$(http "${nodes[$((i % ${#nodes[@]}))]}" POST "/v1/polls/$POLL/votes" \
            "{\"option_id\":\"$option\",\"voter_id\":\"$voter\"}" "key-$voter")
        SEEN[$code]=$(( ${SEEN[$code]:-0} + 1 ))
        i=$((i + 1))
        case $code in
            200) if [ "$(json 'd["status"]' <"$TMP/body")" = recorded ]; then ACKED=$((ACKED + 1)); return 0; fi
                 fail "vote $voter: 200 without status recorded: $(cat "$TMP/body")"; return 1 ;;
            503|504|000) sleep 0.5 ;;
            *) fail "vote $voter: HTTP $code $(cat "$TMP/body")"; return 1 ;;
        esac
    done
    fail "vote $voter: not recorded within its deadline"; return 1
}

all_ready() {
    local n
    for n in 1 2 3; do [ "$(http "$n" GET /ready)" = 200 ] || return 1; done
}

# --- 1. image and cluster ----------------------------------------------------------------
[ -x "$BINARY" ] || die "no executable tally-node at $BINARY (build it first, or pass its path)"
note "compose: ${COMPOSE[*]}; project $PROJECT; binary $BINARY"

t=$SECONDS
timeout 600 bash docker/base-image.sh | sed 's/^/  /' || die "base image debian:bookworm-slim"
note "base image ready in $((SECONDS - t))s"

t=$SECONDS
cp "$BINARY" "$STAGED"
CLI="$(dirname "$BINARY")/tally"
[ -x "$CLI" ] && cp "$CLI" "$STAGED_CLI"
# Only node1 has to build: the three services share the image name. The legacy builder
# (Compose 1) stops at the `prebuilt` stage, before the Dockerfile's rust image.
compose build node1 >"$TMP/build.log" 2>&1 || { tail -n 30 "$TMP/build.log"; die "image build"; }
note "image $TALLY_IMAGE built in $((SECONDS - t))s"

compose down -v --remove-orphans >/dev/null 2>&1 || true   # leftovers of a killed run
t=$SECONDS
UP=1
compose up -d --no-build node1 node2 node3 >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log"; die "compose up"; }
wait_until 90 "/ready on all three nodes" all_ready || exit 1
pass "three containers up and ready in $((SECONDS - t))s"

# --- 2. votes through every node ----------------------------------------------------------
code=$(http 1 POST /v1/polls '{"title":"compose ci","options":["yes","no"]}')
[ "$code" = 201 ] || die "create a poll: HTTP $code $(cat "$TMP/body")"
POLL=$(json 'd["poll_id"]' <"$TMP/body")
read -ra OPTS <<<"$(json '" ".join(o["option_id"] for o in d["options"])' <"$TMP/body")"
pass "poll $POLL created"

for n in 1 2 3; do
    for i in 1 2 3 4; do
        vote_recorded 30 "before-n$n-$i" "${OPTS[$((i % 2))]}" "$n" || exit 1
    done
done
pass "12 votes through node1, node2, node3 recorded"

# --- 3. cut the leader off ----------------------------------------------------------------
leader_known() {
    local n l=() code
    for n in 1 2 3; do
        code=$(http "$n" GET /v1/cluster/status); [ "$code" = 200 ] || return 1
        l+=("$(json 'd["leader_id"]' <"$TMP/body")")   # "" when none (or no JSON): retried
    done
    [ -n "${l[0]}" ] && [ "${l[0]}" = "${l[1]}" ] && [ "${l[0]}" = "${l[2]}" ] || return 1
    LEADER=${l[0]}
}
wait_until 30 "the three nodes to agree on a leader" leader_known || exit 1
MAJORITY=()
for n in 1 2 3; do [ "$n" = "$LEADER" ] || MAJORITY+=("$n"); done
ISOLATED_CID=$(compose ps -q "node$LEADER")
NETWORK=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}' "$ISOLATED_CID" | awk '{print $1}')
[ -n "$ISOLATED_CID" ] && [ -n "$NETWORK" ] || die "container or network of node$LEADER"
timeout 60 docker network disconnect "$NETWORK" "$ISOLATED_CID"
PARTITIONED=$SECONDS
note "node$LEADER (the leader) disconnected from $NETWORK"

# While off the network the container has no published port (Docker drops its DNAT rule and
# docker-proxy): 127.0.0.1:700N refuses. Observed here; logged, not asserted.
note "published port of the isolated node answers: $(curl -s -m 3 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORTS[$LEADER]}/health" || true) (000 = refused)"

SEEN=()
for i in $(seq 1 8); do
    vote_recorded 60 "during-$i" "${OPTS[$((i % 2))]}" "${MAJORITY[$(( i % 2 ))]}" "${MAJORITY[$(( (i + 1) % 2 ))]}" || exit 1
    [ "$i" -gt 1 ] || note "first vote recorded by the majority $((SECONDS - PARTITIONED))s after the cut"
done
pass "8 votes through the majority (node${MAJORITY[0]}, node${MAJORITY[1]}) recorded while node$LEADER was cut off (answers: $(for c in "${!SEEN[@]}"; do printf '%s x%s ' "$c" "${SEEN[$c]}"; done | sed 's/ $//'))"

# The published port is gone, so the vote to the isolated node is made from inside its own
# container (docker exec; the image has bash but no curl), on its loopback. The node itself
# cannot tell the difference: it is the same listener.
vote_inside() {
    local body="{\"option_id\":\"$2\",\"voter_id\":\"$1\"}"
    timeout 60 docker exec -i "$ISOLATED_CID" timeout 40 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/7000 || exit 7
        body=$(cat)
        printf "POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nIdempotency-Key: %s\r\nContent-Length: %s\r\n\r\n%s" \
            "$1" "$2" "${#body}" "$body" >&3
        cat <&3' _ "/v1/polls/$POLL/votes" "key-$1" <<<"$body" >"$TMP/inside" 2>&1 || true
    ISOLATED_CODE=$(head -n1 "$TMP/inside" | awk '{print $2}')
}
vote_inside isolated "${OPTS[0]}"
case ${ISOLATED_CODE:-none} in
    503|504) pass "the isolated node answered $ISOLATED_CODE to a vote, not 200" ;;
    *) fail "the isolated node answered ${ISOLATED_CODE:-nothing}: $(tail -n1 "$TMP/inside")" ;;
esac

# --- 4. heal ------------------------------------------------------------------------------
# The alias matters: the others reach it as nodeN, and a plain `network connect` would not
# put that name back in the network's DNS.
timeout 60 docker network connect --alias "node$LEADER" "$NETWORK" "$ISOLATED_CID"
note "node$LEADER reconnected after $((SECONDS - PARTITIONED))s apart"
wait_until 60 "/ready on all three nodes after the heal" all_ready || exit 1

# A 504 is an unknown outcome: retrying its key now tells, and from then on it counts once.
# A 503 was not recorded: it is not counted, and the counts below would show it if it were.
if [ "$ISOLATED_CODE" = 504 ]; then
    vote_recorded 60 isolated "${OPTS[0]}" 1 2 3 || exit 1
    note "the 504 resolved by its key: recorded"
fi
for i in 1 2 3; do
    vote_recorded 30 "after-$i" "${OPTS[$((i % 2))]}" "$LEADER" || exit 1
done
pass "3 votes through the healed node$LEADER recorded"

# --- 5. convergence and exact counts ------------------------------------------------------
converged() {
    local n code state total states=() totals=()
    for n in 1 2 3; do
        code=$(http "$n" GET /v1/cluster/status); [ "$code" = 200 ] || return 1
        state=$(json 'str(d["applied_index"]) + "/" + d["state_hash"]' <"$TMP/body") || return 1
        code=$(http "$n" GET "/v1/polls/$POLL/results"); [ "$code" = 200 ] || return 1
        total=$(json 'd["total_votes"]' <"$TMP/body") || return 1
        states+=("$state"); totals+=("$total")
    done
    LAST="applied_index/state_hash ${states[*]}; total_votes ${totals[*]}; acknowledged $ACKED"
    AGREED="applied_index ${state%%/*}, state_hash ${state#*/}"
    [ "${states[0]}" = "${states[1]}" ] && [ "${states[0]}" = "${states[2]}" ] || return 1
    [ "${totals[*]}" = "$ACKED $ACKED $ACKED" ]
}
LAST= AGREED=
if wait_until 60 "convergence" converged; then
    pass "all three agree ($AGREED) and count exactly the $ACKED acknowledged votes"
else
    fail "no convergence: $LAST"; exit 1
fi
if [ "$ISOLATED_CODE" = 503 ]; then
    for n in 1 2 3; do
        code=$(http "$n" GET "/v1/polls/$POLL/votes/me?voter_id=isolated")
        [ "$code" = 200 ] && [ "$(json 'd["has_voted"]' <"$TMP/body")" = False ] \
            || { fail "node$n: the vote answered 503 was recorded after all: $(cat "$TMP/body")"; exit 1; }
    done
    pass "the vote answered 503 left no trace on any node"
fi

# --- 6. the demo profile's simulator, briefly --------------------------------------------
if [ -x "$STAGED_CLI" ]; then
    t=$SECONDS
    if compose run --rm --no-deps -T simulator -o json \
            --endpoints http://node1:7000,http://node2:7000,http://node3:7000 \
            simulate --voters 300 --duration 3s --seed 7 >"$TMP/sim.json" 2>"$TMP/sim.err"; then
        read -r recorded total errors <<<"$(json '"%s %s %s" % (d["recorded"], d["total_votes"], d["errors"])' <"$TMP/sim.json")"
        if [ "$total" -gt 0 ] && [ "$recorded" = "$total" ] && [ "$errors" = 0 ]; then
            pass "the simulator service: $recorded votes recorded and counted, no errors, in $((SECONDS - t))s"
        else
            fail "the simulator service: recorded $recorded, counted $total, errors $errors"
        fi
    else
        fail "the simulator service: $(tail -n 5 "$TMP/sim.err")"
    fi
else
    note "no tally CLI beside $BINARY: the simulator service is not tried"
fi

# --- 7. the same compose cluster in TLS mode (docker/compose.tls.yml) --------------------
# Certificates from the CLI (`tally certs`), https on the published ports, mutual TLS
# between the containers, fresh volumes: votes through every node, exact counts on each,
# and plain HTTP on the same port refused.
if [ -x "$STAGED_CLI" ]; then
    t=$SECONDS
    compose down -v --remove-orphans >"$TMP/down.log" 2>&1 || { cat "$TMP/down.log"; die "compose down before TLS"; }
    export TALLY_CERTS_DIR="$TMP/certs"
    "$STAGED_CLI" certs "$TALLY_CERTS_DIR" --nodes 3 --host 'node{id}' >/dev/null || die "tally certs"
    chown 10001 "$TALLY_CERTS_DIR"/*.key   # the image's tally user reads its key
    COMPOSE_FILES+=(-f docker/compose.tls.yml)
    SCHEME=https CURL_TLS=(--cacert "$TALLY_CERTS_DIR/ca.pem")
    compose up -d --no-build node1 node2 node3 >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log"; die "compose up (TLS)"; }
    wait_until 90 "/ready on all three nodes over https" all_ready || exit 1
    pass "TLS: three containers up and ready over https in $((SECONDS - t))s"
    plain=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORTS[1]}/health" || true)
    [ "$plain" = 000 ] && pass "TLS: plain HTTP on the same port gets no answer" \
        || fail "TLS: plain HTTP got HTTP $plain"
    code=$(http 1 POST /v1/polls '{"title":"compose tls","options":["yes","no"]}')
    [ "$code" = 201 ] || die "TLS: create a poll: HTTP $code $(cat "$TMP/body")"
    POLL=$(json 'd["poll_id"]' <"$TMP/body")
    read -ra OPTS <<<"$(json '" ".join(o["option_id"] for o in d["options"])' <"$TMP/body")"
    ACKED=0
    for n in 1 2 3; do
        for i in 1 2; do vote_recorded 30 "tls-n$n-$i" "${OPTS[$((i % 2))]}" "$n" || exit 1; done
    done
    if wait_until 60 "convergence over TLS" converged; then
        pass "TLS: votes through every node forwarded over mutual TLS; all three count exactly the $ACKED"
    else
        fail "TLS: no convergence: $LAST"; exit 1
    fi
fi
exit 0
