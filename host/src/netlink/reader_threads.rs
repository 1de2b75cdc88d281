//! The threads that read dumps ahead (`dump_parts.rs`), each woken on a
//! CPU other than its consumer's.
//!
//! A dump's reader exists so that the kernel makes part n+1 while the
//! consumer decodes part n, which needs the two on different CPUs. A
//! thread of tokio's blocking pool, woken by the consumer, is placed by
//! the scheduler, and a busy machine's scheduler often places it on the
//! waker's own CPU even with another one idle (once the CPUs sharing a
//! cache are busy on average, a wakeup stops looking for an idle one).
//! There the reader waits until the consumer has decoded its part, and
//! nothing overlaps: a trace of the 1001-device HTTP dump (docs/
//! performance.md, session 13) had two wakeups in three land on the
//! waker's CPU, and part 1's decoding and part 2's making one after the
//! other. A sleeping thread whose affinity leaves out the consumer's CPU
//! cannot be woken there, so the readers are threads of our own, and the
//! consumer narrows a reader's mask before it wakes the reader: when it
//! hands the reader a dump, and again before each part it takes if it
//! has moved to another CPU since (a tokio task may change workers).
//!
//! A reader's mask is the process's CPUs (its main thread's mask, which
//! an operator's `taskset -p` sets; a cpuset bounds it anyway), read
//! again each time it is narrowed, less the one CPU the consumer is on;
//! with a single CPU allowed nothing is left out. Threads are started as
//! dumps need them, up to [`MAX_READER_THREADS`], and kept; beyond that
//! a dump's reader runs on tokio's blocking pool, placed as the scheduler
//! likes. Starting a thread does not wait for it: the consumer hands the
//! new thread its first dump and the mask to take.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, mpsc};

use rustix::thread::{CpuSet, Pid, sched_getaffinity, sched_getcpu, sched_setaffinity};

/// Reader threads kept at most: one per request socket of a default pool
/// (`pool::DEFAULT_REQUEST_SOCKETS`) twice over; a dump holds a socket
/// for as long as its reader runs, so more rarely run at once.
pub(super) const MAX_READER_THREADS: usize = 16;

/// Work handed to a reader thread: one dump's reading.
pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

/// The idle reader threads, and how many were started.
struct ReaderThreads {
    idle: Mutex<Vec<Reader>>,
    started: AtomicUsize,
    /// The last job handed out; 0 is no job.
    jobs: AtomicU64,
}

static READERS: LazyLock<ReaderThreads> = LazyLock::new(|| ReaderThreads {
    idle: Mutex::new(Vec::new()),
    started: AtomicUsize::new(0),
    jobs: AtomicU64::new(0),
});

/// A reader thread, as the idle list holds it.
struct Reader {
    shared: Arc<Shared>,
    tasks: mpsc::Sender<Task>,
}

/// What a reader thread and the consumer of its current dump share.
struct Shared {
    /// Set by the thread as it starts.
    tid: OnceLock<Pid>,
    placed: Mutex<Placed>,
}

/// Which job a reader runs, and the CPU its mask leaves out for it.
struct Placed {
    job: u64,
    away_from: Option<usize>,
}

/// A job, with the reader's handle, which the thread puts back on the
/// idle list when the job is done.
struct Task {
    job: Job,
    reader: Reader,
}

/// The consumer's hold on the placement of the reader running its dump.
pub(super) struct Placement {
    shared: Arc<Shared>,
    job: u64,
}

impl Placement {
    /// Keep the reader off the CPU the caller is on now, if the caller
    /// has moved since; a no-op once the reader has finished this job.
    pub(super) fn follow(&self) {
        keep_off(&self.shared, self.job, sched_getcpu());
    }
}

/// Whether the process may run on more than one CPU, so that a reader
/// can run beside its consumer at all.
pub(super) fn many_cpus() -> bool {
    static MANY_CPUS: LazyLock<bool> =
        LazyLock::new(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1));
    *MANY_CPUS
}

