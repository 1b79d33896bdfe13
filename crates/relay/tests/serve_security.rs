//! The real `relay serve` under attack: slow and half-sent clients, too many connections, foreign Host
//! headers (DNS rebinding), status reads without the read token, a database other users can read, and
//! TLS. Each attack fails with a clear answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_relay");

struct Relay {
    child: Child,
    /// `127.0.0.1:port`
    addr: String,
    banner: Vec<String>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relay_cmd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env("RELAY_LOG", "warn")
        .env_remove("RELAY_WEBHOOK_SECRET")
        .env_remove("RELAY_WEBHOOK_SECRET_FILE")
        .env_remove("RELAY_READ_TOKEN")
        .env_remove("RELAY_READ_TOKEN_FILE")
        .env_remove("RELAY_SERVICENOW_FILE")
        .env_remove("SERVICENOW_INSTANCE_URL")
        .env_remove("RELAY_ALLOWED_HOSTS")
        .env_remove("RELAY_ALLOWED_SOURCES")
        .env_remove("RELAY_DB");
    c
}

fn start(dir: &Path, extra: &[&str]) -> Relay {
    let mut cmd = relay_cmd(dir);
    cmd.args(["serve", "--port", "0"]);
    if !extra.contains(&"--db") {
        cmd.arg("--db").arg(dir.join("relay.db"));
    }
    let mut child = cmd
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("relay serve starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut banner = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while banner.last().map(String::as_str) != Some("ready") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => banner.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("relay serve did not become ready: {banner:?}");
            }
        }
    }
    let listening = banner.iter().find(|l| l.contains("listening")).unwrap();
    let url = listening.split_whitespace().find(|w| w.contains("://")).unwrap();
    let port = url.rsplit(':').next().unwrap();
    Relay {
        child,
        addr: format!("127.0.0.1:{port}"),
        banner,
    }
}

fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("read-token"))
        .unwrap()
        .trim()
        .to_string()
}

/// Send `request` raw and read the whole answer (the server closes or `Connection: close`).
fn raw(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn get(addr: &str, path: &str, host: &str, auth: Option<&str>) -> String {
    let auth = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"),
    )
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error answer before the close is fine
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn half_sent_headers_and_bodies_are_cut_off_within_the_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(
        dir.path(),
        &["--header-timeout-seconds", "1", "--body-timeout-seconds", "1"],
    );
    // 20 clients that never finish their headers
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(&relay.addr).unwrap();
            s.write_all(b"POST /v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: applic")
                .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "half-sent connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // a client that sends its headers and then only part of the body: 408, then the connection closes
    let mut s = TcpStream::connect(&relay.addr).unwrap();
    s.write_all(
        b"POST /v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"alert",
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");

    // the server still answers everyone else
    assert!(get(&relay.addr, "/healthz", "127.0.0.1", None).starts_with("HTTP/1.1 200"));
}

#[test]
fn connections_beyond_the_limit_wait_until_one_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(
        dir.path(),
        &["--max-connections", "2", "--header-timeout-seconds", "30"],
    );
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&relay.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(&relay.addr).unwrap(); // sits in the listen backlog
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    third.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        third.read(&mut buf).is_err(),
        "a third connection is not served while two are open"
    );
    drop(idle);
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = third.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "served once a slot is free: {answer}"
    );
}

