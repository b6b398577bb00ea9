//! A real `tally demo` for the CLI's end-to-end tests, and a way to run `tally` against it.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `tally demo`; dropping it stops the demo, which stops its nodes.
pub struct Demo {
    child: Child,
    port_base: u16,
    scheme: &'static str,
}

impl Demo {
    pub fn start(port_base: u16, data: &Path, extra: &[&str]) -> Demo {
        let mut args = vec!["--fresh"];
        args.extend(extra);
        Self::start_on(port_base, data, &args)
    }

    /// Like [`Demo::start`] without `--fresh`: the data of an earlier run is kept.
    pub fn start_on(port_base: u16, data: &Path, extra: &[&str]) -> Demo {
        let child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["demo", "--port-base", &port_base.to_string(), "--data-dir"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tally demo starts");
        let scheme = if extra.contains(&"--tls") { "https" } else { "http" };
        Demo { child, port_base, scheme }
    }

    pub fn endpoints(&self) -> String {
        (0..3).map(|i| format!("{}://127.0.0.1:{}", self.scheme, self.port_base + i)).collect::<Vec<_>>().join(",")
    }

    /// Runs `tally --endpoints <demo> args -o json` with `env` added: exit code, stdout as
    /// JSON (or null), stderr.
    pub fn tally(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
        self.tally_at(&self.endpoints(), args, env)
    }

    /// Like [`Demo::tally`], with other endpoints (one node, say).
    pub fn tally_at(&self, endpoints: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(args)
            .args(["--endpoints", endpoints, "-o", "json"])
            .env_remove("TALLY_TOKEN")
            .env_remove("TALLY_PASSWORD")
            .envs(env.iter().copied())
            .output()
            .expect("tally runs");
        let stdout = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        (output.status.code().unwrap_or(-1), stdout, String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Retries `check` until it returns `Some`, for at most `limit`.
    pub fn wait_for<T>(&self, what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGTERM lets the demo stop its nodes; `kill` keeps these tests free of unsafe code.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

/// Runs `tally args` on a pseudo-terminal (Python's pty module, on every machine that has
/// Python 3) with `env` added; once the terminal shows `expect`, types `send`, then reads
/// until the program exits (30 s at most). Returns its exit code and what the terminal
/// showed.
pub fn on_a_terminal(args: &[&str], env: &[(&str, &str)], expect: &str, send: &str) -> (i32, String) {
    const DRIVER: &str = r#"
import os, pty, signal, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
expect, send = os.environ["PTY_EXPECT"].encode(), os.environ["PTY_SEND"].encode()
shown, sent, deadline = b"", False, time.time() + 30
while time.time() < deadline:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    shown += chunk
    if not sent and expect in shown:
        os.write(fd, send)
        sent = True
else:
    os.kill(pid, signal.SIGKILL)
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let output = Command::new("python3")
        .args(["-c", DRIVER, env!("CARGO_BIN_EXE_tally")])
        .args(args)
        .env_remove("TALLY_PASSWORD")
        .env_remove("TALLY_TOKEN")
        .envs(env.iter().copied())
        .env("PTY_EXPECT", expect)
        .env("PTY_SEND", send)
        .output()
        .expect("python3 runs");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}
