//! The plugins' events on the bus: every event a family's `[bus] topics`
//! chooses is published to JetStream as `PREFIX.HOST.FAMILY.TOPIC`, and
//! none is lost silently.
//!
//! Two tasks. The intake takes each event off the gateway's event
//! broadcast (the one the local SSE fan-out reads too; a broadcast send
//! never waits, so neither the plugins nor SSE ever wait for the bus),
//! gives it the next per-host sequence and queues it in a bounded buffer
//! (and the spool, with `[bus.events] spool_dir`). The sender publishes
//! the oldest queued event, waits for JetStream's acknowledgement and only
//! then takes the next: one at a time, so the stream holds each host's
//! events in its own order even across a failed publish. A publish that is
//! not acknowledged is retried with the same `Nats-Msg-Id`
//! (`HOST-EPOCH-SEQ`), so JetStream stores it once however often it is
//! sent. What does not fit in the buffer is counted, logged (at most every
//! ten seconds) and marked in the stream by a `_gap` event saying how many
//! events were lost and between which times; so are the kernel's own
//! overruns of a family's listener socket (lost count unknown: `null`) and
//! a lag of the intake itself (family `_gateway`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};

use super::connection::Bus;
use super::events_config::{EventsConfig, Retention};
use super::spool::Spool;
use crate::gateway::Gateway;
use crate::plugin::Event;

/// The topic of a gap marker (topics starting with `_` are the gateway's).
pub const GAP_TOPIC: &str = "_gap";

/// The family token of a gap whose family is unknown (the intake lagged).
pub const GATEWAY_FAMILY: &str = "_gateway";

/// How often a recurring problem may be logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How often kernel overruns are looked for and pending gaps flushed.
const TICK: Duration = Duration::from_secs(1);

/// Longest wait between retries of a publish.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Header names (besides JetStream's `Nats-Msg-Id`).
pub mod header {
    /// The host's name on the bus.
    pub const HOST: &str = "Genl-Host";
    /// The family.
    pub const FAMILY: &str = "Genl-Family";
    /// The plugin's topic, as it wrote it.
    pub const TOPIC: &str = "Genl-Topic";
    /// The per-host sequence (in its epoch).
    pub const SEQ: &str = "Genl-Seq";
    /// The epoch the sequence counts in (the spool's, or the boot's).
    pub const EPOCH: &str = "Genl-Epoch";
    /// When the gateway took the event from the plugin (RFC 3339).
    pub const TIME: &str = "Genl-Time";
}

/// One event waiting for the bus (also one line of the spool).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Per-host sequence.
    pub seq: u64,
    /// The family.
    pub family: String,
    /// The topic as the plugin wrote it (`_gap` for a gap marker).
    pub topic: String,
    /// The JSON payload.
    pub payload: String,
    /// When the gateway took it, in nanoseconds since the Unix epoch.
    pub time_ns: u64,
}

impl Record {
    fn size(&self) -> usize {
        self.family.len() + self.topic.len() + self.payload.len()
    }
}

/// Why events are missing from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GapReason {
    /// The buffer (and spool) was full while the bus was unreachable.
    BufferFull,
    /// The kernel overran the family's listener socket (ENOBUFS): the
    /// plugin never saw those notifications; how many is unknown.
    KernelOverrun,
    /// The publisher's intake fell behind the event broadcast.
    IntakeLagged,
}

#[derive(Debug)]
struct Gap {
    lost: Option<u64>,
    first_ns: u64,
    last_ns: u64,
}

/// Counters of the publisher, for `/metrics`.
#[derive(Debug, Default)]
pub struct EventsStats {
    /// Events queued for the bus.
    pub queued: AtomicU64,
    /// Events (and gap markers) JetStream acknowledged.
    pub acked: AtomicU64,
    /// Acknowledgements saying JetStream had the message already (a retry
    /// of one whose first acknowledgement was lost).
    pub duplicates: AtomicU64,
    /// Publishes retried.
    pub retries: AtomicU64,
    /// Events lost because the buffer was full (each marked by a gap).
    pub lost: AtomicU64,
    /// Gap markers queued.
    pub gaps: AtomicU64,
    /// Events of topics the family file does not send to the bus.
    pub skipped: AtomicU64,
    /// Spool writes that failed (the spool is then abandoned).
    pub spool_errors: AtomicU64,
}

