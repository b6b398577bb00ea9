//! `tally user create|login`: built-in accounts of a cluster run with `--auth jwt`.
//!
//! The password comes from standard input (`--password-stdin`), `TALLY_PASSWORD`, or, on a
//! terminal, a prompt that does not echo (rpassword); never from a flag, which other users
//! of the machine could read in the process list.

use std::io::{BufRead, IsTerminal};

use tally_api::v1::{Credentials, PasswordChange, PasswordChanged, TokenBody, UserBody};

use crate::client::{segment, Request};
use crate::exit::Failure;
use crate::output::{self, render_fields};
use crate::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register an account.
    Create(Args),
    /// Log in; prints the access token (use it as --token or TALLY_TOKEN).
    Login(Args),
    /// Change a password with --token: your own (prints a new token, since the change
    /// revokes every earlier one), or with --reset, as an admin, anyone's.
    Password(PasswordArgs),
}

#[derive(Debug, clap::Args)]
pub struct PasswordArgs {
    pub username: String,
    /// As an admin: set the password without knowing the current one.
    #[arg(long)]
    pub reset: bool,
    /// Read the passwords from standard input: the current one, then the new one, a line
    /// each (only the new one with --reset). Else they come from the environment variables
    /// TALLY_PASSWORD and TALLY_NEW_PASSWORD; never from a flag.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    pub username: String,
    /// Read the password from the first line of standard input (else it comes from the
    /// environment variable TALLY_PASSWORD, or a prompt on a terminal; never from a flag).
    #[arg(long)]
    pub password_stdin: bool,
}

const PASSWORD_ENV: &str = "TALLY_PASSWORD";
const NEW_PASSWORD_ENV: &str = "TALLY_NEW_PASSWORD";

/// Read here rather than through clap, whose `env` arguments also take a flag: a password
/// must never be typed where the process list shows it.
fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn stdin_line() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| Failure::usage(format!("reading stdin: {e}")))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Asks on the terminal without echo; `None` when standard input is not a terminal (a
/// script must say where its password comes from).
fn prompt(text: &str) -> Result<Option<String>, Failure> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    rpassword::prompt_password(text).map(Some).map_err(|e| Failure::usage(format!("reading the password: {e}")))
}

/// A new password typed twice, so that a typo does not lock the account.
fn prompt_new(text: &str) -> Result<Option<String>, Failure> {
    let Some(first) = prompt(text)? else { return Ok(None) };
    match prompt("Again: ")? {
        Some(second) if second == first => Ok(Some(first)),
        _ => Err(Failure::usage("the two passwords differ")),
    }
}

fn password(args: &Args, new_account: bool) -> Result<String, Failure> {
    if args.password_stdin {
        return stdin_line();
    }
    if let Some(password) = from_env(PASSWORD_ENV) {
        return Ok(password);
    }
    let asked = match new_account {
        true => prompt_new(&format!("Password for the new account {}: ", args.username))?,
        false => prompt(&format!("Password for {}: ", args.username))?,
    };
    asked.ok_or_else(|| Failure::usage("give the password with --password-stdin or TALLY_PASSWORD"))
}

/// The current password (none with `--reset`) and the new one.
fn password_change(args: &PasswordArgs) -> Result<(Option<String>, String), Failure> {
    if args.password_stdin {
        let current = if args.reset { None } else { Some(stdin_line()?) };
        return Ok((current, stdin_line()?));
    }
    let current = match (args.reset, from_env(PASSWORD_ENV)) {
        (true, _) => None,
        (false, Some(current)) => Some(current),
        (false, None) => Some(prompt(&format!("Current password of {}: ", args.username))?.ok_or_else(|| {
            Failure::usage("give the current password in TALLY_PASSWORD (or --password-stdin), or --reset as an admin")
        })?),
    };
    let new = match from_env(NEW_PASSWORD_ENV) {
        Some(new) => new,
        None => prompt_new(&format!("New password for {}: ", args.username))?.ok_or_else(|| {
            Failure::usage(
                "give the new password with --password-stdin or TALLY_NEW_PASSWORD (and the current one in TALLY_PASSWORD)",
            )
        })?,
    };
    Ok((current, new))
}

async fn change_password(args: PasswordArgs, settings: &Settings) -> anyhow::Result<()> {
    let (current, new) = password_change(&args)?;
    let path = format!("/v1/users/{}/password", segment(&args.username));
    let body = PasswordChange { current_password: current, new_password: new.clone() };
    let reply: PasswordChanged = settings.client.call(&Request::put(path, &body)).await?;
    if args.reset {
        return output::emit_value(settings.format, &reply, |reply| {
            render_fields(&[("password reset", reply.username.clone()), ("at", reply.changed_at.clone())])
        });
    }
    // The change revoked the token that made it: log in again with the new password.
    let login = Credentials { username: args.username, password: new };
    let reply: TokenBody = settings.client.call(&Request::post("/v1/auth/token", &login)).await?;
    emit_token(settings, &reply)
}

fn emit_token(settings: &Settings, reply: &TokenBody) -> anyhow::Result<()> {
    // The token alone, so that `export TALLY_TOKEN=$(tally user login …)` works.
    output::emit_value(settings.format, reply, |reply| reply.access_token.clone())
}

pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    match command {
        Command::Create(args) => {
            let password = password(&args, true)?;
            let body = Credentials { username: args.username, password };
            // With the cluster secret (TALLY_CLUSTER_SECRET or --cluster-secret-file), the
            // operator may create the accounts that `--admin` names.
            let request = settings.as_operator(Request::post("/v1/users", &body));
            let reply: UserBody = settings.client.call(&request).await?;
            output::emit_value(settings.format, &reply, |reply| {
                render_fields(&[("created", reply.username.clone()), ("at", reply.created_at.clone())])
            })
        }
        Command::Login(args) => {
            let password = password(&args, false)?;
            let body = Credentials { username: args.username, password };
            let reply: TokenBody = settings.client.call(&Request::post("/v1/auth/token", &body)).await?;
            emit_token(settings, &reply)
        }
        Command::Password(args) => change_password(args, settings).await,
    }
}
