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
        "cannot connect to the gateway at {path}: {source} (is `genl-gateway serve` running? pass --socket)"
    )]
    Connect {
        /// The socket.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to the gateway: {0}")]
    Http(String),
}

/// Send `method path` with an optional JSON body; returns status and body.
pub async fn request(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.display().to_string(),
            source,
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
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}
