//! The local server's router as `relay serve` builds it (real SQLite file, the built-in simulator), driven
//! with `tower::ServiceExt::oneshot`: the operator page behind the read token, every alert value escaped,
//! and `/metrics` behind the token on a `--public` server.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use clap::Parser;
use relay_pipeline::Envelope;
use relay_pipeline::envelope::DeadLetter;
use relay_ports::{AlertQueue, Claim, Clock, DeliveryState, Ledger, LedgerEntry, RecordRef, SystemClock};
use std::time::Duration;
use tower::ServiceExt;

use super::{ServeArgs, build, http};

const TOKEN: &str = "ops-test-token-0123456789abcdef";
const INJECTED: &str = "<img src=x onerror=alert(1)>";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

struct Server {
    _dir: tempfile::TempDir,
    local: build::Local,
    args: ServeArgs,
}

async fn server(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("read-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let db = dir.path().join("data/relay.db");
    let mut argv = vec![
        "serve".to_string(),
        "--port".into(),
        "0".into(),
        "--db".into(),
        db.display().to_string(),
        "--read-token-file".into(),
        token_file.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let args = Cli::try_parse_from(argv).unwrap().serve;
    let local = build::Local::build(&args).await.unwrap();
    Server { _dir: dir, local, args }
}

fn entry(alert_id: &str, now_ms: i64) -> LedgerEntry {
    LedgerEntry {
        alert_id: relay_pipeline::envelope::alert_key(alert_id),
        webhook_id: None,
        state: DeliveryState::Accepted,
        attempts: 0,
        first_received_at_ms: now_ms - 2_500,
        updated_at_ms: now_ms - 2_500,
        lease_until_ms: None,
        needs_lookup: false,
        rule: format!("rule-{INJECTED}"),
        record_type: "security_incident".into(),
        table: "sn_si_incident".into(),
        severity: "critical".into(),
        delivery: "realtime".into(),
        correlation_id: format!("relay:{alert_id}"),
        config_hash: "sha256:test".into(),
        record: None,
        last_error_class: None,
        last_error: None,
        expires_at_s: now_ms / 1000 + 86_400,
        claim_token: 0,
        no_create_before_ms: None,
        not_before_ms: None,
        aggregate: None,
        plan: None,
    }
}

/// A completed alert whose record number and link are hostile, a failed one whose error is, and a
/// dead-lettered message whose error is.
async fn seed(local: &build::Local) {
    let ledger = local.store.ledger();
    let now = SystemClock.now_ms();
    for id in ["emon-ops-1", "emon-ops-2"] {
        ledger.accept(&entry(id, now)).await.unwrap();
    }
    let key = |id: &str| relay_pipeline::envelope::alert_key(id);
    let Claim::Claimed(c) = ledger.claim(&key("emon-ops-1"), now, 60_000).await.unwrap() else {
        panic!("claim")
    };
    let record = RecordRef {
        table: "sn_si_incident".into(),
        sys_id: "0123456789abcdef0123456789abcdef".into(),
        number: Some(format!("SIR{INJECTED}")),
        link: "javascript:alert(document.cookie)".into(),
        note: false,
    };
    ledger
        .complete(&key("emon-ops-1"), c.claim_token, &record, now)
        .await
        .unwrap();
    let Claim::Claimed(c) = ledger.claim(&key("emon-ops-2"), now, 60_000).await.unwrap() else {
        panic!("claim")
    };
    ledger
        .fail(
            &key("emon-ops-2"),
            c.claim_token,
            "permanent",
            &format!("400: {INJECTED}"),
            now,
        )
        .await
        .unwrap();

    let (config, _) = crate::settings::load_config(None).unwrap();
    let router = relay_core::Router::with_pseudonym_key(config, None).unwrap();
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/alerts/seed-usb-copy-847-files.json"
    ))
    .unwrap();
    let alert = relay_core::Alert::from_slice(&body).unwrap();
    let mut envelope = Envelope::alert(router.route(&alert), None, now);
    envelope.dead_letter = Some(DeadLetter {
        error_class: "permanent".into(),
        error: format!("the instance refused the record: {INJECTED}"),
        failed_at_ms: now,
        attempts: 3,
    });
    local
        .store
        .queue("dlq")
        .send(&envelope.to_json(), Duration::ZERO)
        .await
        .unwrap();
}

fn get(path: &str, authorization: Option<String>) -> Request<Body> {
    let mut r = Request::get(path).header(header::HOST, "127.0.0.1:8080");
    if let Some(a) = authorization {
        r = r.header(header::AUTHORIZATION, a);
    }
    r.body(Body::empty()).unwrap()
}

fn basic(user: &str, password: &str) -> Option<String> {
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    ))
}

