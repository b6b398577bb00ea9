#!/usr/bin/env python3
"""The web page in a real headless Chromium, against a real `tally demo` cluster.

A poll creator makes a poll through the form, a voter votes through the page, a vote cast
through another node moves the bars live (server-sent events, no reload), turnout by region,
turnout over time and the cluster panel fill in, a second vote by the same voter shows
ALREADY_VOTED, the poll list tells polls apart by votes and creation time, a killed node is
shown as down on the leader's page, and a screenshot is saved.

Usage: python3 node/tests/browser/test_web_page.py [TARGET_DIR] [SCREENSHOT]
Needs Debian's chromium, chromium-driver and python3-selenium (.ci/run installs them).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from waiting import wait_for  # noqa: E402

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

PORT_BASE = 17601
JWT_PORT_BASE = 17611
JWT_NODES = [f"http://127.0.0.1:{JWT_PORT_BASE + i}" for i in range(3)]
JWT_NODE = JWT_NODES[0]
NODES = [f"http://127.0.0.1:{PORT_BASE + i}" for i in range(3)]
WAIT_S = 30
STARTED = []  # every demo started, stopped at the end however the test ends


def http(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def start_demo(target, work_dir, name, port_base, extra=()):
    """`tally demo` on three nodes from port_base, until its sample poll is listed (read
    with the demo's admin token when auth is on)."""
    tally = os.path.join(target, "tally")
    data_dir = os.path.join(work_dir, name)
    log_path = os.path.join(work_dir, f"{name}.out")
    DEMO_LOGS[port_base] = log_path
    with open(log_path, "w") as log:
        demo = subprocess.Popen(
            [tally, "demo", "--port-base", str(port_base), "--data-dir", data_dir, *extra],
            stdout=log, stderr=subprocess.STDOUT)
    STARTED.append(demo)

    def sample_poll():
        if demo.poll() is not None:
            with open(log_path) as log:
                raise SystemExit(f"FAIL: tally demo exited with {demo.returncode}:\n{log.read()}")
        headers = {}
        password_file = os.path.join(data_dir, "admin-password")
        if os.path.exists(password_file):
            with open(password_file) as file:
                credentials = {"username": "admin", "password": file.read().strip()}
            status, login = http("POST", f"http://127.0.0.1:{port_base}/v1/auth/token", credentials)
            if status != 200:
                return None
            headers = {"Authorization": "Bearer " + login["access_token"]}
        status, body = http("GET", f"http://127.0.0.1:{port_base}/v1/polls", None, headers)
        return status == 200 and body["polls"]

    wait_for(f"the {name} demo's sample poll", sample_poll)


DEMO_LOGS = {}  # port base → the demo's output file


def demo_pid(node_id, port_base=PORT_BASE):
    """The pid of one of a demo's nodes, from the table in its banner (NODE URL PID LOG)."""
    url = f"http://127.0.0.1:{port_base + node_id - 1}"
    with open(DEMO_LOGS[port_base]) as log:
        for line in log:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == str(node_id) and fields[1] == url and fields[2].isdigit():
                return int(fields[2])
    raise SystemExit(f"FAIL: no pid for node {node_id} in the demo's banner")


def stop_demo(demo):
    demo.send_signal(signal.SIGTERM)
    try:
        demo.wait(timeout=20)
    except subprocess.TimeoutExpired:
        demo.kill()


def browser():
    options = webdriver.ChromeOptions()
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"]:
        options.add_argument(flag)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary:
        options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(driver_path), options=options)


