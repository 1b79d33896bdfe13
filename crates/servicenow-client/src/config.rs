//! Client configuration and instance URL validation.

use std::net::IpAddr;
use std::time::Duration;

use crate::ClientError;

/// How the client talks to one ServiceNow instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `https://<instance>.service-now.com` (plain `http://` only for a loopback host such as the simulator).
    pub instance_url: String,
    /// Time allowed to open a TCP (+TLS) connection. Failing here means nothing was sent: retryable.
    pub connect_timeout: Duration,
    /// Time allowed for one whole HTTP exchange (connect, send, response body).
    pub total_timeout: Duration,
    /// `User-Agent` header sent with every request.
    pub user_agent: String,
    /// An OAuth access token is refreshed this long before it expires (capped at half its lifetime).
    pub token_refresh_margin: Duration,
    /// Response bodies larger than this are not read (treated as unusable answers).
    pub max_response_bytes: usize,
}

impl ClientConfig {
    /// Defaults: connect 5 s, total 30 s, refresh margin 60 s, 10 MB response cap.
    pub fn new(instance_url: impl Into<String>) -> Self {
        ClientConfig {
            instance_url: instance_url.into(),
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            user_agent: concat!("alert-relay-servicenow-client/", env!("CARGO_PKG_VERSION")).to_string(),
            token_refresh_margin: Duration::from_secs(60),
            max_response_bytes: 10 * 1024 * 1024,
        }
    }
}

/// Whether `url`'s host is loopback (127.0.0.0/8, ::1, `localhost`), where plain http is allowed; None when
/// it has no host.
pub fn is_loopback(url: &url::Url) -> Option<bool> {
    Some(match url.host()? {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
    })
}

/// Validate an instance URL and return its canonical form `scheme://host[:port]` (no trailing slash).
///
/// Rules: `https` required unless the host is loopback (127.0.0.0/8, ::1, `localhost`); no user info;
/// no path other than `/`, no query, no fragment; no whitespace or control characters anywhere.
pub fn validate_instance_url(raw: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::InvalidInstanceUrl(format!("{why} (got {raw:?})"));
    if raw.is_empty() {
        return Err(bad("instance_url is empty"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("instance_url must not contain whitespace or control characters"));
    }
    if raw.contains('\\') {
        return Err(bad("instance_url must not contain a backslash"));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("instance_url is not a valid URL: {e}")))?;
    let Some(loopback) = is_loopback(&url) else {
        return Err(bad("instance_url has no host"));
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(bad(
                "instance_url must use https:// (plain http is allowed only for a loopback host)",
            ));
        }
        other => {
            return Err(bad(&format!("instance_url scheme must be https, not {other:?}")));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "instance_url must not contain user info (put credentials in the secret)",
        ));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(bad(
            "instance_url must not have a path: use https://<instance>.service-now.com",
        ));
    }
    if url.query().is_some() || raw.contains('?') {
        return Err(bad("instance_url must not have a query string"));
    }
    if url.fragment().is_some() || raw.contains('#') {
        return Err(bad("instance_url must not have a fragment"));
    }
    // Anything after the authority other than a single "/" is a trick the parser normalised away
    // (e.g. "/./" or "/%2e").
    let after_scheme = &raw[url.scheme().len() + 3..];
    if let Some(slash) = after_scheme.find('/')
        && &after_scheme[slash..] != "/"
    {
        return Err(bad(
            "instance_url must not have a path: use https://<instance>.service-now.com",
        ));
    }
    let host = url.host_str().unwrap_or_default();
    Ok(match url.port() {
        Some(p) => format!("{}://{}:{}", url.scheme(), host, p),
        None => format!("{}://{}", url.scheme(), host),
    })
}

/// A ServiceNow table name: lower-case letters, digits and `_`, starting with a letter, ≤ 80 chars.
pub(crate) fn check_field(field: &str) -> Result<(), String> {
    check_table(field).map_err(|_| {
        format!("invalid field name {field:?}: use lower-case letters, digits and '_' (e.g. correlation_id)")
    })
}

/// A table name as the Table API takes it: lower-case letters, digits and `_`, starting with a letter.
pub fn check_table(table: &str) -> Result<(), String> {
    let ok = !table.is_empty()
        && table.len() <= 80
        && table.as_bytes()[0].is_ascii_lowercase()
        && table
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid table name {table:?}: use lower-case letters, digits and '_' (e.g. incident)"
        ))
    }
}

/// A sys_id: 1–64 ASCII letters or digits (ServiceNow uses 32 hex digits).
pub fn check_sys_id(sys_id: &str) -> Result<(), String> {
    if !sys_id.is_empty() && sys_id.len() <= 64 && sys_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!("invalid sys_id {sys_id:?}: expected letters and digits only"))
    }
}

/// Maximum length of `correlation_id` in a default instance.
pub const MAX_CORRELATION_ID_LEN: usize = 100;

