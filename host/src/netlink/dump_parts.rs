//! A dump read part by part, with the next part made while the previous
//! one is decoded.
//!
//! The kernel makes part n+1 of a dump inside the `recvmsg` that takes
//! part n (netlink_recvmsg calls netlink_dump once the receive queue has
//! room), so a plain read returns a part only after the next one is built:
//! read in turn with the decoding, the kernel's work and the plugin's add
//! up, and for a dump of two parts nothing could overlap. So each part is
//! read with MSG_PEEK, which leaves it queued and, with the receive buffer
//! lowered for the dump, makes nothing (`pool.rs`,
//! `PEEKED_DUMP_RECEIVE_BUFFER`); the consumer decodes the copy while a
//! reader on a thread of its own takes the part off the socket, which has
//! the kernel make the next one on the other core (decisions/0021, 0022).
//!
//! The consumer peeks the first part itself: the send made it, and a dump
//! of one part then ends without a reader. After that the reader owns the
//! socket. A consumer that has decoded its part before the kernel made the
//! next spins briefly for it rather than park (decisions/0024).
//!
//! The read-ahead is bounded: the reader takes a part off the socket (so
//! lets the kernel make the next) only when the one-part queue to the
//! consumer has room, so the host holds at most one part beyond the one
//! being decoded (and the kernel one more in the socket). Everything the
//! reader learns (parts, NLM_F_DUMP_INTR, kernel errors, timeouts, the
//! end) reaches the consumer in the kernel's order. Dropping the
//! [`DumpParts`] closes the queue, which the reader watches: it stops, and
//! the socket it held mid-dump is closed, which ends the kernel's dump.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::pool::{Lease, Read};
use super::reader_threads;
use super::requester::{RequestBounds, RequestError};

/// What the reader hands over for one datagram.
struct Part {
    /// Whole messages (headers included, each padded to 4 bytes),
    /// NLMSG_DONE left out; may be empty (a datagram with only the end).
    bytes: Vec<u8>,
    /// The messages' netlink payload bytes, counted against the bound.
    payload: usize,
    /// A message of the datagram carried NLM_F_DUMP_INTR.
    interrupted: bool,
    /// The datagram carried NLMSG_DONE: the dump is whole. Said in the
    /// part rather than by the queue closing, which a reader that stopped
    /// early (a panic) would do too: a dump cut short must not read as
    /// a short but complete one.
    last: bool,
}

/// Where a dump stands, seen from its consumer.
#[derive(Debug)]
enum State {
    /// Parts may still come.
    Reading,
    /// NLMSG_DONE was read and every part handed over.
    Ended,
    /// The dump failed; the error is repeated to every later call.
    Failed(RequestError),
}

/// A dump in progress on a request socket of its own (see
/// [`super::Requester::dump_parts`]), its next part made ahead.
pub struct DumpParts {
    /// Until the first datagram is read: the socket, read by the consumer
    /// itself; the reader takes it over after that.
    first: Option<InLineRead>,
    parts: mpsc::Receiver<Result<Part, RequestError>>,
    /// Set while the kernel makes the next part for the reader: by the
    /// consumer as it starts the reader, then by the reader each time it
    /// has room; cleared after each hand-over.
    making: Arc<AtomicBool>,
    /// The reader's CPU mask, kept off the consumer's CPU as the consumer
    /// moves (`reader_threads.rs`); `None` before the reader starts, or
    /// for one on the blocking pool.
    placement: Option<reader_threads::Placement>,
    deadline: Instant,
    bounds: RequestBounds,
    bytes: usize,
    interrupted: bool,
    state: State,
}

/// What [`DumpParts::spin_for_part`] found.
enum Spun {
    /// What the queue's `recv` would have returned.
    Got(Option<Result<Part, RequestError>>),
    /// Nothing yet: wait on the queue.
    Park,
}

/// The dump before its first datagram is read.
struct InLineRead {
    lease: Lease,
    seq: u32,
    /// The reader's wait for each datagram.
    wait: Duration,
    tx: mpsc::Sender<Result<Part, RequestError>>,
    making: Arc<AtomicBool>,
    /// A reader woken before the send, waiting for the socket.
    ahead: Option<ReaderAhead>,
    /// Where to note whether this dump came in more than one part.
    hint: PartHint,
}

