#!/usr/bin/env bash
# The viral poll as a benchmark (issue 11), on three release nodes with real fsyncs:
# ingest through votes:batch for DURATION (1,000 votes a request, 6 connections), then
# report votes/s, CPU per vote (nodes and client), RSS per node and per vote, disk per
# vote, a follower's restart to ready, a learner's catch-up, a backup saved and restored
# into a new cluster, and check exact counts on every node and dedup by replaying a
# sample of voters.
#   DURATION=40s bash bench/viral.sh        (BIN=target/release by default)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-40s}
SAMPLE=${SAMPLE:-500}
source bench/cluster.sh
export TALLY_CLUSTER_SECRET=bench
TALLY="$BIN/tally"
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }
wait_ready() { # port, seconds: prints the milliseconds it took
    local start; start=$(now_ms)
    for _ in $(seq 1 $(($2 * 20))); do
        curl -sf "localhost:$1/ready" > /dev/null && { echo $(($(now_ms) - start)); return 0; }
        sleep 0.05
    done
    echo "node on port $1 not ready within $2 s; logs in $DATA" >&2; return 1
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

declare -A before
for i in 1 2 3; do before[$i]=$(rss_kib "${NODE_PIDS[$((i - 1))]}"); done

echo "ingesting for $DURATION ..." >&2
ticks0=$(node_cpu_ticks); client0=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
report=$("$TALLY" bench --duration "$DURATION" --connections 6 --mix batch=1 --batch-size 1000 -o json)
# CPU for the ingest: the three nodes, and the load generator (this shell's waited-for
# children, which here is only it).
ticks1=$(node_cpu_ticks); client1=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)
votes=$(json "d['votes_acknowledged']" <<< "$report")
rate=$(json "round(d['votes_acknowledged_per_second'])" <<< "$report")
exact=$(json "d['check']['ok']" <<< "$report")
poll=$(json "d['check']['polls'][0]['poll_id']" <<< "$report")
p99=$(json "d['requests']['batch']['latency_ms']['p99']" <<< "$report")
cpu=$(python3 -c "import sys; t, v, n, c = map(int, sys.argv[1:]); \
print(f'{n / t:.1f} s of node CPU, {1e6 * n / t / v:.1f} µs a vote; client {c / t:.1f} s')" \
    "$(getconf CLK_TCK)" "$votes" "$((ticks1 - ticks0))" "$((client1 - client0))")

rss_rows=""
for i in 1 2 3; do
    after=$(rss_kib "${NODE_PIDS[$((i - 1))]}")
    disk=$(du -sb "$DATA/$i" | awk '{print $1}')
    rss_rows+="| node $i | $((after / 1024)) MiB | $(( (after - ${before[$i]}) * 1024 / votes )) B | $((disk / votes)) B |"$'\n'
done

# Dedup: the first SAMPLE voters of the audit trail vote again with new keys.
trail=$(curl -s "localhost:7201/v1/polls/$poll/audit" | head -n "$SAMPLE" || true)
voters=$(python3 -c "import json,sys; print(json.dumps([json.loads(l)['voter_id'] for l in sys.stdin]))" <<< "$trail")
option=$(python3 -c "import json,sys; print(json.loads(sys.stdin.readline())['option_id'])" <<< "$trail")
replay=$(python3 - "$voters" "$option" <<'EOF'
import json, sys
voters, option = json.loads(sys.argv[1]), sys.argv[2]
print(json.dumps({"votes": [{"voter_id": v, "option_id": option, "idempotency_key": f"replay-{v}"} for v in voters]}))
EOF
)
refused=$(curl -s -X POST "localhost:7202/v1/polls/$poll/votes:batch" -H 'content-type: application/json' -d "$replay" \
    | json "sum(1 for r in d['results'] if r.get('error', {}).get('code') == 'ALREADY_VOTED')")
count() { curl -s "localhost:720$1/v1/polls/$poll/results" | json "d['total_votes']"; }

