//! `tally user create|login`: built-in accounts of a cluster run with `--auth jwt`.
//!
//! The password comes from standard input (`--password-stdin`) or `TALLY_PASSWORD`, never
//! from a flag, which other users of the machine could read in the process list.

use std::io::BufRead;

use serde_json::{json, Value};

use crate::client::Request;
use crate::exit::Failure;
use crate::output::{self, render_fields};
use crate::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register an account.
    Create(Args),
    /// Log in; prints the access token (use it as --token or TALLY_TOKEN).
    Login(Args),
}

#[derive(Debug, clap::Args)]
pub struct Args {
    pub username: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// The password, from the environment only.
    #[arg(long = "password-env", env = "TALLY_PASSWORD", hide = true, hide_env_values = true)]
    pub password: Option<String>,
}

fn password(args: &Args) -> Result<String, Failure> {
    if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| Failure::usage(format!("reading stdin: {e}")))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    args.password.clone().ok_or_else(|| Failure::usage("give the password with --password-stdin or TALLY_PASSWORD"))
}

pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    let (path, args) = match &command {
        Command::Create(args) => ("/v1/users", args),
        Command::Login(args) => ("/v1/auth/token", args),
    };
    let body = json!({"username": args.username, "password": password(args)?});
    let reply = settings.client.send(&Request::post(path, body)).await?;
    match command {
        Command::Create(_) => output::emit_value(settings.format, &reply, |reply| {
            let text = |key: &str| reply.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
            render_fields(&[("created", text("username")), ("at", text("created_at"))])
        }),
        // The token alone, so that `export TALLY_TOKEN=$(tally user login …)` works.
        Command::Login(_) => output::emit_value(settings.format, &reply, |reply| {
            reply.get("access_token").and_then(Value::as_str).unwrap_or_default().to_string()
        }),
    }
}
