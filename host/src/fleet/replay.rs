//! `genl-gateway fleet events`: replay a family's events from the
//! JetStream stream, then follow it, one JSON line per event.
//!
//! It reads the stream through an ordered consumer (ephemeral, one
//! replica, recreated by the client at the right sequence if a message is
//! missed), so the lines come in stream order, each event once.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;

use super::config::BusConfig;
use super::connection::{Bus, BusState};
use super::events::{header, subject_token};

/// Where the replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// The stream's first event.
    Start,
    /// A stream sequence.
    Sequence(u64),
    /// The first event stored at or after this time.
    Time(time::OffsetDateTime),
}

impl std::str::FromStr for Since {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<u64>() {
            return Ok(Since::Sequence(n.max(1)));
        }
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(Since::Time)
            .map_err(|_| format!("'{s}' is neither a stream sequence (e.g. 1042) nor an RFC 3339 time (e.g. 2026-11-29T05:00:00Z)"))
    }
}

/// What `fleet events` prints.
#[derive(Debug, Clone)]
pub struct Query {
    /// The family.
    pub family: String,
    /// One topic, or all (gap markers included).
    pub topic: Option<String>,
    /// One host, or all.
    pub host: Option<String>,
    /// Where to start.
    pub since: Since,
    /// Stop after this many events (tests, scripts); follow forever if none.
    pub limit: Option<u64>,
}

/// The subject filter of `q` under `prefix`.
pub fn filter(prefix: &str, q: &Query) -> String {
    let host = q.host.as_deref().unwrap_or("*");
    let topic = q.topic.as_deref().map_or_else(|| "*".to_owned(), subject_token);
    format!("{prefix}.{host}.{}.{topic}", subject_token(&q.family))
}

/// Replay and follow `q` from the stream of `config`, writing to `out`.
pub async fn run(config: BusConfig, q: Query, out: &mut impl Write) -> anyhow::Result<()> {
    if let Some(h) = &q.host
        && !super::config::is_token(h)
    {
        bail!("--host '{h}' is not a host name on the bus (letters, digits, '-' and '_')");
    }
    let stream_name = config.events.stream.clone();
    let prefix = config.prefix.clone();
    let wait = config.connect_timeout;
    let bus = Bus::start(config).await?;
    let deadline = Instant::now() + wait;
    while bus.state() != BusState::Connected {
        if Instant::now() >= deadline {
            bail!(
                "cannot reach the NATS bus within {wait:?}: check [bus] urls and credentials in the gateway config"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let js = bus.jetstream();
    let stream = js
        .get_stream(&stream_name)
        .await
        .with_context(|| format!("no events stream '{stream_name}' on the bus (has a gateway with [bus] started? is [bus.events] stream right?)"))?;
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let deliver_policy = match q.since {
        Since::Start => DeliverPolicy::All,
        Since::Sequence(n) => DeliverPolicy::ByStartSequence { start_sequence: n },
        Since::Time(t) => DeliverPolicy::ByStartTime { start_time: t },
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter(&prefix, &q),
            deliver_policy,
            ..Default::default()
        })
        .await
        .context("cannot create a consumer on the events stream")?;
    let mut messages = consumer
        .messages()
        .await
        .context("cannot read the events stream")?;
    let mut printed = 0u64;
    while q.limit.is_none_or(|l| printed < l) {
        let Some(msg) = messages.next().await else { break };
        let msg = msg.context("reading the events stream")?;
        let info = msg
            .info()
            .map_err(|e| anyhow::anyhow!("a message without stream metadata: {e}"))?;
        let stream_sequence = info.stream_sequence;
        let h = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let num = |name: &str| h(name).and_then(|v| v.parse::<u64>().ok());
        let payload: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&msg.payload).into_owned())
        });
        let line = serde_json::json!({
            "host": h(header::HOST),
            "family": h(header::FAMILY),
            "topic": h(header::TOPIC),
            "sequence": num(header::SEQ),
            "epoch": num(header::EPOCH),
            "time": h(header::TIME),
            "stream_sequence": stream_sequence,
            "payload": payload,
        });
        writeln!(out, "{line}")?;
        out.flush()?;
        printed += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_sequence_or_a_time() {
        assert_eq!("42".parse::<Since>(), Ok(Since::Sequence(42)));
        assert!(matches!(
            "2026-11-29T05:00:00Z".parse::<Since>(),
            Ok(Since::Time(_))
        ));
        assert!("yesterday".parse::<Since>().is_err());
    }

    #[test]
    fn filters_are_whole_tokens() {
        let q = Query {
            family: "netdev".into(),
            topic: Some("dev-add-ntf".into()),
            host: None,
            since: Since::Start,
            limit: None,
        };
        assert_eq!(filter("genl", &q), "genl.*.netdev.dev-add-ntf");
    }
}
