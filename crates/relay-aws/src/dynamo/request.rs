//! The requests the ledger operations share: the consistent read of an entry, the conditional update, and
//! the errors they name (a malformed item, a missing entry, a stale claim).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use relay_ports::{LedgerEntry, PortError};

use super::DynamoLedger;
use super::expression::{is_condition_failure, names, now_s, s};
use super::item::{ItemError, from_item};
use crate::error::port_error;

impl DynamoLedger {
    pub(super) fn op(&self, name: &str, alert_id: &str) -> String {
        format!("DynamoDB {name} on {} for {alert_id}", self.table)
    }

    pub(super) fn malformed(&self, alert_id: &str, e: ItemError) -> PortError {
        PortError::Rejected(format!("ledger table {}: item {alert_id} {e}", self.table))
    }

    /// The current, live entry (consistent read), or `None`.
    pub(super) async fn read(&self, alert_id: &str) -> Result<Option<LedgerEntry>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("alert_id", s(alert_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| port_error(&self.op("GetItem", alert_id), e))?;
        let Some(item) = out.item else { return Ok(None) };
        let entry = from_item(item).map_err(|e| self.malformed(alert_id, e))?;
        Ok((entry.expires_at_s > now_s()).then_some(entry))
    }

    pub(super) fn missing(&self, alert_id: &str) -> PortError {
        PortError::NotFound(format!("ledger table {}: no entry for {alert_id}", self.table))
    }

    /// After a fenced write was refused: `NotFound`, `Stale`, or `Ok` (the entry is final and the write
    /// would not have changed it).
    pub(super) async fn after_refused_write(&self, alert_id: &str, token: u64) -> Result<(), PortError> {
        match self.read(alert_id).await? {
            None => Err(self.missing(alert_id)),
            Some(e) if e.claim_token != token => Err(PortError::stale_claim(alert_id, e.claim_token, token)),
            Some(_) => Ok(()),
        }
    }

    /// A conditional UpdateItem; `Ok(None)` when the condition failed, else the new item.
    pub(super) async fn update(
        &self,
        what: &str,
        alert_id: &str,
        update: &str,
        condition: &str,
        attr_names: &[&str],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Option<LedgerEntry>, PortError> {
        let values: HashMap<String, AttributeValue> = values.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("alert_id", s(alert_id))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(names(attr_names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                let entry = from_item(item).map_err(|e| self.malformed(alert_id, e))?;
                Ok(Some(entry))
            }
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(port_error(&self.op(what, alert_id), e)),
        }
    }
}
