#!/usr/bin/env bash
# What live-results subscribers cost the voting, on the nodes. For each N in $STREAMS
# (default "0 3000 9000 0"), on a fresh poll: N results streams (spread over the three
# nodes) held by their own `tally bench` process at SCHED_IDLE priority, so that the
# subscribers' reading only takes CPU the nodes and the vote load leave idle, as if they
# ran elsewhere; then `tally bench $VOTE_LOAD` (default `--connections 32`: as many votes as
# the cluster takes) votes on the same poll. Each run
# prints votes/s, vote latency, the events the nodes sent a second
# (tally_results_stream_events_total) and the nodes' CPU time (from /proc) per 1,000
# votes; the end compares the runs with streams against the mean of those without.
#   cargo build --release && bench/subscribers.sh
#   STREAMS="0 1000" DURATION=5s bench/subscribers.sh
#   VOTE_LOAD="--connections 4 --rate 20" bench/subscribers.sh   # the fan-out's own cost
#   NODE_ARGS="--stream-events-per-sec 2000" bench/subscribers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/out}
DURATION=${DURATION:-10s}
mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || true
source bench/cluster.sh
TICKS=$(getconf CLK_TCK)
RUNS="$OUT/subscribers-runs.jsonl"
: > "$RUNS"
run=0
for n in ${STREAMS:-0 3000 9000 0}; do
    run=$((run + 1))
    poll=$($BIN/tally -o json poll create --title "subscribers $n" --option a --option b --option c \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["poll_id"])')
    sub=
    if [ "$n" -gt 0 ]; then
        # Holds the streams for longer than the vote load; stopped once it is done.
        chrt --idle 0 $BIN/tally bench --quiet --no-check --poll "$poll" --subscribers "$n" \
            --rate 1 --mix results=1 --connections 1 --duration 600s -o json \
            > /dev/null 2> "$OUT/subscribers-$run.err" &
        sub=$!
        deadline=$((SECONDS + 120))
        until [ "$(metric_sum tally_results_streams)" -ge "$n" ]; do
            [ $SECONDS -lt $deadline ] || { echo "only $(metric_sum tally_results_streams) of $n streams opened" >&2; exit 1; }
            sleep 0.5
        done
    fi
    t0=$(date +%s.%N); c0=$(node_cpu_ticks); e0=$(metric_sum tally_results_stream_events_total)
    # shellcheck disable=SC2086 # VOTE_LOAD is a list of flags
    $BIN/tally bench --quiet --poll "$poll" ${VOTE_LOAD:---connections 32} --duration "$DURATION" -o json \
        > "$OUT/subscribers-$run.json"
    t1=$(date +%s.%N); c1=$(node_cpu_ticks); e1=$(metric_sum tally_results_stream_events_total)
    if [ -n "$sub" ]; then kill "$sub" 2> /dev/null || true; wait "$sub" 2> /dev/null || true; fi
    python3 - "$OUT/subscribers-$run.json" "$n" "$t0" "$t1" "$c0" "$c1" "$e0" "$e1" "$TICKS" >> "$RUNS" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
t0, t1, c0, c1, e0, e1, ticks = map(float, sys.argv[3:])
r = json.load(open(path))
votes, wall, cpu = r["votes_acknowledged"], t1 - t0, (c1 - c0) / ticks
latency = r["requests"]["vote"]["latency_ms"]
run = {"streams": n, "votes_per_second": r["votes_acknowledged_per_second"], "votes": votes,
       "p50_ms": latency["p50"], "p99_ms": latency["p99"], "events": e1 - e0,
       "events_per_second": (e1 - e0) / wall, "node_cpu_seconds": cpu, "node_cores": cpu / wall,
       "node_cpu_ms_per_1000_votes": cpu * 1e6 / max(votes, 1), "check_ok": r["check"]["ok"]}
print(json.dumps(run))
print(f"{n:>6} streams: {run['votes_per_second']:6.0f} votes/s  p50 {latency['p50']:5.1f} ms  p99 {latency['p99']:6.1f} ms"
      f"  events/s {run['events_per_second']:6.0f}  node CPU {run['node_cores']:.2f} cores,"
      f" {run['node_cpu_ms_per_1000_votes']:5.0f} ms per 1,000 votes  check {'OK' if run['check_ok'] else 'FAILED'}",
      file=sys.stderr)
PY
done
python3 - "$RUNS" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
base = [r for r in runs if r["streams"] == 0]
if not base or sum(r["votes"] for r in base) == 0:
    sys.exit(0)
per_vote = sum(r["node_cpu_seconds"] for r in base) / sum(r["votes"] for r in base)
rate = sum(r["votes_per_second"] for r in base) / len(base)
for r in runs:
    if r["streams"] == 0 or r["events"] == 0:
        continue
    extra = r["node_cpu_seconds"] - per_vote * r["votes"]
    print(f"{r['streams']:>6} streams: votes/s {r['votes_per_second'] / rate:.2f}x the 0-stream mean;"
          f" node CPU beyond the votes' {extra:.2f} s = {extra * 1e6 / r['events']:.0f} us per event sent")
PY
