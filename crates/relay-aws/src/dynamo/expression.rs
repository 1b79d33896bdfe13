//! The pieces DynamoDB expressions are written with: attribute names and values, the live-item condition,
//! the claim fence, and how a failed condition is recognised.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use relay_ports::{Clock, DeliveryState, SystemClock};

pub(super) const LIVE: &str = "attribute_exists(#alert_id) AND #expires_at > :now_s";

/// `#name` → `name` for every attribute an expression references.
pub(super) fn names(list: &[&str]) -> Option<HashMap<String, String>> {
    Some(list.iter().map(|n| (format!("#{n}"), (*n).to_string())).collect())
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn state(st: DeliveryState) -> AttributeValue {
    s(st.as_str())
}

pub(super) fn now_s() -> i64 {
    SystemClock.now_ms().div_euclid(1000)
}

/// The fence of a write after a claim: the item still carries the caller's token. An item never claimed
/// has no `claim_token` attribute, which is token 0.
/// Returns the condition and the value it references (none for token 0).
pub(super) fn fence(token: u64) -> (&'static str, Option<(&'static str, AttributeValue)>) {
    if token == 0 {
        ("attribute_not_exists(#claim_token)", None)
    } else {
        ("#claim_token = :token", Some((":token", n(token))))
    }
}

pub(super) fn is_condition_failure<E>(err: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    matches!(err, SdkError::ServiceError(se) if se.err().code() == Some("ConditionalCheckFailedException"))
}
