//! A call's streamed output: the items a plugin sends with `output.items`
//! while `call` runs, written as they come, either into a bounded channel
//! to the client (a JSON array written incrementally, or NDJSON) or, for
//! callers that want one document, collected into a JSON array.

use std::time::Duration;

use tokio::sync::mpsc;

use super::json_check;

/// How streamed items are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// One JSON array: `[` before the first item, `,` between items; the
    /// caller writes the closing `]` (or `[]` when there was none).
    JsonArray,
    /// One item a line (`application/x-ndjson`).
    Ndjson,
}

/// What a successful call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutput {
    /// One JSON document (a `do`, or a collected stream).
    Document(String),
    /// Items, already sent to the stream; `items` says how many.
    Streamed {
        /// How many items were sent.
        items: u64,
    },
}

/// Where a call's items go.
#[derive(Debug)]
pub enum OutputSink {
    /// Collected into one JSON array of at most `max_bytes` (the whole
    /// output, as for a plugin that returns one document).
    Collect,
    /// Sent to the client through a bounded channel: a full channel makes
    /// the plugin wait, which counts against its deadline.
    Stream {
        /// The channel of body chunks.
        tx: mpsc::Sender<Vec<u8>>,
        /// How to write items.
        format: OutputFormat,
    },
}

impl OutputSink {
    /// Resolves once no one will read the output: the client of a stream
    /// went away. Never resolves for a collected output.
    pub async fn reader_gone(&self) {
        match self {
            Self::Collect => std::future::pending().await,
            Self::Stream { tx, .. } => tx.closed().await,
        }
    }
}

/// Why an output ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFault {
    /// The client went away (the response body was dropped).
    ClientGone,
    /// The client read too slowly: a batch waited this long for room, as
    /// long as the call's deadline allowed.
    ClientTooSlow(Duration),
    /// The plugin sent something unusable; the reason says what.
    BadOutput(String),
}

/// The output of one running call.
#[derive(Debug)]
pub struct CallOutputState {
    sink: OutputSink,
    /// Largest batch (streamed) or whole output (collected), in bytes.
    max_bytes: usize,
    /// What has been collected (`Collect` only), without the closing `]`.
    collected: String,
    items: u64,
    fault: Option<OutputFault>,
}

impl CallOutputState {
    /// An output into `sink`, bounded by `max_bytes` (limits.output_kib).
    pub fn new(sink: OutputSink, max_bytes: usize) -> Self {
        Self {
            sink,
            max_bytes,
            collected: String::new(),
            items: 0,
            fault: None,
        }
    }

    /// Send one batch of items, waiting at most `wait` for the client to
    /// make room. An error ends the output: the plugin should stop, and the
    /// call fails with the fault.
    pub async fn send(&mut self, items: Vec<String>, wait: Duration) -> Result<(), String> {
        self.send_batch(Batch::Each(&items), wait).await
    }

    /// Send the items written one after another in `text` (each one JSON
    /// document, separated by whitespace), as [`CallOutputState::send`].
    pub async fn send_joined(&mut self, text: String, wait: Duration) -> Result<(), String> {
        self.send_batch(Batch::Joined(&text), wait).await
    }

    async fn send_batch(&mut self, batch: Batch<'_>, wait: Duration) -> Result<(), String> {
        if let Some(fault) = &self.fault {
            return Err(fault_message(fault));
        }
        self.write(batch, wait).await.map_err(|fault| {
            let msg = fault_message(&fault);
            self.fault = Some(fault);
            msg
        })
    }