impl Drop for DumpParts {
    fn drop(&mut self) {
        // The reader must not outlive its consumer: with the queue closed
        // it stops at once and drops the socket, closed mid-dump (never
        // back in the pool half-read).
        self.parts.close();
    }
}

impl DumpParts {
    /// A dump sent with sequence number `seq` on `lease`. `bounds.wait`
    /// also bounds the reader's wait for each datagram, counted from when
    /// it has room to take one.
    /// `ahead`, if any, is a reader started before the send; `hint`
    /// learns whether the dump came in more than one part.
    pub(super) fn start(
        lease: Lease,
        seq: u32,
        bounds: RequestBounds,
        ahead: Option<ReaderAhead>,
        hint: PartHint,
    ) -> Self {
        let (tx, parts) = mpsc::channel(1);
        let making = Arc::new(AtomicBool::new(false));
        let first = InLineRead {
            lease,
            seq,
            wait: bounds.wait,
            tx,
            making: making.clone(),
            ahead,
            hint,
        };
        Self::reading(Some(first), parts, making, bounds)
    }

    /// A dump whose parts come through `parts`, after `first` is read if
    /// there is one.
    fn reading(
        first: Option<InLineRead>,
        parts: mpsc::Receiver<Result<Part, RequestError>>,
        making: Arc<AtomicBool>,
        bounds: RequestBounds,
    ) -> Self {
        Self {
            first,
            parts,
            making,
            placement: None,
            deadline: Instant::now() + bounds.wait,
            bounds,
            bytes: 0,
            interrupted: false,
            state: State::Reading,
        }
    }

    /// The next part: whole netlink messages (headers included, each
    /// padded to 4 bytes) from one datagram, NLMSG_DONE left out; `None`
    /// once the dump has ended. The bounds given to
    /// [`super::Requester::dump_parts`] hold for the whole dump.
    pub async fn next_part(&mut self) -> Result<Option<Vec<u8>>, RequestError> {
        loop {
            match &self.state {
                State::Reading => {}
                State::Ended => return Ok(None),
                State::Failed(e) => return Err(e.clone()),
            }
            let part = match self.first.take() {
                Some(first) => self.read_here(first).await?,
                None => {
                    // Taking a part wakes the reader for the next one:
                    // not on this CPU, if the consumer moved since.
                    if let Some(placement) = &self.placement {
                        placement.follow();
                    }
                    // A timeout leaves the reader running: the part may
                    // still come and a later call take it, as when the
                    // socket was read here.
                    let next = match self.spin_for_part().await {
                        Spun::Got(next) => next,
                        Spun::Park => tokio::time::timeout_at(self.deadline, self.parts.recv())
                            .await
                            .map_err(|_| RequestError::Timeout(self.bounds.wait))?,
                    };
                    match next {
                        Some(Ok(part)) => part,
                        // Gone without handing over the end: the dump is
                        // not whole, whatever was read of it.
                        None => return Err(self.fail(RequestError::Io(READER_STOPPED.into()))),
                        Some(Err(e)) => return Err(self.fail(e)),
                    }
                }
            };
            self.interrupted |= part.interrupted;
            self.bytes = self.bytes.saturating_add(part.payload);
            if self.bytes > self.bounds.reply_bytes {
                return Err(self.fail(RequestError::ReplyTooLarge(self.bounds.reply_bytes)));
            }
            if part.last {
                self.state = State::Ended;
            }
            if !part.bytes.is_empty() {
                return Ok(Some(part.bytes));
            }
        }
    }

