//! API errors: an HTTP status and a JSON body
//! `{"error": {"code", "message", "kernel"?}}` with a stable code.
//!
//! [`ErrorCode::status`] is the one table from code to status and
//! [`errno_status`] the one table from a kernel errno to status; docs/api.md
//! lists both and a test checks the two agree.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gateway::CallError;
use crate::plugin::CallFailure;

/// Every error code the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request body is not JSON, has a duplicated key or a NUL.
    BadJson,
    /// The request body could not be read.
    BadBody,
    /// The plugin rejected the input.
    BadInput,
    /// The request breaks the kernel's attribute policy.
    InvalidRequest,
    /// A family name the kernel can never accept.
    BadFamilyName,
    /// The path is not UTF-8 or does not parse.
    BadPath,
    /// The query string does not parse (or repeats a key).
    BadQuery,
    /// TCP without a valid bearer token.
    Unauthorized,
    /// The family file does not allow a command the op needs.
    Denied,
    /// The token does not cover the family or access level.
    Forbidden,
    /// No plugin serves the family.
    UnknownFamily,
    /// The plugin has no such op.
    UnknownOp,
    /// The plugin found no such object.
    NotFound,
    /// No such endpoint.
    NoSuchEndpoint,
    /// The endpoint does not take the method.
    MethodNotAllowed,
    /// The request body did not arrive in time.
    BodyTimeout,
    /// The request body is over `[api] max_body_bytes`.
    BodyTooLarge,
    /// The plugin trapped.
    PluginCrashed,
    /// The kernel refused (the status then comes from [`errno_status`]).
    Kernel,
    /// The plugin's output is not JSON.
    BadPluginOutput,
    /// The kernel does not have the family.
    FamilyAbsent,
    /// The plugin is not loaded or cannot start.
    PluginUnavailable,
    /// The plugin crashed and is backing off.
    PluginRestarting,
    /// The family's first plugin version is still loading.
    PluginLoading,
    /// The kernel did not answer in time.
    Timeout,
    /// Too many calls from the bus are running; retry later.
    Busy,
    /// The kernel flagged a dump as interrupted by concurrent changes
    /// (NLM_F_DUMP_INTR; a collected dump on each of the host's retries, a
    /// streamed one at once): a busy moment of the system, not a client
    /// or plugin fault; retry later.
    DumpInterrupted,
    /// The client's local user holds as many connections to the listener
    /// as one user may (`[api] max_connections_per_user`), or only the
    /// slots kept for root are left.
    TooManyConnections,
}

impl ErrorCode {
    /// Every code, for listing and for checking the docs.
    pub const ALL: [ErrorCode; 28] = [
        Self::BadJson,
        Self::BadBody,
        Self::BadInput,
        Self::InvalidRequest,
        Self::BadFamilyName,
        Self::BadPath,
        Self::BadQuery,
        Self::Unauthorized,
        Self::Denied,
        Self::Forbidden,
        Self::UnknownFamily,
        Self::UnknownOp,
        Self::NotFound,
        Self::NoSuchEndpoint,
        Self::MethodNotAllowed,
        Self::BodyTimeout,
        Self::BodyTooLarge,
        Self::PluginCrashed,
        Self::Kernel,
        Self::BadPluginOutput,
        Self::FamilyAbsent,
        Self::PluginUnavailable,
        Self::PluginRestarting,
        Self::PluginLoading,
        Self::Timeout,
        Self::Busy,
        Self::DumpInterrupted,
        Self::TooManyConnections,
    ];

