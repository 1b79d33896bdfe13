//! OAuth 2.0 token endpoint `/oauth_token.do`: password, refresh_token and client_credentials grants.

use http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::Req;
use super::params::{Params, header_str};
use super::reply::{Reply, json_reply};
use crate::store::{Shared, Token};

pub fn token(shared: &Shared, req: &Req) -> Reply {
    let denied = || {
        json_reply(
            StatusCode::UNAUTHORIZED,
            &json!({"error_description": "access_denied", "error": "server_error"}),
        )
    };
    if req.method != Method::POST {
        return denied();
    }
    let form_ok = header_str(&req.headers, &header::CONTENT_TYPE)
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if !form_ok {
        return denied();
    }
    let form = Params::parse(&req.body);
    let get = |k: &str| form.get(k).unwrap_or("");
    let Some(client) = shared
        .config
        .oauth_clients
        .iter()
        .find(|c| c.client_id == get("client_id") && c.client_secret == get("client_secret"))
    else {
        return denied();
    };
    let now = shared.now_unix();
    let user = match get("grant_type") {
        // glide.oauth.inbound.ropc.grant_type.disabled (Security Center hardening) refuses the password grant.
        "password" if shared.config.oauth.password_grant_disabled => return denied(),
        "password" => match shared.config.users.iter().find(|u| u.name == get("username")) {
            Some(u) if u.password == get("password") => u.name.clone(),
            _ => return denied(),
        },
        // Refused until glide.oauth.inbound.client.credential.grant_type.enabled is true (default false).
        "client_credentials" if !shared.config.oauth.client_credentials_enabled => return denied(),
        "client_credentials" => match &client.client_credentials_user {
            Some(u) => u.clone(),
            None => return denied(),
        },
        "refresh_token" => {
            let store = shared.store.lock().expect("store lock");
            match store.refresh_tokens.get(get("refresh_token")) {
                Some(t) if t.expires_at > now && t.client_id == client.client_id => t.user.clone(),
                _ => return denied(),
            }
        }
        _ => return denied(),
    };
    let lifetime = shared.config.oauth.access_token_lifetime_s;
    let access = random_token();
    let mut store = shared.store.lock().expect("store lock");
    store.access_tokens.insert(
        access.clone(),
        Token {
            user: user.clone(),
            client_id: client.client_id.clone(),
            expires_at: now + lifetime as i64,
        },
    );
    let refresh = if get("grant_type") == "refresh_token" {
        get("refresh_token").to_string()
    } else if get("grant_type") == "password" {
        let r = random_token();
        store.refresh_tokens.insert(
            r.clone(),
            Token {
                user: user.clone(),
                client_id: client.client_id.clone(),
                expires_at: now + shared.config.oauth.refresh_token_lifetime_s as i64,
            },
        );
        r
    } else {
        String::new()
    };
    drop(store);
    let mut body = json!({
        "access_token": access,
        "scope": "useraccount",
        "token_type": "Bearer",
        "expires_in": lifetime.saturating_sub(1),
    });
    if !refresh.is_empty() {
        body["refresh_token"] = Value::String(refresh);
    }
    json_reply(StatusCode::OK, &body).with_user(&user)
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..86)
        .map(|_| {
            let n = rng.random_range(0..64u8);
            match n {
                0..26 => (b'A' + n) as char,
                26..52 => (b'a' + n - 26) as char,
                52..62 => (b'0' + n - 52) as char,
                62 => '-',
                _ => '_',
            }
        })
        .collect()
}
