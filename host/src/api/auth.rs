//! Bearer tokens on the TCP API. The Unix socket is guarded by its file
//! mode and group instead, so it needs no token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::config::{Access, Token};
use crate::gateway::Gateway;

/// Compare secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a request needs: an access level and, if it names one, a family.
fn requirement(gw: &Gateway, method: &Method, path: &str) -> (Access, Option<String>) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::POST, ["v1", "reload"]) => (Access::Admin, None),
        (&Method::POST, ["v1", "plugins", family, "reload"]) => (Access::Admin, Some((*family).to_owned())),
        (&Method::POST, ["v1", "families", family, "ops", op]) => {
            // The plugin's own word on which ops write; an op it does not
            // describe needs write access.
            let read_only = gw
                .family(family)
                .and_then(|e| e.plugin.as_ref().ok().cloned())
                .is_some_and(|p| p.description().ops.iter().any(|o| o.name == *op && !o.writes));
            let access = if read_only { Access::Read } else { Access::Write };
            (access, Some((*family).to_owned()))
        }
        (_, ["v1", "families", family, ..]) => (Access::Read, Some((*family).to_owned())),
        _ => (Access::Read, None),
    }
}

/// The middleware: 401 without a valid token, 403 outside its scope.
pub async fn require_token(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token: Option<&Token> =
        presented.and_then(|p| gw.config.api.tokens.iter().find(|t| same_secret(&t.secret, p)));
    let Some(token) = token else {
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the TCP API needs `Authorization: Bearer <token>` with a token from [[api.tokens]]",
        )
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return resp;
    };
    let (access, family) = requirement(&gw, req.method(), req.uri().path());
    if token.access < access {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token '{}' has {:?} access; this needs {access:?}",
                token.name, token.access
            ),
        )
        .into_response();
    }
    if let Some(f) = family.filter(|f| !token.covers(f)) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token '{}' does not cover family '{f}'", token.name),
        )
        .into_response();
    }
    next.run(req).await
}