/// Run `job` on a reader thread kept off the calling thread's CPU, and
/// return the hold that keeps it off as the caller moves; on tokio's
/// blocking pool (and `None`) when every reader thread is busy or one
/// could not be started. Call it from within a tokio runtime.
pub(super) fn run_off_this_cpu(job: Job) -> Option<Placement> {
    match try_run_off_this_cpu(job) {
        Ok(placement) => Some(placement),
        Err(job) => {
            tokio::task::spawn_blocking(job);
            None
        }
    }
}

/// [`run_off_this_cpu`] without the blocking pool: the job back when
/// every reader thread is busy or one could not be started.
pub(super) fn try_run_off_this_cpu(job: Job) -> Result<Placement, Job> {
    let readers = &*READERS;
    let id = readers
        .jobs
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(1)
        .max(1);
    let cpu = sched_getcpu();
    let idle = lock(&readers.idle).pop();
    if let Some(reader) = idle {
        lock(&reader.shared.placed).job = id;
        keep_off(&reader.shared, id, cpu);
        let shared = reader.shared.clone();
        let tasks = reader.tasks.clone();
        return match tasks.send(Task { job, reader }) {
            Ok(()) => Ok(Placement { shared, job: id }),
            // Not reached: a thread leaves the idle list to run a job and
            // only a panic in one ends it.
            Err(mpsc::SendError(task)) => Err(task.job),
        };
    }
    let claimed = readers
        .started
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_READER_THREADS).then_some(n + 1)
        })
        .is_ok();
    if !claimed {
        return Err(job);
    }
    start_thread(job, id, cpu)
}

/// Start a reader thread, already counted in `started`, with `first` as
/// its first job; the job back if the system refuses a thread.
fn start_thread(first: Job, id: u64, cpu: usize) -> Result<Placement, Job> {
    let shared = Arc::new(Shared {
        tid: OnceLock::new(),
        placed: Mutex::new(Placed {
            job: id,
            away_from: None,
        }),
    });
    let (tasks, inbox) = mpsc::channel::<Task>();
    let task = Task {
        job: first,
        reader: Reader {
            shared: shared.clone(),
            tasks,
        },
    };
    // Shared with the thread, so the job can be taken back if the thread
    // is refused (the refused closure is dropped with all it holds).
    let first = Arc::new(Mutex::new(Some(task)));
    // The mask the thread takes: the process's less the consumer's CPU;
    // where that cannot be read, the one it inherits.
    let mask = mask_without(cpu);
    let started = std::thread::Builder::new()
        .name("genl-dump-reader".to_owned())
        .spawn({
            let shared = shared.clone();
            let first = first.clone();
            move || {
                // Counted out however the thread ends, a panicking job
                // included.
                let _counted = Started;
                let _ = shared.tid.set(rustix::thread::gettid());
                if let Some(mask) = mask {
                    match sched_setaffinity(None, &mask) {
                        Ok(()) => lock(&shared.placed).away_from = Some(cpu),
                        Err(e) => {
                            tracing::debug!(error = %e, "a dump reader kept the CPU mask it started with")
                        }
                    }
                }
                let task = lock(&first).take();
                if let Some(task) = task {
                    run(task);
                }
                while let Ok(task) = inbox.recv() {
                    run(task);
                }
            }
        });
    match started {
        Ok(_) => Ok(Placement { shared, job: id }),
        Err(e) => {
            // The closure, and with it its count, never ran.
            READERS.started.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(error = %e, "no dump reader thread; the blocking pool reads");
            match lock(&first).take() {
                Some(task) => Err(task.job),
                // Not reached: only the thread takes it, and it never ran.
                None => Err(Box::new(|| {})),
            }
        }
    }
}

/// One started reader thread, counted out when dropped.
struct Started;

