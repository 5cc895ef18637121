//! What an AWS answer means. Failed calls become [`PortError`]s classified
//! so that a caller can decide to retry, carrying an [`AwsApiError`] as
//! their source with the AWS error code, message, request id and HTTP
//! status kept; configuration and credential problems are
//! [`AwsConfigError`]s.

use std::path::PathBuf;
use std::time::Duration;

use phoenix_core::ports::{ErrorKind, PortError};

/// An error answer from an AWS API, as AWS worded it. The source of the
/// [`PortError`] a failed call returns; [`aws_error_code`] reads it back.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {action}: HTTP {status} {code}: {message} (request id {request_id})")]
pub struct AwsApiError {
    /// The service (`ec2`, `elasticloadbalancing`, `autoscaling`, `sts`).
    pub service: &'static str,
    /// The action (`RunInstances`).
    pub action: String,
    /// The HTTP status.
    pub status: u16,
    /// The AWS error code (`InvalidInstanceID.NotFound`,
    /// `RequestLimitExceeded`), or `(none)` when the body named none.
    pub code: String,
    /// AWS's message, scrubbed of secrets.
    pub message: String,
    /// The request id, for AWS support.
    pub request_id: String,
}

/// The AWS error code behind a failed call, if an AWS answer caused it.
pub fn aws_error_code(error: &PortError) -> Option<&str> {
    aws_error(error).map(|e| e.code.as_str())
}

/// The AWS answer behind a failed call, if one caused it.
pub fn aws_error(error: &PortError) -> Option<&AwsApiError> {
    error.source.as_ref()?.downcast_ref::<AwsApiError>()
}

