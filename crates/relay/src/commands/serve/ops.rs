//! The operator page `GET /ops`: queue depths, the last alerts with their state and ServiceNow record, the
//! dead-letter queue with the error of each message, and the delivery latency of the last hour as an SVG
//! chart. Read-only, server-rendered HTML without scripts, behind the read token (the guard checks it).
//! Every value that comes from alert data or the instance is HTML-escaped; links are kept only when they
//! are `http(s)` URLs.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use relay_local::{ListFilter, LocalStore};
use relay_ports::{AlertQueue, Clock, DeliveryState, SystemClock};
use serde_json::Value;
use std::fmt::Write;

use crate::commands::list;

/// Alerts listed on the page (most recently updated first).
const RECENT_ALERTS: u32 = 50;
/// Dead-lettered messages listed on the page (oldest first).
const DEAD_LETTERS: u32 = 100;
/// The latency chart covers this long, in one-minute columns.
const CHART_MINUTES: i64 = 60;
/// Completed deliveries read for the chart at most.
const CHART_SAMPLES: u32 = 5_000;
/// The page reloads itself this often (a `<meta http-equiv="refresh">`; no script).
const REFRESH_SECONDS: u32 = 30;

/// What the page is assembled from.
pub struct OpsView {
    pub now_ms: i64,
    pub servicenow_url: String,
    pub simulator: bool,
    /// (queue name, depth)
    pub depths: Vec<(&'static str, u64)>,
    /// Status documents (as `GET /v1/alerts/{id}` answers them).
    pub alerts: Vec<Value>,
    /// Dead-letter documents (as `relay dlq list --json` prints them).
    pub dead_letters: Vec<Value>,
    /// (completed at, received → completed) in epoch ms and ms, over the last hour.
    pub latencies: Vec<(i64, i64)>,
}

impl OpsView {
    pub async fn read(store: &LocalStore, servicenow_url: String, simulator: bool) -> Result<OpsView, String> {
        let now_ms = SystemClock.now_ms();
        let mut depths = Vec::new();
        for name in ["realtime", "batch", "dlq"] {
            let depth = store.queue(name).depth().await.map_err(|e| e.to_string())?;
            depths.push((name, depth));
        }
        let alerts = list::alerts(
            store,
            ListFilter {
                limit: RECENT_ALERTS,
                ..ListFilter::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let dead_letters = list::dead_letters(store, DEAD_LETTERS)
            .await
            .map_err(|e| e.to_string())?;
        let completed = store
            .ledger()
            .list_recent(ListFilter {
                state: Some(DeliveryState::Completed),
                since_ms: Some(now_ms - CHART_MINUTES * 60_000),
                kind: None,
                limit: CHART_SAMPLES,
            })
            .await
            .map_err(|e| e.to_string())?;
        let latencies = completed
            .iter()
            .map(|e| (e.updated_at_ms, (e.updated_at_ms - e.first_received_at_ms).max(0)))
            .collect();
        Ok(OpsView {
            now_ms,
            servicenow_url,
            simulator,
            depths,
            alerts,
            dead_letters,
            latencies,
        })
    }
}

/// `GET /ops`.
pub async fn page(store: &LocalStore, servicenow_url: String, simulator: bool) -> Response {
    match OpsView::read(store, servicenow_url, simulator).await {
        Ok(view) => html(StatusCode::OK, render(&view)),
        Err(e) => {
            tracing::warn!(error = %e, "operator page: the database does not answer");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                "<!doctype html><title>relay</title><p>The database does not answer; see the server log.</p>".into(),
            )
        }
    }
}

/// An HTML answer that browsers neither cache, frame, sniff nor let run scripts.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'; \
                 base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `s` as HTML text or a quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as escaped text (`-` when absent).
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => escape(s),
        other => escape(&other.to_string()),
    }
}

/// `text` linked to `href` when that is an `http(s)` URL (a `javascript:` or `data:` link from a
/// misbehaving instance is shown as text only).
fn link(text: &str, href: &str) -> String {
    let scheme_ok = href.starts_with("https://") || href.starts_with("http://");
    if scheme_ok {
        format!(
            "<a href=\"{}\" rel=\"noopener noreferrer\">{}</a>",
            escape(href),
            escape(text)
        )
    } else {
        escape(text)
    }
}

