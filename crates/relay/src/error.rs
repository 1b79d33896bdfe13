//! The one error type of the commands, with the exit code it maps to.

use std::process::ExitCode;

/// Exit codes: 0 success, 1 failure, 2 invalid input or settings, 3 not found.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_NOT_FOUND: u8 = 3;

/// Why a command did not succeed. `main` prints it on stderr (`error: …`) and exits with its code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input or settings: a file that cannot be read, a config or alert that does not validate, a
    /// missing option (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// The command ran and something failed (exit 1).
    #[error("{0}")]
    Failed(String),
    /// What was asked for does not exist (exit 3).
    #[error("{0}")]
    NotFound(String),
    /// Already reported line by line (e.g. per file or per table): exit 1 without another message.
    #[error("")]
    Reported,
    /// Invalid input, already reported (e.g. as a JSON document on stdout): exit 2 without another message.
    #[error("")]
    ReportedInvalid,
}

impl CliError {
    pub fn invalid(e: impl std::fmt::Display) -> CliError {
        CliError::Invalid(e.to_string())
    }

    pub fn failed(e: impl std::fmt::Display) -> CliError {
        CliError::Failed(e.to_string())
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Invalid(_) | CliError::ReportedInvalid => EXIT_INVALID,
            CliError::Failed(_) | CliError::Reported => EXIT_FAILED,
            CliError::NotFound(_) => EXIT_NOT_FOUND,
        })
    }
}

/// What `main` does with a command's result.
pub fn exit(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, CliError::Reported | CliError::ReportedInvalid) {
                eprintln!("error: {e}");
            }
            e.exit_code()
        }
    }
}
