//! The endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::ApiError;
use crate::gateway::Gateway;
use crate::plugin::Event;

/// The API's routes over `gateway`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let max_body = gateway.config.api.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/families", get(families))
        .route("/v1/families/{family}", get(family))
        .route("/v1/families/{family}/ops/{op}", post(call))
        .route("/v1/families/{family}/events", get(events))
        .route("/v1/plugins", get(plugins))
        .route("/v1/plugins/{family}/reload", post(reload_plugin))
        .route("/v1/reload", post(reload_all))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(gateway)
}

async fn healthz(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let families = gw.families();
    let served = families.iter().filter(|(_, f)| f.plugin.is_ok()).count();
    Json(json!({
        "status": "ok",
        "families_served": served,
        "families_configured": families.len(),
        "families_loading": gw.loading().len(),
    }))
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        super::metrics::render(&gw),
    )
        .into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this endpoint does not take that method; see docs/api.md",
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
    let configured: BTreeMap<String, _> = gw.families().into_iter().collect();
    let plugin_of = |name: &str| {
        configured.get(name).map(|entry| match &entry.plugin {
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
    for name in configured.keys().filter(|n| !seen.contains(*n)) {
        out.push(json!({"name": name, "present": false, "plugin": plugin_of(name)}));
    }
    Ok(Json(Value::Array(out)))
}

async fn call(
    State(gw): State<Arc<Gateway>>,
    Path((family, op)): Path<(String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!(
                    "the request body exceeds {} bytes ([api] max_body_bytes)",
                    gw.config.api.max_body_bytes
                ),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad-body", e.body_text())
        }
    })?;
    let input = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad-json",
            "the request body is not UTF-8",
        )
    })?;
    let input = if input.trim().is_empty() { "null" } else { input };
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

/// One family: what the kernel says now, its plugin, its listener, and its
/// attribute policies.
async fn family(State(gw): State<Arc<Gateway>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let entry = gw.family(&name);
    let info = match gw.resolver.resolve(&name).await {
        Ok(info) => Some(info),
        Err(crate::families::ResolveError::Absent(_)) => None,
        Err(e) => return Err(ApiError::new(StatusCode::BAD_GATEWAY, "kernel", e.to_string())),
    };
    if info.is_none() && entry.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown-family",
            format!("the kernel has no family '{name}' and no family file configures it"),
        ));
    }
    let mut out = json!({"name": name, "present": info.is_some()});
    if let Some(f) = &info {
        out["id"] = f.id.into();
        out["version"] = f.version.into();
        out["hdrsize"] = f.hdrsize.into();
        out["maxattr"] = f.maxattr.into();
        out["ops"] = f
            .ops
            .iter()
            .map(|o| json!({"id": o.id, "flags": o.flags}))
            .collect();
        out["mcast_groups"] = f
            .mcast_groups
            .iter()
            .map(|g| json!({"name": g.name, "id": g.id}))
            .collect();
        out["policy"] = match gw.resolver.policies(&name).await {
            Ok(p) => serde_json::to_value(&*p).unwrap_or(Value::Null),
            Err(e) => json!({"error": e.to_string()}),
        };
    }
    if let Some(entry) = entry {
        out["plugin"] = match &entry.plugin {
            Ok(p) => serde_json::to_value(p.status()).unwrap_or(Value::Null),
            Err(reason) => {
                json!({"path": entry.config.plugin.display().to_string(), "state": "failed", "last_error": reason})
            }
        };
        if let Some(l) = &entry.listener {
            use std::sync::atomic::Ordering::Relaxed;
            out["listener"] = json!({
                "groups": l.joined(),
                "received": l.stats.received.load(Relaxed),
                "dropped": l.stats.dropped.load(Relaxed),
                "overruns": l.stats.overruns.load(Relaxed),
            });
        }
    }
    Ok(Json(out))
}

#[derive(serde::Deserialize)]
struct EventQuery {
    /// Comma-separated topics to keep; all when absent.
    topic: Option<String>,
}

/// Server-Sent Events of one family's plugin. A subscriber that falls more
/// than the backlog behind is sent a `lagged` event and cut off, so a slow
/// reader never holds the gateway or the other subscribers back.
async fn events(
    State(gw): State<Arc<Gateway>>,
    Path(family): Path<String>,
    Query(q): Query<EventQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ApiError> {
    if gw.family(&family).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown-family",
            format!("no plugin serves family '{family}', so it has no events"),
        ));
    }
    let topics: Option<Vec<String>> = q.topic.map(|t| {
        t.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let rx = gw.events.subscribe();
    let family: Arc<str> = family.into();
    let stream = stream::unfold(Some((rx, gw)), move |state| {
        let family = family.clone();
        let topics = topics.clone();
        async move {
            let (mut rx, gw) = state?;
            loop {
                match rx.recv().await {
                    Ok(ev)
                        if *ev.family == *family && topics.as_ref().is_none_or(|t| t.contains(&ev.topic)) =>
                    {
                        return Some((Ok(sse_event(&ev)), Some((rx, gw))));
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => {
                        gw.note_subscriber_cut_off(&family, n);
                        let ev = SseEvent::default().event("lagged").data(format!(
                            "{{\"error\":{{\"code\":\"lagged\",\"message\":\"subscriber fell {n} events behind and was cut off; reconnect\"}}}}"
                        ));
                        return Some((Ok(ev), None));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn sse_event(ev: &Event) -> SseEvent {
    // The payload was checked to be JSON when the plugin published it.
    let data = format!(
        "{{\"family\":{},\"topic\":{},\"payload\":{}}}",
        Value::from(&*ev.family),
        Value::from(ev.topic.as_str()),
        ev.payload
    );
    SseEvent::default().event(&ev.topic).data(data)
}

/// Every configured plugin with its state, hash, limits and restarts, the
/// family files that could not be read, and the compiled cache's counters.
async fn plugins(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let plugins: Vec<Value> = gw
        .families()
        .into_iter()
        .map(|(name, entry)| {
            let mut v = match &entry.plugin {
                Ok(p) => serde_json::to_value(p.status()).unwrap_or(Value::Null),
                Err(reason) => json!({"path": entry.config.plugin.display().to_string(), "state": "failed", "last_error": reason}),
            };
            v["family"] = name.into();
            v["file"] = entry.config.path.display().to_string().into();
            v
        })
        .collect();
    let broken: Vec<Value> = gw
        .broken_files()
        .into_iter()
        .map(|(file, error)| json!({"file": file.display().to_string(), "error": error}))
        .collect();
    Json(json!({
        "plugins": plugins,
        "broken_files": broken,
        "cache": {"compiled": gw.runtime.cache.compiled.load(Relaxed), "hits": gw.runtime.cache.hits.load(Relaxed)},
        "engine": {"pooling_allocator": gw.runtime.pooling, "fuel_metering": gw.runtime.fuel},
    }))
}

/// Reload one family's file and plugin; the old version keeps serving if
/// the new one fails.
async fn reload_plugin(
    State(gw): State<Arc<Gateway>>,
    Path(family): Path<String>,
) -> Result<Response, ApiError> {
    let outcome = gw.reload_family(&family).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown-family",
            format!("no family file configures '{family}'"),
        )
    })?;
    let status = if outcome.result == crate::gateway::ReloadResult::Failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)).into_response())
}

/// Re-read every family file (as SIGHUP does).
async fn reload_all(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    Json(json!(gw.reload().await))
}
