//! The endpoints.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::error::{ApiError, ErrorCode};
use super::event_bus::{ConnClose, EventBus, QueueLimits, Received};
use super::extract::{ApiPath, ApiQuery, Visible, check_family_name};
use super::strict_json;
use crate::gateway::Gateway;
use crate::plugin::{CallOutput, Event, OutputFormat, OutputSink};

/// The API's routes over `gateway`. Starts the event fan-out, so it must
/// be called inside the Tokio runtime.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let max_body = gateway.config.api.max_body_bytes;
    let bus = EventBus::start(
        gateway.clone(),
        QueueLimits {
            events: gateway.config.api.event_backlog,
            bytes: gateway.config.api.event_backlog_bytes,
        },
    );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/families", get(families))
        .route("/v1/families/{family}", get(family))
        .route("/v1/families/{family}/ops/{op}", post(call))
        .route("/v1/families/{family}/ops/{op}/schema", get(op_schema))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/families/{family}/events", get(events))
        .route("/v1/plugins", get(plugins))
        .route("/v1/plugins/{family}/reload", post(reload_plugin))
        .route("/v1/reload", post(reload_all))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(Extension(bus))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            refuse_declared_oversize,
        ))
        .with_state(gateway)
}

/// A body declared larger than `[api] max_body_bytes` is refused before a
/// byte of it is read.
async fn refuse_declared_oversize(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let max = gw.config.api.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large(max).into_response();
    }
    next.run(req).await
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("the request body exceeds {max} bytes ([api] max_body_bytes)"),
    )
}

/// Read a request body of at most `max` bytes within `deadline`.
async fn read_body(body: Body, max: usize, deadline: Duration) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, max);
    match tokio::time::timeout(deadline, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::BodyTimeout,
            format!(
                "the request body did not arrive within {} ms ([api] body_timeout_ms)",
                deadline.as_millis()
            ),
        )),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large(max)),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorCode::BadBody,
            format!("reading the request body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

async fn healthz(State(gw): State<Arc<Gateway>>) -> Json<Value> {
    let families = gw.families();
    let served = families.iter().filter(|(_, f)| f.plugin.is_ok()).count();
    // The bus is reported, never a reason for "not ok": the local API
    // serves the same with or without it.
    let bus = gw.bus.as_ref().map(|b| b.status());
    Json(json!({
        "status": "ok",
        "families_served": served,
        "families_configured": families.len(),
        "families_loading": gw.loading().len(),
        "bus": bus,
    }))
}

/// `/metrics` shows every family: on TCP it needs a token covering "*"
/// (checked by the token middleware).
async fn metrics(State(gw): State<Arc<Gateway>>, Extension(bus): Extension<Arc<EventBus>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        super::metrics::render(&gw, &bus),
    )
        .into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that method; see docs/api.md",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NoSuchEndpoint, "no such endpoint; see docs/api.md")
}

/// Every family the kernel has, plus configured families it does not have,
/// each with the plugin that serves it; a scoped token sees only its own.
async fn families(State(gw): State<Arc<Gateway>>, visible: Visible) -> Result<Json<Value>, ApiError> {
    let kernel = gw
        .resolver
        .list()
        .await
        .map_err(|e| ApiError::new(ErrorCode::Kernel, format!("listing families: {e}")))?;
    let kernel: Vec<_> = kernel.into_iter().filter(|f| visible.sees(&f.name)).collect();
    let configured: BTreeMap<String, _> = gw
        .families()
        .into_iter()
        .filter(|(n, _)| visible.sees(n))
        .collect();
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

/// Body chunks (a batch of items each, usually one dump part) queued
/// between a plugin streaming its output and the client; when they are
/// full the plugin waits.
const OUTPUT_QUEUE: usize = 4;

/// The NDJSON media type a client asks for with `Accept`.
const NDJSON: &str = "application/x-ndjson";

/// Whether the client asked for one item a line.
fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(NDJSON))
        })
}

/// A document as one NDJSON line: raw line breaks in JSON are whitespace.
fn one_json_line(doc: &str) -> String {
    let mut line: String = doc
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    line.push('\n');
    line
}

