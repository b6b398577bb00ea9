#!/usr/bin/env python3
"""The OpenAPI document, as a client developer uses it: fetched from a real `tally demo`,
checked by a validator from PyPI, then turned into a Python client by a generator from PyPI
(openapi-python-client) whose generated code creates a poll, votes twice and reads the
results from the running cluster.

Usage: python3 node/tests/openapi/test_openapi.py [TARGET_DIR]
Needs openapi-spec-validator and openapi-python-client (.ci/run puts them in a venv).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from waiting import wait_for  # noqa: E402

from openapi_spec_validator import validate

PORT_BASE = 17621
NODE = f"http://127.0.0.1:{PORT_BASE}"
# Type names of Rust's that mean nothing to a client developer.
RUST_NAMES = ("BTreeMap", "HashMap", "Vec", "Option", "u64", "i64", "u32", "usize", "String")


def fail(message):
    raise SystemExit(f"FAIL: {message}")


def fetch_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def check_document(doc):
    validate(doc)
    operations = [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]
    ids = [op.get("operationId") for _, _, op in operations]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        fail(f"operationIds used twice (a generated client cannot tell them apart): {duplicates}")
    for method, path, op in operations:
        if not op.get("summary"):
            fail(f"{method} {path} has no summary")
        for status, response in op["responses"].items():
            if status >= "400" and "application/json" not in response.get("content", {}):
                fail(f"{method} {path}: {status} has no error body")
    schemes = doc.get("components", {}).get("securitySchemes", {})
    if not any(s.get("type") == "http" and s.get("scheme") == "bearer" for s in schemes.values()):
        fail(f"no bearer security scheme: {schemes}")
    secret = [s for s in schemes.values() if s.get("type") == "apiKey" and s.get("in") == "header"]
    if not any(s.get("name") == "x-tally-cluster-secret" for s in secret):
        fail(f"no cluster-secret scheme: {schemes}")
    add = doc["paths"]["/v1/cluster/members"]["post"]
    if not any("clusterSecret" in requirement for requirement in add.get("security", [])):
        fail(f"adding a member does not say it needs the cluster secret: {add.get('security')}")
    leaked = [name for name in doc["components"]["schemas"] if name in RUST_NAMES or "<" in name or "_" in name]
    if leaked:
        fail(f"schema names leak Rust types: {leaked}")
    vote = doc["paths"]["/v1/polls/{poll_id}/votes"]["post"]
    missing = [s for s in ("200", "202", "401", "404", "409", "422", "429", "503", "504") if s not in vote["responses"]]
    if missing:
        fail(f"the votes route does not document {missing}")
    headers = {p["name"] for p in vote["parameters"] if p["in"] == "header"}
    if not {"Prefer", "Idempotency-Key"} <= headers:
        fail(f"the votes route's headers: {headers}")
    print(f"valid OpenAPI {doc['openapi']}: {len(operations)} operations, each with a summary and its own id")


def generate_client(doc, work_dir):
    spec = os.path.join(work_dir, "openapi.json")
    with open(spec, "w") as file:
        json.dump(doc, file)
    generator = shutil.which("openapi-python-client") or os.path.join(os.path.dirname(sys.executable), "openapi-python-client")
    out = os.path.join(work_dir, "tally_client")
    run = subprocess.run([generator, "generate", "--path", spec, "--meta", "none", "--output-path", out],
                         capture_output=True, text=True, timeout=300)
    if run.returncode != 0 or not os.path.isdir(out):
        fail(f"openapi-python-client failed:\n{run.stdout}\n{run.stderr}")
    sys.path.insert(0, work_dir)
    print("generated a Python client with openapi-python-client")


def use_client():
    from tally_client import Client
    from tally_client.api.polls import create_poll
    from tally_client.api.results import get_results
    from tally_client.api.votes import cast_vote
    from tally_client.models import CreatePollRequest, VoteRequest

    client = Client(base_url=NODE, raise_on_unexpected_status=True)
    request = CreatePollRequest.from_dict({"title": "Generated client", "options": ["Tea", "Coffee"]})
    created = create_poll.sync_detailed(client=client, body=request)
    if created.status_code != 201:
        fail(f"createPoll: {created.status_code} {created.content!r}")
    poll = created.parsed
    print(f"createPoll: {poll.poll_id} with options {[o.option_id for o in poll.options]}")
    first = cast_vote.sync_detailed(poll.poll_id, client=client, idempotency_key="gen-1",
                                    body=VoteRequest(option_id="o2", voter_id="generated-alice"))
    if first.status_code != 200 or first.parsed.status != "recorded":
        fail(f"castVote: {first.status_code} {first.content!r}")
    again = cast_vote.sync_detailed(poll.poll_id, client=client, idempotency_key="gen-2",
                                    body=VoteRequest(option_id="o1", voter_id="generated-alice"))
    if again.status_code != 409 or again.parsed.error.code != "ALREADY_VOTED":
        fail(f"a second vote: {again.status_code} {again.content!r}")
    results = get_results.sync_detailed(poll.poll_id, client=client, consistency="linearizable").parsed
    counts = {o.option_id: o.votes for o in results.options}
    if counts != {"o1": 0, "o2": 1} or results.total_votes != 1:
        fail(f"getResults: {counts}")
    print(f"castVote: recorded, then ALREADY_VOTED as an ErrorBody; getResults: {counts}")


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "target/debug"
    work_dir = tempfile.mkdtemp(prefix="tally-openapi-")
    demo = None
    try:
        log = open(os.path.join(work_dir, "demo.out"), "w")
        demo = subprocess.Popen([os.path.join(target, "tally"), "demo", "--port-base", str(PORT_BASE),
                                 "--data-dir", os.path.join(work_dir, "demo")], stdout=log, stderr=subprocess.STDOUT)
        doc = wait_for("the demo's OpenAPI document", lambda: demo.poll() is None and fetch_json(f"{NODE}/v1/openapi.json"))
        wait_for("the demo's sample poll", lambda: fetch_json(f"{NODE}/v1/polls")["polls"])
        check_document(doc)
        generate_client(doc, work_dir)
        use_client()
        print("PASS: OpenAPI")
    finally:
        if demo:
            demo.send_signal(signal.SIGTERM)
            try:
                demo.wait(timeout=20)
            except subprocess.TimeoutExpired:
                demo.kill()
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
