//! A small HTTP/1.1 client over the gateway's Unix socket, for the CLI.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

/// Why the gateway could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "cannot connect to the gateway at {path}: {cause} (is `genl-gateway serve` running? pass --socket)"
    )]
    Connect {
        /// The socket.
        path: String,
        /// The OS error; in the message, not chained as a source, so it is
        /// printed once.
        cause: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to the gateway: {0}")]
    Http(String),
}

/// Open a connection and send one request.
async fn send(
    socket: &Path,
    method: Method,
    path: &str,
    accept: &str,
    body: Option<String>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|cause| ClientError::Connect {
            path: socket.display().to_string(),
            cause,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "genl-gateway")
        .header("accept", accept)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))
}

async fn collect(body: hyper::body::Incoming) -> Result<Bytes, ClientError> {
    Ok(body
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes())
}

/// Send `method path` with an optional JSON body; returns status and body.
pub async fn request(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let resp = send(socket, method, path, "application/json", body).await?;
    let status = resp.status();
    Ok((status, collect(resp.into_body()).await?))
}

/// Follow the Server-Sent Events at `path`, calling `on_event(name, data)`
/// for each; stops when it returns false or the stream ends. An error
/// status is returned with its body.
pub async fn follow_events(
    socket: &Path,
    path: &str,
    mut on_event: impl FnMut(&str, &str) -> bool,
) -> Result<Option<(StatusCode, Bytes)>, ClientError> {
    let resp = send(socket, Method::GET, path, "text/event-stream", None).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        return Ok(Some((status, collect(body).await?)));
    }
    // Bytes, not text: a UTF-8 character may be split across chunks, but
    // an event always ends at an ASCII blank line.
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
        let Some(chunk) = frame.data_ref() else { continue };
        buf.extend_from_slice(chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let raw: Vec<u8> = buf.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&raw);
            let mut name = "message";
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim_start();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            // Comment-only blocks (keep-alives) carry no data.
            if !data.is_empty() && !on_event(name, &data.join("\n")) {
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// An operation's input fields, one line each, from its input schema:
/// `path  type  constraints`, nested sets indented below their field
/// (a set nested in itself is shown once).
pub fn input_fields(schema: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let mut seen = Vec::new();
    fields(schema, schema, "", 0, &mut seen, &mut lines);
    lines
}

/// Deepest nesting shown; deeper sets are named, not expanded.
const MAX_FIELD_DEPTH: usize = 4;

fn deref<'a>(root: &'a Value, s: &'a Value) -> (&'a Value, Option<&'a str>) {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => (
            r.strip_prefix('#').and_then(|p| root.pointer(p)).unwrap_or(s),
            Some(r),
        ),
        None => (s, None),
    }
}

fn describe_type(root: &Value, s: &Value) -> String {
    let (s, _) = deref(root, s);
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        return any
            .iter()
            .map(|x| describe_type(root, x))
            .collect::<Vec<_>>()
            .join(" | ");
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = e
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect();
        return format!("one of [{}]", names.join(", "));
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("|"),
        _ => "any".to_owned(),
    };
    let mut out = ty.clone();
    if let (Some(lo), Some(hi)) = (s.get("minimum"), s.get("maximum")) {
        out = format!("{out} {lo}..={hi}");
    }
    if let Some(n) = s.get("maxLength") {
        out = format!("{out} (at most {n} characters)");
    }
    if let Some(f) = s.get("format").and_then(Value::as_str) {
        out = format!("{out} ({f})");
    }
    if s.get("pattern").is_some() {
        out = format!("{out} (hex bytes)");
    }
    if ty == "array"
        && let Some(items) = s.get("items")
    {
        out = format!("array of {}", describe_type(root, items));
    }
    out
}

fn fields(
    root: &Value,
    s: &Value,
    prefix: &str,
    depth: usize,
    seen: &mut Vec<String>,
    lines: &mut Vec<String>,
) {
    let (s, _) = deref(root, s);
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, sub) in props {
        let path = format!("{prefix}{name}");
        let (target, r) = deref(root, sub);
        let nested = target.get("properties").is_some();
        let mut line = format!("{:indent$}{path}", "", indent = 2 * depth);
        if nested {
            line.push_str("  object");
        } else {
            line = format!("{line}  {}", describe_type(root, sub));
        }
        if required.contains(&name.as_str()) {
            line.push_str("  (required)");
        }
        if let Some(d) = target.get("description").and_then(Value::as_str) {
            line = format!("{line}  -- {d}");
        }
        lines.push(line);
        if nested {
            let key = r.unwrap_or_default().to_owned();
            if depth + 1 >= MAX_FIELD_DEPTH || (!key.is_empty() && seen.contains(&key)) {
                continue;
            }
            seen.push(key);
            fields(root, target, &format!("{path}."), depth + 1, seen, lines);
            seen.pop();
        }
    }
}
