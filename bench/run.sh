#!/usr/bin/env bash
# The runs behind BENCHMARKS.md: three release nodes on 127.0.0.1:7201-7203 (data in a
# temporary directory, real fsyncs) driven by `tally bench`, one JSON report per step in
# $OUT (default bench/out). Every step is bounded by DURATION and ends with bench's own
# check that every node serves exactly the votes it saw acknowledged.
#   cargo build --release && bench/run.sh
#   CONCURRENCIES="1 8" DURATION=5s bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
DURATION=${DURATION:-10s}
mkdir -p "$OUT"
source bench/cluster.sh

step() { # name, then tally bench flags
    local name=$1; shift
    local l; l=$(leader)
    local f0 e0; f0=$(metric "$l" tally_log_flushes_total); e0=$(metric "$l" tally_log_entries_flushed_total)
    local v0 n0; v0=$(metric "$l" tally_proposer_votes_total); n0=$(metric "$l" tally_proposer_entries_total)
    $BIN/tally bench --quiet --duration "$DURATION" -o json "$@" > "$OUT/$name.json"
    local f1 e1; f1=$(metric "$l" tally_log_flushes_total); e1=$(metric "$l" tally_log_entries_flushed_total)
    python3 - "$OUT/$name.json" "$name" "$f0" "$f1" "$e0" "$e1" <<'EOF'
import json, sys
path, name, f0, f1, e0, e1 = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
r = json.load(open(path))
flushes, entries = f1 - f0, e1 - e0
votes = r["votes_acknowledged"]
kind = "batch" if "batch" in r["requests"] else "vote"
l = r["requests"][kind]["latency_ms"]
print(f"{name:>22}: {r['votes_acknowledged_per_second']:8.0f} votes/s  {kind} p50 {l['p50']:6.2f} ms"
      f"  p99 {l['p99']:6.2f} ms  leader fsyncs {flushes:6.0f}  votes/fsync {votes / max(flushes, 1):6.1f}"
      f"  entries/fsync {entries / max(flushes, 1):4.2f}  check {'OK' if r['check']['ok'] else 'FAILED'}")
EOF
}

for c in ${CONCURRENCIES:-1 8 32 64}; do
    step "single-c$c" --connections "$c"
done
step "batch100-c4" --connections 4 --mix batch=100 --batch-size 100
step "via-leader-c32" --connections 32 --via leader
step "via-followers-c32" --connections 32 --via followers
step "open-2000rps" --connections 64 --rate 2000