struct Queue {
    records: VecDeque<Record>,
    bytes: usize,
    next_seq: u64,
    gaps: BTreeMap<(String, GapReason), Gap>,
    spool: Option<Spool>,
    last_loss_log: Option<Instant>,
}

/// The publisher of one gateway's events.
pub struct EventsPublisher {
    config: EventsConfig,
    host: String,
    prefix: String,
    epoch: u64,
    queue: Mutex<Queue>,
    wake: Notify,
    /// Counters.
    pub stats: EventsStats,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `ns` since the Unix epoch as RFC 3339.
pub fn rfc3339(ns: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// `name` as one subject token: characters outside letters, digits, `-`
/// and `_` become `_`, and a leading `_` (the gateway's own topics) gets a
/// `-` before it, so a plugin topic never poses as `_gap`.
pub fn subject_token(name: &str) -> String {
    let mut t: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() || t.starts_with('_') {
        t.insert(0, '-');
    }
    t
}

impl EventsPublisher {
    /// Start publishing `gateway`'s events to its bus, if `[bus.events]`
    /// is enabled. Call before any plugin loads, so no event precedes it.
    pub fn start(gateway: &Arc<Gateway>, bus: &Arc<Bus>) -> Option<Arc<Self>> {
        let config = bus.config().events.clone();
        if !config.enabled {
            tracing::info!("bus: events are not published ([bus.events] enabled = false)");
            return None;
        }
        let boot_epoch = now_ns() / 1_000_000;
        let (spool, epoch, next_seq, pending) = match &config.spool_dir {
            None => (None, boot_epoch, 1, Vec::new()),
            Some(dir) => match Spool::open(dir, boot_epoch, config.buffer_events as u64) {
                Ok((spool, r)) => {
                    if r.unreadable > 0 {
                        tracing::warn!(
                            lines = r.unreadable,
                            "bus: skipped unreadable lines in the events spool (a write torn by a crash)"
                        );
                    }
                    if !r.pending.is_empty() {
                        tracing::info!(
                            events = r.pending.len(),
                            "bus: events spooled before the restart will be published"
                        );
                    }
                    (Some(spool), r.epoch, r.next_seq, r.pending)
                }
                Err(e) => {
                    tracing::error!("{e}; events wait in memory only");
                    (None, boot_epoch, 1, Vec::new())
                }
            },
        };
        let bytes = pending.iter().map(Record::size).sum();
        let publisher = Arc::new(Self {
            host: bus.config().host.clone(),
            prefix: bus.config().prefix.clone(),
            epoch,
            queue: Mutex::new(Queue {
                records: pending.into(),
                bytes,
                next_seq,
                gaps: BTreeMap::new(),
                spool,
                last_loss_log: None,
            }),
            wake: Notify::new(),
            stats: EventsStats::default(),
            config,
        });
        let intake = gateway.events.subscribe();
        tokio::spawn(intake_loop(publisher.clone(), Arc::downgrade(gateway), intake));
        tokio::spawn(send_loop(publisher.clone(), bus.clone()));
        Some(publisher)
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Events waiting for the bus now, and their bytes.
    pub fn buffered(&self) -> (usize, usize) {
        let q = self.queue();
        (q.records.len(), q.bytes)
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.config.stream
    }

    /// A status document for `/healthz`.
    pub fn status(&self) -> serde_json::Value {
        let (events, bytes) = self.buffered();
        serde_json::json!({
            "stream": self.config.stream,
            "buffered": events,
            "buffered_bytes": bytes,
            "acked": self.stats.acked.load(Relaxed),
            "lost": self.stats.lost.load(Relaxed),
            "spool": self.config.spool_dir.as_ref().map(|d| d.display().to_string()),
        })
    }

    /// Queue an event, or count it lost when the buffer is full.
    fn accept(&self, family: &str, topic: String, payload: String) {
        let now = now_ns();
        let mut q = self.queue();
        self.flush_gaps(&mut q);
        let record = Record {
            seq: 0,
            family: family.to_owned(),
            topic,
            payload,
            time_ns: now,
        };
        // While a gap waits for room, later events wait behind it: the
        // marker must come before them in the stream.
        if !q.gaps.is_empty() || !self.room(&q, record.size()) {
            self.stats.lost.fetch_add(1, Relaxed);
            self.note_gap(&mut q, family, GapReason::BufferFull, Some(1), now);
            if q.last_loss_log.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
                q.last_loss_log = Some(Instant::now());
                tracing::warn!(
                    lost_total = self.stats.lost.load(Relaxed),
                    buffered = q.records.len(),
                    "bus: the events buffer is full (is the bus down?); events are dropped and marked by a `_gap` event in the stream (raise [bus.events] buffer_events / buffer_kib to wait longer)"
                );
            }
            return;
        }
        self.push(&mut q, record);
        self.stats.queued.fetch_add(1, Relaxed);
    }

    fn room(&self, q: &Queue, size: usize) -> bool {
        q.records.len() < self.config.buffer_events && q.bytes + size <= self.config.buffer_bytes
    }

    fn note_gap(&self, q: &mut Queue, family: &str, reason: GapReason, lost: Option<u64>, now: u64) {
        let gap = q.gaps.entry((family.to_owned(), reason)).or_insert(Gap {
            lost: Some(0),
            first_ns: now,
            last_ns: now,
        });
        gap.lost = match (gap.lost, lost) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        gap.last_ns = now;
    }

    /// Queue gap markers for the gaps noted, as far as there is room.
    fn flush_gaps(&self, q: &mut Queue) {
        while let Some(((family, reason), gap)) = q.gaps.first_key_value() {
            let payload = serde_json::json!({
                "lost": gap.lost,
                "reason": reason,
                "first": rfc3339(gap.first_ns),
                "last": rfc3339(gap.last_ns),
            })
            .to_string();
            let record = Record {
                seq: 0,
                family: family.clone(),
                topic: GAP_TOPIC.to_owned(),
                payload,
                time_ns: gap.last_ns,
            };
            if !self.room(q, record.size()) {
                return;
            }
            q.gaps.pop_first();
            self.stats.gaps.fetch_add(1, Relaxed);
            self.push(q, record);
        }
    }

    fn push(&self, q: &mut Queue, mut record: Record) {
        record.seq = q.next_seq;
        q.next_seq += 1;
        if let Some(spool) = &mut q.spool
            && let Err(e) = spool.append(&record)
        {
            self.spool_failed(q, &e);
        }
        q.bytes += record.size();
        q.records.push_back(record);
        self.wake.notify_one();
    }

    fn spool_failed(&self, q: &mut Queue, e: &std::io::Error) {
        self.stats.spool_errors.fetch_add(1, Relaxed);
        q.spool = None;
        tracing::error!(
            error = %e,
            "bus: cannot write the events spool; events now wait in memory only (check the disk and [bus.events] spool_dir)"
        );
    }

    /// The oldest event waiting.
    fn front(&self) -> Option<Record> {
        self.queue().records.front().cloned()
    }

    /// The oldest event, `seq`, was acknowledged.
    fn acked(&self, seq: u64) {
        let mut q = self.queue();
        if q.records.front().is_some_and(|r| r.seq == seq)
            && let Some(r) = q.records.pop_front()
        {
            q.bytes -= r.size();
            let q = &mut *q;
            if let Some(spool) = &mut q.spool
                && let Err(e) = spool.acked(&q.records)
            {
                self.spool_failed(q, &e);
            }
        }
        // Room again: a gap noted while full gets its marker now.
        self.flush_gaps(&mut q);
    }

    fn subject(&self, r: &Record) -> String {
        let topic = if r.topic == GAP_TOPIC {
            GAP_TOPIC.to_owned()
        } else {
            subject_token(&r.topic)
        };
        let family = if r.family == GATEWAY_FAMILY {
            GATEWAY_FAMILY.to_owned()
        } else {
            subject_token(&r.family)
        };
        format!("{}.{}.{family}.{topic}", self.prefix, self.host)
    }

    /// The message id: the same for every retry of `r`, and across a
    /// restart for a spooled `r`.
    pub fn msg_id(&self, r: &Record) -> String {
        format!("{}-{}-{}", self.host, self.epoch, r.seq)
    }

    async fn publish(&self, js: &async_nats::jetstream::Context, r: &Record) -> Result<bool, Unacked> {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", self.msg_id(r).as_str());
        h.insert(header::HOST, self.host.as_str());
        h.insert(header::FAMILY, r.family.as_str());
        h.insert(header::TOPIC, r.topic.as_str());
        h.insert(header::SEQ, r.seq.to_string().as_str());
        h.insert(header::EPOCH, self.epoch.to_string().as_str());
        h.insert(header::TIME, rfc3339(r.time_ns).as_str());
        let ack = js
            .publish_with_headers(self.subject(r), h, r.payload.clone().into())
            .await
            .map_err(|e| Unacked::Other(e.to_string()))?
            .await
            .map_err(|e| match e.kind() {
                async_nats::jetstream::context::PublishErrorKind::StreamNotFound => Unacked::NoStream,
                _ => Unacked::Other(e.to_string()),
            })?;
        Ok(ack.duplicate)
    }
}

/// Why a publish was not acknowledged.
enum Unacked {
    /// No stream takes the subject (deleted, or no leader yet).
    NoStream,
    /// Anything else (disconnected, timed out, ...).
    Other(String),
}

async fn intake_loop(p: Arc<EventsPublisher>, gw: Weak<Gateway>, mut rx: broadcast::Receiver<Event>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut overruns: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(ev) => {
                    let Some(gw) = gw.upgrade() else { return };
                    let wanted = gw
                        .family(&ev.family)
                        .is_some_and(|f| f.config.bus.publishes(&ev.topic));
                    if wanted {
                        p.accept(&ev.family, ev.topic, ev.payload);
                    } else {
                        p.stats.skipped.fetch_add(1, Relaxed);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "bus: the events publisher fell behind the plugins; marking a gap");
                    let mut q = p.queue();
                    p.stats.lost.fetch_add(n, Relaxed);
                    p.note_gap(&mut q, GATEWAY_FAMILY, GapReason::IntakeLagged, Some(n), now_ns());
                    p.flush_gaps(&mut q);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let Some(gw) = gw.upgrade() else { return };
                let mut q = p.queue();
                for (name, family) in gw.families() {
                    let Some(listener) = &family.listener else { continue };
                    let now = listener.stats.overruns.load(Relaxed);
                    let seen = overruns.insert(name.clone(), now).unwrap_or(0);
                    // A reloaded family's listener counts from zero again.
                    if now > seen || (now < seen && now > 0) {
                        p.note_gap(&mut q, &name, GapReason::KernelOverrun, None, now_ns());
                    }
                }
                p.flush_gaps(&mut q);
            }
        }
    }
}

