//! Exit codes of `wiberctl` (a contract, see ARCHITECTURE.md):
//! 0 pass; 1 a check failed (an invariant or threshold, a message the API refused, a
//! stack that is not ready); 2 the tool itself failed (bad usage, unreachable API, I/O).

use std::process::ExitCode;

/// What a command concluded, mapped to the exit-code contract by [`Exit::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Pass,
    Fail,
}

pub const PASS: Exit = Exit::Pass;
pub const FAIL: Exit = Exit::Fail;

impl Exit {
    pub fn code(self) -> ExitCode {
        match self {
            Exit::Pass => ExitCode::SUCCESS,
            Exit::Fail => ExitCode::from(1),
        }
    }
}

/// The tool could not do its job.
pub fn tool_error() -> ExitCode {
    ExitCode::from(2)
}
