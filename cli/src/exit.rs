//! Exit codes: the one place that says what `tally`'s exit status means, and how an error
//! is printed. Scripts switch on these, so they are a stable interface.

use std::fmt;
use std::io;
use std::process::ExitCode;

/// The exit status of `tally`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The command did what was asked.
    Ok = 0,
    /// The server answered with an error (`ALREADY_VOTED`, `POLL_NOT_FOUND`,
    /// `INVALID_REQUEST`, ...), or the command failed on this side (an option text that
    /// matches no option, a demo node that died, an unwritable data dir).
    Failed = 1,
    /// Bad usage: unknown flag, missing argument, malformed value. Clap reports most of
    /// these itself; the rest are checks that need more than one flag at a time.
    Usage = 2,
    /// No endpoint was reachable, or the cluster answered `503 UNAVAILABLE` or
    /// `504 TIMEOUT`: trying again later may succeed (for a vote, with the same
    /// idempotency key, which tells whether the first attempt was recorded).
    Unavailable = 3,
}

/// Appended to `tally --help` so the codes are documented where users look.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the server answered with an error (e.g. ALREADY_VOTED, POLL_NOT_FOUND), or a local failure
  2  bad usage
  3  unavailable: no endpoint reachable, or 503 UNAVAILABLE / 504 TIMEOUT";

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// An error with a stable `code`, printed as `error: CODE: message`. Server errors keep the
/// server's code; errors found by the CLI itself use a code in the same style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, code: &str, message: impl Into<String>) -> Self {
        Failure { exit, code: code.to_string(), message: message.into() }
    }

    pub fn failed(code: &str, message: impl Into<String>) -> Self {
        Self::new(Exit::Failed, code, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, "USAGE", message)
    }

    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        Self::new(Exit::Unavailable, code, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Failure {}

/// Prints `error` to stderr (or clap's own text for usage errors) and picks the exit code.
pub fn report(error: &anyhow::Error) -> Exit {
    if let Some(clap_error) = error.downcast_ref::<clap::Error>() {
        // `--help` and `--version` arrive here too: they are not failures.
        let _ = clap_error.print();
        return if clap_error.use_stderr() { Exit::Usage } else { Exit::Ok };
    }
    // `tally poll list | head` closes our stdout early; that is what the user wanted.
    if is_broken_pipe(error) {
        return Exit::Ok;
    }
    if let Some(failure) = error.downcast_ref::<Failure>() {
        eprintln!("error: {failure}");
        return failure.exit;
    }
    eprintln!("error: {error:#}");
    Exit::Failed
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(|io_error| io_error.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        assert_eq!(Exit::Ok as u8, 0);
        assert_eq!(Exit::Failed as u8, 1);
        assert_eq!(Exit::Usage as u8, 2);
        assert_eq!(Exit::Unavailable as u8, 3);
    }

    #[test]
    fn failure_prints_code_then_message() {
        let failure = Failure::failed("POLL_NOT_FOUND", "no poll p1");
        assert_eq!(failure.to_string(), "POLL_NOT_FOUND: no poll p1");
    }

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        let error = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context("x");
        assert!(is_broken_pipe(&error));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
