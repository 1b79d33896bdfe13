//! Contract tests: the client against the ServiceNow simulator, over real HTTP on 127.0.0.1.
//! Each test asserts the classification AND the simulator's resulting state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use servicenow_client::{
    BatchItem, ClientConfig, ClientError, CredentialSource, Credentials, Outcome, ServiceNowClient, StaticCredentials,
};
use servicenow_sim::{Fault, FaultKind, RunningSim, SimConfig, Simulator};

fn basic(user: &str, password: &str) -> Credentials {
    Credentials::Basic {
        username: user.into(),
        password: password.into(),
    }
}

fn relay() -> Credentials {
    basic("relay", "relay-password")
}

fn oauth_password() -> Credentials {
    Credentials::OAuthPassword {
        client_id: "relay-client".into(),
        client_secret: "relay-client-secret".into(),
        username: "relay".into(),
        password: "relay-password".into(),
    }
}

fn oauth_client_credentials() -> Credentials {
    Credentials::OAuthClientCredentials {
        client_id: "relay-client".into(),
        client_secret: "relay-client-secret".into(),
    }
}

fn client_with(sim: &RunningSim, source: Arc<dyn CredentialSource>, total: Duration) -> ServiceNowClient {
    let mut config = ClientConfig::new(sim.base_url());
    config.total_timeout = total;
    config.connect_timeout = total.min(Duration::from_secs(1));
    ServiceNowClient::new(config, source).expect("client")
}

fn client(sim: &RunningSim, creds: Credentials) -> ServiceNowClient {
    client_with(sim, Arc::new(StaticCredentials(creds)), Duration::from_secs(5))
}

fn incident(correlation_id: &str) -> Map<String, Value> {
    let v = json!({
        "short_description": "Data exfiltration alert",
        "description": "alert body",
        "impact": "1",
        "urgency": "2",
        "priority": "5",
        "assignment_group": "Security Operations",
        "correlation_id": correlation_id,
    });
    v.as_object().unwrap().clone()
}

fn with_correlation<'a>(records: &'a [Value], correlation_id: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["correlation_id"] == correlation_id)
        .collect()
}

fn created(o: Outcome) -> servicenow_client::CreatedRecord {
    match o {
        Outcome::Created(r) => r,
        other => panic!("expected created, got {other:?}"),
    }
}

fn fault(kind: FaultKind, table: Option<&str>, method: Option<&str>) -> Fault {
    Fault {
        kind,
        count: 1,
        table: table.map(str::to_string),
        method: method.map(str::to_string),
    }
}

fn count_requests(sim: &RunningSim, method: &str, path_prefix: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == method && r.path.starts_with(path_prefix))
        .count()
}

/// A credential source that counts calls and can hand out different credentials after `invalidate()`.
struct RotatingSource {
    before: Credentials,
    after: Credentials,
    invalidated: AtomicUsize,
}

#[async_trait]
impl CredentialSource for RotatingSource {
    async fn credentials(&self) -> Result<Credentials, ClientError> {
        Ok(if self.invalidated.load(Ordering::SeqCst) == 0 {
            self.before.clone()
        } else {
            self.after.clone()
        })
    }
    async fn invalidate(&self) {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
    }
}

struct FailingSource(ClientError);

#[async_trait]
impl CredentialSource for FailingSource {
    async fn credentials(&self) -> Result<Credentials, ClientError> {
        Err(self.0.clone())
    }
}

// ----------------------------------------------------------------------------------------------------
// create_record
// ----------------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_returns_number_and_link_and_the_record_exists() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let rec = created(c.create_record("incident", &incident("c-create-1")).await);
    assert!(rec.number.as_deref().unwrap().starts_with("INC"), "{rec:?}");
    assert_eq!(
        rec.link,
        format!("{}/nav_to.do?uri=incident.do?sys_id={}", sim.base_url(), rec.sys_id)
    );
    let records = sim.records("incident");
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["sys_id"], rec.sys_id.as_str());
    assert_eq!(r["number"], rec.number.as_deref().unwrap());
    assert_eq!(r["correlation_id"], "c-create-1");
    // Priority is computed from impact 1 x urgency 2, never the written "5".
    assert_eq!(r["priority"], "2");
    // The group was sent by display name and resolved to a sys_id.
    assert_eq!(r["assignment_group.display_value"], "Security Operations");
    assert_ne!(r["assignment_group"], "Security Operations");
    let log = sim.requests();
    let post = log.iter().find(|l| l.method == "POST").unwrap();
    assert!(post.query.contains("sysparm_fields=sys_id") && post.query.contains("sysparm_input_display_value=true"));
    assert!(post.query.contains("sysparm_exclude_reference_link=true"));
    assert_eq!(post.user.as_deref(), Some("relay"));
    sim.shutdown().await;
}