    /// The next part, if the reader hands it over within [`SPIN`] (and
    /// before the deadline) while the kernel is making it: waiting on the
    /// queue parks this thread, and waking it again costs 20-40 µs on a
    /// virtual machine, a quarter of a part's decoding (decisions/0024).
    /// [`Spun::Park`] when the reader is not making a part (it waits for
    /// room, or has ended) or the part is not there in time: then the
    /// caller waits on the queue as usual.
    async fn spin_for_part(&mut self) -> Spun {
        if !self.making.load(Ordering::Acquire) {
            return Spun::Park;
        }
        // The spin holds this worker. Tasks this call woke run first: the
        // HTTP writer of the items just sent sits in the worker's LIFO
        // slot, where no other worker may take it, and its write should
        // overlap the kernel's making of the next part, as when the
        // consumer parked.
        tokio::task::yield_now().await;
        let limit = SPIN.min(self.deadline.saturating_duration_since(Instant::now()));
        let start = std::time::Instant::now();
        loop {
            // A send half-written makes `try_recv` wait for it, briefly:
            // the reader's send is a few stores.
            match self.parts.try_recv() {
                Ok(next) => return Spun::Got(Some(next)),
                Err(TryRecvError::Disconnected) => return Spun::Got(None),
                Err(TryRecvError::Empty) => {}
            }
            if !self.making.load(Ordering::Acquire) || start.elapsed() > limit {
                return Spun::Park;
            }
            // Another thread runnable on this core (the reader itself, on
            // a busy machine) runs instead of the spin.
            std::thread::yield_now();
        }
    }

    /// Peek at the first datagram here; then hand the socket to the
    /// reader, or, when the dump ended in it, back to the pool.
    async fn read_here(&mut self, mut first: InLineRead) -> Result<Part, RequestError> {
        let step = read_datagram(&mut first.lease, first.seq, self.deadline, self.bounds.wait).await;
        let (part, end) = match step {
            Ok(got) => got,
            Err(e @ RequestError::Timeout(_)) => {
                // Nothing lost: the next call waits again.
                self.first = Some(first);
                return Err(e);
            }
            Err(e) => return Err(self.fail(e)),
        };
        let InLineRead {
            mut lease,
            seq,
            wait,
            tx,
            making,
            ahead,
            hint,
        } = first;
        hint.record(end.is_none());
        match end {
            None => {
                // The reader starts with the next part: the consumer may
                // spin for it from now on.
                making.store(true, Ordering::Release);
                let work = ReaderWork {
                    lease,
                    seq,
                    wait,
                    tx,
                    making,
                };
                self.placement = match ahead {
                    // Kept off the CPU the consumer is on now, not the one
                    // it sent from, before the handoff wakes it.
                    Some(ReaderAhead { handoff, placement }) => {
                        placement.follow();
                        match handoff.send(work) {
                            Ok(()) => Some(placement),
                            // The reader woken ahead is gone (it runs
                            // nothing else, so not reached): start another.
                            Err(work) => start_reader(work),
                        }
                    }
                    None => start_reader(work),
                };
            }
            Some(end) => {
                // One part: a reader woken ahead finds its handoff
                // dropped and goes back to sleep.
                drop(ahead);
                lease.discard().map_err(|e| self.fail(e))?;
                lease.complete();
                drop(lease);
                drop(tx);
                end.map_err(|e| self.fail(e))?;
            }
        }
        Ok(part)
    }

    /// The next part, waited for at most `bounds.wait` from now and refused
    /// over `bounds.reply_bytes`: for a dump read as a stream, which its
    /// reader bounds as a whole (the call's deadline, the client's pace),
    /// each part is bounded on its own.
    pub async fn next_part_within(&mut self, bounds: RequestBounds) -> Result<Option<Vec<u8>>, RequestError> {
        self.deadline = Instant::now() + bounds.wait;
        self.bounds = bounds;
        self.bytes = 0;
        self.next_part().await
    }

    /// Whether the kernel flagged a part read so far as interrupted by a
    /// concurrent change (NLM_F_DUMP_INTR): the dump may be inconsistent
    /// and is worth starting again.
    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// End the dump with `e`: the reader stops (closing the socket if the
    /// dump was still running) and later calls get `e` again.
    fn fail(&mut self, e: RequestError) -> RequestError {
        self.first = None;
        self.parts.close();
        self.state = State::Failed(e.clone());
        e
    }
}

