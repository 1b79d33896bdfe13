//! OAuth tokens are fetched once for all concurrent callers — and so is a failure: callers waiting behind a
//! slow token request that fails get its answer, instead of each asking the token endpoint again in turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use servicenow_client::{ClientConfig, Credentials, Outcome, ServiceNowClient, StaticCredentials};
use servicenow_sim::{Fault, FaultKind, SimConfig, Simulator};

fn oauth_password() -> Credentials {
    Credentials::OAuthPassword {
        client_id: "relay-client".into(),
        client_secret: "relay-client-secret".into(),
        username: "relay".into(),
        password: "relay-password".into(),
    }
}

fn incident(i: usize) -> Map<String, Value> {
    json!({"short_description": format!("token test {i}"), "correlation_id": format!("tok:{i}")})
        .as_object()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn one_slow_failing_token_request_answers_every_waiting_caller() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    // the first POST is the token request: it never answers, so it fails when the client gives up (1 s)
    sim.inject(Fault::new(FaultKind::TimeoutAfterWrite).on_method("POST").times(1));
    let mut config = ClientConfig::new(sim.base_url());
    config.total_timeout = Duration::from_secs(1);
    config.connect_timeout = Duration::from_millis(500);
    let client = ServiceNowClient::new(config, Arc::new(StaticCredentials(oauth_password()))).unwrap();

    let started = Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.create_record("incident", &incident(i)).await })
        })
        .collect();
    for call in calls {
        let outcome = call.await.unwrap();
        assert!(matches!(outcome, Outcome::Retryable { .. }), "{outcome:?}");
    }
    let token_requests = sim.requests().iter().filter(|r| r.path == "/oauth_token.do").count();
    assert_eq!(token_requests, 1, "eight callers, one token request");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the waiters shared the failure instead of retrying one after another ({:?})",
        started.elapsed()
    );
    assert!(
        sim.records("incident")
            .iter()
            .all(|r| r["short_description"] != "token test 0")
    );

    // a call that starts after the failure asks again, and succeeds
    assert!(matches!(
        client.create_record("incident", &incident(99)).await,
        Outcome::Created(_)
    ));
}
