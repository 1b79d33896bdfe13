//! The files uploaded to a newly created record besides its fields: an aggregate's member list and a trend
//! chart. Best effort: a failed upload is logged and the delivery still succeeds.

use relay_core::batch::{self, PlannedRecord};
use servicenow_client::{CreatedRecord, ServiceNowClient};

/// Upload an aggregate's full member list to its newly created record, as [`batch::MEMBER_LIST_FILE`].
/// Best effort: the record exists and its description names the first members and counts the rest, so a
/// failed upload is logged and does not make the delivery fail (it would create the record again).
async fn attach_member_list(client: &ServiceNowClient, record: &PlannedRecord, created: &CreatedRecord) {
    let Some(list) = record.member_list.as_ref() else {
        return;
    };
    if let Err(o) = client
        .attach(
            &created.table,
            &created.sys_id,
            batch::MEMBER_LIST_FILE,
            "text/plain",
            list.clone().into_bytes(),
        )
        .await
    {
        tracing::warn!(
            correlation_id = %record.correlation_id,
            sys_id = %created.sys_id,
            error = %o,
            "could not attach the member list to the aggregate record"
        );
    }
}

/// Upload what a planned record carries besides its fields (an aggregate's member list, a lone alert's trend
/// chart or document file) to its newly created record.
pub async fn attach_files(client: &ServiceNowClient, record: &PlannedRecord, created: &CreatedRecord) {
    attach_member_list(client, record, created).await;
    attach_trend_chart(client, &record.correlation_id, record.chart.as_ref(), created).await;
    crate::document::attach_document(client, &record.correlation_id, record.document.as_ref(), created).await;
}

/// Upload a weekly trend chart (HR case for a productivity alert with a weekly trend; never in
/// minimal-data mode) to its newly created record, as [`crate::chart::CHART_FILE`]. Best effort like the
/// member list: a chart that cannot be drawn or uploaded is logged, and the delivery still succeeds.
pub(super) async fn attach_trend_chart(
    client: &ServiceNowClient,
    correlation_id: &str,
    chart: Option<&relay_core::TrendChart>,
    created: &CreatedRecord,
) {
    let Some(chart) = chart else {
        return;
    };
    let png = match crate::chart::render_png(chart) {
        Ok(png) => png,
        Err(e) => {
            tracing::warn!(
                correlation_id = %correlation_id,
                sys_id = %created.sys_id,
                error = %e,
                "could not draw the trend chart; the record has none attached"
            );
            return;
        }
    };
    if let Err(o) = client
        .attach(
            &created.table,
            &created.sys_id,
            crate::chart::CHART_FILE,
            crate::chart::CHART_CONTENT_TYPE,
            png,
        )
        .await
    {
        tracing::warn!(
            correlation_id = %correlation_id,
            sys_id = %created.sys_id,
            error = %o,
            "could not attach the trend chart to the record"
        );
    }
}