    /// The code's wire name and its HTTP status: the one table. `kernel`'s
    /// status here is the default for an errno [`errno_status`] lacks.
    fn spec(self) -> (&'static str, StatusCode) {
        use ErrorCode::*;
        match self {
            BadJson => ("bad-json", StatusCode::BAD_REQUEST),
            BadBody => ("bad-body", StatusCode::BAD_REQUEST),
            BadInput => ("bad-input", StatusCode::BAD_REQUEST),
            InvalidRequest => ("invalid-request", StatusCode::BAD_REQUEST),
            BadFamilyName => ("bad-family-name", StatusCode::BAD_REQUEST),
            BadPath => ("bad-path", StatusCode::BAD_REQUEST),
            BadQuery => ("bad-query", StatusCode::BAD_REQUEST),
            Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            Denied => ("denied", StatusCode::FORBIDDEN),
            Forbidden => ("forbidden", StatusCode::FORBIDDEN),
            UnknownFamily => ("unknown-family", StatusCode::NOT_FOUND),
            UnknownOp => ("unknown-op", StatusCode::NOT_FOUND),
            NotFound => ("not-found", StatusCode::NOT_FOUND),
            NoSuchEndpoint => ("no-such-endpoint", StatusCode::NOT_FOUND),
            MethodNotAllowed => ("method-not-allowed", StatusCode::METHOD_NOT_ALLOWED),
            BodyTimeout => ("body-timeout", StatusCode::REQUEST_TIMEOUT),
            BodyTooLarge => ("body-too-large", StatusCode::PAYLOAD_TOO_LARGE),
            TooManyConnections => ("too-many-connections", StatusCode::TOO_MANY_REQUESTS),
            PluginCrashed => ("plugin-crashed", StatusCode::INTERNAL_SERVER_ERROR),
            Kernel => ("kernel", StatusCode::BAD_GATEWAY),
            BadPluginOutput => ("bad-plugin-output", StatusCode::BAD_GATEWAY),
            FamilyAbsent => ("family-absent", StatusCode::SERVICE_UNAVAILABLE),
            PluginUnavailable => ("plugin-unavailable", StatusCode::SERVICE_UNAVAILABLE),
            PluginRestarting => ("plugin-restarting", StatusCode::SERVICE_UNAVAILABLE),
            PluginLoading => ("plugin-loading", StatusCode::SERVICE_UNAVAILABLE),
            Timeout => ("timeout", StatusCode::GATEWAY_TIMEOUT),
            Busy => ("busy", StatusCode::SERVICE_UNAVAILABLE),
            DumpInterrupted => ("dump-interrupted", StatusCode::SERVICE_UNAVAILABLE),
        }
    }

    /// The stable wire name, e.g. `bad-json`.
    pub fn as_str(self) -> &'static str {
        self.spec().0
    }

    /// The HTTP status it answers with.
    pub fn status(self) -> StatusCode {
        self.spec().1
    }

    /// The code named `name`, if the API defines it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// The status for a code a plugin defines that the API does not: the
/// kernel's errno decides if one is attached, else this.
pub const PLUGIN_CODE_DEFAULT: StatusCode = StatusCode::BAD_GATEWAY;

/// Kernel errnos and the status each answers with. Client mistakes the
/// kernel catches are 4xx; an errno not listed answers 502.
const ERRNO_STATUS: &[(i32, StatusCode)] = &[
    (libc::EPERM, StatusCode::FORBIDDEN),
    (libc::ENOENT, StatusCode::NOT_FOUND),
    (libc::ESRCH, StatusCode::NOT_FOUND),
    (libc::ENXIO, StatusCode::NOT_FOUND),
    (libc::E2BIG, StatusCode::BAD_REQUEST),
    (libc::EACCES, StatusCode::FORBIDDEN),
    (libc::EBUSY, StatusCode::CONFLICT),
    (libc::EEXIST, StatusCode::CONFLICT),
    (libc::ENODEV, StatusCode::NOT_FOUND),
    (libc::EINVAL, StatusCode::BAD_REQUEST),
    (libc::EDOM, StatusCode::BAD_REQUEST),
    (libc::ERANGE, StatusCode::BAD_REQUEST),
    (libc::ENAMETOOLONG, StatusCode::BAD_REQUEST),
    (libc::EOVERFLOW, StatusCode::BAD_REQUEST),
    (libc::EMSGSIZE, StatusCode::BAD_REQUEST),
    (libc::EPROTONOSUPPORT, StatusCode::BAD_REQUEST),
    (libc::EOPNOTSUPP, StatusCode::NOT_IMPLEMENTED),
    (libc::EAFNOSUPPORT, StatusCode::BAD_REQUEST),
    (libc::EADDRINUSE, StatusCode::CONFLICT),
    (libc::EADDRNOTAVAIL, StatusCode::BAD_REQUEST),
    (libc::ETIMEDOUT, StatusCode::GATEWAY_TIMEOUT),
    (libc::EALREADY, StatusCode::CONFLICT),
];