async fn call(
    State(gw): State<Arc<Gateway>>,
    ApiPath((family, op)): ApiPath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_family_name(&family)?;
    let api = &gw.config.api;
    let body = read_body(body, api.max_body_bytes, api.body_timeout).await?;
    let input = checked_input(&gw, &family, &op, &body)?;
    let format = if wants_ndjson(&headers) {
        OutputFormat::Ndjson
    } else {
        OutputFormat::JsonArray
    };
    let content_type = match format {
        OutputFormat::Ndjson => NDJSON,
        OutputFormat::JsonArray => "application/json",
    };
    // The call runs in a task of its own: a client that goes away mid-call
    // closes the stream, which the plugin sees, instead of dropping the
    // call halfway through a wasm entry point.
    let (tx, mut rx) = mpsc::channel(OUTPUT_QUEUE);
    let task = {
        let (gw, family, op, input) = (gw.clone(), family.clone(), op.clone(), input.to_owned());
        tokio::spawn(async move {
            gw.call_with_output(&family, &op, &input, OutputSink::Stream { tx, format })
                .await
        })
    };
    // The task has its own copy: one copy of the input per call, not two.
    drop(body);
    let Some(first) = rx.recv().await else {
        // The call ended without streaming: its status and body are whole.
        let output = match call_result(&family, task.await)? {
            CallOutput::Document(doc) => {
                check_plugin_output(&family, &op, &doc)?;
                match format {
                    OutputFormat::JsonArray => doc,
                    OutputFormat::Ndjson => one_json_line(&doc),
                }
            }
            CallOutput::Streamed { .. } => match format {
                OutputFormat::JsonArray => "[]".to_owned(),
                OutputFormat::Ndjson => String::new(),
            },
        };
        return Ok(([(header::CONTENT_TYPE, content_type)], output).into_response());
    };
    let body = streamed_body(family, op, first, rx, task, format);
    Ok(([(header::CONTENT_TYPE, content_type)], Body::from_stream(body)).into_response())
}

/// A call task's result as the API answers it.
fn call_result(
    family: &str,
    joined: Result<Result<CallOutput, crate::gateway::CallError>, tokio::task::JoinError>,
) -> Result<CallOutput, ApiError> {
    match joined {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(
            ErrorCode::PluginCrashed,
            format!("the call into the plugin of family '{family}' failed in the gateway: {e}"),
        )),
    }
}

/// A 200 whose body is the items as the plugin streams them, then the end:
/// `]` for a JSON array; after a failure, an `{"error": ...}` line for
/// NDJSON, and for a JSON array an aborted body (no closing `]`), so the
/// client sees invalid JSON rather than a short list it could trust.
fn streamed_body(
    family: String,
    op: String,
    first: Vec<u8>,
    rx: mpsc::Receiver<Vec<u8>>,
    task: tokio::task::JoinHandle<Result<CallOutput, crate::gateway::CallError>>,
    format: OutputFormat,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct Streaming {
        first: Option<Vec<u8>>,
        rx: mpsc::Receiver<Vec<u8>>,
        task: tokio::task::JoinHandle<Result<CallOutput, crate::gateway::CallError>>,
    }
    let state = Streaming {
        first: Some(first),
        rx,
        task,
    };
    stream::unfold(Some(state), move |state| {
        let (family, op) = (family.clone(), op.clone());
        async move {
            let mut state = state?;
            if let Some(chunk) = state.first.take() {
                return Some((Ok(Bytes::from(chunk)), Some(state)));
            }
            if let Some(chunk) = state.rx.recv().await {
                return Some((Ok(Bytes::from(chunk)), Some(state)));
            }
            // The stream closed: the call is over.
            let end = match call_result(&family, (&mut state.task).await) {
                Ok(_) => match format {
                    OutputFormat::JsonArray => Ok(Bytes::from_static(b"]")),
                    OutputFormat::Ndjson => return None,
                },
                Err(e) => {
                    tracing::warn!(family, op, code = %e.code, "a streamed output failed after it started: {}", e.message);
                    match format {
                        OutputFormat::Ndjson => Ok(Bytes::from(one_json_line(&e.to_json().to_string()))),
                        OutputFormat::JsonArray => {
                            Err(std::io::Error::other(format!("{}: {}", e.code, e.message)))
                        }
                    }
                }
            };
            Some((end, None))
        }
    })
}

/// The request body `body` as the input of `op`, checked as the API checks
/// it (family name, UTF-8, strict JSON, the op's input schema): the one
/// path the HTTP API and bus calls share.
fn checked_input<'a>(gw: &Gateway, family: &str, op: &str, body: &'a [u8]) -> Result<&'a str, ApiError> {
    check_family_name(family)?;
    let input = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(ErrorCode::BadJson, "the request body is not UTF-8"))?;
    let input = if input.trim().is_empty() { "null" } else { input };
    strict_json::check(input).map_err(|e| {
        ApiError::new(
            ErrorCode::BadJson,
            format!("the request body is not acceptable JSON: {e}"),
        )
    })?;
    check_input(gw, family, op, input)?;
    Ok(input)
}

