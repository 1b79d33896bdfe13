//! The ledger's state machine over one entry, for the ledgers that hold whole entries (the SQLite ledger
//! reads a row, applies one of these and writes it back in one transaction; the in-memory ledger applies it
//! under its lock). The DynamoDB ledger states the same rules as condition and update expressions; the
//! conformance suite holds all three to them.
//!
//! Each function changes `e` in place and answers whether the entry changed (so the caller knows whether to
//! write it); a write fenced by a claim token that is no longer the entry's is `Err(PortError::Stale)` and
//! changes nothing.

use crate::{Claim, DeliveryState, LedgerEntry, PortError, RecordRef, RetryLater};

/// The caller's claim token must be the entry's current one.
pub fn check_token(e: &LedgerEntry, token: u64) -> Result<(), PortError> {
    if e.claim_token == token {
        Ok(())
    } else {
        Err(PortError::stale_claim(&e.alert_id, e.claim_token, token))
    }
}

/// The entry is claimed (`InProgress`); a write that needs a held claim is `Stale` otherwise.
fn held(e: &LedgerEntry) -> Result<(), PortError> {
    if e.state == DeliveryState::InProgress {
        Ok(())
    } else {
        Err(PortError::Stale(format!(
            "ledger entry {} is {}, not claimed",
            e.alert_id,
            e.state.as_str()
        )))
    }
}

/// `Accepted` → `Queued`; nothing in any other state.
pub fn mark_queued(e: &mut LedgerEntry, now_ms: i64) -> bool {
    if e.state != DeliveryState::Accepted {
        return false;
    }
    e.state = DeliveryState::Queued;
    e.updated_at_ms = now_ms;
    true
}

/// Take the entry for one attempt ([`crate::Ledger::claim`]); the answer, and whether the entry changed.
pub fn claim(e: &mut LedgerEntry, now_ms: i64, lease_ms: i64) -> (Claim, bool) {
    match e.state {
        DeliveryState::Completed => return (Claim::Completed(e.clone()), false),
        DeliveryState::Failed => return (Claim::Failed(e.clone()), false),
        DeliveryState::Aggregated => return (Claim::Aggregated(e.clone()), false),
        DeliveryState::InProgress => {
            if let Some(until) = e.lease_until_ms.filter(|until| *until >= now_ms) {
                return (Claim::Busy { lease_until_ms: until }, false);
            }
        }
        DeliveryState::Accepted | DeliveryState::Queued | DeliveryState::Retrying => {}
    }
    if let Some(until_ms) = e.not_before_ms.filter(|t| *t > now_ms) {
        return (Claim::NotBefore { until_ms }, false);
    }
    e.state = DeliveryState::InProgress;
    e.attempts = e.attempts.saturating_add(1);
    e.claim_token = e.claim_token.saturating_add(1);
    e.lease_until_ms = Some(now_ms.saturating_add(lease_ms));
    e.updated_at_ms = now_ms;
    (Claim::Claimed(e.clone()), true)
}

/// Renew a held claim's lease (never shortening it); the new lease end.
pub fn extend(e: &mut LedgerEntry, token: u64, now_ms: i64, lease_ms: i64) -> Result<i64, PortError> {
    check_token(e, token)?;
    held(e)?;
    let until = e.lease_until_ms.unwrap_or(0).max(now_ms.saturating_add(lease_ms));
    e.lease_until_ms = Some(until);
    Ok(until)
}

/// Store the record; a final entry is left alone.
pub fn complete(e: &mut LedgerEntry, token: u64, record: &RecordRef, now_ms: i64) -> Result<bool, PortError> {
    check_token(e, token)?;
    if e.state.is_final() {
        return Ok(false);
    }
    e.state = DeliveryState::Completed;
    e.record = Some(record.clone());
    e.lease_until_ms = None;
    e.updated_at_ms = now_ms;
    Ok(true)
}

/// Schedule another attempt; a final or aggregated entry is left alone.
pub fn retry_later(e: &mut LedgerEntry, token: u64, retry: &RetryLater, now_ms: i64) -> Result<bool, PortError> {
    check_token(e, token)?;
    if e.state.is_final() || e.state == DeliveryState::Aggregated {
        return Ok(false);
    }
    e.state = DeliveryState::Retrying;
    e.last_error_class = Some(retry.error_class.clone());
    e.last_error = Some(retry.error.clone());
    e.needs_lookup |= retry.needs_lookup;
    if retry.unsent {
        e.attempts = e.attempts.saturating_sub(1);
    }
    e.no_create_before_ms = e.no_create_before_ms.max(retry.no_create_before_ms);
    e.not_before_ms = retry.not_before_ms;
    e.lease_until_ms = None;
    e.updated_at_ms = now_ms;
    Ok(true)
}

