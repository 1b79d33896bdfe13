//! A stateful ServiceNow REST simulator with fault injection, for tests and the local mode.
//!
//! Start it on an ephemeral loopback port with [`Simulator::start`], point a client at
//! [`RunningSim::base_url`], and assert on [`RunningSim::records`] / [`RunningSim::requests`].
//! See API.md in this crate for the control API and the fault kinds.

mod api;
pub mod config;
mod faults;
pub mod query;
mod server;
mod store;
mod transactions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::{SimConfig, SimProfile};
pub use faults::{Fault, FaultKind};
pub use server::is_loopback_peer;
pub use store::LoggedRequest;

/// Errors of the simulator itself (configuration, binding).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration: cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid simulator configuration: {0}")]
    Yaml(#[source] serde_yaml_ng::Error),
    #[error("invalid simulator configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("simulator I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Entry point: starts a simulator.
pub struct Simulator;

impl Simulator {
    /// Bind 127.0.0.1 on an ephemeral port and serve `config` in the background.
    pub async fn start(config: SimConfig) -> std::io::Result<RunningSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Simulator::serve(listener, config)
    }

    /// Serve on an already bound listener (the local mode chooses its address). Must be called inside a
    /// Tokio runtime.
    pub fn serve(listener: tokio::net::TcpListener, config: SimConfig) -> std::io::Result<RunningSim> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(store::Shared::new(config));
        let task = tokio::spawn(server::accept_loop(listener, shared.clone()));
        Ok(RunningSim { addr, shared, task })
    }
}

/// Handle to a running simulator. Dropping it without [`RunningSim::shutdown`] stops it too.
pub struct RunningSim {
    addr: SocketAddr,
    shared: Arc<store::Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSim {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stored records of `table`, every value a string; reference fields hold the sys_id and a
    /// sibling `<field>.display_value` holds the display value.
    pub fn records(&self, table: &str) -> Vec<serde_json::Value> {
        self.shared.records_json(table)
    }

    /// The content of the attachment `sys_id` (as `GET /api/now/attachment/{sys_id}/file` answers it).
    pub fn attachment_content(&self, sys_id: &str) -> Option<Vec<u8>> {
        let store = self.shared.store.lock().expect("store lock");
        store.attachments.get(sys_id).map(|b| b.to_vec())
    }

    /// Act on a record as `user` (None: the analyst) would in the instance's UI — resolve, close, reassign, add
    /// a work note — with that user's write ACL and the table's rules (state model, data policies, journal
    /// fields); references by display value or sys_id. Returns the stored record (journal fields are in
    /// `records("sys_journal_field")`), or the error status and message the instance answers.
    pub fn act_as(
        &self,
        user: Option<&str>,
        table: &str,
        sys_id: &str,
        fields: serde_json::Value,
    ) -> Result<serde_json::Value, (u16, String)> {
        let fields = fields.as_object().cloned().unwrap_or_default();
        let user = user.unwrap_or(server::ANALYST);
        match api::act_as(&self.shared, user, table, sys_id, &fields) {
            Ok(row) => Ok(serde_json::to_value(row).unwrap_or_default()),
            Err(reply) => Err((reply.status.as_u16(), String::from_utf8_lossy(&reply.body).into_owned())),
        }
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared
            .store
            .lock()
            .expect("store lock")
            .log
            .iter()
            .cloned()
            .collect()
    }

    pub fn inject(&self, fault: Fault) {
        self.shared.store.lock().expect("store lock").faults.push(fault);
    }

    /// Drop every injected fault not yet used up (records, log and clock stay as they are).
    pub fn clear_faults(&self) {
        self.shared.store.lock().expect("store lock").faults.clear();
    }

    pub fn set_hibernating(&self, on: bool) {
        self.shared.store.lock().expect("store lock").hibernating = on;
    }

    /// Move the simulator clock forward (token expiry, rate-limit windows).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.advance_clock(by);
    }

    /// Records, counters, tokens, request log, faults, clock and hibernation back to the start state.
    pub fn reset(&self) {
        self.shared.reset();
    }

    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.task.abort();
    }
}
