//! Colour on a terminal, and `NO_COLOR` (<https://no-color.org>): `relay serve` run on a real pseudo-terminal
//! (Python's `pty`, tests/support/pty_run.py), its log lines read back as the terminal got them.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_relay");

/// What `relay serve` printed on a terminal, with `env` set (and NO_COLOR / RELAY_LOG_FORMAT removed unless set
/// there), from its start until it stopped after SIGTERM.
fn on_a_terminal(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pty_run.py");
    let mut cmd = Command::new("python3");
    cmd.current_dir(dir.path())
        .arg(&script)
        .args([BIN, "serve", "--port", "0", "--db"])
        .arg(dir.path().join("relay.db"))
        // debug: the TLS and HTTP crates log while the simulator and client start, so there are log lines
        .env("RELAY_LOG", "debug")
        .env_remove("NO_COLOR")
        .env_remove("RELAY_LOG_FORMAT")
        .env_remove("RELAY_WEBHOOK_SECRET")
        .env_remove("RELAY_WEBHOOK_SECRET_FILE")
        .env_remove("SERVICENOW_INSTANCE_URL")
        .env_remove("RELAY_CONFIG_PATH")
        .env_remove("RELAY_DB");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("python3 runs (the test command needs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("ready") && text.contains("stopped"),
        "relay serve started and stopped on the terminal:\n{text}"
    );
    assert!(text.contains("DEBUG"), "log lines reached the terminal:\n{text}");
    text
}

#[test]
fn log_lines_are_coloured_on_a_terminal_unless_no_color_is_set() {
    let plain = on_a_terminal(&[]);
    assert!(plain.contains("\x1b["), "colour on a terminal");

    let no_color = on_a_terminal(&[("NO_COLOR", "1")]);
    assert!(!no_color.contains('\x1b'), "NO_COLOR=1: no escape sequence at all");

    let json = on_a_terminal(&[("RELAY_LOG_FORMAT", "json")]);
    assert!(!json.contains('\x1b'), "JSON lines carry no colour");
    assert!(
        json.lines()
            .any(|l| l.trim_start().starts_with('{') && l.contains("\"level\":\"DEBUG\"")),
        "one JSON object per log line:\n{json}"
    );
}
