//! One module per command; each has its clap arguments and a `run` that returns a [`CliError`] when it does
//! not succeed.
//!
//! [`CliError`]: crate::error::CliError

pub mod config_check;
pub mod health;
pub mod list;
pub mod load;
pub mod replay;
pub mod report;
pub mod route;
pub mod send;
pub mod serve;
pub mod sign;
pub mod status;
pub mod test_connection;

/// A current-thread runtime for the one-shot commands (`serve` and `load` build their own).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
}