/// A duration for people: `840 ms`, `3.2 s`, `4.5 min`.
pub fn human_ms(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1_000.0)
    } else {
        format!("{:.1} min", ms as f64 / 60_000.0)
    }
}

/// `HH:MM` (UTC) of an epoch-ms instant.
fn clock(ms: i64) -> String {
    let minutes = ms.div_euclid(60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The value at quantile `q` of sorted `v`.
fn quantile(v: &[i64], q: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// The smallest of 1, 2, 5 × 10ⁿ ms at or above `ms` (the chart's top).
fn nice_ceiling(ms: i64) -> i64 {
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            if step * m >= ms.max(1) {
                return step * m;
            }
        }
        step = step.saturating_mul(10);
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f24;background:#fff}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .4em}\
.meta{color:#57606a}.depths{display:flex;gap:1em}.depth{border:1px solid #d0d7de;border-radius:6px;\
padding:.5em 1em;min-width:7em}.depth b{display:block;font-size:1.6em}.depth.alarm{border-color:#cf222e;\
color:#cf222e}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .6em;\
border-bottom:1px solid #eaeef2;vertical-align:top}th{background:#f6f8fa}td.t{white-space:nowrap}td.err{color:#cf222e;\
max-width:36em;overflow-wrap:anywhere}.COMPLETED{color:#1a7f37}.FAILED{color:#cf222e}.RETRYING{color:#9a6700}\
.empty{color:#57606a;font-style:italic}svg text{font:11px system-ui,sans-serif;fill:#57606a}";

pub fn render(view: &OpsView) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Alert Relay — operator page</title>\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\"><style>{STYLE}</style></head><body>\
         <h1>Alert Relay</h1><p class=\"meta\">ServiceNow: {}{} · {} UTC · reloads every {REFRESH_SECONDS} s</p>",
        escape(&view.servicenow_url),
        if view.simulator { " (built-in simulator)" } else { "" },
        clock(view.now_ms),
    );

    h.push_str("<h2>Queues</h2><div class=\"depths\">");
    for (name, depth) in &view.depths {
        let alarm = *name == "dlq" && *depth > 0;
        let _ = write!(
            h,
            "<div class=\"depth{}\">{name}<b>{depth}</b></div>",
            if alarm { " alarm" } else { "" }
        );
    }
    h.push_str("</div>");

    h.push_str("<h2>Delivery latency, last hour</h2>");
    h.push_str(&latency_chart(view));

    let _ = write!(h, "<h2>Last alerts</h2>");
    if view.alerts.is_empty() {
        h.push_str("<p class=\"empty\">No alerts yet.</p>");
    } else {
        h.push_str(
            "<table><tr><th>updated</th><th>alert</th><th>state</th><th>rule</th><th>record type</th>\
             <th>ServiceNow</th><th>attempts</th><th>last error</th></tr>",
        );
        for a in &view.alerts {
            let sn = &a["servicenow"];
            let record = match (sn["number"].as_str(), sn["sys_id"].as_str(), sn["link"].as_str()) {
                (number, Some(sys_id), Some(href)) => link(number.unwrap_or(sys_id), href),
                _ => "-".into(),
            };
            let state = a["state"].as_str().unwrap_or("-");
            let _ = write!(
                h,
                "<tr><td class=\"t\">{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{record}</td>\
                 <td>{}</td><td class=\"err\">{}</td></tr>",
                cell(&a["updated_at"]),
                cell(&a["alert_id"]),
                escape(state),
                escape(state),
                cell(&a["rule"]),
                cell(&a["record_type"]),
                cell(&a["attempts"]),
                a["last_error"].as_str().map(escape).unwrap_or_default(),
            );
        }
        h.push_str("</table>");
    }

    let _ = write!(h, "<h2>Dead-letter queue ({})</h2>", view.dead_letters.len());
    if view.dead_letters.is_empty() {
        h.push_str("<p class=\"empty\">Empty.</p>");
    } else {
        h.push_str(
            "<table><tr><th>alert</th><th>record type</th><th>table</th><th>class</th><th>attempts</th>\
             <th>error</th></tr>",
        );
        for d in &view.dead_letters {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
                cell(&d["alert_id"]),
                cell(&d["record_type"]),
                cell(&d["table"]),
                cell(&d["error_class"]),
                cell(&d["attempts"]),
                cell(&d["error"]),
            );
        }
        h.push_str("</table><p class=\"meta\">Replay with <code>relay replay-dlq --local</code>.</p>");
    }
    h.push_str("</body></html>");
    h
}

/// One column per minute of the last hour: a bar from the fastest to the slowest delivery completed in
/// that minute and a dot at its median; the time axis in UTC, the latency axis from 0 to a round top.
fn latency_chart(view: &OpsView) -> String {
    const W: f64 = 720.0;
    const H: f64 = 200.0;
    const LEFT: f64 = 64.0;
    const BOTTOM: f64 = 24.0;
    let plot_w = W - LEFT - 24.0;
    let plot_h = H - BOTTOM - 8.0;
    let start = view.now_ms - CHART_MINUTES * 60_000;
    let mut minutes: Vec<Vec<i64>> = vec![Vec::new(); CHART_MINUTES as usize];
    for &(at, ms) in &view.latencies {
        // An instant exactly at `now` belongs to the last minute.
        let i = (at - start).div_euclid(60_000).min(CHART_MINUTES - 1);
        if i >= 0 {
            minutes[i as usize].push(ms);
        }
    }
    let mut all: Vec<i64> = minutes.iter().flatten().copied().collect();
    all.sort_unstable();
    let top = nice_ceiling(all.last().copied().unwrap_or(1_000));
    let y = |ms: i64| 8.0 + plot_h * (1.0 - ms as f64 / top as f64);
    let col_w = plot_w / CHART_MINUTES as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         role=\"img\" aria-label=\"delivery latency over the last hour\">"
    );
    for frac in [0.0, 0.5, 1.0] {
        let ms = (top as f64 * frac) as i64;
        let yy = y(ms);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eaeef2\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            human_ms(ms)
        );
    }
    for tick in (0..=CHART_MINUTES).step_by(10) {
        let x = LEFT + tick as f64 * col_w;
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            H - 6.0,
            clock(start + tick * 60_000)
        );
    }
    for (i, column) in minutes.iter_mut().enumerate() {
        if column.is_empty() {
            continue;
        }
        column.sort_unstable();
        let x = LEFT + (i as f64 + 0.5) * col_w;
        let (lo, hi, mid) = (column[0], column[column.len() - 1], quantile(column, 0.5));
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#54aeff\" stroke-width=\"{:.1}\" \
             stroke-linecap=\"round\"/><circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#0969da\"/>",
            y(lo),
            y(hi),
            (col_w * 0.6).max(2.0),
            y(mid)
        );
    }
    s.push_str("</svg>");
    if all.is_empty() {
        s.push_str("<p class=\"empty\">No deliveries completed in the last hour.</p>");
    } else {
        let _ = write!(
            s,
            "<p class=\"meta\">{} deliveries (received → record created): median {}, p95 {}, max {}. \
             Bars: fastest to slowest per minute; dots: median.</p>",
            all.len(),
            human_ms(quantile(&all, 0.5)),
            human_ms(quantile(&all, 0.95)),
            human_ms(all[all.len() - 1])
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn only_http_links_are_kept() {
        assert_eq!(
            link("SIR1", "https://i.example/x?a=1&b=2"),
            "<a href=\"https://i.example/x?a=1&amp;b=2\" rel=\"noopener noreferrer\">SIR1</a>"
        );
        assert_eq!(link("SIR1", "javascript:alert(1)"), "SIR1");
    }

    #[test]
    fn durations_and_axis_tops_read_well() {
        assert_eq!(human_ms(840), "840 ms");
        assert_eq!(human_ms(3_200), "3.2 s");
        assert_eq!(human_ms(270_000), "4.5 min");
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(840), 1_000);
        assert_eq!(nice_ceiling(1_001), 2_000);
        assert_eq!(nice_ceiling(3_000), 5_000);
        assert_eq!(clock(3_600_000 * 25 + 60_000 * 7), "01:07");
    }
}
