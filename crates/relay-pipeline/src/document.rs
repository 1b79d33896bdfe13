//! The file an employee document record wraps, uploaded with the Attachment API right after the record is
//! created ([`relay_core::DocumentFile`]).

use relay_core::DocumentFile;
use servicenow_client::{CreatedRecord, ServiceNowClient};

/// Upload `document` to its newly created record. Like the other attachments this does not fail the
/// delivery (a retry would create the record again); a failure is logged as an error because the instance
/// deletes a document without its file at the next run of "Clean up inactive employee documents".
pub async fn attach_document(
    client: &ServiceNowClient,
    correlation_id: &str,
    document: Option<&DocumentFile>,
    created: &CreatedRecord,
) {
    let Some(document) = document else {
        return;
    };
    if let Err(o) = client
        .attach(
            &created.table,
            &created.sys_id,
            &document.file_name,
            "text/plain",
            document.text.clone().into_bytes(),
        )
        .await
    {
        tracing::error!(
            correlation_id = %correlation_id,
            sys_id = %created.sys_id,
            error = %o,
            "could not upload the employee document's file: the instance purges the record without it"
        );
    }
}
