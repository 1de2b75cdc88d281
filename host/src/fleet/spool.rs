//! The events spool: a directory where events waiting for the bus are also
//! written, so a gateway restarted while the bus is unreachable publishes
//! them after the restart with the same message ids (JetStream drops the
//! copy of one it had already stored, within its duplicate window).
//!
//! Two files: `events.log`, one JSON record a line in publishing order,
//! and `state.json` (the spool's epoch, how many leading lines of the log
//! are acknowledged, the next sequence). The log is cut back whenever
//! everything in it is acknowledged and rewritten when its acknowledged
//! part outgrows the buffer, so it holds at most about twice the buffer.
//! Writes are not fsynced: the spool survives the gateway's restart, not
//! the machine's power loss.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::events::Record;

const LOG: &str = "events.log";
const STATE: &str = "state.json";

/// Why the spool cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "events spool {path}: {source} (check [bus.events] spool_dir: it must be a directory the gateway can write)"
)]
pub struct SpoolError {
    path: PathBuf,
    source: std::io::Error,
}

#[derive(Serialize, Deserialize, Default)]
struct State {
    epoch: u64,
    acked: u64,
    next_seq: u64,
}

/// An open spool.
pub(crate) struct Spool {
    dir: PathBuf,
    log: File,
    state: State,
    /// Acknowledged lines beyond which the log is rewritten.
    compact_after: u64,
}

/// What a spool held when it was opened.
pub(crate) struct Recovered {
    /// The spool's epoch (part of every message id it gave out).
    pub epoch: u64,
    /// The next per-host sequence.
    pub next_seq: u64,
    /// Events not yet acknowledged, oldest first.
    pub pending: Vec<Record>,
    /// Lines that could not be read (a torn last write).
    pub unreadable: u64,
}

impl Spool {
    /// Open (or create) the spool in `dir`; `new_epoch` is used when the
    /// spool is new.
    pub(crate) fn open(
        dir: &Path,
        new_epoch: u64,
        compact_after: u64,
    ) -> Result<(Self, Recovered), SpoolError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| SpoolError { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err(dir))?;
        let state_path = dir.join(STATE);
        let state: Option<State> = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let log_path = dir.join(LOG);
        let mut pending = Vec::new();
        let mut unreadable = 0;
        let mut last_seq = 0;
        if let Ok(f) = File::open(&log_path) {
            let acked = state.as_ref().map_or(0, |s| s.acked);
            for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
                let line = line.map_err(err(&log_path))?;
                match serde_json::from_slice::<Record>(&line) {
                    Ok(r) => {
                        last_seq = last_seq.max(r.seq);
                        if i as u64 >= acked {
                            pending.push(r);
                        }
                    }
                    Err(_) => unreadable += 1,
                }
            }
        }
        let (epoch, next_seq) = match &state {
            Some(s) => (s.epoch, s.next_seq.max(last_seq + 1)),
            None if last_seq > 0 => (new_epoch, last_seq + 1),
            None => (new_epoch, 1),
        };
        let mut spool = Self {
            log: OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&log_path)
                .map_err(err(&log_path))?,
            dir: dir.to_owned(),
            state: State {
                epoch,
                acked: 0,
                next_seq,
            },
            compact_after: compact_after.max(1),
        };
        spool.rewrite(pending.iter()).map_err(err(&log_path))?;
        Ok((
            spool,
            Recovered {
                epoch,
                next_seq,
                pending,
                unreadable,
            },
        ))
    }

    /// Add `record` at the end.
    pub(crate) fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.log.write_all(&line)?;
        self.state.next_seq = record.seq + 1;
        Ok(())
    }

    /// The oldest record was acknowledged; `pending` is what remains.
    pub(crate) fn acked(&mut self, pending: &VecDeque<Record>) -> std::io::Result<()> {
        self.state.acked += 1;
        if pending.is_empty() || self.state.acked >= self.compact_after {
            return self.rewrite(pending.iter());
        }
        self.save_state()
    }

    /// Replace the log by `pending` (via a new file renamed over it).
    fn rewrite<'a>(&mut self, pending: impl Iterator<Item = &'a Record>) -> std::io::Result<()> {
        let log_path = self.dir.join(LOG);
        let tmp = self.dir.join("events.log.new");
        {
            let mut f = std::io::BufWriter::new(
                OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?,
            );
            for r in pending {
                serde_json::to_writer(&mut f, r).map_err(std::io::Error::other)?;
                f.write_all(b"\n")?;
            }
            f.flush()?;
        }
        std::fs::rename(&tmp, &log_path)?;
        self.log = OpenOptions::new().append(true).open(&log_path)?;
        self.state.acked = 0;
        self.save_state()
    }

    fn save_state(&self) -> std::io::Result<()> {
        let text = serde_json::to_vec(&self.state).map_err(std::io::Error::other)?;
        std::fs::write(self.dir.join(STATE), text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Record {
        Record {
            seq,
            family: "netdev".into(),
            topic: "dev".into(),
            payload: format!("{{\"n\":{seq}}}"),
            time_ns: 1,
        }
    }

    #[test]
    fn unacknowledged_records_survive_a_reopen_with_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, r) = Spool::open(dir.path(), 77, 1000).unwrap();
        assert_eq!((r.epoch, r.next_seq, r.pending.len()), (77, 1, 0));
        let mut q = VecDeque::new();
        for i in 1..=5 {
            s.append(&rec(i)).unwrap();
            q.push_back(rec(i));
        }
        q.pop_front();
        s.acked(&q).unwrap();
        q.pop_front();
        s.acked(&q).unwrap();
        drop(s);
        // A torn last write is skipped, not fatal.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG))
            .unwrap();
        f.write_all(b"{\"seq\":6,\"fam").unwrap();
        let (_s, r) = Spool::open(dir.path(), 99, 1000).unwrap();
        assert_eq!(r.epoch, 77, "the epoch is the spool's, not the new boot's");
        assert_eq!(r.pending.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!((r.next_seq, r.unreadable), (6, 1));
    }
}