/// One call of `op` with the request body `body`, its output collected
/// into one document and checked: what a bus call answers with.
pub(crate) async fn run_call(gw: &Gateway, family: &str, op: &str, body: &[u8]) -> Result<String, ApiError> {
    let input = checked_input(gw, family, op, body)?;
    let output = gw.call(family, op, input).await?;
    check_plugin_output(family, op, &output)?;
    Ok(output)
}

/// The operation's input schema, if its plugin gave one, refuses input that
/// does not fit before the plugin runs; the message names the field.
fn check_input(gw: &Gateway, family: &str, op: &str, input: &str) -> Result<(), ApiError> {
    let Some(schema) = gw
        .family(family)
        .and_then(|e| e.plugin.as_ref().ok().cloned())
        .and_then(|p| {
            p.description()
                .ops
                .iter()
                .find(|o| o.name == op)
                .and_then(|o| o.input_schema.clone())
        })
    else {
        return Ok(());
    };
    let value: Value = serde_json::from_str(input).map_err(|e| {
        ApiError::new(
            ErrorCode::BadJson,
            format!("the request body is not acceptable JSON: {e}"),
        )
    })?;
    schema.check(&value).map_err(|refusal| {
        ApiError::new(
            ErrorCode::BadInput,
            format!("{refusal} (the input schema of '{op}': GET /v1/families/{family}/ops/{op}/schema)"),
        )
    })
}

/// The plugin serving `family` and its description of `op`.
fn described_op(gw: &Gateway, family: &str, op: &str) -> Result<crate::plugin::OpDescription, ApiError> {
    let entry = gw.family(family).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownFamily,
            format!("no plugin serves family '{family}'"),
        )
    })?;
    let plugin = entry.plugin.as_ref().map_err(|reason| {
        ApiError::new(
            ErrorCode::PluginUnavailable,
            format!("the plugin of '{family}' did not load: {reason}"),
        )
    })?;
    plugin
        .description()
        .ops
        .iter()
        .find(|o| o.name == op)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownOp,
                format!(
                    "the plugin of '{family}' has no operation '{op}'; GET /v1/families/{family} lists them"
                ),
            )
        })
}

