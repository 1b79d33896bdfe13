//! The packaging files: the systemd unit passes `systemd-analyze verify` (when systemd is installed) and has
//! the hardening docs/local-mode.md promises; the Dockerfile is multi-stage, non-root, with a volume and a
//! healthcheck, and builds with exactly the command the README gives.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_relay");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `systemd-analyze verify` on `unit` (the binary path replaced by this build's): its complaints, or
/// `None` when systemd-analyze is not installed.
fn verify(unit: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/relay", BIN)).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().ok()?;
    let complaints = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    Some(if out.status.success() {
        complaints
    } else {
        format!("exit {:?}: {complaints}", out.status)
    })
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = read("packaging/systemd/relay.service");
    for line in [
        "DynamicUser=yes",
        "StateDirectory=relay",
        "ProtectSystem=strict",
        "EnvironmentFile=-/etc/relay/relay.env",
        "ExecStartPre=/usr/local/bin/relay config check",
        "ExecStart=/usr/local/bin/relay serve",
        "Restart=on-failure",
        "Environment=RELAY_DB=/var/lib/relay/relay.db",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l.trim() == line), "relay.service lacks {line:?}");
    }
    // the ExecStartPre check passes with this build and the shipped config
    let out = Command::new(BIN)
        .args(["config", "check"])
        .env_remove("RELAY_CONFIG_PATH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let Some(complaints) = verify(&unit) else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    let own: Vec<&str> = complaints.lines().filter(|l| l.contains("relay.service")).collect();
    assert!(own.is_empty(), "systemd-analyze verify complains:\n{complaints}");
    // the check is real: a bad value and a missing binary are reported
    let bad = verify(&unit.replace("ProtectSystem=strict", "ProtectSystem=strictly")).unwrap();
    assert!(bad.contains("protect system value"), "{bad}");
    let bad = verify(&unit.replace("ExecStart=/usr/local/bin/relay", "ExecStart=/nonexistent/relay")).unwrap();
    assert!(bad.contains("/nonexistent/relay"), "{bad}");
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_builds_with_the_readme_command() {
    let dockerfile = read("Dockerfile");
    let readme = read("README.md");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let starting = |word: &'static str| instructions.iter().filter(move |l| l.starts_with(word)).copied();
    assert!(starting("FROM ").count() >= 2, "multi-stage: {instructions:?}");
    let user = starting("USER ").last().expect("a USER instruction");
    assert!(!user.ends_with(" root") && !user.ends_with(" 0"), "{user}");
    assert!(starting("VOLUME ").any(|l| l.contains("/var/lib/relay")));
    assert!(starting("ENV ").any(|l| l.contains("RELAY_DB=/var/lib/relay/relay.db")));
    assert!(starting("HEALTHCHECK ").count() == 1);

    // every cargo step of the image is a command the README tells people to run, verbatim
    let cargo_steps: Vec<&str> = starting("RUN cargo ").map(|l| l.trim_start_matches("RUN ")).collect();
    assert!(!cargo_steps.is_empty());
    for step in &cargo_steps {
        assert!(
            readme.lines().any(|l| l.trim_start().starts_with(step)),
            "the Dockerfile runs `{step}`, which the README does not give"
        );
    }
    // the profile it builds is the one it copies from, and that profile exists
    let profile = cargo_steps[0]
        .split_whitespace()
        .skip_while(|w| *w != "--profile")
        .nth(1)
        .expect("a --profile");
    assert!(
        starting("COPY --from=").any(|l| l.contains(&format!("target/{profile}/relay"))),
        "copies the binary of profile {profile}"
    );
    assert!(read("Cargo.toml").contains(&format!("[profile.{profile}]")));

    // the healthcheck command exists and fails clearly when nothing listens
    let out = Command::new(BIN)
        .args(["health", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:9/healthz"),
        "{out:?}"
    );
}
