#!/usr/bin/env bash
# Single votes with wrk against the cluster's own /health ceiling, in one run (SCALE.md's
# method): three release nodes (bench/cluster.sh), for each connection count a /health step
# and a vote step of DURATION each, every request a new voter. Reports votes/s, p50/p99, the
# nodes' CPU per vote and per /health request (utime+stime from /proc over the step), their
# RSS growth per vote and node (VmRSS), votes, AppendEntries, fsyncs and forwards per log
# entry, the share of the machine's time the hypervisor stole, and the ratio to /health, and
# ends each vote step by checking that every node counts the same votes and at least those
# acknowledged (at most one more per connection: wrk stops with requests in flight).
#   cargo build --release && bench/wrk.sh
#   CONNS="16 64" VIA=followers DURATION=10s bench/wrk.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk > /dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
DURATION=${DURATION:-10s}
VIA=${VIA:-all}
source bench/cluster.sh
RUN=$(date +%s)
all=(1 2 3)
l=$(leader)
case $VIA in
    all) via=("${all[@]}") ;;
    leader) via=("$l") ;;
    followers) via=(); for n in "${all[@]}"; do [ "$n" = "$l" ] || via+=("$n"); done ;;
    *) echo "VIA is all, leader or followers" >&2; exit 2 ;;
esac
TARGETS=$(for n in "${via[@]}"; do printf '127.0.0.1:720%s,' "$n"; done)
export TARGETS=${TARGETS%,} RUN
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
cpu_per_thread() { # pid: "comm ticks" per thread name, summed
    for t in /proc/"$1"/task/*; do
        echo "$(tr ' ' '_' < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
    done 2>/dev/null | awk '{s[$1] += $2} END {for (k in s) print k, s[k]}'
}
# Context switches (voluntary and not, every thread) and minor page faults the nodes have
# had so far: wake-ups and fresh pages are where a vote's CPU hides on a VM.
switches() { for pid in "${NODE_PIDS[@]}"; do cat /proc/"$pid"/task/*/status 2>/dev/null; done |
    awk '/ctxt_switches/ {s += $2} END {print s}'; }