#[test]
fn foreign_host_headers_and_reads_without_the_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), &[]);
    let port = relay.addr.rsplit(':').next().unwrap().to_string();

    // DNS rebinding: a page on evil.example resolving to 127.0.0.1 names its own host
    let answer = get(&relay.addr, "/healthz", &format!("evil.example:{port}"), None);
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert!(
        answer.contains("host \\\"evil.example\\\" is not served here"),
        "{answer}"
    );
    for host in [format!("localhost:{port}"), relay.addr.clone(), format!("[::1]:{port}")] {
        assert!(
            get(&relay.addr, "/healthz", &host, None).starts_with("HTTP/1.1 200"),
            "{host}"
        );
    }

    // healthz is liveness only: no path, no URL, no counts
    let health = get(&relay.addr, "/healthz", "127.0.0.1", None);
    assert!(health.ends_with("{\"status\":\"ok\"}"), "{health}");

    // status and the operator summary need the read token; a wrong token is no better than none
    let t = token(dir.path());
    for path in ["/v1/alerts/emon-20261120-7f3a9c", "/v1/ops/summary"] {
        for auth in [None, Some("rrt_wrong"), Some("")] {
            let answer = get(&relay.addr, path, "127.0.0.1", auth);
            assert!(answer.starts_with("HTTP/1.1 401"), "{path} {auth:?}: {answer}");
            assert!(
                answer.to_ascii_lowercase().contains("www-authenticate: bearer"),
                "{answer}"
            );
            assert!(answer.contains("needs the read token"), "{answer}");
        }
    }
    let answer = get(&relay.addr, "/v1/alerts/emon-20261120-7f3a9c", "127.0.0.1", Some(&t));
    assert!(
        answer.starts_with("HTTP/1.1 404"),
        "with the token: an honest 404: {answer}"
    );
    let answer = get(&relay.addr, "/v1/ops/summary", "127.0.0.1", Some(&t));
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"queues\""),
        "{answer}"
    );

    // the banner says where the secrets are, never their values
    let banner = relay.banner.join("\n");
    assert!(!banner.contains("whsec_") && !banner.contains(&t), "{banner}");

    // the container healthcheck command sees it up
    let o = relay_cmd(dir.path())
        .args(["health", "--url", &format!("http://{}", relay.addr)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // an allowed extra name is served
    drop(relay);
    let relay = start(dir.path(), &["--allowed-host", "relay.internal"]);
    let answer = get(&relay.addr, "/healthz", "relay.internal", None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[cfg(unix)]
#[test]
fn a_database_other_users_can_read_stops_the_server_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let relay = start(dir.path(), &["--db", data.join("relay.db").to_str().unwrap()]);
    drop(relay);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the database directory is private");
    assert_eq!(mode(&data.join("relay.db")), 0o600);
    std::fs::set_permissions(data.join("relay.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = relay_cmd(dir.path())
        .args(["serve", "--port", "0", "--db"])
        .arg(data.join("relay.db"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("other users can read it") && text(&o).contains("chmod 600"),
        "{}",
        text(&o)
    );
}

#[test]
fn public_serves_tls_from_pem_files_and_warns_loudly_without() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    // a CA and a certificate for localhost signed by it
    let ca = (dir.path().join("ca.pem"), dir.path().join("ca-key.pem"));
    let csr = dir.path().join("req.csr");
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let steps: [Vec<String>; 3] = [
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test CA",
            "-keyout",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([p(&ca.1), "-out".into(), p(&ca.0)])
        .collect(),
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([p(&key), "-out".into(), p(&csr)])
        .collect(),
        ["x509", "-req", "-days", "1", "-in"]
            .iter()
            .map(|s| s.to_string())
            .chain([p(&csr), "-CA".into(), p(&ca.0), "-CAkey".into(), p(&ca.1)])
            .chain([
                "-CAcreateserial".into(),
                "-extfile".into(),
                p(&ext),
                "-out".into(),
                p(&cert),
            ])
            .collect(),
    ];
    for step in steps {
        let made = Command::new("openssl").args(&step).output();
        if !made.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: openssl is not installed or failed: {step:?}");
            return;
        }
    }
    let relay = start(
        dir.path(),
        &[
            "--public",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let banner = relay.banner.join("\n");
    assert!(banner.contains("listening       https://0.0.0.0:"), "{banner}");
    assert!(!banner.contains("WITHOUT TLS"), "{banner}");
    let port = relay.addr.rsplit(':').next().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let root = reqwest::Certificate::from_pem(&std::fs::read(&ca.0).unwrap()).unwrap();
        let client = reqwest::Client::builder().add_root_certificate(root).build().unwrap();
        let r = client
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        // plain HTTP on the TLS port gets no answer
        assert!(
            reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_err(),
            "plain HTTP is not served on the TLS port"
        );
    });
    drop(relay);

    let relay = start(dir.path(), &["--public"]);
    let banner = relay.banner.join("\n");
    assert!(
        banner.contains("WARNING: listening on every interface WITHOUT TLS"),
        "{banner}"
    );
    drop(relay);

    let o = relay_cmd(dir.path())
        .args(["serve", "--port", "0", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--tls-cert and --tls-key go together"),
        "{}",
        text(&o)
    );
    let o = relay_cmd(dir.path())
        .args(["serve", "--port", "0", "--tls-cert"])
        .arg(&key)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--tls-cert"), "{}", text(&o));
}

#[test]
fn relay_sign_writes_a_signed_api_gateway_event_the_relay_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), &[]);
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events/alerts/seed-usb-copy-847-files.json");
    let event_file = dir.path().join("event.json");
    let o = relay_cmd(dir.path())
        .args(["sign", "--apigw-event", "--db"])
        .arg(dir.path().join("relay.db"))
        .arg(&seed)
        .arg("--out")
        .arg(&event_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let event: serde_json::Value = serde_json::from_slice(&std::fs::read(&event_file).unwrap()).unwrap();
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "POST /v1/alerts");
    assert_eq!(event["requestContext"]["http"]["method"], "POST");
    assert_eq!(event["body"], std::fs::read_to_string(&seed).unwrap());
    // the event's headers and body, sent to the relay (the same router the ingest function runs): 202
    let h = |k: &str| event["headers"][k].as_str().unwrap().to_string();
    let body = event["body"].as_str().unwrap();
    let request = format!(
        "POST /v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         webhook-id: {}\r\nwebhook-timestamp: {}\r\nwebhook-signature: {}\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature")
    );
    let answer = raw(&relay.addr, &request);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    // a tampered body does not verify
    let tampered = request.replace("847", "848");
    let answer = raw(&relay.addr, &tampered);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // no secret to sign with: exit 2 naming the file
    let o = relay_cmd(dir.path())
        .args(["sign", "--db", "/nonexistent/relay.db"])
        .arg(&seed)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("/nonexistent/webhook-secret.json"), "{}", text(&o));
}

#[test]
fn webhooks_from_outside_the_sender_allow_list_get_403_and_a_bad_list_stops_the_start() {
    let post = |addr: &str| {
        raw(
            addr,
            "POST /v1/alerts HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path(), &["--allow-source", "203.0.113.0/24, 10.0.0.0/8"]);
    let answer = post(&relay.addr);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("127.0.0.1") && answer.contains("203.0.113.0/24, 10.0.0.0/8"),
        "the answer names the source and the list: {answer}"
    );
    drop(relay);
    // the loopback sender on the list: on to the signature check (an unsigned body: 401)
    let relay = start(dir.path(), &["--allow-source", "127.0.0.1"]);
    let answer = post(&relay.addr);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    drop(relay);
    let o = relay_cmd(dir.path())
        .args(["serve", "--port", "0", "--db"])
        .arg(dir.path().join("relay.db"))
        .args(["--allow-source", "203.0.113.0/33"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--allow-source") && text(&o).contains("203.0.113.0/33"),
        "{}",
        text(&o)
    );
}
