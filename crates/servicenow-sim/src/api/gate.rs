//! What every API call passes first: the Accept check, authentication (Basic, Bearer) and rate-limit rules.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::{HeaderMap, StatusCode, header};

use super::Req;
use super::params::header_str;
use super::reply::{Reply, bad_request, error_reply, rate_limited_reply, unauthenticated_reply};
use crate::config::ApiKind;
use crate::store::Shared;

/// Accept check, authentication, rate limits; then the handler.
pub fn with_api(shared: &Shared, req: &Req, api: ApiKind, f: impl FnOnce(&Shared, &Req, &str) -> Reply) -> Reply {
    match header_str(&req.headers, &header::ACCEPT) {
        None if shared.config.require_accept_header => {
            return bad_request("Missing Accept header", Some("Set Accept: application/json"));
        }
        Some(a) if !(a.contains("json") || a.contains("*/*") || a.contains("application/*")) => {
            return error_reply(
                StatusCode::NOT_ACCEPTABLE,
                "Not Acceptable",
                Some(&format!("Unsupported Accept: {a}")),
            );
        }
        _ => {}
    }
    let user = match authenticate(shared, &req.headers) {
        Ok(u) => u,
        Err(reply) => return reply,
    };
    match check_rate_limit(shared, &user, api, &req.path) {
        Err(reply) => reply.with_user(&user),
        Ok(None) => f(shared, req, &user).with_user(&user),
        Ok(Some(h)) => f(shared, req, &user)
            .with_user(&user)
            .header("x-ratelimit-limit", h.limit)
            .header("x-ratelimit-reset", h.reset)
            .header("x-ratelimit-rule", h.rule),
    }
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<String, Reply> {
    let Some(auth) = header_str(headers, &header::AUTHORIZATION) else {
        return Err(unauthenticated_reply());
    };
    if let Some(b64) = auth.strip_prefix("Basic ").or_else(|| auth.strip_prefix("basic ")) {
        let decoded = B64.decode(b64.trim()).map_err(|_| unauthenticated_reply())?;
        let text = String::from_utf8(decoded).map_err(|_| unauthenticated_reply())?;
        let (name, password) = text.split_once(':').ok_or_else(unauthenticated_reply)?;
        return match shared.config.users.iter().find(|u| u.name == name) {
            Some(u) if u.password == password => Ok(u.name.clone()),
            _ => Err(unauthenticated_reply()),
        };
    }
    if let Some(token) = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")) {
        let store = shared.store.lock().expect("store lock");
        return match store.access_tokens.get(token.trim()) {
            Some(t) if t.expires_at > shared.now_unix() => Ok(t.user.clone()),
            _ => Err(unauthenticated_reply()),
        };
    }
    Err(unauthenticated_reply())
}

/// Rate-limit rules as a real instance applies them: only the most specific matching rule counts
/// (single user, then users with a role — the lowest limit among role rules —, then all users). A request
/// that a rule covers carries the rule's `X-RateLimit-*` headers, allowed or not. Counts are committed every
/// `rate_limit_commit_interval_s` (30 s, as documented), and a rule enforces only what was committed.
fn check_rate_limit(shared: &Shared, user: &str, api: ApiKind, path: &str) -> Result<Option<RuleHeaders>, Reply> {
    if shared.config.rate_limits.is_empty() {
        return Ok(None);
    }
    let table = super::target_table(path);
    let table = table.as_deref();
    let now = shared.now_unix();
    let hour = now - now.rem_euclid(3600);
    let roles = shared.roles_of(user);
    let matching = shared.config.rate_limits.iter().enumerate().filter(|(_, rule)| {
        rule.user.as_deref().is_none_or(|u| u == user)
            && rule.role.as_deref().is_none_or(|r| roles.iter().any(|x| x == r))
            && (rule.api == ApiKind::Any || rule.api == api)
            && rule.table.as_deref().is_none_or(|t| Some(t) == table)
    });
    // Specificity: 0 = user rule, 1 = role rule, 2 = all users; then the lowest limit.
    let specificity = |rule: &crate::config::RateLimitRule| match (&rule.user, &rule.role) {
        (Some(_), _) => 0,
        (None, Some(_)) => 1,
        (None, None) => 2,
    };
    let Some((i, rule)) = matching.min_by_key(|(_, rule)| (specificity(rule), rule.per_hour)) else {
        return Ok(None);
    };
    let mut store = shared.store.lock().expect("store lock");
    let count = store.rate_counters.entry((i, user.to_string(), hour)).or_default();
    let interval = shared.config.rate_limit_commit_interval_s;
    count.commit_due(now, interval);
    let reset = hour + 3600;
    let rule_id = shared.rule_ids[i].as_str();
    // The rule sees only the committed count: a burst inside one commit period is not refused until the
    // next commit, and then the whole overshoot counts.
    if count.committed >= rule.per_hour {
        let retry = (reset - now).max(1) as u64;
        return Err(rate_limited_reply(
            shared,
            rule_id,
            rule.per_hour,
            reset,
            retry,
            rule.api.label(),
        ));
    }
    count.pending += 1;
    count.commit_due(now, interval);
    Ok(Some(RuleHeaders {
        limit: rule.per_hour,
        reset,
        rule: rule_id.to_string(),
    }))
}

/// The `X-RateLimit-*` headers of the rule that covered an allowed request.
struct RuleHeaders {
    limit: u32,
    reset: i64,
    rule: String,
}