async fn send_loop(p: Arc<EventsPublisher>, bus: Arc<Bus>) {
    let mut js = async_nats::jetstream::new(bus.client().clone());
    js.set_timeout(p.config.ack_timeout);
    let mut stream_ready = false;
    let mut delay = Duration::from_millis(100);
    let mut last_log: Option<Instant> = None;
    let mut log_failure = |what: &str, e: &str| {
        if last_log.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
            last_log = Some(Instant::now());
            tracing::warn!(error = %e, "bus: {what}; retrying (events wait in the buffer)");
        }
    };
    loop {
        if !stream_ready {
            match ensure_stream(&js, &p).await {
                Ok(()) => stream_ready = true,
                Err(e) => {
                    log_failure("cannot create or check the events stream", &e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    continue;
                }
            }
        }
        let Some(record) = p.front() else {
            p.wake.notified().await;
            continue;
        };
        let result = tokio::time::timeout(p.config.ack_timeout * 2, p.publish(&js, &record))
            .await
            .unwrap_or_else(|_| Err(Unacked::Other("no acknowledgement in time".to_owned())));
        match result {
            Ok(duplicate) => {
                if duplicate {
                    p.stats.duplicates.fetch_add(1, Relaxed);
                }
                p.stats.acked.fetch_add(1, Relaxed);
                p.acked(record.seq);
                delay = Duration::from_millis(100);
            }
            Err(e) => {
                p.stats.retries.fetch_add(1, Relaxed);
                match e {
                    Unacked::NoStream => {
                        log_failure("no stream takes the events", "stream not found");
                        stream_ready = false;
                    }
                    Unacked::Other(e) => log_failure("an event publish was not acknowledged", &e),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

/// Whether stream subject `pattern` takes every subject of shape `subject`
/// (whose `*` tokens stand for any token).
fn covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b && b != "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Create the stream, or check the one there: it must take this host's
/// subjects. Settings that differ are reported, not changed (several
/// gateways share the stream; the operator's tooling owns its edits).
async fn ensure_stream(js: &async_nats::jetstream::Context, p: &EventsPublisher) -> Result<(), String> {
    use async_nats::jetstream::stream;
    let c = &p.config;
    let want = stream::Config {
        name: c.stream.clone(),
        subjects: c.subjects.clone(),
        retention: match c.retention {
            Retention::Limits => stream::RetentionPolicy::Limits,
            Retention::Interest => stream::RetentionPolicy::Interest,
            Retention::Workqueue => stream::RetentionPolicy::WorkQueue,
        },
        num_replicas: c.replicas,
        max_age: c.max_age,
        max_bytes: if c.max_bytes == 0 {
            -1
        } else {
            i64::try_from(c.max_bytes).unwrap_or(i64::MAX)
        },
        duplicate_window: c.duplicate_window,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let mine = format!("{}.{}.*.*", p.prefix, p.host);
    let have = match js.get_stream(&c.stream).await {
        Ok(mut s) => s.info().await.map_err(|e| e.to_string())?.config.clone(),
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(_)
            ) =>
        {
            // Not found (or another JetStream refusal): create it; a
            // gateway that loses the race finds it on the next try.
            match js.create_stream(want.clone()).await {
                Ok(mut s) => {
                    tracing::info!(stream = %c.stream, subjects = ?c.subjects, replicas = c.replicas, "bus: created the events stream");
                    s.info().await.map_err(|e| e.to_string())?.config.clone()
                }
                Err(e) => return Err(format!("creating stream {}: {e}", c.stream)),
            }
        }
        Err(e) => return Err(e.to_string()),
    };
    if !have.subjects.iter().any(|s| covers(s, &mine)) {
        return Err(format!(
            "stream {} exists but does not take this host's subjects {mine} (its subjects: {:?}); fix [bus.events] stream/subjects or the stream",
            c.stream, have.subjects
        ));
    }
    if have.num_replicas != want.num_replicas
        || have.retention != want.retention
        || have.max_age != want.max_age
        || have.max_bytes != want.max_bytes
        || have.duplicate_window != want.duplicate_window
    {
        tracing::warn!(
            stream = %c.stream,
            replicas = have.num_replicas,
            max_age = ?have.max_age,
            max_bytes = have.max_bytes,
            duplicate_window = ?have.duplicate_window,
            "bus: the events stream exists with settings other than [bus.events]; the gateway uses it as it is (edit it with `nats stream edit` if [bus.events] is right)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_subjects_cover_a_hosts_events_only_with_matching_wildcards() {
        assert!(covers("genl.*.*.*", "genl.h1.*.*"));
        assert!(covers("genl.>", "genl.h1.*.*"));
        assert!(covers("genl.h1.*.*", "genl.h1.*.*"));
        assert!(!covers("genl.h2.*.*", "genl.h1.*.*"));
        assert!(!covers("genl.h1.netdev.*", "genl.h1.*.*"));
        assert!(!covers("genl.*.*", "genl.h1.*.*"));
    }

    #[test]
    fn topics_become_single_tokens_and_never_reserved_ones() {
        assert_eq!(subject_token("dev-add-ntf"), "dev-add-ntf");
        assert_eq!(subject_token("page-pool.add"), "page-pool_add");
        assert_eq!(subject_token("_gap"), "-_gap");
        assert_eq!(subject_token("a b*>"), "a_b__");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(1_000_000_000), "1970-01-01T00:00:01Z");
    }
}