def wait(driver, what, condition):
    try:
        # The page re-renders the bars on every results event, so an element found a moment
        # ago may be gone: that is "not yet", not a failure.
        waiter = WebDriverWait(driver, WAIT_S, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
        return waiter.until(lambda d: condition(d))
    except TimeoutException:
        raise SystemExit(f"FAIL: the page never showed {what}\n--- page ---\n"
                         f"{driver.find_element(By.TAG_NAME, 'body').text}")


def bar_width(driver, option_id):
    fills = driver.find_elements(By.CSS_SELECTOR, f'.bar[data-option-id="{option_id}"] .bar-fill')
    return fills[0].get_attribute("style") if fills else None


def text_of(driver, selector):
    # The cluster panel and the bars are re-rendered while we read them: retry a stale read.
    for _ in range(50):
        try:
            found = driver.find_elements(By.CSS_SELECTOR, selector)
            return found[0].text if found else ""
        except StaleElementReferenceException:
            time.sleep(0.02)
    raise SystemExit(f"FAIL: {selector} kept changing under the reader")


def run(driver, screenshot):
    driver.get(NODES[0] + "/")
    form = wait(driver, "the create form", lambda d: d.find_element(By.ID, "create-form"))
    form.find_element(By.NAME, "title").send_keys("Browser election")
    form.find_element(By.NAME, "options").send_keys("Red\nBlue")
    form.find_element(By.NAME, "breakdowns").send_keys("region, age_group")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, "the new poll's page", lambda d: "#/poll/" in d.current_url)
    poll_id = driver.current_url.split("#/poll/")[1]
    wait(driver, "empty bars", lambda d: bar_width(d, "o1") == "width: 0%;")
    assert "null" not in driver.find_element(By.ID, "view").text, "a null leaked into the page"
    # Attribute keys are labelled for people, not shown raw.
    labels = [label.text for label in driver.find_elements(By.CSS_SELECTOR, "#vote-form label")]
    assert "Age group" in labels and "age_group" not in labels, labels

    print(f"created poll {poll_id} through the form")

    vote = driver.find_element(By.ID, "vote-form")
    vote.find_element(By.NAME, "voter_id").send_keys("browser-alice")
    vote.find_element(By.CSS_SELECTOR, 'input[value="o1"]').click()
    vote.find_element(By.NAME, "attr-region").send_keys("north")
    vote.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, "the vote's receipt", lambda d: "recorded" in text_of(d, "#vote-message"))
    wait(driver, "Red's bar at 100%", lambda d: bar_width(d, "o1") == "width: 100%;")
    print("voted through the page; the bar moved to 100%")

    # Another voter, through another node: the page must follow without a reload.
    status, body = http("POST", f"{NODES[2]}/v1/polls/{poll_id}/votes",
                        {"voter_id": "curl-bob", "option_id": "o2", "attributes": {"region": "south"}})
    assert status == 200, body
    wait(driver, "both bars at 50%", lambda d: bar_width(d, "o1") == "width: 50%;"
         and bar_width(d, "o2") == "width: 50%;")
    wait(driver, "two votes in total", lambda d: text_of(d, "#total-votes") == "2")
    print("a vote through node 3 moved the bars live")

    wait(driver, "turnout by region", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#turnout tr[data-value]")) == 2)
    wait(driver, "the leader in the cluster panel", lambda d: text_of(d, "#leader").isdigit())
    wait(driver, "a votes/s figure", lambda d: text_of(d, "#votes-per-second") not in ("", "—"))
    # Turnout over time: a curve of votes per second, with a peak above zero.
    wait(driver, "a turnout curve", lambda d: d.find_element(By.CSS_SELECTOR, "#rate-chart polyline")
         .get_attribute("points").count(",") >= 1)
    wait(driver, "a peak rate above zero", lambda d: float(text_of(d, "#votes-rate-peak").replace("—", "0")) > 0)
    print(f"turnout rows: 2; leader: node {text_of(driver, '#leader')}; peak {text_of(driver, '#votes-rate-peak')} votes/s")

    # The leader's page shows each member's matched index and lag.
    leader = int(text_of(driver, "#leader"))
    driver.get(f"{NODES[leader - 1]}/#/poll/{poll_id}")
    wait(driver, "every member's lag on the leader's page", lambda d: [
        cell.text for cell in d.find_elements(By.CSS_SELECTOR, "#members tbody td:nth-child(4)")] == ["0", "0", "0"])
    wait(driver, "the bars after a reload", lambda d: text_of(d, "#total-votes") == "2")

    # The same voter again: the API's error, shown, and nothing counted.
    vote = driver.find_element(By.ID, "vote-form")
    voter = vote.find_element(By.NAME, "voter_id")
    voter.clear()
    voter.send_keys("browser-alice")
    vote.find_element(By.CSS_SELECTOR, 'input[value="o2"]').click()
    vote.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, "ALREADY_VOTED", lambda d: "ALREADY_VOTED" in text_of(d, "#vote-message"))
    _, results = http("GET", f"{NODES[1]}/v1/polls/{poll_id}/results?consistency=linearizable")
    assert results["total_votes"] == 2, results

    driver.set_window_size(1280, 2000)
    driver.save_screenshot(screenshot.replace(".png", "-poll.png"))
    driver.set_window_size(1280, 1000)

    # The poll list tells polls apart: votes and creation time next to each title.
    driver.get(f"{NODES[leader - 1]}/#/")
    entry = f'#poll-list li[data-poll-id="{poll_id}"]'
    wait(driver, "the poll's votes in the list", lambda d: text_of(d, f"{entry} .poll-votes") == "2 votes")
    assert "created" in text_of(driver, f"{entry} .poll-meta"), text_of(driver, entry)

    # Every member heard from just now on the leader's page; then a follower is killed and
    # the leader's page says it is down, instead of showing it as a healthy voter.
    wait(driver, "every member reachable", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members .dot.up")) == 3)
    follower = next(i for i in (1, 2, 3) if i != leader)
    os.kill(demo_pid(follower), signal.SIGKILL)
    row = f'#members tr[data-node-id="{follower}"]'
    wait(driver, f"node {follower} down on the leader's page",
         lambda d: d.find_elements(By.CSS_SELECTOR, f"{row} .heard.down") and text_of(d, f"{row} .heard") != "")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#members .dot.up")) == 2
    print(f"killed node {follower}; the leader's page shows it down")

    driver.save_screenshot(screenshot)
    print(f"screenshot: {screenshot}")

    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
              and "409" not in entry["message"]]
    assert not errors, f"errors in the browser console: {errors}"