    async fn write(&mut self, batch: Batch<'_>, wait: Duration) -> Result<(), OutputFault> {
        let size = batch.size();
        if size > self.max_bytes {
            return Err(OutputFault::BadOutput(format!(
                "a batch of items of {size} bytes, over its {}-byte limit (limits.output_kib); send smaller batches",
                self.max_bytes
            )));
        }
        let (tx, format) = match &self.sink {
            OutputSink::Collect => return self.collect(batch, size),
            OutputSink::Stream { tx, format } => (tx, *format),
        };
        let mut chunk = Vec::with_capacity(size + size / 32 + 1);
        for item in batch.items() {
            let item = item.map_err(|e| OutputFault::BadOutput(format!("an item is not JSON ({e})")))?;
            match format {
                OutputFormat::JsonArray => {
                    chunk.push(if self.items == 0 { b'[' } else { b',' });
                    chunk.extend_from_slice(item.as_bytes());
                }
                OutputFormat::Ndjson => {
                    // A raw line break in JSON is whitespace (inside strings
                    // it is always escaped), so a space keeps the meaning.
                    chunk.extend(
                        item.bytes()
                            .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
                    );
                    chunk.push(b'\n');
                }
            }
            self.items += 1;
        }
        if chunk.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(wait, tx.send(chunk)).await {
            Ok(sent) => sent.map_err(|_| OutputFault::ClientGone),
            Err(_) => Err(OutputFault::ClientTooSlow(wait)),
        }
    }

    /// Add a batch to the collected array, each item copied once, straight
    /// from the plugin's checked text: no chunk per batch, and no second
    /// UTF-8 check of the whole array at the end. `size` is the batch's, as
    /// [`Batch::size`] gave it to the caller.
    fn collect(&mut self, batch: Batch<'_>, size: usize) -> Result<(), OutputFault> {
        let (before, items_before) = (self.collected.len(), self.items);
        // Room for the whole batch at once (an item's comma takes about
        // the place of the whitespace that ended it in the text), capped
        // at the limit: one growth a batch, never past the limit.
        let room = self.max_bytes.saturating_sub(before);
        self.collected.reserve(size.saturating_add(1).min(room));
        let written = batch.items().try_for_each(|item| {
            let item = item.map_err(|e| OutputFault::BadOutput(format!("an item is not JSON ({e})")))?;
            // With the closing bracket still to come.
            if self.collected.len() + 1 + item.len() + 1 > self.max_bytes {
                return Err(OutputFault::BadOutput(format!(
                    "the collected output exceeds its {}-byte limit (limits.output_kib); stream it over HTTP instead",
                    self.max_bytes
                )));
            }
            self.collected.push(if self.items == 0 { '[' } else { ',' });
            self.collected.push_str(item);
            self.items += 1;
            Ok(())
        });
        if written.is_err() {
            // A batch is taken whole or not at all.
            self.collected.truncate(before);
            self.items = items_before;
        }
        written
    }

    /// The call returned an error: the fault that ended the output, if one
    /// did (the plugin's error is then only its consequence).
    pub fn finish_with_error(self) -> Option<OutputFault> {
        self.fault
    }

    /// The call returned: its output, given what it returned (`None` for
    /// "the items"), or the fault that ended it.
    pub fn finish(self, returned: Option<String>) -> Result<CallOutput, OutputFault> {
        if let Some(fault) = self.fault {
            return Err(fault);
        }
        match (returned, &self.sink) {
            (Some(_), _) if self.items > 0 => Err(OutputFault::BadOutput(
                "it sent items and then returned a document; return `items` after sending items".into(),
            )),
            (Some(doc), _) => Ok(CallOutput::Document(doc)),
            (None, OutputSink::Collect) => {
                let mut out = self.collected;
                if out.is_empty() {
                    out.push('[');
                }
                out.push(']');
                Ok(CallOutput::Document(out))
            }
            (None, OutputSink::Stream { .. }) => Ok(CallOutput::Streamed { items: self.items }),
        }
    }
}