/// Why a dump failed whose reader stopped before the kernel's end.
const READER_STOPPED: &str = "the dump's reader stopped before the kernel ended the dump (see the gateway's log for a panic); the dump is incomplete, try again";

/// How long a consumer spins for a part the kernel is making before it
/// parks: a little more than the kernel takes to make a 32 KiB part of
/// netdev devices (165-190 µs here), so a consumer that decoded the part
/// before it (85 µs) does not park just short of the hand-over, as a
/// trace showed with 100 µs.
const SPIN: Duration = Duration::from_micros(200);

/// Start the reader on a thread of its own, kept off the consumer's CPU
/// (`reader_threads.rs`). A task would not do: woken by the consumer,
/// tokio runs it on the consumer's own worker (its LIFO slot) once the
/// consumer yields, so nothing would overlap. The reader ends when the
/// dump does, or when the consumer closes the queue. Returns the hold on
/// the reader's placement, if it runs on a reader thread.
fn start_reader(work: ReaderWork) -> Option<reader_threads::Placement> {
    let handle = tokio::runtime::Handle::current();
    reader_threads::run_off_this_cpu(Box::new(move || handle.block_on(work.read())))
}

/// What a reader needs from the consumer: the socket, after the first
/// part's peek, and the queue.
struct ReaderWork {
    lease: Lease,
    seq: u32,
    wait: Duration,
    tx: mpsc::Sender<Result<Part, RequestError>>,
    making: Arc<AtomicBool>,
}

impl ReaderWork {
    /// Read ahead until the dump ends or the consumer closes the queue.
    async fn read(self) {
        let Self {
            lease,
            seq,
            wait,
            tx,
            making,
        } = self;
        let closed = tx.clone();
        tokio::select! {
            () = closed.closed() => {}
            () = read_ahead(lease, seq, wait, tx, &making) => {}
        }
    }
}

/// A reader woken before its dump is sent: waking a thread on an idle CPU
/// of a virtual machine took 50 µs in session 13's traces, which, woken
/// after the first part's peek, lay on the dump's path; woken before the
/// send, it overlaps the kernel's making of the first part. The reader
/// spins for the socket for a while (the kernel makes a 32 KiB part in
/// 150-200 µs here), then parks; a dump that ends in its first part
/// drops the handoff, and the reader goes back to the idle list.
pub(super) struct ReaderAhead {
    handoff: oneshot::Sender<ReaderWork>,
    placement: reader_threads::Placement,
}

/// How long a reader woken ahead spins for its socket before it parks.
const HANDOFF_SPIN: Duration = Duration::from_micros(500);

impl ReaderAhead {
    /// Wake a reader to wait for a dump about to be sent; `None` where it
    /// would not run beside the consumer (one CPU, or every reader thread
    /// busy): there its spin would compete with the send it waits for.
    pub(super) fn start() -> Option<Self> {
        if !reader_threads::many_cpus() {
            return None;
        }
        let (handoff, work) = oneshot::channel::<ReaderWork>();
        let handle = tokio::runtime::Handle::current();
        let placement = reader_threads::try_run_off_this_cpu(Box::new(move || {
            handle.block_on(async move {
                let mut work = work;
                let start = std::time::Instant::now();
                let work = loop {
                    match work.try_recv() {
                        Ok(got) => break got,
                        Err(oneshot::error::TryRecvError::Closed) => return,
                        Err(oneshot::error::TryRecvError::Empty) if start.elapsed() < HANDOFF_SPIN => {
                            std::thread::yield_now();
                        }
                        Err(oneshot::error::TryRecvError::Empty) => match work.await {
                            Ok(got) => break got,
                            Err(_) => return,
                        },
                    }
                };
                work.read().await;
            });
        }))
        .ok()?;
        Some(Self { handoff, placement })
    }
}

/// Whether recent dumps of each (family, command) came in more than one
/// part: a small table indexed by a hash, the last dump's outcome per
/// slot, so a plugin sending commands of every number cannot grow it.
pub(super) struct PartHints([AtomicU32; PART_HINT_SLOTS]);

