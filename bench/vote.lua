-- wrk script for bench/wrk.sh: each wrk thread talks to one node of TARGETS (round robin),
-- and every request is a new voter's vote (VOTE=1) or GET /health (VOTE=0).
local targets = {}
for t in string.gmatch(os.getenv("TARGETS") or "127.0.0.1:7201", "[^,]+") do table.insert(targets, t) end
local poll, option, run = os.getenv("POLL") or "", os.getenv("OPTION") or "", os.getenv("RUN") or "r"
local voting = os.getenv("VOTE") == "1"
local threads, n = {}, 0

function setup(thread)
    local host, port = targets[(n % #targets) + 1]:match("([^:]+):(%d+)")
    thread.addr = wrk.lookup(host, port)[1]
    thread:set("id", n)
    table.insert(threads, thread)
    n = n + 1
end

function init(args)
    counter, ok, other = 0, 0, 0
    path = voting and ("/v1/polls/" .. poll .. "/votes") or "/health"
    method = voting and "POST" or "GET"
end

function request()
    if not voting then return wrk.format(method, path) end
    counter = counter + 1
    local body = string.format('{"option_id":"%s","voter_id":"%s-%d-%d"}', option, run, id, counter)
    return wrk.format(method, path, {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
    if status == 200 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
    local acked, refused = 0, 0
    for _, t in ipairs(threads) do
        acked = acked + t:get("ok")
        refused = refused + t:get("other")
    end
    io.write(string.format("RESULT ok=%d other=%d seconds=%.3f p50_ms=%.2f p99_ms=%.2f\n", acked, refused,
        summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
