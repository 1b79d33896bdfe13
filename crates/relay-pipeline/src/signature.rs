//! Webhook signatures per the Standard Webhooks spec: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
//!
//! Several signatures may be sent (space-separated) and several secrets may be active, so a secret can be
//! rotated without dropping alerts: the body is accepted when any signature matches any active secret.
//! Comparison is constant-time (`Mac::verify_slice`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

/// Timestamps further than this from now (either way) are refused: the replay window.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// Why a webhook's signature was refused. Messages never echo the secret or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the 5-minute replay window")]
    Expired,
    #[error("webhook-id must be 1-256 printable characters")]
    BadId,
    #[error("no signature matches any active signing secret")]
    NoMatch,
    #[error("no webhook signing secret is configured")]
    NoSecrets,
}

/// A configured signing secret is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook signing secret #{index} is invalid: {reason}")]
pub struct SecretFormatError {
    pub index: usize,
    pub reason: String,
}

/// The active signing secrets (raw key bytes, never shown by `Debug`).
#[derive(Clone, Debug)]
pub struct WebhookSecrets {
    keys: Vec<SecretSlice<u8>>,
}

impl WebhookSecrets {
    /// Secrets in the Standard Webhooks form `whsec_<base64>`; any other string is used as raw bytes
    /// (at least 16 of them).
    pub fn parse<S: AsRef<str>>(secrets: &[S]) -> Result<WebhookSecrets, SecretFormatError> {
        let mut keys = Vec::with_capacity(secrets.len());
        for (index, s) in secrets.iter().enumerate() {
            let s = s.as_ref().trim();
            let key = match s.strip_prefix("whsec_") {
                Some(b64) => B64.decode(b64).map_err(|e| SecretFormatError {
                    index,
                    reason: format!("whsec_ value is not base64: {e}"),
                })?,
                None => s.as_bytes().to_vec(),
            };
            if key.len() < 16 {
                return Err(SecretFormatError {
                    index,
                    reason: "shorter than 16 bytes".into(),
                });
            }
            keys.push(SecretSlice::from(key));
        }
        Ok(WebhookSecrets { keys })
    }

