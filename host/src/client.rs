//! A small HTTP/1.1 client over the gateway's Unix socket, for the CLI.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
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
