//! SDK errors → [`PortError`].

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use relay_ports::PortError;

/// Error codes (any service) that mean "the named thing does not exist".
const NOT_FOUND_CODES: &[&str] = &[
    "ResourceNotFoundException",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
    "NotFound",
    "NotFoundException",
    "NoSuchEntity",
];

/// Error codes (any service) that mean "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "TransactionConflictException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServiceError",
    "InternalServiceErrorException",
    "KMSThrottlingException",
    "KMSInternalException",
    "RequestTimeout",
    "RequestTimeoutException",
    "EC2ThrottledException",
];

/// Map an SDK error of any operation to a [`PortError`]; `operation` names what was attempted
/// (`"SQS SendMessage to <url>"`) and leads the message.
pub fn port_error<E>(operation: &str, err: SdkError<E, HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ConstructionFailure(_) => PortError::Rejected(format!(
            "{operation}: request could not be built: {}",
            DisplayErrorContext(&err)
        )),
        SdkError::TimeoutError(_) => PortError::Unavailable(format!("{operation}: timed out")),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            PortError::Unavailable(format!("{operation}: {}", DisplayErrorContext(&err)))
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = err.code().unwrap_or("");
            let message = err.message().unwrap_or("");
            let text = match (code.is_empty(), message.is_empty()) {
                (false, false) => format!("{operation}: {code}: {message}"),
                (false, true) => format!("{operation}: {code}"),
                (true, false) => format!("{operation}: HTTP {status}: {message}"),
                (true, true) => format!("{operation}: HTTP {status}"),
            };
            classify(code, status, text)
        }
        _ => PortError::Unavailable(format!("{operation}: {}", DisplayErrorContext(&err))),
    }
}

/// Classify a service error by its code, then its HTTP status.
fn classify(code: &str, status: u16, text: String) -> PortError {
    // Some services prefix codes with a namespace (`com.amazonaws.sqs#QueueDoesNotExist`).
    let code = code.rsplit('#').next().unwrap_or(code);
    if NOT_FOUND_CODES.contains(&code) {
        PortError::NotFound(text)
    } else if TRANSIENT_CODES.contains(&code) || status == 429 || status >= 500 {
        PortError::Unavailable(text)
    } else {
        PortError::Rejected(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_are_classified() {
        let t = || "x".to_string();
        assert!(matches!(
            classify("ResourceNotFoundException", 400, t()),
            PortError::NotFound(_)
        ));
        assert!(matches!(
            classify("com.amazonaws.sqs#QueueDoesNotExist", 400, t()),
            PortError::NotFound(_)
        ));
        assert!(matches!(
            classify("AWS.SimpleQueueService.NonExistentQueue", 400, t()),
            PortError::NotFound(_)
        ));
        assert!(matches!(
            classify("ThrottlingException", 400, t()),
            PortError::Unavailable(_)
        ));
        assert!(matches!(
            classify("ProvisionedThroughputExceededException", 400, t()),
            PortError::Unavailable(_)
        ));
        assert!(matches!(classify("Whatever", 503, t()), PortError::Unavailable(_)));
        assert!(matches!(classify("", 429, t()), PortError::Unavailable(_)));
        assert!(matches!(
            classify("ValidationException", 400, t()),
            PortError::Rejected(_)
        ));
        assert!(matches!(
            classify("AccessDeniedException", 403, t()),
            PortError::Rejected(_)
        ));
        assert!(matches!(
            classify("InvalidParameterValue", 400, t()),
            PortError::Rejected(_)
        ));
    }
}
