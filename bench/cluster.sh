# Sourced by the bench scripts: three release nodes on 127.0.0.1:7201-7203 (data in a
# temporary directory, real fsyncs), and helpers to read their metrics. NODE_ARGS adds
# flags to every node.
BIN=${BIN:-target/release}
DATA=$(mktemp -d)
P=1=127.0.0.1:7201,2=127.0.0.1:7202,3=127.0.0.1:7203
export TALLY_ENDPOINTS=http://127.0.0.1:7201,http://127.0.0.1:7202,http://127.0.0.1:7203
trap 'kill $(jobs -p) 2>/dev/null; [ -n "${KEEP_DATA:-}" ] || rm -rf "$DATA"' EXIT
NODE_PIDS=()
for i in 1 2 3; do
    $BIN/tally-node --id $i --addr 127.0.0.1:720$i --data-dir "$DATA/$i" --peers $P --cluster-secret bench \
        ${NODE_ARGS:-} > "$DATA/log$i" 2>&1 &
    NODE_PIDS+=($!)
done
for _ in $(seq 1 300); do
    ready=0
    for i in 1 2 3; do curl -sf localhost:720$i/ready > /dev/null && ready=$((ready + 1)); done
    [ $ready = 3 ] && break
    sleep 0.1
done
[ $ready = 3 ] || { echo "the nodes did not become ready; logs in $DATA" >&2; exit 1; }
metric() { curl -s "localhost:720$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
metric_sum() { for n in 1 2 3; do metric $n "$1"; done | awk '{s += $1} END {printf "%d\n", s}'; }
leader() { for n in 1 2 3; do if [ "$(metric $n tally_raft_is_leader)" = 1 ]; then echo $n; fi; done; }
# CPU time (user + system, in clock ticks) the three nodes have used so far.
node_cpu_ticks() { for pid in "${NODE_PIDS[@]}"; do cat "/proc/$pid/stat"; done | awk '{s += $14 + $15} END {print s}'; }
