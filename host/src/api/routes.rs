//! The endpoints.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::ApiError;
use crate::gateway::Gateway;

/// The API's routes over `gateway`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let max_body = gateway.config.api.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/families", get(families))
        .route("/v1/families/{family}/ops/{op}", post(call))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(gateway)
}

async fn healthz(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let served = gw.families.values().filter(|f| f.plugin.is_ok()).count();
    Json(
        json!({"status": "ok", "families_served": served, "families_configured": gw.families.len()}),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no-such-endpoint",
        "no such endpoint; see docs/api.md",
    )
}

/// Every family the kernel has, plus configured families it does not have,
/// each with the plugin that serves it.
async fn families(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let kernel = gw.resolver.list().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "kernel",
            format!("listing families: {e}"),
        )
    })?;
    let plugin_of = |name: &str| {
        gw.families.get(name).map(|entry| match &entry.plugin {
            Ok(p) => serde_json::to_value(p.status()).unwrap_or(Value::Null),
            Err(reason) => json!({"path": entry.config.plugin.display().to_string(), "state": "failed", "last_error": reason}),
        })
    };
    let mut seen = BTreeSet::new();
    let mut out: Vec<Value> = kernel
        .iter()
        .map(|f| {
            seen.insert(f.name.clone());
            json!({
                "name": f.name,
                "present": true,
                "id": f.id,
                "version": f.version,
                "hdrsize": f.hdrsize,
                "maxattr": f.maxattr,
                "ops": f.ops.iter().map(|o| json!({"id": o.id, "flags": o.flags})).collect::<Vec<_>>(),
                "mcast_groups": f.mcast_groups.iter().map(|g| json!({"name": g.name, "id": g.id})).collect::<Vec<_>>(),
                "plugin": plugin_of(&f.name),
            })
        })
        .collect();
    for name in gw.families.keys().filter(|n| !seen.contains(*n)) {
        out.push(json!({"name": name, "present": false, "plugin": plugin_of(name)}));
    }
    Ok(Json(Value::Array(out)))
}

async fn call(
    State(gw): State<Arc<Gateway>>,
    Path((family, op)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            "the request body is not UTF-8",
        )
    })?;
    let input = if input.trim().is_empty() {
        "null"
    } else {
        input
    };
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(input) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            format!("the request body is not JSON: {e}"),
        ));
    }
    let output = gw.call(&family, &op, input).await?;
    // The plugin's output is JSON already (the SDK serialised it); pass it
    // through without re-parsing.
    Ok(([(header::CONTENT_TYPE, "application/json")], output).into_response())
}