/// Give up. Completed is final; a second fail keeps the entry Failed with the latest error.
pub fn fail(e: &mut LedgerEntry, token: u64, error_class: &str, error: &str, now_ms: i64) -> Result<bool, PortError> {
    check_token(e, token)?;
    if e.state == DeliveryState::Completed {
        return Ok(false);
    }
    e.state = DeliveryState::Failed;
    e.last_error_class = Some(error_class.to_string());
    e.last_error = Some(error.to_string());
    e.lease_until_ms = None;
    e.updated_at_ms = now_ms;
    Ok(true)
}

/// `Failed` → `Queued` (a member of an aggregate: `Aggregated`) for a replay, with a new claim token, the attempts and window restarted, the
/// lookup kept and the retention never shortened. False (nothing changed) in any other state.
pub fn reopen(e: &mut LedgerEntry, token: u64, now_ms: i64, expires_at_s: i64) -> Result<bool, PortError> {
    if e.state != DeliveryState::Failed {
        return Ok(false);
    }
    check_token(e, token)?;
    e.state = if e.aggregate.is_some() {
        DeliveryState::Aggregated
    } else {
        DeliveryState::Queued
    };
    e.attempts = 0;
    e.claim_token = e.claim_token.saturating_add(1);
    e.not_before_ms = None;
    e.first_received_at_ms = now_ms;
    e.expires_at_s = e.expires_at_s.max(expires_at_s);
    e.lease_until_ms = None;
    e.updated_at_ms = now_ms;
    Ok(true)
}

/// The aggregate's own entry may be written: no live entry holds its key (`existing` is the stored one).
pub fn check_plan_absent(plan: &LedgerEntry, existing: Option<&LedgerEntry>) -> Result<(), PortError> {
    match existing {
        None => Ok(()),
        Some(e) => Err(PortError::Stale(format!(
            "aggregate {} is already sealed ({})",
            plan.alert_id,
            e.state.as_str()
        ))),
    }
}

/// Seal one member into the aggregate `aggregate_key`: it must be `InProgress` under `token`.
pub fn join_aggregate(e: &mut LedgerEntry, token: u64, aggregate_key: &str, now_ms: i64) -> Result<(), PortError> {
    check_token(e, token)?;
    held(e)?;
    e.state = DeliveryState::Aggregated;
    e.aggregate = Some(aggregate_key.to_string());
    e.claim_token = e.claim_token.saturating_add(1);
    e.lease_until_ms = None;
    e.updated_at_ms = now_ms;
    Ok(())
}

/// The arguments of [`crate::Ledger::aggregate`] are acceptable: not too many members, none twice, and the
/// plan is not one of them.
pub fn check_aggregate_request(plan: &LedgerEntry, members: &[(String, u64)]) -> Result<(), PortError> {
    if members.len() > crate::MAX_AGGREGATE_MEMBERS {
        return Err(PortError::Rejected(format!(
            "aggregate {} has {} members; at most {} can be sealed",
            plan.alert_id,
            members.len(),
            crate::MAX_AGGREGATE_MEMBERS
        )));
    }
    let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    keys.push(&plan.alert_id);
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(PortError::Rejected(format!(
            "aggregate {}: a key appears twice among the plan and its members",
            plan.alert_id
        )));
    }
    Ok(())
}

/// [`crate::Ledger::aggregate`] over whole entries: from the plan, the live entry stored under its key (if
/// any) and each member's live entry (None when missing) with the caller's token, the entries to write —
/// the plan first, then every member sealed — or why nothing may be written.
pub fn seal(
    plan: &LedgerEntry,
    existing_plan: Option<&LedgerEntry>,
    members: Vec<(Option<LedgerEntry>, &str, u64)>,
    now_ms: i64,
) -> Result<Vec<LedgerEntry>, PortError> {
    check_plan_absent(plan, existing_plan)?;
    let mut out = Vec::with_capacity(members.len() + 1);
    out.push(plan.clone());
    for (entry, key, token) in members {
        let mut e = entry.ok_or_else(|| PortError::Stale(format!("no ledger entry for member {key}")))?;
        join_aggregate(&mut e, token, &plan.alert_id, now_ms)?;
        out.push(e);
    }
    Ok(out)
}