    /// The signing secrets as stored in Secrets Manager, the local secret file or `RELAY_WEBHOOK_SECRET`:
    /// the document `{"secrets": ["whsec_…", …]}`, or one or more secrets separated by commas, spaces or
    /// line breaks.
    pub fn from_document(doc: &str) -> Result<WebhookSecrets, SecretFormatError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            secrets: Vec<String>,
        }
        let trimmed = doc.trim();
        if trimmed.starts_with('{') {
            let d: Doc = serde_json::from_str(trimmed).map_err(|e| SecretFormatError {
                index: 0,
                reason: format!("expected {{\"secrets\": [\"whsec_…\"]}}: {e}"),
            })?;
            return WebhookSecrets::parse(&d.secrets);
        }
        let list: Vec<&str> = trimmed.split([',', '\n', ' ']).filter(|s| !s.is_empty()).collect();
        if list.is_empty() {
            return Err(SecretFormatError {
                index: 0,
                reason: "no secret given".into(),
            });
        }
        WebhookSecrets::parse(&list)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verify a webhook. `now_s` is the current Unix time in seconds.
    pub fn verify(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_s: i64,
    ) -> Result<(), SignatureError> {
        let id = id.ok_or(SignatureError::MissingHeader("webhook-id"))?;
        let timestamp = timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
        let signature = signature.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
        if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
            return Err(SignatureError::BadId);
        }
        let ts: i64 = timestamp.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
        if now_s.abs_diff(ts) > TOLERANCE_SECONDS.unsigned_abs() {
            return Err(SignatureError::Expired);
        }
        if self.keys.is_empty() {
            return Err(SignatureError::NoSecrets);
        }
        // An HMAC-SHA256 signature is 32 bytes: each candidate is decoded into a fixed buffer (no allocation),
        // and one whose decoding is longer cannot match and is skipped.
        let candidates = || {
            signature
                .split(' ')
                .filter_map(|s| s.strip_prefix("v1,"))
                .filter_map(|b64| {
                    let mut buf = [0u8; 32];
                    B64.decode_slice(b64, &mut buf).ok().map(|n| (buf, n))
                })
        };
        let mut matched = false;
        for key in &self.keys {
            let mac = signer(key, id, timestamp.trim(), body);
            for (buf, n) in candidates() {
                // every comparison runs, and each is constant-time
                matched |= mac.clone().verify_slice(&buf[..n]).is_ok();
            }
        }
        if matched { Ok(()) } else { Err(SignatureError::NoMatch) }
    }

    /// The `webhook-signature` header value for `body`, signed with every active secret.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let ts = timestamp.to_string();
        self.keys
            .iter()
            .map(|k| format!("v1,{}", B64.encode(signer(k, id, &ts, body).finalize().into_bytes())))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn signer(key: &SecretSlice<u8>, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret()).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// A fresh random signing secret in the `whsec_` form.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", B64.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW: i64 = 1_795_183_380;

    fn secrets(list: &[&str]) -> WebhookSecrets {
        WebhookSecrets::parse(list).unwrap()
    }

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example from the Standard Webhooks specification's reference implementation tests.
        let s = secrets(&[SECRET]);
        let body = br#"{"test": 2432232314}"#;
        let sig = s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(
            s.verify(
                Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
                Some("1614265330"),
                Some(&sig),
                body,
                1614265330
            )
            .is_ok()
        );
    }

    #[test]
    fn a_signed_body_verifies_and_any_change_fails() {
        let s = secrets(&[SECRET]);
        let sig = s.sign("wh-1", NOW, b"{}");
        assert_eq!(
            s.verify(Some("wh-1"), Some(&NOW.to_string()), Some(&sig), b"{}", NOW),
            Ok(())
        );
        assert_eq!(
            s.verify(Some("wh-1"), Some(&NOW.to_string()), Some(&sig), b"{ }", NOW),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            s.verify(Some("wh-2"), Some(&NOW.to_string()), Some(&sig), b"{}", NOW),
            Err(SignatureError::NoMatch)
        );
        let other_ts = (NOW + 1).to_string();
        assert_eq!(
            s.verify(Some("wh-1"), Some(&other_ts), Some(&sig), b"{}", NOW),
            Err(SignatureError::NoMatch)
        );
        // the right MAC with bytes added or cut off is no match either
        let mac = B64.decode(sig.strip_prefix("v1,").unwrap()).unwrap();
        for wrong in [
            [mac.as_slice(), &[0]].concat(),
            mac[..31].to_vec(),
            mac[..16].to_vec(),
            Vec::new(),
        ] {
            let header = format!("v1,{}", B64.encode(&wrong));
            assert_eq!(
                s.verify(Some("wh-1"), Some(&NOW.to_string()), Some(&header), b"{}", NOW),
                Err(SignatureError::NoMatch),
                "{} bytes",
                wrong.len()
            );
        }
    }

    #[test]
    fn rotation_accepts_any_active_secret_and_any_listed_signature() {
        let old = secrets(&[SECRET]);
        let new = secrets(&["whsec_bmV3LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"]);
        let both = secrets(&[SECRET, "whsec_bmV3LXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"]);
        let ts = NOW.to_string();
        for signer in [&old, &new] {
            let sig = signer.sign("id", NOW, b"x");
            assert!(both.verify(Some("id"), Some(&ts), Some(&sig), b"x", NOW).is_ok());
        }
        // a sender mid-rotation sends two signatures; the receiver knows only the new secret
        let two = format!("{} {}", old.sign("id", NOW, b"x"), new.sign("id", NOW, b"x"));
        assert!(new.verify(Some("id"), Some(&ts), Some(&two), b"x", NOW).is_ok());
        assert_eq!(both.sign("id", NOW, b"x").split(' ').count(), 2);
    }

    #[test]
    fn timestamps_at_the_ends_of_the_integer_range_are_outside_the_window() {
        // A correctly signed request may carry any timestamp: the window check must not overflow.
        let s = secrets(&[SECRET]);
        for ts in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let sig = s.sign("id", ts, b"x");
            for now in [NOW, 0, -NOW] {
                assert_eq!(
                    s.verify(Some("id"), Some(&ts.to_string()), Some(&sig), b"x", now),
                    Err(SignatureError::Expired),
                    "timestamp {ts}, now {now}"
                );
            }
        }
    }

    #[test]
    fn secret_text_is_a_document_or_a_list() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(WebhookSecrets::from_document(&format!("{a}\n")).unwrap().len(), 1);
        assert_eq!(WebhookSecrets::from_document(&format!("{a}, {b}")).unwrap().len(), 2);
        let doc = serde_json::json!({"secrets": [a, b]}).to_string();
        assert_eq!(WebhookSecrets::from_document(&doc).unwrap().len(), 2);
        assert!(
            WebhookSecrets::from_document("  \n")
                .unwrap_err()
                .reason
                .contains("no secret")
        );
        assert!(
            WebhookSecrets::from_document("short")
                .unwrap_err()
                .reason
                .contains("16 bytes")
        );
        let shown = format!("{:?}", WebhookSecrets::from_document(&a).unwrap());
        assert!(!shown.contains(&a[6..14]), "{shown}");
    }

    #[test]
    fn replay_window_is_five_minutes_each_way() {
        let s = secrets(&[SECRET]);
        for (ts, ok) in [
            (NOW - 300, true),
            (NOW + 300, true),
            (NOW - 301, false),
            (NOW + 301, false),
        ] {
            let sig = s.sign("id", ts, b"x");
            let r = s.verify(Some("id"), Some(&ts.to_string()), Some(&sig), b"x", NOW);
            assert_eq!(r.is_ok(), ok, "{ts}");
            if !ok {
                assert_eq!(r, Err(SignatureError::Expired));
            }
        }
    }

    #[test]
    fn malformed_headers_are_named() {
        let s = secrets(&[SECRET]);
        let ts = NOW.to_string();
        assert_eq!(
            s.verify(None, Some(&ts), Some("v1,x"), b"", NOW),
            Err(SignatureError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            s.verify(Some("i"), None, Some("v1,x"), b"", NOW),
            Err(SignatureError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            s.verify(Some("i"), Some(&ts), None, b"", NOW),
            Err(SignatureError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            s.verify(Some("i"), Some("soon"), Some("v1,x"), b"", NOW),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            s.verify(Some("a\nb"), Some(&ts), Some("v1,x"), b"", NOW),
            Err(SignatureError::BadId)
        );
        assert_eq!(
            s.verify(Some("i"), Some(&ts), Some("v2,abc v1,!!notbase64"), b"", NOW),
            Err(SignatureError::NoMatch)
        );
        let none = WebhookSecrets::parse::<&str>(&[]).unwrap();
        assert_eq!(
            none.verify(Some("i"), Some(&ts), Some("v1,x"), b"", NOW),
            Err(SignatureError::NoSecrets)
        );
    }

    #[test]
    fn secret_documents_and_bad_secrets() {
        assert_eq!(
            WebhookSecrets::from_document(&format!(r#"{{"secrets": ["{SECRET}"]}}"#))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(WebhookSecrets::from_document(SECRET).unwrap().len(), 1);
        assert!(
            WebhookSecrets::from_document("short")
                .unwrap_err()
                .reason
                .contains("16 bytes")
        );
        assert!(
            WebhookSecrets::from_document("whsec_***")
                .unwrap_err()
                .reason
                .contains("base64")
        );
        assert!(
            WebhookSecrets::from_document(r#"{"secret": "x"}"#)
                .unwrap_err()
                .reason
                .contains("expected")
        );
        let g = generate_secret();
        assert!(g.starts_with("whsec_") && WebhookSecrets::parse(&[g.as_str()]).is_ok());
        let shown = format!("{:?}", secrets(&[SECRET]));
        assert!(shown.contains("REDACTED") && !shown.contains("MfKQ9r8G"), "{shown}");
    }
}
