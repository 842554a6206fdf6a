//! The command's failures: a one-line message and the exit code it maps to.

use std::fmt;
use std::process::ExitCode;

/// Exit codes: 0 success, 1 runtime failure, 2 usage or bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// A runtime failure: a connect refused, a peer reset, an I/O error.
    Runtime = 1,
    /// Usage or bad input: a bad URI, an unknown option, a missing directory.
    Usage = 2,
}

/// A failure to report as `conflux: <message>` and exit with its code.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

impl CliError {
    /// Exit code 1.
    pub(crate) fn runtime(message: impl Into<String>) -> CliError {
        CliError { exit: Exit::Runtime, message: message.into() }
    }

    /// Exit code 2.
    pub(crate) fn usage(message: impl Into<String>) -> CliError {
        CliError { exit: Exit::Usage, message: message.into() }
    }

    /// The process's exit code.
    pub(crate) fn code(&self) -> ExitCode {
        ExitCode::from(self.exit as u8)
    }
}

impl fmt::Display for CliError {
    /// One line, however many the message had.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message.replace('\n', "; "))
    }
}