/// Problems with the AWS configuration: region, endpoints, profiles and
/// credentials. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AwsConfigError {
    /// No region was configured anywhere.
    #[error("no AWS region: set AWS_REGION, or `region` in the profile `{profile}` (read by `AwsConfig::from_env`), or call `region` on the builder")]
    NoRegion {
        /// The profile consulted.
        profile: String,
    },
    /// A setting (an endpoint URL, the region) is malformed.
    #[error("{variable}={value:?} is not usable: {reason}")]
    BadSetting {
        /// The variable or setting.
        variable: String,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A shared config or credentials file could not be read.
    #[error("cannot read the AWS {what} file {path}: {source}")]
    ProfileFile {
        /// `config` or `credentials`.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A shared config or credentials file is malformed.
    #[error("the AWS {what} file {path} is malformed at line {line}: {reason}")]
    ProfileSyntax {
        /// `config` or `credentials`.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The named profile does not exist.
    #[error("AWS profile `{profile}` is not in {config} nor {credentials}")]
    NoSuchProfile {
        /// The profile.
        profile: String,
        /// The config file consulted.
        config: PathBuf,
        /// The credentials file consulted.
        credentials: PathBuf,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// No source in the chain had credentials.
    #[error("no AWS credentials found; tried: {tried}")]
    NoCredentials {
        /// Each source and why it had none.
        tried: String,
    },
    /// A credential source failed.
    #[error("AWS credentials from {source_name}: {reason}")]
    Credentials {
        /// The source (`environment`, `profile default`, `IMDSv2`, …).
        source_name: String,
        /// What went wrong (never the secret itself).
        reason: String,
    },
}

/// The kind of an AWS error answer: by code first (AWS's own retry
/// classification), then by HTTP status.
pub(crate) fn kind_of(
    status: u16,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> ErrorKind {
    const THROTTLING: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "BandwidthLimitExceeded",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "TransactionInProgressException",
    ];
    const TRANSIENT: &[&str] = &[
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "IDPCommunicationError",
        // Capacity comes back; another zone or a later try may get it.
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        // Clock skew: the next signature uses a fresh time.
        "RequestExpired",
        "RequestTimeTooSkewed",
        // Expired credentials: the client refreshes them and tries again.
        "ExpiredToken",
        "ExpiredTokenException",
    ];
    const UNAUTHORIZED: &[&str] = &[
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AccessDeniedException",
        "OptInRequired",
        "Blocked",
        "MissingAuthenticationToken",
    ];
    const CONFLICT: &[&str] = &[
        "IdempotentParameterMismatch",
        "IncorrectState",
        "IncorrectInstanceState",
        "InvalidState",
        "ResourceInUse",
        "DependencyViolation",
        "ScalingActivityInProgress",
        "DuplicateTargetGroupName",
        "AlreadyExists",
    ];
    let text = format!("{code}: {message}");
    if THROTTLING.contains(&code) || status == 429 {
        return ErrorKind::Throttled { retry_after };
    }
    if TRANSIENT.contains(&code) {
        return ErrorKind::Temporary(text);
    }
    if code.ends_with(".NotFound")
        || code.ends_with("NotFound")
        || code.ends_with("NotFoundException")
        || code == "InvalidInstanceID.Malformed" && status == 404
    {
        return ErrorKind::NotFound(text);
    }
    if UNAUTHORIZED.contains(&code) {
        return ErrorKind::Unauthorized(text);
    }
    if CONFLICT.contains(&code) || code.ends_with("AlreadyExists") {
        return ErrorKind::Conflict(text);
    }
    if code.starts_with("Unsupported") {
        return ErrorKind::Unsupported(text);
    }
    match status {
        500..=599 => ErrorKind::Temporary(text),
        401 | 403 => ErrorKind::Unauthorized(text),
        404 => ErrorKind::NotFound(text),
        409 => ErrorKind::Conflict(text),
        400..=499 if code.ends_with("LimitExceeded") => ErrorKind::Permanent(text),
        400..=499 => ErrorKind::Invalid(text),
        _ => ErrorKind::BadResponse(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_before_statuses() {
        let k = |s, c| kind_of(s, c, "m", None);
        assert!(matches!(
            k(503, "RequestLimitExceeded"),
            ErrorKind::Throttled { .. }
        ));
        assert!(matches!(k(400, "Throttling"), ErrorKind::Throttled { .. }));
        assert!(matches!(
            k(400, "InvalidInstanceID.NotFound"),
            ErrorKind::NotFound(_)
        ));
        assert!(matches!(
            k(400, "TargetGroupNotFound"),
            ErrorKind::NotFound(_)
        ));
        assert!(matches!(
            k(400, "IdempotentParameterMismatch"),
            ErrorKind::Conflict(_)
        ));
        assert!(matches!(
            k(400, "IncorrectInstanceState"),
            ErrorKind::Conflict(_)
        ));
        assert!(matches!(
            k(400, "InvalidParameterValue"),
            ErrorKind::Invalid(_)
        ));
        assert!(matches!(
            k(400, "InstanceLimitExceeded"),
            ErrorKind::Permanent(_)
        ));
        assert!(matches!(
            k(500, "InsufficientInstanceCapacity"),
            ErrorKind::Temporary(_)
        ));
        assert!(matches!(
            k(403, "UnauthorizedOperation"),
            ErrorKind::Unauthorized(_)
        ));
        assert!(matches!(k(400, "ExpiredToken"), ErrorKind::Temporary(_)));
        assert!(matches!(k(502, "(none)"), ErrorKind::Temporary(_)));
        assert!(matches!(
            k(400, "UnsupportedOperation"),
            ErrorKind::Unsupported(_)
        ));
    }

    #[test]
    fn the_code_is_kept() {
        let e = PortError::new("ec2 RunInstances", ErrorKind::Invalid("x".into())).with_source(
            AwsApiError {
                service: "ec2",
                action: "RunInstances".into(),
                status: 400,
                code: "InvalidAMIID.Malformed".into(),
                message: "bad".into(),
                request_id: "r-1".into(),
            },
        );
        assert_eq!(aws_error_code(&e), Some("InvalidAMIID.Malformed"));
    }
}
