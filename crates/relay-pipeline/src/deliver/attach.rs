//! The files uploaded to a record besides its fields: an aggregate's member list, an HR case's trend chart
//! and an employee document's file. The member list and the chart are best effort (the record is whole
//! without them, so a failed upload is logged and the delivery still succeeds). The employee document's
//! file is part of the delivery: the instance deletes a document without its file at the next run of
//! "Clean up inactive employee documents", so until it is uploaded the alert is not delivered — the attempt
//! fails, and the next one finds the record by its key, sees which files it already has, and uploads only
//! the missing ones.

use relay_core::batch::{self, PlannedRecord};
use relay_core::{Decision, DocumentFile, TrendChart};
use servicenow_client::{CreatedRecord, Outcome, ServiceNowClient};

/// What one record carries besides its fields.
#[derive(Debug, Clone, Copy)]
pub struct Files<'a> {
    pub correlation_id: &'a str,
    pub member_list: Option<&'a str>,
    pub chart: Option<&'a TrendChart>,
    pub document: Option<&'a DocumentFile>,
}

impl<'a> Files<'a> {
    /// A planned record's files (an aggregate or a lone alert of a flush).
    pub fn of_record(record: &'a PlannedRecord) -> Self {
        Files {
            correlation_id: &record.correlation_id,
            member_list: record.member_list.as_deref(),
            chart: record.chart.as_ref(),
            document: record.document.as_ref(),
        }
    }

    /// A realtime alert's files.
    pub fn of_decision(decision: &'a Decision) -> Self {
        Files {
            correlation_id: &decision.correlation_id,
            member_list: None,
            chart: decision.chart.as_ref(),
            document: decision.document.as_ref(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.member_list.is_none() && self.chart.is_none() && self.document.is_none()
    }
}

/// Upload `files` to `record`. `found`: the record was found by a lookup (an earlier attempt created it),
/// so its attachments are listed first and only the missing files are uploaded. `Err` only for the
/// employee document's file (or the list, when the document is among the files): the outcome of that call,
/// with what happened to the record in its reason.
pub async fn attach_files(
    client: &ServiceNowClient,
    files: &Files<'_>,
    record: &CreatedRecord,
    found: bool,
) -> Result<(), Outcome> {
    if files.is_empty() {
        return Ok(());
    }
    let existing = if found {
        match client.attachment_names(&record.table, &record.sys_id).await {
            Ok(names) => Some(names),
            Err(o) if files.document.is_some() => {
                return Err(file_pending(record, "its attachments cannot be listed", o));
            }
            Err(o) => {
                // uploading blind could attach a second copy; the chart and member list are best effort
                tracing::warn!(
                    correlation_id = %files.correlation_id,
                    sys_id = %record.sys_id,
                    error = %o,
                    "could not list the found record's attachments; its chart or member list is not checked"
                );
                return Ok(());
            }
        }
    } else {
        None
    };
    let missing = |name: &str| existing.as_ref().is_none_or(|names| !names.iter().any(|n| n == name));
    if let Some(document) = files.document.filter(|d| missing(&d.file_name)) {
        client
            .attach(
                &record.table,
                &record.sys_id,
                &document.file_name,
                "text/plain",
                document.text.clone().into_bytes(),
            )
            .await
            .map_err(|o| file_pending(record, "its document file is not uploaded", o))?;
    }
    if let Some(list) = files.member_list.filter(|_| missing(batch::MEMBER_LIST_FILE)) {
        let upload = client
            .attach(
                &record.table,
                &record.sys_id,
                batch::MEMBER_LIST_FILE,
                "text/plain",
                list.to_string().into_bytes(),
            )
            .await;
        if let Err(o) = upload {
            tracing::warn!(
                correlation_id = %files.correlation_id,
                sys_id = %record.sys_id,
                error = %o,
                "could not attach the member list to the aggregate record"
            );
        }
    }
    if let Some(chart) = files.chart.filter(|_| missing(crate::chart::CHART_FILE)) {
        attach_trend_chart(client, files.correlation_id, chart, record).await;
    }
    Ok(())
}

/// The record exists but is not complete: the same outcome, its reason saying so (the ledger's last error,
/// `relay status`, the dead-letter message). A retry looks the record up and uploads what is missing.
fn file_pending(record: &CreatedRecord, what: &str, outcome: Outcome) -> Outcome {
    let name = record.number.as_deref().unwrap_or(&record.sys_id);
    let context = format!(
        "{} {name} exists but {what} (the instance deletes an employee document without its file)",
        record.table
    );
    match outcome {
        Outcome::Retryable { retry_after, reason } => Outcome::Retryable {
            retry_after,
            reason: format!("{context}: {reason}"),
        },
        Outcome::Ambiguous { reason } => Outcome::Ambiguous {
            reason: format!("{context}: {reason}"),
        },
        Outcome::Auth { message } => Outcome::Auth {
            message: format!("{context}: {message}"),
        },
        Outcome::Permanent {
            message,
            detail,
            status,
        } => Outcome::Permanent {
            message: format!("{context}: {message}"),
            detail,
            status,
        },
        created @ Outcome::Created(_) => created,
    }
}

/// Upload a weekly trend chart (HR case for a productivity alert with a weekly trend; never in
/// minimal-data mode) as [`crate::chart::CHART_FILE`]. Best effort: a chart that cannot be drawn or
/// uploaded is logged, and the delivery still succeeds.
async fn attach_trend_chart(
    client: &ServiceNowClient,
    correlation_id: &str,
    chart: &TrendChart,
    record: &CreatedRecord,
) {
    // Drawing and encoding take milliseconds of CPU: off the async workers, which serve webhooks meanwhile.
    let drawn = {
        let chart = chart.clone();
        tokio::task::spawn_blocking(move || crate::chart::render_png(&chart)).await
    };
    let png = match drawn
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        Ok(png) => png,
        Err(e) => {
            tracing::warn!(
                correlation_id = %correlation_id,
                sys_id = %record.sys_id,
                error = %e,
                "could not draw the trend chart; the record has none attached"
            );
            return;
        }
    };
    if let Err(o) = client
        .attach(
            &record.table,
            &record.sys_id,
            crate::chart::CHART_FILE,
            crate::chart::CHART_CONTENT_TYPE,
            png,
        )
        .await
    {
        tracing::warn!(
            correlation_id = %correlation_id,
            sys_id = %record.sys_id,
            error = %o,
            "could not attach the trend chart to the record"
        );
    }
}