impl Drop for Started {
    fn drop(&mut self) {
        READERS.started.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Run a job, then put the reader back on the idle list. A panicking
/// job (the panic is its own to report) ends the thread instead, its
/// handle dropped with it, so an idle reader is always a live thread.
fn run(Task { job, reader }: Task) {
    job();
    lock(&reader.shared.placed).job = 0;
    lock(&READERS.idle).push(reader);
}

/// Narrow the reader's mask to leave out `cpu`, if it still runs `job`
/// and its mask does not already (the thread sleeps through it, so it
/// takes effect at the next wakeup).
fn keep_off(shared: &Shared, job: u64, cpu: usize) {
    let mut placed = lock(&shared.placed);
    if placed.job != job || placed.away_from == Some(cpu) {
        return;
    }
    // Not started yet: it takes its mask as it starts.
    let Some(&tid) = shared.tid.get() else { return };
    let Some(mask) = mask_without(cpu) else { return };
    match sched_setaffinity(Some(tid), &mask) {
        Ok(()) => placed.away_from = Some(cpu),
        Err(e) => {
            tracing::debug!(error = %e, cpu, "a dump reader's CPU mask was not narrowed");
            placed.away_from = None;
        }
    }
}

/// The process's CPUs (its main thread's mask, read now) less `cpu`;
/// all of them if `cpu` is the only one. `None` if the mask cannot be
/// read.
fn mask_without(cpu: usize) -> Option<CpuSet> {
    let main = Pid::from_raw(i32::try_from(std::process::id()).ok()?)?;
    let mut mask = match sched_getaffinity(Some(main)) {
        Ok(mask) => mask,
        Err(e) => {
            tracing::debug!(error = %e, "the process's CPU mask could not be read");
            return None;
        }
    };
    if cpu < CpuSet::MAX_CPU && mask.is_set(cpu) {
        mask.unset(cpu);
        if mask.count() == 0 {
            // One CPU allowed: the thread can only run there.
            mask.set(cpu);
        }
    }
    Some(mask)
}

/// A lock, poisoned or not: what these guard stays consistent if a
/// holder panics (plain stores).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A CPU list as the kernel writes it (`0-1,4`).
    fn cpu_list(list: &str) -> Vec<usize> {
        let mut cpus = Vec::new();
        for range in list.trim().split(',').filter(|r| !r.is_empty()) {
            let (from, to) = range.split_once('-').unwrap_or((range, range));
            cpus.extend(
                from.parse::<usize>().expect("a CPU number")..=to.parse::<usize>().expect("a CPU number"),
            );
        }
        cpus
    }

    /// The CPUs a thread of this process may run on, as the kernel
    /// reports them (`status` of the process, of this thread, or of a
    /// thread by id).
    fn allowed(status: &str) -> Vec<usize> {
        let status = std::fs::read_to_string(status).unwrap_or_else(|e| panic!("{status}: {e}"));
        cpu_list(
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .expect("Cpus_allowed_list in a status file"),
        )
    }

    fn pin_to(cpu: usize) {
        let mut one = CpuSet::new();
        one.set(cpu);
        sched_setaffinity(None, &one).expect("pin the test thread");
        assert_eq!(sched_getcpu(), cpu, "the pinned test thread runs on its CPU");
    }

    /// A job handed to a reader: its thread, and what it says once
    /// let go.
    struct Handed {
        placement: Option<Placement>,
        tid: i32,
        name: String,
        go: mpsc::Sender<()>,
        ran_on: mpsc::Receiver<usize>,
    }

    /// Hand a reader a job that reports its thread and then waits to be
    /// let go, so its mask can be read while it sleeps.
    fn hand_a_waiting_job() -> Handed {
        let (hello_tx, hello) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let (ran_tx, ran_on) = mpsc::channel();
        let placement = run_off_this_cpu(Box::new(move || {
            let me = std::thread::current().name().unwrap_or_default().to_owned();
            let _ = hello_tx.send((rustix::thread::gettid().as_raw_nonzero().get(), me));
            if go_rx.recv().is_ok() {
                let _ = ran_tx.send(sched_getcpu());
            }
        }));
        let (tid, name) = hello
            .recv_timeout(Duration::from_secs(10))
            .expect("the reader started the job");
        Handed {
            placement,
            tid,
            name,
            go,
            ran_on,
        }
    }

    /// A job on one of the reader threads (another test of this binary
    /// could hold them all, and the blocking pool would run it).
    fn hand_a_reader_a_waiting_job() -> Handed {
        for _ in 0..100 {
            let handed = hand_a_waiting_job();
            if handed.name == "genl-dump-reader" {
                assert!(
                    handed.placement.is_some(),
                    "a reader thread's consumer holds its placement"
                );
                return handed;
            }
            let _ = handed.go.send(());
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no reader thread was free in 2 s");
    }

    fn mask_of(tid: i32) -> Vec<usize> {
        allowed(&format!("/proc/self/task/{tid}/status"))
    }

    /// A reader's mask leaves out `cpu` and keeps every other CPU this
    /// test may run on; with one such CPU, it keeps that one.
    fn assert_kept_off(mask: &[usize], cpu: usize, usable: &[usize], process: &[usize], what: &str) {
        assert!(
            mask.iter().all(|c| process.contains(c)),
            "{what}: {mask:?} within the process's {process:?}"
        );
        if usable.len() == 1 {
            assert_eq!(mask, usable, "{what}: the only CPU stays allowed");
            return;
        }
        assert!(!mask.contains(&cpu), "{what}: {mask:?} leaves out CPU {cpu}");
        for c in usable.iter().filter(|&&c| c != cpu) {
            assert!(mask.contains(c), "{what}: {mask:?} keeps CPU {c}");
        }
    }

    fn until_idle(tid: i32) {
        let start = Instant::now();
        while !lock(&READERS.idle)
            .iter()
            .any(|r| r.shared.tid.get().map(|t| t.as_raw_nonzero().get()) == Some(tid))
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "reader {tid} back on the idle list"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[tokio::test]
    async fn a_reader_is_kept_off_its_consumers_cpu_before_it_wakes_and_as_the_consumer_moves() {
        let process = allowed("/proc/self/status");
        let online =
            cpu_list(&std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online CPUs"));
        let usable: Vec<usize> = allowed("/proc/thread-self/status")
            .into_iter()
            .filter(|c| online.contains(c))
            .collect();
        assert!(!usable.is_empty(), "a CPU to run on");
        let before = sched_getaffinity(None).expect("the test thread's mask");

        // Each CPU in turn, then the first again: the mask is read while
        // the reader sleeps, before it is let go.
        let order: Vec<usize> = usable
            .iter()
            .copied()
            .take(3)
            .chain(usable.first().copied())
            .collect();
        let mut tids = Vec::new();
        for &cpu in &order {
            pin_to(cpu);
            let handed = hand_a_reader_a_waiting_job();
            let what = format!("a reader handed a dump from CPU {cpu}");
            assert_kept_off(&mask_of(handed.tid), cpu, &usable, &process, &what);
            handed.go.send(()).expect("let the job go");
            let ran_on = handed
                .ran_on
                .recv_timeout(Duration::from_secs(10))
                .expect("the job ran");
            if usable.len() > 1 {
                assert_ne!(ran_on, cpu, "{what} ran there");
            }
            until_idle(handed.tid);
            tids.push(handed.tid);
        }
        // An idle reader is used again, narrowed anew for its consumer.
        assert!(
            tids.iter()
                .enumerate()
                .skip(1)
                .any(|(i, t)| tids[..i].contains(t)),
            "idle readers are reused: {tids:?}"
        );

        // A consumer that moves to another CPU mid-dump takes the
        // reader's mask along at its next part.
        if let [a, b, ..] = usable[..] {
            pin_to(a);
            let handed = hand_a_reader_a_waiting_job();
            assert_kept_off(
                &mask_of(handed.tid),
                a,
                &usable,
                &process,
                "before the consumer moves",
            );
            pin_to(b);
            handed.placement.as_ref().expect("a placement").follow();
            let mask = mask_of(handed.tid);
            assert_kept_off(&mask, b, &usable, &process, "after the consumer moved");
            assert!(
                mask.contains(&a),
                "the CPU the consumer left is allowed again: {mask:?}"
            );
            handed.go.send(()).expect("let the job go");
            let ran_on = handed
                .ran_on
                .recv_timeout(Duration::from_secs(10))
                .expect("the job ran");
            assert_ne!(ran_on, b, "a reader ran on its consumer's new CPU");
            until_idle(handed.tid);
            // Its job done, the old hold no longer moves the reader.
            pin_to(a);
            handed.placement.as_ref().expect("a placement").follow();
            assert_kept_off(
                &mask_of(handed.tid),
                b,
                &usable,
                &process,
                "after its job, from an old hold",
            );
        }
        sched_setaffinity(None, &before).expect("restore the test thread's mask");
    }
}