/// One batch of items from the plugin.
#[derive(Clone, Copy)]
enum Batch<'a> {
    /// One string an item (`output.items`).
    Each(&'a [String]),
    /// The items one after another in one text (`output.items-joined`).
    Joined(&'a str),
}

impl<'a> Batch<'a> {
    fn size(self) -> usize {
        match self {
            Self::Each(items) => items.iter().map(String::len).sum(),
            Self::Joined(text) => text.len(),
        }
    }

    /// Each item's text, checked to be one JSON value (the first that is
    /// not ends the batch).
    fn items(self) -> Box<dyn Iterator<Item = Result<&'a str, json_check::JsonError>> + 'a> {
        match self {
            Self::Each(items) => Box::new(
                items
                    .iter()
                    .map(|item| json_check::check(item).map(|()| item.as_str())),
            ),
            Self::Joined(text) => Box::new(json_check::values(text)),
        }
    }
}

fn fault_message(fault: &OutputFault) -> String {
    match fault {
        OutputFault::ClientGone => "the client went away; the output is over".into(),
        OutputFault::ClientTooSlow(wait) => {
            format!(
                "the client did not read for {wait:?}, as long as the call's deadline allowed; the output is over"
            )
        }
        OutputFault::BadOutput(why) => format!("the output is refused: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn items(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    /// An output streamed as `format` into a channel of `queue` chunks.
    fn streamed(
        format: OutputFormat,
        queue: usize,
        max_bytes: usize,
    ) -> (CallOutputState, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(queue);
        (
            CallOutputState::new(OutputSink::Stream { tx, format }, max_bytes),
            rx,
        )
    }

    #[tokio::test]
    async fn collected_items_make_one_json_array() {
        let mut out = CallOutputState::new(OutputSink::Collect, 1000);
        out.send(items(&["1", "{\"a\":2}"]), WAIT).await.unwrap();
        out.send(items(&["[3]"]), WAIT).await.unwrap();
        assert_eq!(
            out.finish(None),
            Ok(CallOutput::Document("[1,{\"a\":2},[3]]".into()))
        );
        let empty = CallOutputState::new(OutputSink::Collect, 1000);
        assert_eq!(empty.finish(None), Ok(CallOutput::Document("[]".into())));
    }

    #[tokio::test]
    async fn ndjson_items_are_one_line_each() {
        let (mut out, mut rx) = streamed(OutputFormat::Ndjson, 4, 1000);
        out.send(items(&["{\n \"a\": \"x\\ny\"\n}", "2"]), WAIT)
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap(), b"{  \"a\": \"x\\ny\" }\n2\n");
        assert_eq!(out.finish(None), Ok(CallOutput::Streamed { items: 2 }));
    }

    /// Items joined in one text reach the client as the same items: each
    /// value as serde_json reads the text, whatever whitespace (or none,
    /// between self-delimiting values) separates them.
    #[tokio::test]
    async fn joined_items_are_the_values_of_the_text_in_order() {
        let text = "1 {\"a\":2}\n[3]\n\"x\"\"y\"\t{\n \"b\": \"p\\nq\"\n}\n  \n";
        let expected: Vec<serde_json::Value> = serde_json::Deserializer::from_str(text)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(expected.len(), 6);

        let mut out = CallOutputState::new(OutputSink::Collect, 1000);
        out.send_joined(text.into(), WAIT).await.unwrap();
        out.send_joined("7".into(), WAIT).await.unwrap();
        let Ok(CallOutput::Document(doc)) = out.finish(None) else {
            panic!("a collected output is one document")
        };
        let mut all = expected.clone();
        all.push(serde_json::json!(7));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&doc).unwrap(),
            serde_json::Value::Array(all)
        );

        let (mut out, mut rx) = streamed(OutputFormat::Ndjson, 4, 1000);
        out.send_joined(text.into(), WAIT).await.unwrap();
        let chunk = rx.recv().await.unwrap();
        let lines: Vec<serde_json::Value> = std::str::from_utf8(&chunk)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, expected, "one item a line");
        assert_eq!(out.finish(None), Ok(CallOutput::Streamed { items: 6 }));
    }

    /// What the host lets through is "parses as serde::de::IgnoredAny":
    /// grammar only, no nesting limit, escapes not checked as characters,
    /// numbers not checked as numbers. A client parsing the output with
    /// serde_json (the oracle here; most parsers have similar limits)
    /// cannot read it: the whole array fails, not one item. Each of these
    /// is one item a hostile plugin sends through `items-joined` (and
    /// `items`): the host answers 200 with a body the client refuses.
    #[tokio::test]
    async fn joined_items_the_host_accepts_are_json_a_client_can_parse() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let mut unreadable = Vec::new();
        for item in [deep.as_str(), "\"\\ud800\"", "1e400", "-1e999"] {
            let mut out = CallOutputState::new(OutputSink::Collect, 10_000);
            let sent = out.send_joined(format!("{item}\n"), WAIT).await;
            let doc = match (sent, out.finish(None)) {
                (Ok(()), Ok(CallOutput::Document(doc))) => doc,
                // Refused: fine, the client is told.
                _ => continue,
            };
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&doc) {
                unreadable.push(format!("{doc:.24}...: {e}"));
            }
        }
        assert!(
            unreadable.is_empty(),
            "the host emitted what serde_json refuses: {unreadable:#?}"
        );
    }

    #[tokio::test]
    async fn a_joined_text_with_anything_but_json_values_ends_the_output() {
        for bad in ["1 {", "{\"a\":1} x", "]", "1,2", "\"open"] {
            let mut out = CallOutputState::new(OutputSink::Collect, 1000);
            let err = out.send_joined(bad.into(), WAIT).await.unwrap_err();
            assert!(err.contains("not JSON"), "{bad}: {err}");
            assert!(
                matches!(out.finish(None), Err(OutputFault::BadOutput(_))),
                "{bad}"
            );
        }
        // The batch limit counts the whole text.
        let mut out = CallOutputState::new(OutputSink::Collect, 10);
        let err = out.send_joined("1 2 3 4 5 6".into(), WAIT).await.unwrap_err();
        assert!(err.contains("over its 10-byte limit"), "{err}");
    }

    #[tokio::test]
    async fn bad_items_and_a_gone_client_end_the_output() {
        let mut out = CallOutputState::new(OutputSink::Collect, 10);
        assert!(out.send(items(&["{"]), WAIT).await.is_err());
        assert!(out.send(items(&["1"]), WAIT).await.is_err(), "a fault is final");
        assert!(matches!(out.finish(None), Err(OutputFault::BadOutput(_))));

        let mut out = CallOutputState::new(OutputSink::Collect, 10);
        assert!(out.send(items(&["12345678901"]), WAIT).await.is_err());

        let (mut out, rx) = streamed(OutputFormat::JsonArray, 1, 10);
        drop(rx);
        assert!(out.send(items(&["1"]), WAIT).await.is_err());
        assert_eq!(out.finish(None), Err(OutputFault::ClientGone));

        // A client that reads nothing: the one queued chunk stays, the next
        // batch gives up when its wait ends.
        let (mut out, _rx) = streamed(OutputFormat::JsonArray, 1, 10);
        out.send(items(&["1"]), WAIT).await.unwrap();
        let short = Duration::from_millis(1);
        assert!(out.send(items(&["2"]), short).await.is_err());
        assert_eq!(out.finish(None), Err(OutputFault::ClientTooSlow(short)));
    }

    /// The limit of a collected output counts the whole array, its closing
    /// bracket included, across batches.
    #[tokio::test]
    async fn the_collected_limit_counts_the_whole_array() {
        let mut out = CallOutputState::new(OutputSink::Collect, 10);
        out.send(items(&["123"]), WAIT).await.unwrap();
        out.send(items(&["1234"]), WAIT).await.unwrap();
        assert_eq!(
            out.finish(None),
            Ok(CallOutput::Document("[123,1234]".into())),
            "exactly 10 bytes"
        );

        let mut out = CallOutputState::new(OutputSink::Collect, 10);
        out.send(items(&["123"]), WAIT).await.unwrap();
        let over = out.send(items(&["12345"]), WAIT).await.unwrap_err();
        assert!(over.contains("exceeds its 10-byte limit"), "{over}");

        // Each item fits the batch limit, the array does not: refused
        // partway through the batch, and the output is over.
        let mut out = CallOutputState::new(OutputSink::Collect, 10);
        assert!(out.send(items(&["1234", "12345"]), WAIT).await.is_err());
        assert!(matches!(out.finish(None), Err(OutputFault::BadOutput(_))));
    }
}