#[tokio::test]
async fn table_without_numbering_gives_no_number() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let fields = json!({"type": "IPv4 address", "value": "10.0.0.1"});
    let rec = created(c.create_record("sn_ti_observable", fields.as_object().unwrap()).await);
    assert_eq!(rec.number, None);
    assert_eq!(sim.records("sn_ti_observable").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn server_errors_are_retryable_and_commit_nothing() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    for status in [500, 502, 503] {
        sim.inject(fault(FaultKind::ServerError { status }, Some("incident"), Some("POST")));
        let o = c.create_record("incident", &incident("c-5xx")).await;
        assert_eq!(o.class(), "retryable", "{status}: {o:?}");
    }
    assert!(sim.records("incident").is_empty());
    created(c.create_record("incident", &incident("c-5xx")).await);
    assert_eq!(sim.records("incident").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limited_fault_returns_retry_after() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    sim.inject(fault(
        FaultKind::RateLimited { retry_after_s: 42 },
        Some("incident"),
        None,
    ));
    match c.create_record("incident", &incident("c-429")).await {
        Outcome::Retryable { retry_after, reason } => {
            assert_eq!(retry_after, Some(Duration::from_secs(42)));
            assert!(reason.contains("Rate limit"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(sim.records("incident").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_rule_bites_with_retry_after() {
    let config = SimConfig {
        rate_limits: serde_json::from_value(json!([
            {"name": "relay table", "user": "relay", "api": "table", "per_hour": 2}
        ]))
        .unwrap(),
        ..SimConfig::default()
    };
    let sim = Simulator::start(config).await.unwrap();
    let c = client(&sim, relay());
    // the instance commits its counts every 30 s: start a commit period, burst past the limit inside it
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    sim.advance_clock(Duration::from_secs(30 - now % 30));
    for i in 1..=3 {
        created(c.create_record("incident", &incident(&format!("rl-{i}"))).await);
    }
    // the limit bites late, after the commit: a retryable outcome with the server's wait
    sim.advance_clock(Duration::from_secs(30));
    match c.create_record("incident", &incident("rl-4")).await {
        Outcome::Retryable {
            retry_after: Some(wait),
            ..
        } => assert!(wait <= Duration::from_secs(3600)),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.records("incident").len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn timeout_after_write_is_ambiguous_and_lookup_finds_the_single_record() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client_with(&sim, Arc::new(StaticCredentials(relay())), Duration::from_millis(500));
    sim.inject(fault(FaultKind::TimeoutAfterWrite, Some("incident"), Some("POST")));
    let o = c.create_record("incident", &incident("c-taw")).await;
    assert_eq!(o.class(), "ambiguous", "{o:?}");
    let records = sim.records("incident");
    assert_eq!(with_correlation(&records, "c-taw").len(), 1);
    let found = c
        .find_by_correlation_id("incident", "c-taw")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(found.sys_id, records[0]["sys_id"]);
    assert_eq!(found.number.as_deref(), records[0]["number"].as_str());
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_and_truncated_json_after_commit_are_ambiguous() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    for (kind, id) in [
        (FaultKind::MalformedJson, "c-malformed"),
        (FaultKind::TruncatedJson, "c-truncated"),
    ] {
        sim.inject(fault(kind, Some("incident"), Some("POST")));
        let o = c.create_record("incident", &incident(id)).await;
        assert_eq!(o.class(), "ambiguous", "{id}: {o:?}");
        assert_eq!(with_correlation(&sim.records("incident"), id).len(), 1, "{id}");
        assert!(c.find_by_correlation_id("incident", id).await.unwrap().is_some());
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn connection_reset_is_ambiguous_before_and_after_commit() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    sim.inject(fault(
        FaultKind::ConnectionReset { after_commit: false },
        Some("incident"),
        Some("POST"),
    ));
    let o = c.create_record("incident", &incident("c-reset-before")).await;
    assert_eq!(o.class(), "ambiguous", "{o:?}");
    assert!(sim.records("incident").is_empty());
    assert_eq!(
        c.find_by_correlation_id("incident", "c-reset-before").await.unwrap(),
        None
    );

    sim.inject(fault(
        FaultKind::ConnectionReset { after_commit: true },
        Some("incident"),
        Some("POST"),
    ));
    let o = c.create_record("incident", &incident("c-reset-after")).await;
    assert_eq!(o.class(), "ambiguous", "{o:?}");
    assert_eq!(with_correlation(&sim.records("incident"), "c-reset-after").len(), 1);
    assert!(
        c.find_by_correlation_id("incident", "c-reset-after")
            .await
            .unwrap()
            .is_some()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn transaction_cancelled_is_ambiguous_and_the_record_exists() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    sim.inject(fault(FaultKind::TransactionCancelled, Some("incident"), Some("POST")));
    let o = c.create_record("incident", &incident("c-cancel")).await;
    match &o {
        Outcome::Ambiguous { reason } => assert!(reason.contains("Transaction cancelled"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(with_correlation(&sim.records("incident"), "c-cancel").len(), 1);
    assert!(
        c.find_by_correlation_id("incident", "c-cancel")
            .await
            .unwrap()
            .is_some()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_within_the_timeout_still_creates_beyond_it_is_ambiguous() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client_with(&sim, Arc::new(StaticCredentials(relay())), Duration::from_millis(600));
    sim.inject(fault(FaultKind::Latency { ms: 100 }, Some("incident"), None));
    created(c.create_record("incident", &incident("c-slow")).await);
    sim.inject(fault(FaultKind::Latency { ms: 1500 }, Some("incident"), None));
    let o = c.create_record("incident", &incident("c-too-slow")).await;
    assert_eq!(o.class(), "ambiguous", "{o:?}");
    // Whether the write happened is unknown to the client; the lookup must agree with the instance's state
    // (at most one record, found exactly when it exists).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stored = with_correlation(&sim.records("incident"), "c-too-slow").len();
    assert!(stored <= 1);
    let found = c.find_by_correlation_id("incident", "c-too-slow").await.unwrap();
    assert_eq!(found.is_some(), stored == 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn hibernating_instance_is_retryable_for_every_operation() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    sim.set_hibernating(true);
    assert_eq!(
        c.create_record("incident", &incident("c-hib")).await.class(),
        "retryable"
    );
    assert_eq!(
        c.import_record("u_incident_import", &incident("c-hib")).await.class(),
        "retryable"
    );
    assert_eq!(
        c.find_by_correlation_id("incident", "c-hib").await.unwrap_err().class(),
        "retryable"
    );
    let item = BatchItem {
        id: "1".into(),
        table: "incident".into(),
        fields: incident("c-hib"),
    };
    assert_eq!(c.send_batch(&[item]).await.unwrap_err().class(), "retryable");
    assert_eq!(
        c.send_events(&[json!({"source": "relay", "message_key": "k"})])
            .await
            .unwrap_err()
            .class(),
        "retryable"
    );
    assert!(sim.records("incident").is_empty());
    assert!(sim.records("em_event").is_empty());
    sim.set_hibernating(false);
    created(c.create_record("incident", &incident("c-hib")).await);
    sim.shutdown().await;
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let c = ServiceNowClient::new(
        ClientConfig::new(format!("http://127.0.0.1:{port}")),
        Arc::new(StaticCredentials(relay())),
    )
    .unwrap();
    let o = c.create_record("incident", &incident("c-refused")).await;
    assert_eq!(o.class(), "retryable", "{o:?}");
    assert_eq!(
        c.find_by_correlation_id("incident", "c-refused")
            .await
            .unwrap_err()
            .class(),
        "retryable"
    );
}

#[tokio::test]
async fn acl_data_policy_and_bad_table_are_permanent_with_servicenow_message() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let ro = client(&sim, basic("readonly", "readonly-password"));
    match ro.create_record("incident", &incident("c-acl")).await {
        Outcome::Permanent {
            status,
            message,
            detail,
        } => {
            assert_eq!(status, 403);
            assert_eq!(message, "Operation Failed");
            assert!(detail.unwrap().contains("ACL"));
        }
        other => panic!("{other:?}"),
    }
    let c = client(&sim, relay());
    let mut fields = incident("c-dp");
    fields.remove("short_description");
    match c.create_record("incident", &fields).await {
        Outcome::Permanent { status, detail, .. } => {
            assert_eq!(status, 403);
            let d = detail.unwrap();
            assert!(d.contains("mandatory") && d.contains("short_description"), "{d}");
        }
        other => panic!("{other:?}"),
    }
    match c.create_record("no_such_table", &incident("c-tbl")).await {
        Outcome::Permanent { status, message, .. } => {
            assert_eq!(status, 400);
            assert!(message.contains("Invalid table"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(sim.records("incident").is_empty());
    // An assignment group the instance does not know is left empty without an error, as on a real instance:
    // the group lookup is what tells it apart.
    let mut fields = incident("c-group");
    fields.insert("assignment_group".into(), json!("No Such Group"));
    let rec = created(c.create_record("incident", &fields).await);
    let stored = sim.records("incident");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["sys_id"], rec.sys_id.as_str());
    assert_eq!(stored[0]["assignment_group"], "");
    assert_eq!(c.find_group("No Such Group").await.unwrap(), None);
    let known = c.find_group("HR Partners - Engineering").await.unwrap().unwrap();
    assert_eq!(known.len(), 32);
    assert_eq!(
        c.find_group("Security Operations^ORname=IT Security").await.unwrap(),
        None,
        "a name that is no single query term is never looked up"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_names_are_refused_without_sending() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    assert_eq!(
        c.create_record("incident/../sys_user", &incident("x")).await.class(),
        "permanent"
    );
    assert_eq!(
        c.delete_record("incident", "../x").await.unwrap_err().class(),
        "permanent"
    );
    assert_eq!(
        c.attach("incident", "abc", "a/b.txt", "text/plain", vec![1u8])
            .await
            .unwrap_err()
            .class(),
        "permanent"
    );
    assert!(sim.requests().is_empty());
    sim.shutdown().await;
}

// ----------------------------------------------------------------------------------------------------
// Authentication
// ----------------------------------------------------------------------------------------------------

#[tokio::test]
async fn wrong_basic_password_is_auth_after_exactly_one_retry() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let source = Arc::new(RotatingSource {
        before: basic("relay", "wrong"),
        after: basic("relay", "still-wrong"),
        invalidated: AtomicUsize::new(0),
    });
    let c = client_with(&sim, source.clone(), Duration::from_secs(5));
    let o = c.create_record("incident", &incident("c-auth")).await;
    assert_eq!(o.class(), "auth", "{o:?}");
    assert_eq!(source.invalidated.load(Ordering::SeqCst), 1);
    let log = sim.requests();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|l| l.status == 401));
    assert!(sim.records("incident").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn rotated_basic_password_is_picked_up_after_a_401() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let source = Arc::new(RotatingSource {
        before: basic("relay", "old"),
        after: relay(),
        invalidated: AtomicUsize::new(0),
    });
    let c = client_with(&sim, source.clone(), Duration::from_secs(5));
    created(c.create_record("incident", &incident("c-rotate")).await);
    assert_eq!(source.invalidated.load(Ordering::SeqCst), 1);
    let statuses: Vec<u16> = sim.requests().iter().map(|l| l.status).collect();
    assert_eq!(statuses, vec![401, 201]);
    assert_eq!(sim.records("incident").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn credential_source_failures_are_classified() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let down = client_with(
        &sim,
        Arc::new(FailingSource(ClientError::CredentialsUnavailable(
            "secrets store timed out".into(),
        ))),
        Duration::from_secs(5),
    );
    assert_eq!(
        down.create_record("incident", &incident("x")).await.class(),
        "retryable"
    );
    let broken = client_with(
        &sim,
        Arc::new(FailingSource(ClientError::InvalidCredentials(
            "missing password".into(),
        ))),
        Duration::from_secs(5),
    );
    assert_eq!(broken.create_record("incident", &incident("x")).await.class(), "auth");
    assert!(sim.requests().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn oauth_password_and_client_credentials_grants_create_as_relay() {
    // An admin enables the client_credentials grant (glide.oauth.inbound.client.credential.grant_type.enabled).
    let mut config = SimConfig::default();
    config.oauth.client_credentials_enabled = true;
    let sim = Simulator::start(config).await.unwrap();
    for (creds, id) in [
        (oauth_password(), "c-oauth-pw"),
        (oauth_client_credentials(), "c-oauth-cc"),
    ] {
        let c = client(&sim, creds);
        created(c.create_record("incident", &incident(id)).await);
        created(c.create_record("incident", &incident(id)).await);
    }
    let log = sim.requests();
    assert_eq!(
        log.iter().filter(|l| l.path == "/oauth_token.do").count(),
        2,
        "one token per client"
    );
    assert!(
        log.iter()
            .filter(|l| l.method == "POST" && l.path.starts_with("/api/now/table"))
            .all(|l| l.user.as_deref() == Some("relay"))
    );
    assert_eq!(sim.records("incident").len(), 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn concurrent_callers_share_one_token_fetch() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, oauth_password());
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.create_record("incident", &incident(&format!("sf-{i}"))).await
        }));
    }
    for t in tasks {
        created(t.await.unwrap());
    }
    assert_eq!(count_requests(&sim, "POST", "/oauth_token.do"), 1);
    assert_eq!(sim.records("incident").len(), 20);
    sim.shutdown().await;
}

#[tokio::test]
async fn revoked_token_is_refetched_and_the_create_succeeds() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let source = Arc::new(RotatingSource {
        before: oauth_password(),
        after: oauth_password(),
        invalidated: AtomicUsize::new(0),
    });
    let c = client_with(&sim, source.clone(), Duration::from_secs(5));
    created(c.create_record("incident", &incident("c-before")).await);
    sim.inject(fault(FaultKind::RevokeTokens, Some("incident"), Some("POST")));
    created(c.create_record("incident", &incident("c-revoked")).await);
    assert_eq!(source.invalidated.load(Ordering::SeqCst), 1);
    let log = sim.requests();
    assert_eq!(log.iter().filter(|l| l.path == "/oauth_token.do").count(), 2);
    assert_eq!(log.iter().filter(|l| l.status == 401).count(), 1);
    assert_eq!(with_correlation(&sim.records("incident"), "c-revoked").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn expired_token_on_the_instance_clock_is_refreshed_after_401() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, oauth_password());
    created(c.create_record("incident", &incident("c-1")).await);
    sim.advance_clock(Duration::from_secs(1801));
    created(c.create_record("incident", &incident("c-2")).await);
    let log = sim.requests();
    assert_eq!(
        log.iter()
            .filter(|l| l.path == "/oauth_token.do" && l.status == 200)
            .count(),
        2
    );
    assert_eq!(log.iter().filter(|l| l.status == 401).count(), 1);
    assert_eq!(sim.records("incident").len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let mut config = SimConfig::default();
    config.oauth.access_token_lifetime_s = 2;
    let sim = Simulator::start(config).await.unwrap();
    let c = client(&sim, oauth_password()); // margin 60 s, capped at half the 2 s lifetime
    created(c.create_record("incident", &incident("c-1")).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    created(c.create_record("incident", &incident("c-2")).await);
    let log = sim.requests();
    assert_eq!(
        log.iter()
            .filter(|l| l.path == "/oauth_token.do" && l.status == 200)
            .count(),
        2
    );
    assert_eq!(
        log.iter().filter(|l| l.status == 401).count(),
        0,
        "refreshed before expiry, no 401"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_client_secret_is_auth_and_no_table_call_is_made() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(
        &sim,
        Credentials::OAuthClientCredentials {
            client_id: "relay-client".into(),
            client_secret: "nope".into(),
        },
    );
    let o = c.create_record("incident", &incident("c-bad-secret")).await;
    assert_eq!(o.class(), "auth", "{o:?}");
    assert_eq!(count_requests(&sim, "POST", "/api/now/table"), 0);
    assert_eq!(
        count_requests(&sim, "POST", "/oauth_token.do"),
        2,
        "one retry with refetched credentials"
    );
    assert!(sim.records("incident").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn rotated_client_secret_is_picked_up_after_a_refused_token_request() {
    // An admin enables the client_credentials grant (glide.oauth.inbound.client.credential.grant_type.enabled).
    let mut config = SimConfig::default();
    config.oauth.client_credentials_enabled = true;
    let sim = Simulator::start(config).await.unwrap();
    let source = Arc::new(RotatingSource {
        before: Credentials::OAuthClientCredentials {
            client_id: "relay-client".into(),
            client_secret: "old".into(),
        },
        after: oauth_client_credentials(),
        invalidated: AtomicUsize::new(0),
    });
    let c = client_with(&sim, source.clone(), Duration::from_secs(5));
    created(c.create_record("incident", &incident("c-rotated-secret")).await);
    assert_eq!(source.invalidated.load(Ordering::SeqCst), 1);
    let token_statuses: Vec<u16> = sim
        .requests()
        .iter()
        .filter(|l| l.path == "/oauth_token.do")
        .map(|l| l.status)
        .collect();
    assert_eq!(token_statuses, vec![401, 200]);
    assert_eq!(sim.records("incident").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_endpoint_outage_is_retryable() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, oauth_password());
    sim.inject(fault(FaultKind::ServerError { status: 503 }, None, Some("POST")));
    let o = c.create_record("incident", &incident("c-token-503")).await;
    assert_eq!(o.class(), "retryable", "{o:?}");
    assert!(sim.records("incident").is_empty());
    created(c.create_record("incident", &incident("c-token-503")).await);
    sim.shutdown().await;
}

// ----------------------------------------------------------------------------------------------------
// find_by_correlation_id
// ----------------------------------------------------------------------------------------------------

#[tokio::test]
async fn lookup_finds_only_the_exact_correlation_id_and_refuses_injection() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let a = created(c.create_record("incident", &incident("corr-a")).await);
    created(c.create_record("incident", &incident("corr-b")).await);
    assert_eq!(c.find_by_correlation_id("incident", "corr-a").await.unwrap(), Some(a));
    assert_eq!(c.find_by_correlation_id("incident", "corr").await.unwrap(), None);
    assert_eq!(c.find_by_correlation_id("incident", "corr-c").await.unwrap(), None);
    let before = sim.requests().len();
    for attack in [
        "corr-c^ORcorrelation_id!=x",
        "x^NQsys_id!=x",
        "javascript:gs.getUser()",
        "corr a",
        "x&sysparm_limit=9",
    ] {
        let e = c.find_by_correlation_id("incident", attack).await.unwrap_err();
        assert_eq!(e.class(), "permanent", "{attack}");
    }
    assert_eq!(sim.requests().len(), before, "refused values are never sent");
    sim.shutdown().await;
}

/// An instance that, like a real one given a query term on a field the table lacks, ignores the term and
/// answers with the table's oldest rows: here always one unrelated risk. Returns its address and the request
/// lines it saw.
async fn instance_ignoring_query_terms() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                log.lock().unwrap().push(head);
                let body = json!({"result": [{
                    "sys_id": "0123456789abcdef0123456789abcdef",
                    "number": "RK0001001",
                    "description": "An unrelated risk recorded by hand last year"
                }]})
                .to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_row_that_does_not_carry_our_key_is_never_taken_as_ours() {
    use servicenow_client::{Expect, RecordKey};
    let (addr, seen) = instance_ignoring_query_terms().await;
    let mut config = ClientConfig::new(addr);
    config.total_timeout = Duration::from_secs(5);
    let c = ServiceNowClient::new(config, Arc::new(StaticCredentials(relay()))).unwrap();
    // the key in a text field the table has (risk: description)
    let key = RecordKey {
        field: "description",
        value: "emon:a-1",
        expect: Expect::Contains("[relay-key emon:a-1]".into()),
    };
    assert_eq!(c.find_by_key("sn_risk_risk", &key).await.unwrap(), None);
    // and the exact-match form, for a table whose lookup term the instance ignored
    assert_eq!(
        c.find_by_correlation_id("sn_risk_risk", "emon:a-1").await.unwrap(),
        None
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // the lookup asks for the key's field back, and queries the field it names
    assert!(
        seen[0].contains("sysparm_fields=sys_id%2Cnumber%2Cdescription"),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].contains("sysparm_query=descriptionLIKEemon%3Aa-1"),
        "{}",
        seen[0]
    );
    assert!(!seen[0].contains("correlation_id"), "{}", seen[0]);
    assert!(
        seen[1].contains("sysparm_fields=sys_id%2Cnumber%2Ccorrelation_id"),
        "{}",
        seen[1]
    );
}

#[tokio::test]
async fn a_key_in_a_text_field_is_found_by_its_marker_not_by_a_longer_key() {
    use servicenow_client::{Expect, RecordKey};
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let risk = |text: &str| {
        let mut m = Map::new();
        m.insert("name".into(), json!("Repeated violations"));
        m.insert("profile".into(), json!("Corporate"));
        m.insert("description".into(), json!(text));
        m
    };
    // an older risk whose text mentions a longer key, and one that mentions ours without the marker
    created(
        c.create_record("sn_risk_risk", &risk("see [relay-key emon:a-10]"))
            .await,
    );
    created(
        c.create_record("sn_risk_risk", &risk("copied from alert emon:a-1 by hand"))
            .await,
    );
    let key = |v| RecordKey {
        field: "description",
        value: v,
        expect: Expect::Contains(format!("[relay-key {v}]")),
    };
    assert_eq!(c.find_by_key("sn_risk_risk", &key("emon:a-1")).await.unwrap(), None);
    let ours = created(
        c.create_record("sn_risk_risk", &risk("the alert\n\n[relay-key emon:a-1]"))
            .await,
    );
    assert_eq!(
        c.find_by_key("sn_risk_risk", &key("emon:a-1")).await.unwrap(),
        Some(ours)
    );
    let e = c
        .find_by_key("sn_risk_risk", &RecordKey::equals("Bad-Field", "emon:a-1"))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "permanent");
    sim.shutdown().await;
}

#[tokio::test]
async fn lookup_server_errors_are_retryable_not_ambiguous() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    sim.inject(fault(
        FaultKind::ServerError { status: 503 },
        Some("incident"),
        Some("GET"),
    ));
    assert_eq!(
        c.find_by_correlation_id("incident", "x").await.unwrap_err().class(),
        "retryable"
    );
    sim.inject(fault(FaultKind::TruncatedJson, Some("incident"), Some("GET")));
    assert_eq!(
        c.find_by_correlation_id("incident", "x").await.unwrap_err().class(),
        "retryable"
    );
    sim.shutdown().await;
}

// ----------------------------------------------------------------------------------------------------
// Import Set API
// ----------------------------------------------------------------------------------------------------

#[tokio::test]
async fn import_inserts_then_coalesces_on_correlation_id() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let first = created(c.import_record("u_incident_import", &incident("imp-1")).await);
    assert_eq!(first.table, "incident");
    assert!(first.number.as_deref().unwrap().starts_with("INC"));
    let second = created(c.import_record("u_incident_import", &incident("imp-1")).await);
    assert_eq!(second.sys_id, first.sys_id);
    assert_eq!(with_correlation(&sim.records("incident"), "imp-1").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn import_row_error_is_permanent_and_faults_classify() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let mut fields = incident("imp-err");
    fields.remove("short_description");
    match c.import_record("u_incident_import", &fields).await {
        Outcome::Permanent { message, detail, .. } => {
            assert_eq!(message, "import row error");
            let d = detail.unwrap();
            assert!(d.contains("mandatory") && d.contains("short_description"), "{d}");
        }
        other => panic!("{other:?}"),
    }
    assert!(sim.records("incident").is_empty());
    sim.inject(fault(FaultKind::TimeoutAfterWrite, Some("u_incident_import"), None));
    let c_short = client_with(&sim, Arc::new(StaticCredentials(relay())), Duration::from_millis(500));
    assert_eq!(
        c_short
            .import_record("u_incident_import", &incident("imp-taw"))
            .await
            .class(),
        "ambiguous"
    );
    assert_eq!(with_correlation(&sim.records("incident"), "imp-taw").len(), 1);
    // Re-importing after the ambiguous outcome coalesces instead of duplicating.
    created(c.import_record("u_incident_import", &incident("imp-taw")).await);
    assert_eq!(with_correlation(&sim.records("incident"), "imp-taw").len(), 1);
    sim.inject(fault(
        FaultKind::ServerError { status: 503 },
        Some("u_incident_import"),
        None,
    ));
    assert_eq!(
        c.import_record("u_incident_import", &incident("imp-5xx")).await.class(),
        "retryable"
    );
    assert_eq!(with_correlation(&sim.records("incident"), "imp-5xx").len(), 0);
    sim.shutdown().await;
}

// ----------------------------------------------------------------------------------------------------
// Batch API
// ----------------------------------------------------------------------------------------------------

fn items(n: usize, prefix: &str) -> Vec<BatchItem> {
    (0..n)
        .map(|i| BatchItem {
            id: format!("{prefix}-{i}"),
            table: "incident".into(),
            fields: incident(&format!("{prefix}-{i}")),
        })
        .collect()
}

#[tokio::test]
async fn batch_maps_every_item_back_and_classifies_each() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let mut batch = items(3, "b");
    batch.push(BatchItem {
        id: "bad-table".into(),
        table: "no_such_table".into(),
        fields: incident("bad"),
    });
    let mut no_desc = incident("b-nodesc");
    no_desc.remove("short_description");
    batch.push(BatchItem {
        id: "no-desc".into(),
        table: "incident".into(),
        fields: no_desc,
    });
    let results = c.send_batch(&batch).await.unwrap();
    let ids: Vec<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec!["b-0", "b-1", "b-2", "bad-table", "no-desc"]);
    let records = sim.records("incident");
    for (id, o) in &results[..3] {
        let Outcome::Created(rec) = o else {
            panic!("{id}: {o:?}")
        };
        let stored = with_correlation(&records, id);
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0]["sys_id"], rec.sys_id.as_str());
    }
    assert!(
        matches!(&results[3].1, Outcome::Permanent { status: 400, .. }),
        "{:?}",
        results[3].1
    );
    assert!(
        matches!(&results[4].1, Outcome::Permanent { status: 403, .. }),
        "{:?}",
        results[4].1
    );
    assert_eq!(records.len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_unserviced_items_are_retryable_and_not_executed() {
    let mut config = SimConfig::default();
    config.batch.max_serviced_items = Some(2);
    let sim = Simulator::start(config).await.unwrap();
    let c = client(&sim, relay());
    let results = c.send_batch(&items(4, "u")).await.unwrap();
    let classes: Vec<&str> = results.iter().map(|(_, o)| o.class()).collect();
    assert_eq!(classes, vec!["created", "created", "retryable", "retryable"]);
    let records = sim.records("incident");
    assert_eq!(records.len(), 2);
    assert!(with_correlation(&records, "u-2").is_empty() && with_correlation(&records, "u-3").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_items_are_authorised_separately() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let ro = client(&sim, basic("readonly", "readonly-password"));
    let results = ro.send_batch(&items(2, "ro")).await.unwrap();
    assert!(
        results
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Permanent { status: 403, .. })),
        "{results:?}"
    );
    assert!(sim.records("incident").is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_request_faults_classify_the_whole_batch() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client_with(&sim, Arc::new(StaticCredentials(relay())), Duration::from_millis(500));
    sim.inject(Fault {
        kind: FaultKind::ServerError { status: 503 },
        count: 1,
        table: None,
        method: None,
    });
    assert_eq!(c.send_batch(&items(2, "f5")).await.unwrap_err().class(), "retryable");
    assert!(sim.records("incident").is_empty());
    sim.inject(Fault {
        kind: FaultKind::RateLimited { retry_after_s: 9 },
        count: 1,
        table: None,
        method: None,
    });
    match c.send_batch(&items(2, "f429")).await.unwrap_err() {
        Outcome::Retryable { retry_after, .. } => assert_eq!(retry_after, Some(Duration::from_secs(9))),
        other => panic!("{other:?}"),
    }
    sim.inject(Fault {
        kind: FaultKind::TimeoutAfterWrite,
        count: 1,
        table: None,
        method: None,
    });
    assert_eq!(c.send_batch(&items(2, "ftaw")).await.unwrap_err().class(), "ambiguous");
    assert_eq!(
        sim.records("incident").len(),
        2,
        "items executed before the answer was lost"
    );
    sim.inject(Fault {
        kind: FaultKind::TruncatedJson,
        count: 1,
        table: None,
        method: None,
    });
    assert_eq!(c.send_batch(&items(1, "ftr")).await.unwrap_err().class(), "ambiguous");
    assert_eq!(sim.records("incident").len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn batch_refuses_duplicate_ids_without_sending() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let mut batch = items(2, "d");
    batch[1].id = batch[0].id.clone();
    assert_eq!(c.send_batch(&batch).await.unwrap_err().class(), "permanent");
    assert!(c.send_batch(&[]).await.unwrap().is_empty());
    assert!(sim.requests().is_empty());
    sim.shutdown().await;
}

// ----------------------------------------------------------------------------------------------------
// Event Management, Attachment, delete
// ----------------------------------------------------------------------------------------------------

fn event(key: &str) -> Value {
    json!({"source": "alert-relay", "node": "laptop-42", "type": "data_exfiltration", "resource": "usb",
           "metric_name": "alert", "severity": "2", "message_key": key, "description": "alert",
           "additional_info": "{\"alert_id\":\"a1\"}", "time_of_event": "2025-01-01 10:00:00"})
}

#[tokio::test]
async fn events_are_inserted_and_deduplicated_by_message_key() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let summary = c.send_events(&[event("k1"), event("k2")]).await.unwrap();
    assert!(summary.contains("inserted") || summary.contains("2"), "{summary}");
    assert_eq!(sim.records("em_event").len(), 2);
    c.send_events(&[event("k1")]).await.unwrap();
    // Every event is kept; events with one message_key roll up into one alert.
    assert_eq!(sim.records("em_event").len(), 3);
    let alerts = sim.records("em_alert");
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let k1 = alerts.iter().find(|a| a["message_key"] == "k1").unwrap();
    assert_eq!(k1["event_count"], "2");
    sim.inject(fault(FaultKind::ServerError { status: 503 }, Some("em_event"), None));
    assert_eq!(c.send_events(&[event("k3")]).await.unwrap_err().class(), "retryable");
    assert_eq!(c.send_events(&[]).await.unwrap_err().class(), "permanent");
    let ro = client(&sim, basic("readonly", "readonly-password"));
    assert_eq!(ro.send_events(&[event("k4")]).await.unwrap_err().class(), "permanent");
    assert!(
        !sim.records("em_event")
            .iter()
            .any(|r| r["message_key"] == "k3" || r["message_key"] == "k4")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn attachment_is_stored_on_the_record() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let rec = created(c.create_record("incident", &incident("c-att")).await);
    let id = c
        .attach(
            "incident",
            &rec.sys_id,
            "trend.png",
            "image/png",
            vec![0x89u8, b'P', b'N', b'G'],
        )
        .await
        .unwrap();
    let atts = sim.records("sys_attachment");
    assert_eq!(atts.len(), 1);
    assert_eq!(atts[0]["sys_id"], id.as_str());
    assert_eq!(atts[0]["table_sys_id"], rec.sys_id.as_str());
    assert_eq!(atts[0]["file_name"], "trend.png");
    // Missing target record → 404 permanent.
    match c
        .attach(
            "incident",
            "0123456789abcdef0123456789abcdef",
            "x.txt",
            "text/plain",
            b"x".to_vec(),
        )
        .await
    {
        Err(Outcome::Permanent { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.records("sys_attachment").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn delete_removes_own_record_and_classifies_failures() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let rec = created(c.create_record("incident", &incident("c-del")).await);
    // The incident delete ACL needs admin: the integration user (itil) may create but not delete.
    match c.delete_record("incident", &rec.sys_id).await {
        Err(Outcome::Permanent { status: 403, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.records("incident").len(), 1);
    let admin = client(&sim, basic("admin", "admin-password"));
    sim.inject(fault(
        FaultKind::ServerError { status: 502 },
        Some("incident"),
        Some("DELETE"),
    ));
    assert_eq!(
        admin.delete_record("incident", &rec.sys_id).await.unwrap_err().class(),
        "retryable"
    );
    assert_eq!(sim.records("incident").len(), 1);
    admin.delete_record("incident", &rec.sys_id).await.unwrap();
    assert!(sim.records("incident").is_empty());
    match admin.delete_record("incident", &rec.sys_id).await {
        Err(Outcome::Permanent { status: 404, .. }) => {}
        other => panic!("{other:?}"),
    }
    // A record another user created is refused to the integration user as well.
    let other = created(admin.create_record("incident", &incident("c-admin")).await);
    assert_eq!(
        c.delete_record("incident", &other.sys_id).await.unwrap_err().class(),
        "permanent"
    );
    assert_eq!(sim.records("incident").len(), 1);
    sim.shutdown().await;
}

// ----------------------------------------------------------------------------------------------------
// after creation: updates, journal, read back
// ----------------------------------------------------------------------------------------------------

#[tokio::test]
async fn work_notes_are_appended_and_read_back_from_the_journal() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let a = created(c.create_record("incident", &incident("j-a")).await);
    let b = created(c.create_record("incident", &incident("j-b")).await);
    c.add_journal_entry("incident", &a.sys_id, "work_notes", "repeat alert 1 [relay-key k1]")
        .await
        .unwrap();
    c.add_journal_entry("incident", &b.sys_id, "work_notes", "another record's note")
        .await
        .unwrap();
    c.add_journal_entry("incident", &a.sys_id, "work_notes", "repeat alert 2 [relay-key k2]")
        .await
        .unwrap();
    let notes = c.journal("incident", &a.sys_id, "work_notes").await.unwrap();
    let values: Vec<&str> = notes.iter().map(|n| n.value.as_str()).collect();
    assert_eq!(
        values,
        ["repeat alert 1 [relay-key k1]", "repeat alert 2 [relay-key k2]"]
    );
    assert!(
        notes
            .iter()
            .all(|n| n.created_by == "relay" && !n.created_on.is_empty())
    );
    assert!(c.journal("incident", &a.sys_id, "comments").await.unwrap().is_empty());
    // the instance keeps them in the journal, not on the record
    let stored = sim.records("incident");
    assert!(stored.iter().all(|r| r.get("work_notes").is_none()));
    assert_eq!(sim.records("sys_journal_field").len(), 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_note_whose_answer_is_lost_is_ambiguous_and_the_journal_shows_it_once() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client_with(&sim, Arc::new(StaticCredentials(relay())), Duration::from_millis(500));
    let rec = created(c.create_record("incident", &incident("j-lost")).await);
    sim.inject(fault(FaultKind::TimeoutAfterWrite, Some("incident"), Some("PATCH")));
    let err = c
        .add_journal_entry("incident", &rec.sys_id, "work_notes", "note [relay-key k-lost]")
        .await
        .unwrap_err();
    assert_eq!(err.class(), "ambiguous", "{err:?}");
    let notes = c.journal("incident", &rec.sys_id, "work_notes").await.unwrap();
    assert_eq!(
        notes.len(),
        1,
        "applied once: a retry must look here before writing it again"
    );
    assert!(notes[0].value.contains("[relay-key k-lost]"));
    // a 503 applies nothing and is retryable
    sim.inject(fault(
        FaultKind::ServerError { status: 503 },
        Some("incident"),
        Some("PATCH"),
    ));
    let err = c
        .add_journal_entry("incident", &rec.sys_id, "work_notes", "second")
        .await
        .unwrap_err();
    assert_eq!(err.class(), "retryable", "{err:?}");
    assert_eq!(c.journal("incident", &rec.sys_id, "work_notes").await.unwrap().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_update_the_state_model_refuses_is_permanent_and_names_the_fields() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let rec = created(c.create_record("incident", &incident("j-resolve")).await);
    let bare = json!({"state": "6"}).as_object().unwrap().clone();
    let err = c.update_record("incident", &rec.sys_id, &bare).await.unwrap_err();
    assert_eq!(err.class(), "permanent", "{err:?}");
    assert!(err.to_string().contains("close_code, close_notes"), "{err}");
    let full = json!({"state": "6", "close_code": "Solution provided", "close_notes": "resolved at the source"});
    c.update_record("incident", &rec.sys_id, full.as_object().unwrap())
        .await
        .unwrap();
    assert_eq!(sim.records("incident")[0]["state"], "6");
    // closed: final. A retried close whose first answer was lost gets this too: read the state back
    let close = json!({"state": "7"});
    c.update_record("incident", &rec.sys_id, close.as_object().unwrap())
        .await
        .unwrap();
    let err = c
        .add_journal_entry("incident", &rec.sys_id, "work_notes", "late")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Outcome::Permanent { status: 403, .. }) && err.to_string().contains("final state"),
        "{err:?}"
    );
    // bad names are refused before any request
    let before = sim.requests().len();
    let bad = json!({"state; drop": "6"}).as_object().unwrap().clone();
    assert_eq!(
        c.update_record("incident", &rec.sys_id, &bad)
            .await
            .unwrap_err()
            .class(),
        "permanent"
    );
    assert_eq!(
        c.update_record("incident", "../x", &full.as_object().unwrap().clone())
            .await
            .unwrap_err()
            .class(),
        "permanent"
    );
    assert_eq!(sim.requests().len(), before);
    sim.shutdown().await;
}

#[tokio::test]
async fn records_are_read_back_by_sys_id_with_their_current_state() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let ids: Vec<String> = create_incidents(&c, &["r-1", "r-2", "r-3"]).await;
    // an analyst resolves the second one in the instance
    sim.act_as(
        None,
        "incident",
        &ids[1],
        json!({"state": "6", "close_code": "Solution provided", "close_notes": "false alarm"}),
    )
    .unwrap();
    let unknown = "0123456789abcdef0123456789abcdef";
    let asked = [ids[0].as_str(), ids[1].as_str(), unknown];
    let rows = c
        .read_records("incident", &asked, &["state", "active", "close_code", "sys_updated_on"])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let state_of = |id: &str| {
        rows.iter()
            .find(|r| r["sys_id"] == id)
            .map(|r| (r["state"].as_str().unwrap().to_string(), r["close_code"].clone()))
            .unwrap()
    };
    assert_eq!(state_of(&ids[0]).0, "1");
    assert_eq!(state_of(&ids[1]), ("6".into(), json!("Solution provided")));
    assert!(c.read_records("incident", &[], &["state"]).await.unwrap().is_empty());
    let many: Vec<String> = (0..=servicenow_client::MAX_READ_IDS)
        .map(|i| format!("{i:032x}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let before = sim.requests().len();
    assert_eq!(
        c.read_records("incident", &many, &["state"]).await.unwrap_err().class(),
        "permanent"
    );
    assert_eq!(sim.requests().len(), before, "refused without a request");
    sim.shutdown().await;
}

/// Create one incident per correlation id; their sys_ids in order.
async fn create_incidents(c: &ServiceNowClient, keys: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for k in keys {
        ids.push(created(c.create_record("incident", &incident(k)).await).sys_id);
    }
    ids
}

#[tokio::test]
async fn a_journal_longer_than_one_page_is_read_whole_in_order() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = client(&sim, relay());
    let a = created(c.create_record("incident", &incident("j-busy")).await);
    for i in 0..1_205 {
        sim.act_as(
            None,
            "incident",
            &a.sys_id,
            json!({"work_notes": format!("note {i:04}")}),
        )
        .unwrap();
    }
    let notes = c.journal("incident", &a.sys_id, "work_notes").await.unwrap();
    assert_eq!(notes.len(), 1_205, "two pages of 1000, the second part full");
    assert_eq!(notes[0].value, "note 0000");
    assert_eq!(notes[1_204].value, "note 1204");
    let journal_calls = sim
        .requests()
        .iter()
        .filter(|r| r.path.contains("sys_journal_field"))
        .count();
    assert_eq!(journal_calls, 2);
}