def run_jwt(driver, screenshot):
    """The same page on `tally demo --auth jwt`: register, sign in, create, vote as oneself;
    another member's vote through node 3 moves the bars on node 1's page."""
    driver.get(JWT_NODE + "/")
    form = wait(driver, "the sign-in form", lambda d: d.find_element(By.ID, "sign-in-form"))
    form.find_element(By.NAME, "username").send_keys("web-voter")
    form.find_element(By.NAME, "password").send_keys("web-voter-password")
    form.find_element(By.NAME, "register").click()
    wait(driver, "the signed-in user", lambda d: text_of(d, "#signed-in-as") == "web-voter")
    form = wait(driver, "the create form", lambda d: d.find_element(By.ID, "create-form"))
    form.find_element(By.NAME, "title").send_keys("Members only")
    form.find_element(By.NAME, "options").send_keys("Yes\nNo")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, "the new poll's page", lambda d: "#/poll/" in d.current_url)
    poll_id = driver.current_url.split("#/poll/")[1]
    vote = wait(driver, "the vote form", lambda d: d.find_element(By.ID, "vote-form"))
    assert "Voting as web-voter" in vote.text, vote.text
    vote.find_element(By.CSS_SELECTOR, 'input[value="o1"]').click()
    vote.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, "Yes at 100% (the stream, with a token)", lambda d: bar_width(d, "o1") == "width: 100%;")
    # Another member votes through the API; the page follows.
    credentials = {"username": "api-voter", "password": "api-voter-password"}
    assert http("POST", f"{JWT_NODE}/v1/users", credentials)[0] == 201
    _, login = http("POST", f"{JWT_NODE}/v1/auth/token", credentials)
    bearer = {"Authorization": "Bearer " + login["access_token"]}
    status, body = http("POST", f"{JWT_NODES[2]}/v1/polls/{poll_id}/votes", {"option_id": "o2"}, bearer)
    assert status == 200, body
    wait(driver, "both bars at 50%", lambda d: bar_width(d, "o2") == "width: 50%;")
    _, audit_denied = http("GET", f"{JWT_NODE}/v1/polls/{poll_id}/audit", None, bearer)
    assert audit_denied["error"]["code"] == "FORBIDDEN", audit_denied
    # Signed in, the cluster panel shows the cluster, not the refusal it got before.
    wait(driver, "the cluster panel, signed in", lambda d: text_of(d, "#leader") not in ("", None))
    driver.save_screenshot(screenshot)
    print(f"jwt mode: registered, signed in, voted as web-voter; screenshot: {screenshot}")


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "target/debug"
    screenshot = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(target, "web-page.png"))
    work_dir = tempfile.mkdtemp(prefix="tally-web-")
    driver = None
    try:
        start_demo(target, work_dir, "demo", PORT_BASE)
        start_demo(target, work_dir, "jwt-demo", JWT_PORT_BASE, ("--auth", "jwt"))
        driver = browser()
        run(driver, screenshot)
        run_jwt(driver, screenshot.replace(".png", "-jwt.png"))
        print("PASS: web page")
    finally:
        if driver:
            driver.quit()
        for demo in STARTED:
            stop_demo(demo)
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