/// Slots of [`PartHints`]: a power of two, indexed by a hash's top bits.
const PART_HINT_SLOTS: usize = 64;

impl Default for PartHints {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU32::new(0)))
    }
}

/// One dump's slot in [`PartHints`].
pub(super) struct PartHint {
    hints: Arc<PartHints>,
    key: u32,
}

impl PartHint {
    pub(super) fn new(hints: &Arc<PartHints>, family: u16, cmd: u8) -> Self {
        Self {
            hints: hints.clone(),
            key: (u32::from(family) << 8) | u32::from(cmd),
        }
    }

    fn slot(&self) -> &AtomicU32 {
        // `key` is 24 bits; a multiplicative hash spreads neighbours, and
        // its top bits index the slots.
        const SHIFT: u32 = u32::BITS - PART_HINT_SLOTS.trailing_zeros();
        let index = (self.key.wrapping_mul(0x9E37_79B9) >> SHIFT) as usize;
        &self.hints.0[index % PART_HINT_SLOTS]
    }

    /// Whether the last dump of this kind had more than one part.
    pub(super) fn expects_many(&self) -> bool {
        // Stored: the key, a "set" bit, a "many" bit.
        self.slot().load(Ordering::Relaxed) == (self.key << 2) | 0b11
    }

    fn record(&self, many: bool) {
        self.slot()
            .store((self.key << 2) | 0b10 | u32::from(many), Ordering::Relaxed);
    }
}

/// Peek at the datagram at the head of the dump's socket: its messages as
/// a part, and the dump's end if the datagram carried it. The datagram
/// stays queued until [`Lease::discard`].
async fn read_datagram(
    lease: &mut Lease,
    seq: u32,
    deadline: Instant,
    wait: Duration,
) -> Result<(Part, Option<Result<(), RequestError>>), RequestError> {
    let mut part = Part {
        bytes: Vec::new(),
        payload: 0,
        interrupted: false,
        last: false,
    };
    let scan = lease
        .next(Read::Peek, seq, deadline, wait, |msg, raw, datagram| {
            if part.bytes.is_empty() {
                // One allocation a part: the datagram holds the rest.
                part.bytes.reserve(datagram);
            }
            part.payload = part.payload.saturating_add(msg.payload.len());
            part.bytes.extend_from_slice(raw);
            part.bytes.resize(part.bytes.len().next_multiple_of(4), 0);
            Ok(())
        })
        .await?;
    part.interrupted = scan.interrupted;
    part.last = scan.end.is_some();
    Ok((part, scan.end))
}