/// One operation's input and output schemas (null where the plugin gave
/// none: it checks its input itself).
async fn op_schema(
    State(gw): State<Arc<Gateway>>,
    ApiPath((family, op)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_family_name(&family)?;
    let o = described_op(&gw, &family, &op)?;
    Ok(Json(json!({
        "family": family,
        "op": o.name,
        "summary": o.summary,
        "writes": o.writes,
        "input": o.input_schema.as_ref().map(|s| s.document().clone()),
        "output": o.output_schema.as_deref().cloned(),
    })))
}

/// The whole gateway as one OpenAPI 3.1 document; a scoped token sees its
/// own families' operations only.
async fn openapi(State(gw): State<Arc<Gateway>>, visible: Visible) -> Json<Value> {
    let plugins: Vec<(String, Arc<crate::plugin::LoadedPlugin>)> = gw
        .families()
        .into_iter()
        .filter(|(n, _)| visible.sees(n))
        .filter_map(|(n, e)| e.plugin.as_ref().ok().cloned().map(|p| (n, p)))
        .collect();
    let families: Vec<super::openapi::FamilyOps<'_>> = plugins
        .iter()
        .map(|(n, p)| super::openapi::FamilyOps {
            family: n,
            ops: &p.description().ops,
        })
        .collect();
    Json(super::openapi::document(env!("CARGO_PKG_VERSION"), &families))
}

/// Only JSON is labelled JSON: a plugin that wrote something else is
/// reported as `bad-plugin-output`, not passed on.
fn check_plugin_output(family: &str, op: &str, output: &str) -> Result<(), ApiError> {
    crate::plugin::json_check::check(output).map_err(|e| {
        tracing::warn!(family, op, error = %e, "the plugin's output is not JSON");
        ApiError::new(
            ErrorCode::BadPluginOutput,
            format!("the plugin of family '{family}' answered '{op}' with something that is not JSON ({e}); report it to the plugin's author"),
        )
    })
}

/// One family: what the kernel says now, its plugin, its listener, and its
/// attribute policies.
async fn family(
    State(gw): State<Arc<Gateway>>,
    Extension(bus): Extension<Arc<EventBus>>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    check_family_name(&name)?;
    let entry = gw.family(&name);
    let info = match gw.resolver.resolve(&name).await {
        Ok(info) => Some(info),
        Err(crate::families::ResolveError::Absent(_)) => None,
        Err(e) => return Err(ApiError::new(ErrorCode::Kernel, e.to_string())),
    };
    if info.is_none() && entry.is_none() {
        return Err(ApiError::new(
            ErrorCode::UnknownFamily,
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
        out["events"] = json!({"subscribers": bus.subscribers(&name)});
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

/// Server-Sent Events of one family's plugin. A subscriber whose queue
/// fills (it stopped reading, or reads slower than the family publishes)
/// is sent a `lagged` event and cut off, so a slow reader never holds the
/// gateway or the other subscribers back.
async fn events(
    State(gw): State<Arc<Gateway>>,
    Extension(bus): Extension<Arc<EventBus>>,
    close: Option<Extension<ConnClose>>,
    ApiPath(family): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ApiError> {
    check_family_name(&family)?;
    if gw.family(&family).is_none() {
        return Err(ApiError::new(
            ErrorCode::UnknownFamily,
            format!("no plugin serves family '{family}', so it has no events"),
        ));
    }
    let topics = q.topic.as_deref().map(subscribed_topics).transpose()?;
    let sub = bus.subscribe(&family, topics, close.map(|Extension(c)| c));
    let stream = stream::unfold(Some(sub), |state| async move {
        let mut sub = state?;
        match sub.next().await? {
            Received::Event(ev) => Some((Ok(sse_event(&ev)), Some(sub))),
            Received::Lagged => {
                let ev = SseEvent::default().event("lagged").data(
                    "{\"error\":{\"code\":\"lagged\",\"message\":\"this subscriber fell behind (its queue, [api] event_backlog events or event_backlog_bytes, filled) and was cut off; reconnect\"}}",
                );
                Some((Ok(ev), None))
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Most topics one subscription may name. Every event of the family is
/// matched against them in the fan-out all families share: a probe's 128
/// subscriptions of 32,700 topics each delayed another user's event by 58 s.
const MAX_SUBSCRIBED_TOPICS: usize = 64;

/// The topics of `?topic=a,b`, within bounds (a plugin's topics are names
/// of at most [`crate::plugin::MAX_TOPIC`] bytes).
fn subscribed_topics(list: &str) -> Result<HashSet<String>, ApiError> {
    let mut topics = HashSet::new();
    for t in list.split(',').filter(|t| !t.is_empty()) {
        if t.len() > crate::plugin::MAX_TOPIC {
            return Err(ApiError::new(
                ErrorCode::BadQuery,
                format!(
                    "topic '{}...' is longer than any topic a plugin may publish ({} bytes)",
                    &t[..t.floor_char_boundary(32)],
                    crate::plugin::MAX_TOPIC
                ),
            ));
        }
        topics.insert(t.to_owned());
        if topics.len() > MAX_SUBSCRIBED_TOPICS {
            return Err(ApiError::new(
                ErrorCode::BadQuery,
                format!(
                    "more than {MAX_SUBSCRIBED_TOPICS} topics; subscribe to all (no ?topic=) or to fewer"
                ),
            ));
        }
    }
    Ok(topics)
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
/// A scoped token sees only its families, and no broken files (which name
/// no family it could be shown).
async fn plugins(State(gw): State<Arc<Gateway>>, visible: Visible) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let plugins: Vec<Value> = gw
        .families()
        .into_iter()
        .filter(|(n, _)| visible.sees(n))
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
        .filter(|_| visible.sees("*"))
        .map(|(file, error)| json!({"file": file.display().to_string(), "error": error}))
        .collect();
    Json(json!({
        "plugins": plugins,
        "broken_files": broken,
        "cache": {"compiled": gw.runtime.cache.compiled.load(Relaxed), "hits": gw.runtime.cache.hits.load(Relaxed)},
        "engine": {"pooling_allocator": gw.runtime.pooling, "fuel_metering": gw.runtime.fuel},
        // Shown to a token covering every family only: it names the host.
        "bus": gw.bus.as_ref().filter(|_| visible.sees("*")).map(|b| b.status()),
    }))
}

/// Reload one family's file and plugin; the old version keeps serving if
/// the new one fails.
async fn reload_plugin(
    State(gw): State<Arc<Gateway>>,
    ApiPath(family): ApiPath<String>,
) -> Result<Response, ApiError> {
    check_family_name(&family)?;
    let outcome = gw.reload_family(&family).await.ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownFamily,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_output_that_is_not_json_is_a_502() {
        assert!(check_plugin_output("f", "op", r#"{"a": [1, 2]}"#).is_ok());
        for bad in ["", "{", "hello", "{} trailing"] {
            let e = check_plugin_output("f", "op", bad).unwrap_err();
            assert_eq!(e.code, "bad-plugin-output");
            assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        }
    }
}
