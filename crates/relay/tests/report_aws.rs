//! `relay report rules --ledger-table`: the rule-quality report over the deployed stack's DynamoDB ledger
//! (moto on loopback), counting alerts and lifecycle events and nothing else the ledger holds.

use std::process::Command;

use relay_aws::DynamoLedger;
use relay_aws::testing::{create_ledger_table, moto_endpoint};
use relay_ports::{DeliveryState, Ledger, LedgerEntry, RecordRef};
use serde_json::Value;

fn entry(key: &str, rule: &str, delivery: &str, state: DeliveryState, note: bool, at_ms: i64) -> LedgerEntry {
    LedgerEntry {
        alert_id: key.into(),
        webhook_id: None,
        state,
        attempts: 1,
        first_received_at_ms: at_ms,
        updated_at_ms: at_ms + 60_000,
        lease_until_ms: None,
        needs_lookup: false,
        claim_token: 1,
        no_create_before_ms: None,
        not_before_ms: None,
        aggregate: None,
        plan: None,
        rule: rule.into(),
        record_type: "security_incident".into(),
        table: "sn_si_incident".into(),
        severity: "high".into(),
        delivery: delivery.into(),
        correlation_id: format!("emon:{key}"),
        config_hash: String::new(),
        record: (state == DeliveryState::Completed).then(|| RecordRef {
            table: "sn_si_incident".into(),
            sys_id: "0123456789abcdef0123456789abcdef".into(),
            number: Some("SIR0010001".into()),
            link: "https://x.service-now.com/sn_si_incident.do".into(),
            note,
        }),
        last_error_class: None,
        last_error: None,
        expires_at_s: at_ms / 1000 + 86_400,
    }
}

#[tokio::test]
async fn the_rule_report_reads_the_dynamodb_ledger() {
    let Some(_endpoint) = moto_endpoint() else { return };
    let config = relay_aws::sdk_config().await;
    let table = create_ledger_table(&config, "report-ledger").await;
    let ledger = DynamoLedger::new(&config, &table);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    use DeliveryState::*;
    for e in [
        entry(
            "a-1",
            "dlp-usb-mass-copy",
            "realtime",
            Completed,
            false,
            now - 3_600_000,
        ),
        entry("a-2", "dlp-usb-mass-copy", "realtime", Completed, true, now - 3_000_000),
        entry("a-3", "dlp-usb-mass-copy", "batch", Failed, false, now - 2_000_000),
        entry("b-1", "after-hours", "realtime", Completed, false, now - 1_000_000),
        // a-1 dismissed, b-1 resolved
        entry("event:1", "dismissed a-1", "event", Completed, true, now - 600_000),
        entry("event:2", "resolved b-1", "event", Completed, true, now - 500_000),
        // not alerts: never counted
        entry(
            "thread:sn_si_incident:ab",
            "dlp-usb-mass-copy",
            "thread",
            Completed,
            false,
            now,
        ),
        entry(
            "watch:sn_si_incident:0123",
            "dlp-usb-mass-copy",
            "watch",
            Queued,
            false,
            now,
        ),
        entry("callback:msg_1", "record.created", "callback", Completed, false, now),
    ] {
        ledger.accept(&e).await.unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["report", "rules", "--ledger-table", &table, "--json"])
        .output()
        .expect("relay runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |rule: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == rule)
            .cloned()
            .unwrap_or_else(|| panic!("{rule}: {rows:#}"))
    };
    let usb = row("dlp-usb-mass-copy");
    assert_eq!(
        (
            &usb["alerts"],
            &usb["records"],
            &usb["notes"],
            &usb["failed"],
            &usb["dismissed"]
        ),
        (
            &Value::from(3),
            &Value::from(1),
            &Value::from(1),
            &Value::from(1),
            &Value::from(1)
        ),
        "{usb:#}"
    );
    assert_eq!(row("after-hours")["resolved"], 1);
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows:#}");
    // a table that does not exist is named
    let out = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["report", "rules", "--ledger-table", "no-such-ledger"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-ledger"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
