//! Sealing a batch aggregate ([`Ledger::aggregate`]): one TransactWriteItems that puts the aggregate's entry
//! and moves every member to `AGGREGATED`, all or nothing, sent again with its request token after a transient
//! failure.
//!
//! [`Ledger::aggregate`]: relay_ports::Ledger::aggregate

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use relay_ports::{DeliveryState, LedgerEntry, PortError};

use super::DynamoLedger;
use super::expression::{LIVE, fence, n, names, now_s, s, state};
use super::item::to_item;
use crate::error::port_error;

/// How often a seal ([`Ledger::aggregate`]) that failed transiently is sent again (with its request token).
///
/// [`Ledger::aggregate`]: relay_ports::Ledger::aggregate
const SEAL_TRIES: u32 = 4;

impl DynamoLedger {
    /// The body of [`Ledger::aggregate`] (see there).
    ///
    /// [`Ledger::aggregate`]: relay_ports::Ledger::aggregate
    pub(super) async fn seal(
        &self,
        plan: &LedgerEntry,
        members: &[(String, u64)],
        now_ms: i64,
    ) -> Result<(), PortError> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
        relay_ports::transition::check_aggregate_request(plan, members)?;
        let item = to_item(plan).map_err(|e| self.malformed(&plan.alert_id, e))?;
        let built = |e: aws_sdk_dynamodb::error::BuildError| {
            PortError::Rejected(format!("ledger table {}: cannot build the seal: {e}", self.table))
        };
        let mut writes = vec![
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(#alert_id) OR #expires_at <= :now_s")
                        .set_expression_attribute_names(names(&["alert_id", "expires_at"]))
                        .expression_attribute_values(":now_s", n(now_s()))
                        .build()
                        .map_err(built)?,
                )
                .build(),
        ];
        for (key, token) in members {
            let (fenced, token_value) = fence(*token);
            let mut values: HashMap<String, AttributeValue> = [
                (":aggregated", state(DeliveryState::Aggregated)),
                (":in_progress", state(DeliveryState::InProgress)),
                (":aggregate", s(&plan.alert_id)),
                (":now", n(now_ms)),
                (":one", n(1)),
                (":now_s", n(now_s())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            values.extend(token_value.map(|(k, v)| (k.to_string(), v)));
            writes.push(
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&self.table)
                            .key("alert_id", s(key))
                            .update_expression(
                                "SET #state = :aggregated, #aggregate = :aggregate, #updated_at_ms = :now \
                                 ADD #claim_token :one REMOVE #lease_until_ms",
                            )
                            .condition_expression(format!("{LIVE} AND #state = :in_progress AND {fenced}"))
                            .set_expression_attribute_names(names(&[
                                "alert_id",
                                "expires_at",
                                "state",
                                "aggregate",
                                "updated_at_ms",
                                "claim_token",
                                "lease_until_ms",
                            ]))
                            .set_expression_attribute_values(Some(values))
                            .build()
                            .map_err(built)?,
                    )
                    .build(),
            );
        }
        // The same request token on every try makes a retry idempotent (DynamoDB answers a repeated token
        // within 10 minutes with the first outcome), so a transient failure — a 500, a throttle, a
        // TransactionInProgress — is tried again without risking a second write.
        let token = format!("{:x}", {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&plan.alert_id, plan.updated_at_ms, members).hash(&mut h);
            h.finish()
        });
        let mut last = None;
        for attempt in 0..SEAL_TRIES {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
            }
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(writes.clone()))
                .client_request_token(&token)
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(()),
                Err(SdkError::ServiceError(se)) if se.err().is_transaction_canceled_exception() => {
                    return Err(PortError::Stale(format!(
                        "aggregate {} not sealed: the plan exists or a member is no longer held ({})",
                        plan.alert_id,
                        se.err()
                    )));
                }
                Err(e) => {
                    let err = port_error(&self.op("TransactWriteItems(aggregate)", &plan.alert_id), e);
                    if !matches!(err, PortError::Unavailable(_)) {
                        return Err(err);
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| PortError::Unavailable("TransactWriteItems not sent".into())))
    }
}