/// The reader: once the consumer's queue has room, take the datagram last
/// peeked at off the socket (the kernel makes the next part meanwhile),
/// then peek at the next; until the dump ends, fails or the consumer goes.
async fn read_ahead(
    mut lease: Lease,
    seq: u32,
    wait: Duration,
    tx: mpsc::Sender<Result<Part, RequestError>>,
    making: &AtomicBool,
) {
    loop {
        // No room: the consumer has a part queued and one in hand. Gone:
        // returning drops the lease, which closes the socket mid-dump.
        let Ok(slot) = tx.reserve().await else { return };
        // While this is set the consumer may spin for the part instead of
        // parking (`DumpParts::spin_for_part`): the kernel is making it.
        making.store(true, Ordering::Release);
        let more = match lease.discard() {
            Err(e) => {
                slot.send(Err(e));
                false
            }
            Ok(()) => {
                let deadline = Instant::now() + wait;
                match read_datagram(&mut lease, seq, deadline, wait).await {
                    Ok((part, None)) => {
                        slot.send(Ok(part));
                        true
                    }
                    Ok((part, Some(end))) => {
                        // The dump is over in the kernel: the socket is
                        // clean and goes back to the pool before the
                        // consumer is told.
                        let end = match lease.discard() {
                            Ok(()) => {
                                lease.complete();
                                end
                            }
                            Err(e) => Err(e),
                        };
                        drop(lease);
                        // A kernel error replaces the datagram's messages.
                        slot.send(end.map(|()| part));
                        making.store(false, Ordering::Release);
                        return;
                    }
                    Err(e) => {
                        slot.send(Err(e));
                        false
                    }
                }
            }
        };
        making.store(false, Ordering::Release);
        if !more {
            // Returning drops the lease: back in the pool if completed,
            // else closed mid-dump.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer whose reader is the test: parts go in through the
    /// returned sender.
    fn consumer() -> (DumpParts, mpsc::Sender<Result<Part, RequestError>>) {
        let (tx, parts) = mpsc::channel(1);
        let bounds = RequestBounds {
            wait: Duration::from_secs(5),
            reply_bytes: 1 << 20,
        };
        let dump = DumpParts::reading(None, parts, Arc::new(AtomicBool::new(false)), bounds);
        (dump, tx)
    }

    fn part(bytes: &[u8], last: bool) -> Part {
        Part {
            bytes: bytes.to_vec(),
            payload: bytes.len(),
            interrupted: false,
            last,
        }
    }

    #[tokio::test]
    async fn a_dump_whose_reader_stops_before_the_end_fails_instead_of_ending_short() {
        // A reader that panics drops its sender mid-dump, as this does.
        let (mut dump, tx) = consumer();
        tx.send(Ok(part(b"first", false))).await.unwrap();
        drop(tx);
        assert_eq!(dump.next_part().await.unwrap().as_deref(), Some(&b"first"[..]));
        let cut = dump.next_part().await.expect_err("a dump cut short is an error");
        assert!(cut.to_string().contains("incomplete"), "{cut}");
        assert!(dump.next_part().await.is_err(), "and stays one");

        // The end said by the last part: whole, even with the sender gone.
        let (mut dump, tx) = consumer();
        tx.send(Ok(part(b"first", false))).await.unwrap();
        let second = tx.clone();
        tokio::spawn(async move { second.send(Ok(part(b"last", true))).await });
        drop(tx);
        assert_eq!(dump.next_part().await.unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(dump.next_part().await.unwrap().as_deref(), Some(&b"last"[..]));
        assert_eq!(dump.next_part().await.unwrap(), None);
        assert_eq!(dump.next_part().await.unwrap(), None);

        // An end in a datagram of its own (no messages) ends it too.
        let (mut dump, tx) = consumer();
        tx.send(Ok(part(b"", true))).await.unwrap();
        drop(tx);
        assert_eq!(dump.next_part().await.unwrap(), None);
    }

    #[test]
    fn a_part_hint_remembers_the_last_dump_of_its_kind_only() {
        let hints = Arc::new(PartHints::default());
        let netdev_dump = PartHint::new(&hints, 0x1c, 1);
        assert!(!netdev_dump.expects_many(), "nothing learnt yet");
        netdev_dump.record(true);
        assert!(PartHint::new(&hints, 0x1c, 1).expects_many());
        netdev_dump.record(false);
        assert!(!netdev_dump.expects_many(), "one part last time");

        // A kind of dump sharing the slot is never taken for it: the
        // slot holds the last one's key, and the other finds it unknown.
        let sharing = (0..=u16::MAX)
            .flat_map(|family| (0..=u8::MAX).map(move |cmd| (family, cmd)))
            .filter(|&k| k != (0x1c, 1))
            .map(|(family, cmd)| PartHint::new(&hints, family, cmd))
            .find(|other| std::ptr::eq(other.slot(), netdev_dump.slot()))
            .expect("another kind in the same slot");
        netdev_dump.record(true);
        assert!(!sharing.expects_many(), "another kind, same slot");
        sharing.record(true);
        assert!(sharing.expects_many());
        assert!(!netdev_dump.expects_many(), "its slot taken by another kind");
        // And one in another slot is left alone.
        let elsewhere = (0..=u8::MAX)
            .map(|cmd| PartHint::new(&hints, 0x1d, cmd))
            .find(|other| !std::ptr::eq(other.slot(), sharing.slot()))
            .expect("a kind in another slot");
        elsewhere.record(true);
        assert!(sharing.expects_many(), "a write elsewhere leaves the slot");
    }
}
