//! Injected faults: what the next matching requests suffer.

use serde::{Deserialize, Serialize};

pub(crate) mod timing;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Answer `status` (5xx) with the error envelope; nothing is committed.
    ServerError { status: u16 },
    /// Answer 429 with the ServiceNow body and rate-limit headers; nothing is committed.
    RateLimited { retry_after_s: u64 },
    /// Revoke every issued access token and answer this request 401.
    RevokeTokens,
    /// Wait before handling the request (then handle it normally).
    Latency { ms: u64 },
    /// Handle the request (commit), then never answer.
    TimeoutAfterWrite,
    /// Handle the request (commit), answer its status with a body that is not JSON.
    MalformedJson,
    /// Handle the request (commit), answer its status with the body cut in half.
    TruncatedJson,
    /// Close the connection with a TCP reset and no response, before or after handling.
    ConnectionReset {
        #[serde(default)]
        after_commit: bool,
    },
    /// Handle the request (commit), then answer 500 "Transaction cancelled".
    TransactionCancelled,
    /// Handle the request (commit) `ms` after it arrived, whether or not the client still waits (a
    /// transaction is not cancelled by its client going away); answer then if the client is still there.
    LateCommit { ms: u64 },
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::ServerError { .. } => "server_error",
            FaultKind::RateLimited { .. } => "rate_limited",
            FaultKind::RevokeTokens => "revoke_tokens",
            FaultKind::Latency { .. } => "latency",
            FaultKind::TimeoutAfterWrite => "timeout_after_write",
            FaultKind::MalformedJson => "malformed_json",
            FaultKind::TruncatedJson => "truncated_json",
            FaultKind::ConnectionReset { .. } => "connection_reset",
            FaultKind::TransactionCancelled => "transaction_cancelled",
            FaultKind::LateCommit { .. } => "late_commit",
        }
    }
}

/// A fault for the next `count` requests matching `table` and `method` (None = any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
}

fn one() -> u32 {
    1
}

impl Fault {
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            kind,
            count: 1,
            table: None,
            method: None,
        }
    }

    pub fn times(mut self, count: u32) -> Fault {
        self.count = count;
        self
    }

    pub fn on_table(mut self, table: &str) -> Fault {
        self.table = Some(table.to_string());
        self
    }

    pub fn on_method(mut self, method: &str) -> Fault {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    pub(crate) fn matches(&self, table: Option<&str>, method: &str) -> bool {
        self.count > 0
            && self.table.as_deref().is_none_or(|t| Some(t) == table)
            && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// Take one use of the first fault matching the request.
pub(crate) fn take_matching(faults: &mut Vec<Fault>, table: Option<&str>, method: &str) -> Option<FaultKind> {
    let idx = faults.iter().position(|f| f.matches(table, method))?;
    let fault = &mut faults[idx];
    fault.count -= 1;
    let kind = fault.kind.clone();
    if fault.count == 0 {
        faults.remove(idx);
    }
    Some(kind)
}
