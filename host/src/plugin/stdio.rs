//! A plugin's stdout and stderr, turned into log lines tagged with the
//! plugin's name instead of reaching the gateway's own terminal.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::log_limit::{LogLimiter, one_line};

/// A WASI output stream that logs each line.
#[derive(Clone)]
pub struct LogStream {
    plugin: Arc<str>,
    stream: &'static str,
    limiter: Arc<LogLimiter>,
    max_line: usize,
}

impl LogStream {
    /// A stream for `plugin`'s `stream` ("stdout" or "stderr"), lines cut
    /// at `max_line` bytes (the rest is counted, never buffered).
    pub fn new(plugin: Arc<str>, stream: &'static str, limiter: Arc<LogLimiter>, max_line: usize) -> Self {
        Self {
            plugin,
            stream,
            limiter,
            max_line,
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
            max_line: self.max_line,
            line: Vec::new(),
            cut: 0,
        })
    }
}

struct LineWriter {
    plugin: Arc<str>,
    stream: &'static str,
    limiter: Arc<LogLimiter>,
    max_line: usize,
    line: Vec<u8>,
    /// Bytes of the current line beyond `max_line`, dropped.
    cut: usize,
}

impl LineWriter {
    fn emit(&mut self) {
        let raw = String::from_utf8_lossy(&self.line);
        let mut text = one_line(raw.trim_end_matches(['\n', '\r']), self.max_line);
        if self.cut > 0 {
            text.push_str(&format!("... [{} more bytes cut]", self.cut));
        }
        self.limiter.emit(&self.plugin, || {
            if self.stream == "stderr" {
                tracing::warn!(plugin = %self.plugin, stream = self.stream, "{text}");
            } else {
                tracing::info!(plugin = %self.plugin, stream = self.stream, "{text}");
            }
        });
        self.line.clear();
        self.cut = 0;
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        for chunk in buf.split_inclusive(|&b| b == b'\n') {
            let room = self.max_line.saturating_sub(self.line.len());
            let kept = chunk.len().min(room);
            self.line.extend_from_slice(&chunk[..kept]);
            self.cut += chunk.len() - kept;
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
