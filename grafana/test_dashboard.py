#!/usr/bin/env python3
"""The dashboard against a real scrape.

(a) Checks grafana/dashboards/tally.json and the provisioning files for what Grafana needs
    (Grafana is not in Debian, so nothing is rendered): JSON parses, panel ids unique,
    every panel has targets with an expr, every data source uid is the provisioned one,
    the `poll` variable exists, rates use $__rate_interval; YAML through PyYAML if it is
    importable, else a plain-text check; promtool checks prometheus/prometheus.yml.
(b) Starts three real tally-node processes on free loopback ports, temp data dirs.
(c) Starts a real Prometheus (PROMETHEUS_BIN or `prometheus` on PATH) scraping them
    every second.
(d) Runs `tally bench` (20s, mixed votes/batches/reads, 5% duplicates, regions) and
    requires exit 0: every node counts exactly the votes acknowledged.
(e) Evaluates every query of every panel in Prometheus at an instant inside the load,
    with $poll = the bench's poll id and $__rate_interval = 15s; a query fails if it
    returns nothing, or only NaN/Inf. Also: the poll variable's label_values lists the
    bench's poll, and what Prometheus scraped of that poll adds up to the bench's count.
(f) Prints PASS/FAIL per check (one line per panel) and ends with exactly
    `observability: N passed, N failed`; exits 1 on any failure. Nodes and Prometheus
    are always killed. Every wait has a deadline; a run takes about 35s.

    python3 grafana/test_dashboard.py [BIN_DIR]

BIN_DIR (tally-node and tally): the argument, else $TALLY_BIN_DIR, else target/debug.
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(ROOT, "grafana", "dashboards", "tally.json")
DATASOURCE = os.path.join(ROOT, "grafana", "provisioning", "datasources", "prometheus.yml")
PROVIDER = os.path.join(ROOT, "grafana", "provisioning", "dashboards", "tally.yml")
COMPOSE_PROMETHEUS = os.path.join(ROOT, "prometheus", "prometheus.yml")
DASHBOARDS_PATH = "/var/lib/grafana/dashboards"  # where docker-compose.yml mounts grafana/dashboards
PANEL_TYPES = {"timeseries", "stat", "bargauge"}
ROWS = ["Votes", "Latency", "Raft", "Storage", "Polls"]
# The poll variable: every recent poll by title (Grafana applies the regex to the series it
# lists for query_result, written `name{k="v",k="v"} value timestamp`).
POLL_VARIABLE_EXPR = "max by (poll_id, title) (tally_poll_info)"
BREAKDOWN_VARIABLE = 'label_values(tally_poll_turnout{poll_id="$poll"}, attribute)'

LOAD_SECONDS = 20
RATE_INTERVAL = "15s"  # what Grafana makes of $__rate_interval at a 1s scrape is less; 15s is safe
SCRAPE_INTERVAL = "1s"
# Panels are evaluated at this many seconds before the end of the load, so that the whole
# rate window [t - 15s, t] lies inside the load.
QUERY_BEFORE_LOAD_END = 2.0
BUDGET_SECONDS = 170  # everything, including the bench's own check, ends before this

STARTED = time.monotonic()
results = []
timings = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    line = f"{'PASS' if ok else 'FAIL'} {name}"
    if detail and not ok:
        line += f"  -- {detail}"
    print(line, flush=True)
    return ok


def phase(name, since):
    timings.append((name, time.monotonic() - since))


def remaining():
    return BUDGET_SECONDS - (time.monotonic() - STARTED)


def bounded(timeout):
    return max(0.0, min(timeout, remaining()))


def free_ports(n):
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def wait_until(what, predicate, timeout):
    deadline = time.monotonic() + bounded(timeout)
    last_error = None
    while True:
        try:
            if predicate():
                return
        except (OSError, ValueError, KeyError) as error:  # not up yet, or not answering JSON yet
            last_error = error
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out waiting for {what}" + (f" (last: {last_error!r})" if last_error else ""))
        time.sleep(0.25)


# ---------------------------------------------------------------------------------------
# (a) the files


def load_yaml(path):
    """PyYAML if importable, else None (the callers then check the text)."""
    try:
        import yaml
    except ImportError:
        return None
    with open(path) as f:
        return yaml.safe_load(f)


def yaml_scalar(text, key):
    """Minimal fallback: the first `key: value` in a YAML text, unquoted."""
    match = re.search(rf"^\s*-?\s*{re.escape(key)}:\s*(.+?)\s*$", text, re.M)
    return match.group(1).strip("'\"") if match else None


def check_files():
    try:
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as error:
        check("dashboard: tally.json parses", False, repr(error))
        return None
    check("dashboard: tally.json parses", True)
    everything = dashboard.get("panels", [])
    ids = [p.get("id") for p in everything]
    rows = [p for p in everything if p.get("type") == "row"]
    panels = [p for p in everything if p.get("type") != "row"]
    check("dashboard: panels grouped in rows " + ", ".join(ROWS),
          [r.get("title") for r in rows] == ROWS and everything[:1] == rows[:1]
          and all(not r.get("collapsed") and r.get("gridPos", {}).get("w") == 24 for r in rows),
          str([r.get("title") for r in rows]))
    row_ys = [r["gridPos"]["y"] for r in rows]
    check("dashboard: rows and panels laid out top to bottom, each panel below its row",
          row_ys == sorted(row_ys) and all(
              max((y for y in row_ys if y <= p["gridPos"]["y"]), default=None) is not None for p in panels)
          and [p.get("gridPos", {}).get("y") for p in everything] == sorted(p.get("gridPos", {}).get("y") for p in everything),
          str(row_ys))
    check("dashboard: panels have unique ids", panels and None not in ids and len(ids) == len(set(ids)), str(ids))
    check("dashboard: uid, title, schemaVersion >= 36",
          bool(dashboard.get("uid")) and bool(dashboard.get("title")) and dashboard.get("schemaVersion", 0) >= 36)
    check("dashboard: panel types are timeseries/stat/bargauge",
          all(p.get("type") in PANEL_TYPES for p in panels), str(sorted({p.get("type") for p in panels})))
    check("dashboard: every panel has a gridPos inside 24 columns",
          all({"x", "y", "w", "h"} <= set(p.get("gridPos", {})) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
              for p in panels))
    bad = [p.get("title") for p in panels
           if not p.get("targets") or not all(isinstance(t.get("expr"), str) and t["expr"].strip() for t in p["targets"])
           or len({t.get("refId") for t in p["targets"]}) != len(p["targets"])]
    check("dashboard: every panel has targets, each with an expr and its own refId", not bad, str(bad))

    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    poll = variables.get("poll", {})
    query = poll.get("query")
    query = query.get("query") if isinstance(query, dict) else query
    check(f"dashboard: variable `poll` = query_result({POLL_VARIABLE_EXPR}), labelled by title",
          poll.get("type") == "query" and query == f"query_result({POLL_VARIABLE_EXPR})"
          and "(?<value>" in poll.get("regex", "") and "(?<text>" in poll.get("regex", ""), str(poll)[:300])
    breakdown = variables.get("breakdown", {})
    query = breakdown.get("query")
    query = query.get("query") if isinstance(query, dict) else query
    check(f"dashboard: variable `breakdown` = {BREAKDOWN_VARIABLE}",
          breakdown.get("type") == "query" and query == BREAKDOWN_VARIABLE, str(breakdown)[:200])
    turnout = [p for p in panels if "tally_poll_turnout" in json.dumps(p.get("targets"))]
    check("dashboard: the turnout panel follows $breakdown",
          turnout and all('attribute="$breakdown"' in t["expr"] for p in turnout for t in p["targets"]), str(turnout)[:200])

    exprs = [t["expr"] for p in panels for t in p.get("targets", []) if isinstance(t.get("expr"), str)]
    used = {v for e in exprs for v in re.findall(r"\$(\w+)", e)}
    check("dashboard: every $variable in a query is defined (or $__rate_interval)",
          used <= set(variables) | {"__rate_interval"}, str(used))
    windows = [w for e in exprs for w in re.findall(r"\[([^\]]+)\]", e)]
    check("dashboard: every range uses $__rate_interval", all(w == "$__rate_interval" for w in windows),
          str(sorted(set(windows))))

    # The data source Grafana provisions, and the uid every panel, target and variable names.
    datasource = load_yaml(DATASOURCE)
    if datasource is not None:
        entries = datasource.get("datasources", [])
        ds = entries[0] if len(entries) == 1 else {}
    else:
        text = open(DATASOURCE).read()
        ds = {k: yaml_scalar(text, k) for k in ("name", "uid", "type", "url")}
    check("provisioning: data source Prometheus, uid prometheus, url http://prometheus:9090",
          ds.get("name") == "Prometheus" and ds.get("uid") == "prometheus" and ds.get("type") == "prometheus"
          and ds.get("url") == "http://prometheus:9090", str(ds)[:200])
    uids = {(p.get("datasource") or {}).get("uid") for p in panels}
    uids |= {(t.get("datasource") or {}).get("uid") for p in panels for t in p.get("targets", [])}
    uids |= {(v.get("datasource") or {}).get("uid") for v in variables.values()}
    check("dashboard: panels, targets and the variable use the provisioned data source uid",
          uids == {ds.get("uid")}, f"{uids} vs {ds.get('uid')!r}")

    provider = load_yaml(PROVIDER)
    if provider is not None:
        entries = provider.get("providers", [])
        pv = entries[0] if len(entries) == 1 else {}
        pv = {"type": pv.get("type"), "path": (pv.get("options") or {}).get("path")}
    else:
        text = open(PROVIDER).read()
        pv = {"type": yaml_scalar(text, "type"), "path": yaml_scalar(text, "path")}
    check(f"provisioning: file provider loading {DASHBOARDS_PATH}",
          pv == {"type": "file", "path": DASHBOARDS_PATH}, str(pv))

    compose = load_yaml(COMPOSE_PROMETHEUS)
    if compose is not None:
        jobs = compose.get("scrape_configs", [])
        job = jobs[0] if len(jobs) == 1 else {}
        targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
        interval = job.get("scrape_interval") or compose.get("global", {}).get("scrape_interval")
        ok = job.get("job_name") == "tally" and sorted(targets) == ["node1:7000", "node2:7000", "node3:7000"] \
            and interval == "5s"
        detail = str(compose)[:300]
    else:
        text = open(COMPOSE_PROMETHEUS).read()
        ok = "job_name: tally" in text and all(f"node{i}:7000" in text for i in (1, 2, 3)) and "5s" in text
        detail = text[:300]
    check("prometheus/prometheus.yml: job tally, node1-3:7000, every 5s", ok, detail)
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run([promtool, "check", "config", COMPOSE_PROMETHEUS], capture_output=True, text=True,
                                 timeout=30)
        check("prometheus/prometheus.yml: promtool check config", checked.returncode == 0,
              (checked.stdout + checked.stderr)[-300:])
    return dashboard


# ---------------------------------------------------------------------------------------
# (e) queries


class Prometheus:
    def __init__(self, url):
        self.url = url

    def api(self, path, **params):
        status, body = get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}", timeout=10)
        return json.loads(body)

    def query(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", **params)

    def vector(self, expr, at=None):
        """{frozenset(labels): value} of an instant vector; raises on an error reply."""
        reply = self.query(expr, at)
        if reply.get("status") != "success":
            raise ValueError(f"{expr}: {reply.get('error')}")
        return {frozenset(s["metric"].items()): float(s["value"][1]) for s in reply["data"]["result"]}


def finite(value):
    return not (math.isnan(value) or math.isinf(value))


def evaluate_panels(prometheus, dashboard, poll_id, at):
    """One line per panel; every target must return at least one finite sample at `at`."""
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            continue
        failures, exprs = [], []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$poll", poll_id)
            expr = expr.replace("$breakdown", "region")
            exprs.append(f"{target.get('refId')}: {expr}")
            # The samples at `at` are in by now (checked before), so a retry only covers a slow
            # answer; bounded all the same.
            deadline = time.monotonic() + bounded(5)
            while True:
                try:
                    reply = prometheus.query(expr, at)
                    series = reply.get("data", {}).get("result", []) if reply.get("status") == "success" else []
                    values = [float(s["value"][1]) for s in series]
                    problem = None if any(finite(v) for v in values) else (
                        f"error {reply.get('error')}" if reply.get("status") != "success"
                        else "empty result" if not series else f"no finite value in {values}")
                except (OSError, ValueError) as error:
                    problem = repr(error)
                if problem is None or time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
            if problem:
                failures.append(f"{target.get('refId')} {problem}")
        check(f"panel {panel['id']} {panel['title']!r}: " + "  |  ".join(exprs), not failures, "; ".join(failures))


def check_variables(prometheus, dashboard, poll_id, at):
    """The poll variable as Grafana makes it: the series of its query_result, written as
    Grafana writes them, through its regex (JavaScript's named groups are Python's (?P<)),
    must give the bench's poll as value with its title as text; the breakdown variable must
    list the bench's attribute."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    reply = prometheus.query(POLL_VARIABLE_EXPR, at)
    series = reply.get("data", {}).get("result", [])
    regex = re.compile(variables["poll"]["regex"].strip("/").replace("(?<", "(?P<"))
    choices = {}
    for s in series:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s["metric"].items()))
        match = regex.search(f"{{{labels}}} {s['value'][1]} {int(float(s['value'][0]) * 1000)}")
        if match:
            choices[match.group("value")] = match.group("text")
    title = choices.get(poll_id, "")
    check(f"variable poll: lists the bench's poll {poll_id} by its title", title.startswith("bench "), str(choices)[:300])
    query = BREAKDOWN_VARIABLE.replace("label_values(", "").rsplit(",", 1)[0].replace("$poll", poll_id)
    values = prometheus.api("label/attribute/values", **{"match[]": query, "start": f"{at - 60:.3f}", "end": f"{at:.3f}"})
    check(f"variable breakdown: lists the bench's attribute region for poll {poll_id}",
          "region" in values.get("data", []), str(values)[:200])