faults() { for pid in "${NODE_PIDS[@]}"; do cat "/proc/$pid/stat"; done | awk '{s += $10} END {print s}'; }
rss_kb() { for pid in "${NODE_PIDS[@]}"; do awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; done | awk '{s += $1} END {print s}'; }
TICK=$(getconf CLK_TCK)
# The machine's ticks so far, all and stolen by the hypervisor: a step with much stolen
# time measures the neighbours as much as Tally.
ticks() { awk '/^cpu / {s = 0; for (i = 2; i <= NF; i++) s += $i; print s, $9}' /proc/stat; }
# AppendEntries the leader sent (one histogram count per call, every follower).
APPENDS='tally_peer_rpc_duration_seconds_count{rpc="append"}'
# fdatasyncs of the log (every node) and followers' entries that came in over /raft/forward
# (the leader): with AppendEntries, what each entry costs beside its votes.
FSYNCS=tally_log_flushes_total
FORWARDS=tally_forwarded_commands_received_total
printf '%s\n' "via $VIA (${via[*]}), leader $l, $DURATION per step, $(nproc) cores"
for c in ${CONNS:-1 16 64 256}; do
    threads=$(( c < ${#via[@]} ? c : ${#via[@]} ))
    h0=$(node_cpu_ticks)
    h=$(VOTE=0 wrk -t "$threads" -c "$c" -d "$DURATION" -s bench/vote.lua http://127.0.0.1:7201 | grep RESULT)
    h1=$(node_cpu_ticks)
    hok=$(sed 's/.*ok=\([0-9]*\).*/\1/' <<< "$h"); hs=$(sed 's/.*seconds=\([0-9.]*\).*/\1/' <<< "$h")
    poll=$(curl -sf -X POST localhost:720"$l"/v1/polls -H 'content-type: application/json' \
        -d "{\"title\": \"wrk $RUN c$c\", \"options\": [\"red\", \"green\"]}")
    export POLL OPTION
    POLL=$(json 'd["poll_id"]' <<< "$poll"); OPTION=$(json 'd["options"][0]["option_id"]' <<< "$poll")
    for pid in "${NODE_PIDS[@]}"; do cpu_per_thread "$pid" > "$DATA/threads-before-$pid"; done
    read -r m0 st0 <<< "$(ticks)"
    t0=$(node_cpu_ticks); r0=$(rss_kb); s0=$(switches); f0=$(faults)
    # Log entries: the leader's last index counts every node's entries, forwarded ones too.
    e0=$(metric "$l" tally_raft_last_log_index | awk '{printf "%d", $1}'); a0=$(metric_sum "$APPENDS")
    y0=$(metric_sum "$FSYNCS"); w0=$(metric_sum "$FORWARDS")
    v=$(VOTE=1 wrk -t "$threads" -c "$c" -d "$DURATION" -s bench/vote.lua http://127.0.0.1:7201 | grep RESULT)
    read -r m1 st1 <<< "$(ticks)"
    t1=$(node_cpu_ticks); r1=$(rss_kb); s1=$(switches); f1=$(faults)
    e1=$(metric "$l" tally_raft_last_log_index | awk '{printf "%d", $1}'); a1=$(metric_sum "$APPENDS")
    y1=$(metric_sum "$FSYNCS"); w1=$(metric_sum "$FORWARDS")
    ok=$(sed 's/.*ok=\([0-9]*\).*/\1/' <<< "$v"); other=$(sed 's/.*other=\([0-9]*\).*/\1/' <<< "$v")
    vs=$(sed 's/.*seconds=\([0-9.]*\).*/\1/' <<< "$v")
    p50=$(sed 's/.*p50_ms=\([0-9.]*\).*/\1/' <<< "$v"); p99=$(sed 's/.*p99_ms=\([0-9.]*\).*/\1/' <<< "$v")
    # Every node must come to the same count, between the acknowledged votes and those plus
    # the requests wrk left in flight.
    check=FAILED
    for _ in $(seq 1 100); do
        counts=$(for n in "${all[@]}"; do curl -sf "localhost:720$n/v1/polls/$POLL/results" | json 'd["total_votes"]'; done | sort -u)
        if [ "$(wc -l <<< "$counts")" = 1 ] && [ "$counts" -ge "$ok" ] && [ "$counts" -le $((ok + c)) ]; then
            check="OK (every node counts $counts)"; break
        fi
        sleep 0.1
    done
    python3 - "$c" "$ok" "$other" "$vs" "$hok" "$hs" "$p50" "$p99" "$t0" "$t1" "$TICK" "$r0" "$r1" "$check" "$((s1 - s0))" "$((f1 - f0))" "$((e1 - e0))" "$((a1 - a0))" "$((h1 - h0))" "$((100 * (st1 - st0) / (m1 - m0 + 1)))" "$((y1 - y0))" "$((w1 - w0))" <<'PY'
import sys
c, ok, other, vs, hok, hs, p50, p99, t0, t1, tick, r0, r1 = map(float, sys.argv[1:14])
check = sys.argv[14]
switches, faults = int(sys.argv[15]), int(sys.argv[16])
entries, appends = int(sys.argv[17]), int(sys.argv[18])
health_cpu = int(sys.argv[19]) / tick
steal = int(sys.argv[20])
fsyncs, forwards = int(sys.argv[21]), int(sys.argv[22])
vps, hps = ok / vs, hok / hs
cpu = (t1 - t0) / tick
print(f"c={int(c):>3}  votes/s {vps:8.0f} (non-200: {int(other)})  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
      f"/health {hps:8.0f}/s ({1e6 * health_cpu / max(hok, 1):4.1f} µs each)  ratio {100 * vps / hps:5.1f}%  nodes' CPU {cpu:5.2f} s = "
      f"{1e6 * cpu / max(ok, 1):6.1f} µs/vote ({ok / max(cpu, 1e-9):7.0f} votes per CPU-second)  "
      f"RSS {1024 * (r1 - r0) / 3 / max(ok, 1):5.0f} B/vote/node  "
      f"{switches / max(ok, 1):5.1f} context switches and {faults / max(ok, 1):5.2f} page faults per vote  {ok / max(entries, 1):5.1f} votes and {appends / max(entries, 1):4.2f} AppendEntries, "
      f"{fsyncs / max(entries, 1):4.2f} fsyncs and {forwards / max(entries, 1):4.2f} forwards per entry  steal {steal}%  check {check}")
PY
    if [ -n "${THREADS:-}" ]; then # where each node's CPU went, by thread name
        for pid in "${NODE_PIDS[@]}"; do
            join -a1 -e 0 -o 0,1.2,2.2 <(cpu_per_thread "$pid" | sort) <(sort "$DATA/threads-before-$pid") |
                awk -v p="$pid" -v t="$TICK" -v n="$ok" '{d = $2 - $3; if (d > 0)
                    printf "    pid %s %-24s %6.2f s  %6.1f µs/vote\n", p, $1, d / t, 1e6 * d / t / n}'
        done
    fi
    [[ $check == OK* ]] || { echo "count check failed: acknowledged $ok, counts: $counts" >&2; exit 1; }
done