/// Build the encoded query that finds a record by correlation id, or say why the value is refused.
///
/// Only `[A-Za-z0-9._:-]` is allowed, so no value can add `^`, `^OR`, `^NQ` or other operators, and a
/// `javascript:` prefix (server-side evaluation) is refused as well.
pub fn correlation_query(correlation_id: &str) -> Result<String, String> {
    if correlation_id.is_empty() {
        return Err("correlation id is empty".into());
    }
    if correlation_id.len() > MAX_CORRELATION_ID_LEN {
        return Err(format!(
            "correlation id is {} characters long; the maximum is {MAX_CORRELATION_ID_LEN}",
            correlation_id.len()
        ));
    }
    if let Some(c) = correlation_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!(
            "correlation id contains {c:?}; only letters, digits and . _ : - are allowed in a query"
        ));
    }
    if correlation_id.to_ascii_lowercase().contains("javascript:") {
        return Err("correlation id must not contain \"javascript:\"".into());
    }
    Ok(format!("correlation_id={correlation_id}^ORDERBYsys_created_on"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_https_and_loopback_http() {
        assert_eq!(
            validate_instance_url("https://dev12345.service-now.com").unwrap(),
            "https://dev12345.service-now.com"
        );
        assert_eq!(
            validate_instance_url("https://dev12345.service-now.com/").unwrap(),
            "https://dev12345.service-now.com"
        );
        assert_eq!(
            validate_instance_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            validate_instance_url("http://127.9.9.9:1").unwrap(),
            "http://127.9.9.9:1"
        );
        assert_eq!(
            validate_instance_url("http://localhost:99/").unwrap(),
            "http://localhost:99"
        );
        assert_eq!(validate_instance_url("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        assert_eq!(
            validate_instance_url("https://x.service-now.com:8443").unwrap(),
            "https://x.service-now.com:8443"
        );
    }

    #[test]
    fn rejects_plain_http_to_remote_hosts() {
        for u in [
            "http://dev1.service-now.com",
            "http://10.0.0.1",
            "http://128.0.0.1",
            "http://localhost.evil.com",
        ] {
            let e = validate_instance_url(u).unwrap_err().to_string();
            assert!(e.contains("https"), "{u}: {e}");
        }
    }

    #[test]
    fn rejects_tricks() {
        let cases = [
            ("", "empty"),
            ("dev1.service-now.com", "not a valid URL"),
            ("ftp://dev1.service-now.com", "scheme"),
            ("https://user:pw@dev1.service-now.com", "user info"),
            ("https://user@dev1.service-now.com", "user info"),
            ("https://evil.com\\@dev1.service-now.com", "backslash"),
            ("https://dev1.service-now.com/api/now", "path"),
            ("https://dev1.service-now.com/./", "path"),
            ("https://dev1.service-now.com/%2e/", "path"),
            ("https://dev1.service-now.com//", "path"),
            ("https://dev1.service-now.com?x=1", "query"),
            ("https://dev1.service-now.com/?", "query"),
            ("https://dev1.service-now.com#frag", "fragment"),
            ("https://dev1.service-now.com\n", "whitespace"),
            (" https://dev1.service-now.com", "whitespace"),
            ("https://dev1.serv\tice-now.com", "whitespace"),
            ("https:///", "host"),
        ];
        for (u, want) in cases {
            let e = validate_instance_url(u).expect_err(u).to_string();
            assert!(e.contains(want), "{u:?}: expected {want:?} in {e}");
        }
    }

    #[test]
    fn correlation_query_allows_only_the_safe_charset() {
        assert_eq!(
            correlation_query("alert-123_ab.c:9").unwrap(),
            "correlation_id=alert-123_ab.c:9^ORDERBYsys_created_on"
        );
        let attacks = [
            "a^ORcorrelation_id!=x",
            "a^NQsys_id!=x",
            "a^",
            "javascript:gs.getUser()",
            "javascript:x",
            "JavaScript:x",
            "a b",
            "a=b",
            "a%5EOR",
            "a&sysparm_limit=1000",
            "a/../b",
            "é",
            "a\n",
            "",
        ];
        for a in attacks {
            assert!(correlation_query(a).is_err(), "{a:?} must be refused");
        }
        assert!(correlation_query(&"a".repeat(100)).is_ok());
        assert!(
            correlation_query(&"a".repeat(101))
                .unwrap_err()
                .contains("maximum is 100")
        );
    }

    #[test]
    fn table_and_sys_id_checks() {
        assert!(check_table("incident").is_ok());
        assert!(check_table("sn_hr_core_case").is_ok());
        for t in [
            "",
            "Incident",
            "incident/../sys_user",
            "incident?x=1",
            "1abc",
            "inc ident",
            "inc%2f",
        ] {
            assert!(check_table(t).is_err(), "{t:?}");
        }
        assert!(check_sys_id("0123456789abcdef0123456789abcdef").is_ok());
        for s in ["", "../x", "a b", "abc?x", &"a".repeat(65)] {
            assert!(check_sys_id(s).is_err(), "{s:?}");
        }
    }
}