def check_poll_consistency(prometheus, poll_id, expected_total, at_least_after):
    """What Prometheus scraped of the bench's poll (the two bar gauges' series) adds up, on
    every node, to the total the bench checked through the API."""
    for metric, selector in (("tally_poll_option_votes", f'poll_id="{poll_id}"'),
                             ("tally_poll_turnout", f'poll_id="{poll_id}", attribute="region"')):
        expr = f"sum by (instance) ({metric}{{{selector}}})"
        got = {}
        deadline = time.monotonic() + bounded(15)
        while True:
            try:
                # Only samples scraped after the bench ended count (its check had converged by then).
                stamp = prometheus.vector(f"min(timestamp({metric}{{{selector}}}))")
                if stamp and min(stamp.values()) > at_least_after:
                    got = {dict(k).get("instance"): v for k, v in prometheus.vector(expr).items()}
                    if len(got) == 3 and all(v == expected_total for v in got.values()):
                        break
            except (OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        check(f"scraped {metric} of poll {poll_id} sums to the bench's {expected_total} votes on each node",
              len(got) == 3 and all(v == expected_total for v in got.values()), str(got))


# ---------------------------------------------------------------------------------------


def stop(process, name):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def run(dashboard, bin_dir, prometheus_bin, work, processes):
    node_bin, tally_bin = os.path.join(bin_dir, "tally-node"), os.path.join(bin_dir, "tally")
    for binary in (node_bin, tally_bin):
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"{binary} is not an executable (give the binaries' directory)")

    # (b) + (c): Prometheus starts alongside the nodes; it retries the targets until they listen.
    since = time.monotonic()
    *ports, prometheus_port = free_ports(4)
    peers = ",".join(f"{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
    endpoints = [f"http://127.0.0.1:{p}" for p in ports]
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        targets = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
        f.write(f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: {SCRAPE_INTERVAL}\n"
                f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
                f"scrape_configs:\n  - job_name: tally\n    static_configs:\n      - targets: [{targets}]\n")
    with open(os.path.join(work, "prometheus.log"), "w") as log:
        processes.append(("prometheus", subprocess.Popen(
            [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(work, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)))
    for i, port in enumerate(ports):
        with open(os.path.join(work, f"node{i + 1}.log"), "w") as log:
            processes.append((f"node{i + 1}", subprocess.Popen(
                [node_bin, "--id", str(i + 1), "--addr", f"127.0.0.1:{port}", "--data-dir",
                 os.path.join(work, f"node{i + 1}"), "--peers", peers, "--cluster-secret", "observability-test"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)))
    wait_until("three ready nodes", lambda: all(get(f"{e}/ready")[0] == 200 for e in endpoints), 60)
    phase("start to nodes ready", since)
    prometheus = Prometheus(f"http://127.0.0.1:{prometheus_port}")
    wait_until("prometheus ready", lambda: get(f"{prometheus.url}/-/ready")[0] == 200, 30)

    def all_targets_up():
        active = prometheus.api("targets", state="active")["data"]["activeTargets"]
        return len(active) == 3 and all(t["health"] == "up" for t in active)

    wait_until("prometheus scraping the three nodes", all_targets_up, 30)
    phase("start to Prometheus scraping all three", since)

    # (d) the load, while Prometheus scrapes.
    since = time.monotonic()
    load_start = time.time()
    bench = subprocess.Popen(
        [tally_bin, "bench", "--endpoints", ",".join(endpoints), "--duration", f"{LOAD_SECONDS}s",
         "--connections", "8", "--mix", "vote=80,batch=5,results=15", "--duplicate-ratio", "0.05",
         "--batch-size", "20", "--regions", "north,south,east,west", "--quiet", "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    processes.append(("tally bench", bench))
    try:
        out, err = bench.communicate(timeout=bounded(LOAD_SECONDS + 90))
    except subprocess.TimeoutExpired:
        raise RuntimeError("tally bench did not end in time")
    bench_end = time.time()
    phase("tally bench (load + its count check)", since)
    try:
        report = json.loads(out)
    except ValueError:
        report = {}
    checked = report.get("check") or {}
    polls = checked.get("polls") or []
    check("tally bench exited 0: every node counts exactly the votes acknowledged",
          bench.returncode == 0 and checked.get("ok") is True and len(polls) == 1,
          f"exit {bench.returncode}, check {json.dumps(checked)[:300]}, stderr {err[-300:]!r}")
    if not polls:
        raise RuntimeError("no poll in the bench's report")
    poll_id, expected_total = polls[0]["poll_id"], polls[0]["expected_total"]
    print(f"bench: poll {poll_id}, {report.get('votes_acknowledged')} votes acknowledged "
          f"({report.get('votes_acknowledged_per_second', 0):.0f}/s), outcomes {report.get('outcomes')}", flush=True)

    # (e) every panel at an instant inside the load: the bench ran from about load_start to
    # load_start + its duration_secs (then checked); the rate window before `at` is in it.
    since = time.monotonic()
    load_end = load_start + float(report.get("duration_secs") or LOAD_SECONDS)
    at = min(load_end, bench_end) - QUERY_BEFORE_LOAD_END
    window = float(RATE_INTERVAL.rstrip("s"))
    if at - window < load_start:
        raise RuntimeError(f"the load ({load_end - load_start:.1f}s) is shorter than the rate window + margin")
    # Enough samples: every node scraped at least 2/3 of the seconds of the rate window.
    needed = int(window * 2 / 3)

    def enough_samples():
        counts = prometheus.vector(f"count_over_time(tally_votes_recorded_total[{RATE_INTERVAL}])", at)
        return len(counts) == 3 and min(counts.values()) >= needed

    wait_until(f"{needed} samples per node in the {RATE_INTERVAL} before the query instant", enough_samples, 20)
    values = prometheus.api("label/poll_id/values", **{"match[]": "tally_poll_option_votes",
                                                      "start": f"{load_start:.3f}", "end": f"{time.time():.3f}"})
    check(f"label_values(tally_poll_option_votes, poll_id) lists the bench's poll {poll_id}",
          poll_id in values.get("data", []), str(values)[:200])
    check_variables(prometheus, dashboard, poll_id, at)
    evaluate_panels(prometheus, dashboard, poll_id, at)
    phase("panel queries", since)
    since = time.monotonic()
    check_poll_consistency(prometheus, poll_id, expected_total, bench_end)
    phase("scraped poll counts", since)


def interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    bin_dir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1
                              else os.environ.get("TALLY_BIN_DIR") or os.path.join(ROOT, "target", "debug"))
    # A CI timeout's SIGTERM still runs the cleanup below.
    signal.signal(signal.SIGTERM, interrupted)

    since = time.monotonic()
    dashboard = check_files()
    phase("file checks", since)
    prometheus_bin = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if not prometheus_bin:
        check("prometheus installed (apt-get install prometheus, or set PROMETHEUS_BIN)", False)
    elif dashboard is not None:
        work = tempfile.mkdtemp(prefix="tally-observability-")
        processes = []
        try:
            run(dashboard, bin_dir, prometheus_bin, work, processes)
        except (Exception, KeyboardInterrupt) as error:  # the summary line must still come
            check("run", False, repr(error))
            for name in ("node1", "node2", "node3", "prometheus"):
                log = tail(os.path.join(work, f"{name}.log"))
                if log:
                    print(f"--- last lines of {name}.log\n{log}", end="" if log.endswith("\n") else "\n")
        finally:
            since = time.monotonic()
            for name, process in reversed(processes):
                stop(process, name)
            shutil.rmtree(work, ignore_errors=True)
            phase("cleanup", since)
    timings.append(("total", time.monotonic() - STARTED))
    print("timings: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in timings))
    failed = results.count(False)
    print(f"observability: {len(results) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
