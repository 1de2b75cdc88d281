//! API errors: an HTTP status and a JSON body
//! `{"error": {"code", "message", "kernel"?}}` with a stable code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::gateway::CallError;
use crate::plugin::CallFailure;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: String,
    /// For a person.
    pub message: String,
    /// The kernel's error, if one is behind this.
    pub kernel: Option<genl_wire::KernelError>,
}

impl ApiError {
    /// An error with no kernel detail.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            kernel: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(k) = &self.kernel {
            error["kernel"] = json!({
                "errno": k.errno,
                "name": k.errno_name(),
                "message": k.message,
                "offset": k.offset,
            });
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

fn plugin_status(code: &str, kernel: Option<&genl_wire::KernelError>) -> StatusCode {
    match (code, kernel.map(|k| k.errno)) {
        ("bad-input", _) => StatusCode::BAD_REQUEST,
        ("not-found" | "unknown-op", _) => StatusCode::NOT_FOUND,
        ("denied", _) => StatusCode::FORBIDDEN,
        ("timeout", _) => StatusCode::GATEWAY_TIMEOUT,
        ("family-absent", _) => StatusCode::SERVICE_UNAVAILABLE,
        (_, Some(libc::EINVAL | libc::ERANGE | libc::E2BIG)) => StatusCode::BAD_REQUEST,
        (_, Some(libc::ENOENT | libc::ENODEV | libc::ESRCH)) => StatusCode::NOT_FOUND,
        (_, Some(libc::EEXIST | libc::EBUSY)) => StatusCode::CONFLICT,
        (_, Some(libc::EPERM | libc::EACCES)) => StatusCode::FORBIDDEN,
        (_, Some(libc::EOPNOTSUPP)) => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::BAD_GATEWAY,
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::UnknownFamily(f) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown-family",
                format!(
                    "no plugin serves family '{f}' (GET /v1/families lists them; add a file to families.d)"
                ),
            ),
            CallError::FamilyAbsent(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "family-absent", m),
            CallError::PluginLoading(family) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "plugin-loading",
                format!("the plugin of family '{family}' is still loading; retry shortly"),
            ),
            CallError::PluginFailed { family, reason } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "plugin-unavailable",
                format!("the plugin of family '{family}' is not loaded: {reason}"),
            ),
            CallError::Call { family, failure } => match failure {
                CallFailure::Plugin {
                    code,
                    message,
                    kernel,
                } => ApiError {
                    status: plugin_status(&code, kernel.as_ref()),
                    code,
                    message,
                    kernel,
                },
                CallFailure::Crashed(why) => ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "plugin-crashed",
                    format!("the plugin of family '{family}' crashed: {why}"),
                ),
                CallFailure::Restarting {
                    retry_after,
                    last_error,
                } => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "plugin-restarting",
                    format!(
                        "the plugin of family '{family}' crashed ({last_error}) and restarts in {} ms; retry then",
                        retry_after.as_millis()
                    ),
                ),
                CallFailure::Unavailable(why) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "plugin-unavailable",
                    format!("the plugin of family '{family}' cannot start: {why}"),
                ),
            },
        }
    }
}
