//! A plugin's stdout and stderr, turned into log lines tagged with the
//! plugin's name instead of reaching the gateway's own terminal.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::log_limit::LogLimiter;

/// Longest line kept; the rest of a longer line is cut, not buffered.
const MAX_LINE: usize = 4096;

/// A WASI output stream that logs each line.
#[derive(Clone)]
pub struct LogStream {
    plugin: Arc<str>,
    stream: &'static str,
    limiter: Arc<LogLimiter>,
}

impl LogStream {
    /// A stream for `plugin`'s `stream` ("stdout" or "stderr").
    pub fn new(plugin: Arc<str>, stream: &'static str, limiter: Arc<LogLimiter>) -> Self {
        Self {
            plugin,
            stream,
            limiter,
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            plugin: self.plugin.clone(),
            stream: self.stream,
            limiter: self.limiter.clone(),
            line: Vec::new(),
        })
    }
}

struct LineWriter {
    plugin: Arc<str>,
    stream: &'static str,
    limiter: Arc<LogLimiter>,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\n', '\r']);
        self.limiter.emit(&self.plugin, || {
            if self.stream == "stderr" {
                tracing::warn!(plugin = %self.plugin, stream = self.stream, "{text}");
            } else {
                tracing::info!(plugin = %self.plugin, stream = self.stream, "{text}");
            }
        });
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for chunk in buf.split_inclusive(|&b| b == b'\n') {
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.ends_with(b"\n") {
                self.emit();
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.line.is_empty() {
            self.emit();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}
