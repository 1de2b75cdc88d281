//! Bearer tokens on the TCP API. The Unix socket is guarded by its file
//! mode and group instead, so it needs no token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode};
use super::extract::Visible;
use crate::config::{Access, Token};
use crate::gateway::Gateway;

/// Compare secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which families a request touches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    /// One family, named in the path.
    Family(String),
    /// Every family (reload all, metrics): the token must cover "*".
    All,
    /// A listing, filtered to the token's families by the handler.
    Listing,
    /// No family (an unknown path, answered 404 anyway).
    Nothing,
}

/// What a request needs: an access level and the families it touches.
fn requirement(gw: &Gateway, method: &Method, path: &str) -> (Access, Scope) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let family = |f: &str| Scope::Family(f.to_owned());
    match (method, parts.as_slice()) {
        (&Method::POST, ["v1", "reload"]) => (Access::Admin, Scope::All),
        (&Method::POST, ["v1", "plugins", f, "reload"]) => (Access::Admin, family(f)),
        (&Method::POST, ["v1", "families", f, "ops", op]) => {
            // The plugin's own word on which ops write; an op it does not
            // describe needs write access.
            let read_only = gw
                .family(f)
                .and_then(|e| e.plugin.as_ref().ok().cloned())
                .is_some_and(|p| p.description().ops.iter().any(|o| o.name == *op && !o.writes));
            let access = if read_only { Access::Read } else { Access::Write };
            (access, family(f))
        }
        (_, ["v1", "families", f, ..]) => (Access::Read, family(f)),
        (_, ["v1", "families"] | ["v1", "plugins"] | ["v1", "openapi.json"]) => {
            (Access::Read, Scope::Listing)
        }
        (_, ["metrics"]) => (Access::Read, Scope::All),
        _ => (Access::Read, Scope::Nothing),
    }
}

fn unauthorized(why: &str) -> Response {
    let mut resp = ApiError::new(
        ErrorCode::Unauthorized,
        format!("{why}: the TCP API needs one `Authorization: Bearer <token>` header with a token from [[api.tokens]]"),
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

fn forbidden(message: String) -> Response {
    ApiError::new(ErrorCode::Forbidden, message).into_response()
}

/// The token's secret from the one Authorization header, whose scheme is
/// matched without regard to case (RFC 9110).
fn presented(headers: &header::HeaderMap) -> Result<&str, &'static str> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let value = all.next().ok_or("no Authorization header")?;
    if all.next().is_some() {
        return Err("more than one Authorization header");
    }
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let (scheme, secret) = value
        .trim()
        .split_once(' ')
        .ok_or("the Authorization header is not `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization scheme is not Bearer");
    }
    Ok(secret.trim())
}

/// The middleware: 401 without a valid token, 403 outside its scope.
/// Listings learn the token's families through a [`Visible`] extension.
pub async fn require_token(State(gw): State<Arc<Gateway>>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let secret = match presented(req.headers()) {
        Ok(s) => s,
        Err(why) => return unauthorized(why),
    };
    let Some(token) = gw
        .config
        .api
        .tokens
        .iter()
        .find(|t| same_secret(&t.secret, secret))
    else {
        return unauthorized("the token is not one of [[api.tokens]]");
    };
    let token: Token = token.clone();
    let (access, scope) = requirement(&gw, req.method(), req.uri().path());
    if token.access < access {
        return forbidden(format!(
            "token '{}' has {:?} access; this needs {access:?}",
            token.name, token.access
        ));
    }
    match scope {
        Scope::Family(f) if !token.covers(&f) => {
            return forbidden(format!("token '{}' does not cover family '{f}'", token.name));
        }
        Scope::All if !token.covers_all() => {
            return forbidden(format!(
                "token '{}' is scoped to {:?}; this touches every family and needs a token with families = [\"*\"]",
                token.name, token.families
            ));
        }
        _ => {}
    }
    req.extensions_mut().insert(Visible::only(token.families));
    next.run(req).await
}