async fn text(resp: axum::response::Response) -> String {
    String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 22).await.unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn the_operator_page_needs_the_read_token() {
    let s = server(&[]).await;
    let app = http::app(&s.local, &s.args);

    let resp = app.clone().oneshot(get("/ops", None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().to_string();
    assert!(
        challenge.starts_with("Basic realm="),
        "a browser is asked for the token: {challenge}"
    );
    assert!(
        !text(resp).await.contains("Queues"),
        "nothing of the page without the token"
    );

    for wrong in [basic("ops", "guess"), Some("Bearer guess".into()), basic(TOKEN, "")] {
        let resp = app.clone().oneshot(get("/ops", wrong.clone())).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{wrong:?}");
    }

    for right in [basic("ops", TOKEN), basic("", TOKEN), Some(format!("Bearer {TOKEN}"))] {
        let resp = app.clone().oneshot(get("/ops", right)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .starts_with("default-src 'none'")
        );
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert!(text(resp).await.contains("<h2>Queues</h2>"));
    }
}

#[tokio::test]
async fn the_operator_page_shows_queues_alerts_dead_letters_and_latency_escaped() {
    let s = server(&[]).await;
    seed(&s.local).await;
    let app = http::app(&s.local, &s.args);
    let resp = app.oneshot(get("/ops", basic("ops", TOKEN))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = text(resp).await;

    assert!(!page.contains("<img"), "no alert value is markup: {page}");
    assert!(!page.contains("javascript:"), "a non-http link is not linked: {page}");
    let escaped = "&lt;img src=x onerror=alert(1)&gt;";
    assert!(page.contains(&format!("rule-{escaped}")), "the rule, escaped");
    assert!(page.contains(&format!("SIR{escaped}")), "the record number, escaped");
    assert!(page.contains(&format!("400: {escaped}")), "the last error, escaped");
    assert!(
        page.contains(&format!("the instance refused the record: {escaped}")),
        "the dead letter's error, escaped"
    );
    assert!(page.contains("<div class=\"depth alarm\">dlq<b>1</b></div>"), "{page}");
    assert!(page.contains("<div class=\"depth\">realtime<b>0</b></div>"));
    assert!(page.contains("emon-ops-1") && page.contains("emon-ops-2"));
    assert!(page.contains("<td class=\"COMPLETED\">COMPLETED</td>"));
    assert!(page.contains("<td class=\"FAILED\">FAILED</td>"));
    assert!(page.contains("Dead-letter queue (1)"));
    assert!(
        page.contains("<svg") && page.contains("<circle"),
        "the latency chart has a point"
    );
    assert!(
        page.contains("1 deliveries (received → record created): median 2.5 s"),
        "the latency of the completed alert: {page}"
    );
}

#[tokio::test]
async fn a_real_record_link_is_linked() {
    let s = server(&[]).await;
    let ledger = s.local.store.ledger();
    let now = SystemClock.now_ms();
    ledger.accept(&entry("emon-ops-3", now)).await.unwrap();
    let key = relay_pipeline::envelope::alert_key("emon-ops-3");
    let Claim::Claimed(c) = ledger.claim(&key, now, 60_000).await.unwrap() else {
        panic!("claim")
    };
    let record = RecordRef {
        table: "sn_si_incident".into(),
        sys_id: "ab".into(),
        number: Some("SIR0010001".into()),
        link: "https://acme.service-now.com/sn_si_incident.do?sys_id=ab&sysparm_view=".into(),
        note: false,
    };
    ledger.complete(&key, c.claim_token, &record, now).await.unwrap();
    let page = text(
        http::app(&s.local, &s.args)
            .oneshot(get("/ops", basic("ops", TOKEN)))
            .await
            .unwrap(),
    )
    .await;
    assert!(page.contains(
        "<a href=\"https://acme.service-now.com/sn_si_incident.do?sys_id=ab&amp;sysparm_view=\" \
         rel=\"noopener noreferrer\">SIR0010001</a>"
    ));
}

#[tokio::test]
async fn metrics_need_the_read_token_on_a_public_server() {
    let public = server(&["--public"]).await;
    let app = http::app(&public.local, &public.args);
    let resp = app.clone().oneshot(get("/metrics", None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let resp = app
        .oneshot(get("/metrics", Some(format!("Bearer {TOKEN}"))))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let loopback = server(&[]).await;
    let resp = http::app(&loopback.local, &loopback.args)
        .oneshot(get("/metrics", None))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a loopback server's metrics stay open to local scrapers"
    );
}

#[tokio::test]
async fn the_realistic_simulator_profile_starts_a_limited_slow_instance() {
    let server = server(&["--simulator-profile", "realistic"]).await;
    let sim = server.local.simulator.as_ref().expect("the built-in simulator");
    let started = std::time::Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/now/table/incident", sim.base_url()))
        .basic_auth("relay", Some("relay-password"))
        .json(&serde_json::json!({"short_description": "profile smoke"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        resp.headers()["x-ratelimit-limit"],
        "10000",
        "the profile's rate-limit rule"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(10),
        "a Table API write takes time"
    );
    let both = [
        "serve",
        "--simulator-profile",
        "realistic",
        "--simulator-config",
        "sim.yaml",
    ];
    assert!(
        Cli::try_parse_from(both).is_err(),
        "a profile and a config file exclude each other"
    );
    assert!(Cli::try_parse_from(["serve", "--simulator-profile", "fast"]).is_err());
}