/// The status a kernel error `errno` answers with, if the table names it.
pub fn errno_status(errno: i32) -> Option<StatusCode> {
    ERRNO_STATUS.iter().find(|(e, _)| *e == errno).map(|(_, s)| *s)
}

/// The errno table as `(errno, status)` pairs, for checking the docs.
pub fn errno_statuses() -> impl Iterator<Item = (i32, u16)> {
    ERRNO_STATUS.iter().map(|(e, s)| (*e, s.as_u16()))
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (a plugin may define its own).
    pub code: String,
    /// For a person.
    pub message: String,
    /// The kernel's error, if one is behind this.
    pub kernel: Option<genl_wire::KernelError>,
}

impl ApiError {
    /// An error with no kernel detail; the status comes from the code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code: code.as_str().to_owned(),
            message: message.into(),
            kernel: None,
        }
    }

    /// A plugin's error: a code the API defines answers with its status;
    /// `kernel` or a code of the plugin's own answers with the errno's
    /// status, else [`PLUGIN_CODE_DEFAULT`].
    pub fn from_plugin(code: String, message: String, kernel: Option<genl_wire::KernelError>) -> Self {
        let by_errno = || kernel.as_ref().and_then(|k| errno_status(k.errno));
        let status = match ErrorCode::parse(&code) {
            Some(ErrorCode::Kernel) => by_errno().unwrap_or(ErrorCode::Kernel.status()),
            Some(known) => known.status(),
            None => by_errno().unwrap_or(PLUGIN_CODE_DEFAULT),
        };
        Self {
            status,
            code,
            message,
            kernel,
        }
    }
}

impl ApiError {
    /// The error's JSON body, `{"error": {...}}`: the response body, and the
    /// last line of an NDJSON output that failed after it started.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(k) = &self.kernel {
            error["kernel"] = json!({
                "errno": k.errno,
                "name": k.errno_name(),
                "message": k.message,
                "offset": k.offset,
            });
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.to_json())).into_response()
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::UnknownFamily { family, did_you_mean } => ApiError::new(
                ErrorCode::UnknownFamily,
                format!(
                    "no plugin serves family '{family}'{} (family names are case-sensitive; GET /v1/families lists them; add a file to families.d)",
                    crate::hints::suffix(did_you_mean.as_deref())
                ),
            ),
            CallError::FamilyAbsent(m) => ApiError::new(ErrorCode::FamilyAbsent, m),
            CallError::PluginLoading(family) => ApiError::new(
                ErrorCode::PluginLoading,
                format!("the plugin of family '{family}' is still loading; retry shortly"),
            ),
            CallError::PluginFailed { family, reason } => ApiError::new(
                ErrorCode::PluginUnavailable,
                format!("the plugin of family '{family}' is not loaded: {reason}"),
            ),
            CallError::Call { family, failure } => match failure {
                CallFailure::Plugin {
                    code,
                    message,
                    kernel,
                } => ApiError::from_plugin(code, message, kernel),
                CallFailure::Crashed(why) => ApiError::new(
                    ErrorCode::PluginCrashed,
                    format!("the plugin of family '{family}' crashed: {why}"),
                ),
                CallFailure::Restarting {
                    retry_after,
                    last_error,
                } => ApiError::new(
                    ErrorCode::PluginRestarting,
                    format!(
                        "the plugin of family '{family}' crashed ({last_error}) and restarts in {} ms; retry then",
                        retry_after.as_millis()
                    ),
                ),
                CallFailure::Unavailable(why) => ApiError::new(
                    ErrorCode::PluginUnavailable,
                    format!("the plugin of family '{family}' cannot start: {why}"),
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_plugin_codes_map_through_the_table() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        let e = ApiError::from_plugin("invalid-request".into(), "x".into(), None);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        // The SDK's code for a dump the kernel kept interrupting is the
        // system being busy: a 503 to retry, not a 502 blaming the plugin.
        let e = ApiError::from_plugin("dump-interrupted".into(), "x".into(), None);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        let e = ApiError::from_plugin("frobnicated".into(), "x".into(), None);
        assert_eq!(e.status, PLUGIN_CODE_DEFAULT);
        let k = genl_wire::KernelError {
            errno: libc::EADDRNOTAVAIL,
            message: None,
            offset: None,
        };
        let e = ApiError::from_plugin("kernel".into(), "x".into(), Some(k));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