# A follower's restart to ready.
follower=1; [ "$(leader)" = 1 ] && follower=2
kill -TERM "${NODE_PIDS[$((follower - 1))]}"; wait "${NODE_PIDS[$((follower - 1))]}" 2>/dev/null || true
$BIN/tally-node --id $follower --addr 127.0.0.1:720$follower --data-dir "$DATA/$follower" --peers $P \
    --cluster-secret bench ${NODE_ARGS:-} >> "$DATA/log$follower" 2>&1 &
NODE_PIDS[$((follower - 1))]=$!
restart_ms=$(wait_ready 720$follower 120)
echo "ingested $votes at $rate votes/s ($cpu); exact $exact; replay refused $refused; restart $restart_ms ms" >&2

# A learner's catch-up (a snapshot, then the log).
$BIN/tally-node --id 4 --addr 127.0.0.1:7204 --data-dir "$DATA/4" --cluster-secret bench > "$DATA/log4" 2>&1 &
start=$(now_ms)
# The leader answers once the learner has caught up (at most its 60 s membership bound).
"$TALLY" --timeout-ms 70000 cluster add-member --node-id 4 --addr 127.0.0.1:7204 --learner > /dev/null
target=$(curl -s "localhost:720$(leader)/v1/cluster/status" | json "d['commit_index']")
for _ in $(seq 1 2400); do
    applied=$(curl -s localhost:7204/v1/cluster/status | json "d['applied_index']" 2>/dev/null || echo 0)
    [ "$applied" -ge "$target" ] && break
    sleep 0.05
done
learner_ms=$(($(now_ms) - start))
learner_count=$(curl -s "localhost:7204/v1/polls/$poll/results" | json "d['total_votes']")
echo "learner caught up in $learner_ms ms, counting $learner_count" >&2
# The learner leaves (its memory is needed for the restore below).
"$TALLY" cluster remove-member 4 > /dev/null
pkill -TERM -f "tally-node --id 4 --addr 127.0.0.1:7204" || true

# A backup, and a new cluster from it.
start=$(now_ms)
saved=$("$TALLY" --timeout-ms 300000 backup save "$DATA/backup.bin" -o json)
backup_ms=$(($(now_ms) - start))
backup_bytes=$(json "d['bytes']" <<< "$saved")
echo "backup saved in $backup_ms ms, $backup_bytes bytes" >&2
R=1=127.0.0.1:7211,2=127.0.0.1:7212,3=127.0.0.1:7213
start=$(now_ms)
for i in 1 2 3; do
    $BIN/tally-node --id $i --addr 127.0.0.1:721$i --data-dir "$DATA/r$i" --peers $R --cluster-secret bench \
        --restore "$DATA/backup.bin" > "$DATA/rlog$i" 2>&1 &
done
restored=true
for i in 1 2 3; do wait_ready 721$i 120 > /dev/null || restored=false; done
restore_ms=$(($(now_ms) - start))
same_hash=$(python3 -c "
import json, urllib.request
h = [json.load(urllib.request.urlopen(f'http://127.0.0.1:{p}/v1/cluster/status'))['state_hash'] for p in (7201, 7211, 7212, 7213)]
print(len(set(h)) == 1)" 2>/dev/null || echo "no: a restored node is not up (logs: $DATA/rlog*)")
$restored || restore_ms="$restore_ms (not all ready)"

cat <<EOF

## Viral poll: $votes votes through votes:batch in $DURATION ($(date -u +%Y-%m-%d))

| measure | value |
| --- | --- |
| ingested | $votes votes, $rate votes/s, batch p99 $p99 ms |
| CPU for the ingest | $cpu |
| exact counts on every node after the run | $exact (node counts: $(count 1) / $(count 2) / $(count 3)) |
| $SAMPLE voters replayed with new keys | $refused refused ALREADY_VOTED; count after: $(count 3) |
| follower restart (SIGTERM, start) to /ready | $restart_ms ms |
| learner added, caught up to the commit index | $learner_ms ms, counting $learner_count |
| backup save | $backup_ms ms, $backup_bytes bytes ($((backup_bytes / votes)) B a vote) |
| new cluster from the backup, all three ready | $restore_ms ms, same state hash: $same_hash |

| node | RSS after | RSS growth per vote | disk per vote |
| --- | --- | --- | --- |
$rss_rows
EOF
