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
//! consumer narrows a reader's mask before it hands the reader a dump.
//!
//! A reader thread starts with the process's CPUs (its main thread's
//! mask, which an operator's `taskset -p` sets; a cpuset bounds it
//! anyway), and its mask only ever leaves out of those the one CPU the
//! consumer is on; with a single CPU allowed it is left alone.
//! Threads are started as dumps need them, up to [`MAX_READER_THREADS`],
//! and kept; beyond that a dump's reader runs on tokio's blocking pool,
//! placed as the scheduler likes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{LazyLock, Mutex};

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
}

static READERS: LazyLock<ReaderThreads> = LazyLock::new(|| ReaderThreads {
    idle: Mutex::new(Vec::new()),
    started: AtomicUsize::new(0),
});

/// A reader thread, seen from the consumer that hands it a job.
struct Reader {
    tid: Pid,
    jobs: mpsc::Sender<Task>,
    /// The process's CPUs when the thread started.
    allowed: CpuSet,
    /// The CPU its mask leaves out now, if any.
    away_from: Option<usize>,
}

/// A job, with the reader's handle, which the thread puts back on the
/// idle list when the job is done.
struct Task {
    job: Job,
    reader: Reader,
}

/// Run `job` on a reader thread kept off the calling thread's CPU; on
/// tokio's blocking pool when every reader thread is busy, or one could
/// not be started. Call it from within a tokio runtime.
pub(super) fn run_off_this_cpu(job: Job) {
    let Some(mut reader) = idle_or_new() else {
        tokio::task::spawn_blocking(job);
        return;
    };
    reader.keep_off(sched_getcpu());
    let jobs = reader.jobs.clone();
    if let Err(mpsc::SendError(task)) = jobs.send(Task { job, reader }) {
        // The thread has gone (a job panicked); its count went with it.
        tokio::task::spawn_blocking(task.job);
    }
}

fn idle_or_new() -> Option<Reader> {
    let readers = &*READERS;
    if let Some(reader) = readers.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
        return Some(reader);
    }
    let claimed = readers
        .started
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_READER_THREADS).then_some(n + 1)
        })
        .is_ok();
    if !claimed {
        return None;
    }
    start_thread()
}

/// One started reader thread, counted out when dropped.
struct Started;

impl Drop for Started {
    fn drop(&mut self) {
        READERS.started.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Start a reader thread, already counted in `started`; `None` if the
/// system refuses a thread or the thread its mask.
fn start_thread() -> Option<Reader> {
    let (jobs, tasks) = mpsc::channel::<Task>();
    let (hello, greeting) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("genl-dump-reader".to_owned())
        .spawn(move || {
            // Counted out however the thread ends, a panicking job included.
            let _counted = Started;
            let me = take_the_process_mask().map(|allowed| (rustix::thread::gettid(), allowed));
            let ok = me.is_ok();
            let _ = hello.send(me);
            if ok {
                serve(&tasks);
            }
        });
    if let Err(e) = spawned {
        // The closure, and with it its count, never ran.
        READERS.started.fetch_sub(1, Ordering::AcqRel);
        tracing::debug!(error = %e, "no dump reader thread; the blocking pool reads");
        return None;
    }
    match greeting.recv() {
        Ok(Ok((tid, allowed))) => Some(Reader {
            tid,
            jobs,
            allowed,
            away_from: None,
        }),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a dump reader thread could not read its CPU mask");
            None
        }
        Err(_) => None,
    }
}

/// Give the calling (new) thread the CPUs of the process's main thread,
/// and return them. A thread starts with the mask of the one that started
/// it, which may be a consumer's narrowed one; the main thread's is what
/// an operator sets with `taskset -p` (a cpuset still bounds both).
fn take_the_process_mask() -> rustix::io::Result<CpuSet> {
    let main = i32::try_from(std::process::id())
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(rustix::io::Errno::SRCH)?;
    let allowed = sched_getaffinity(Some(main))?;
    sched_setaffinity(None, &allowed)?;
    Ok(allowed)
}

/// A reader thread's life: each job, then back on the idle list. It
/// ends when a job panics (the panic is the job's own to report) or the
/// process does.
fn serve(tasks: &mpsc::Receiver<Task>) {
    while let Ok(Task { job, reader }) = tasks.recv() {
        job();
        READERS
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reader);
    }
}

impl Reader {
    /// Narrow the thread's mask to leave out `cpu` (which the thread
    /// sleeps through, so it takes effect at the next wakeup), unless it
    /// already does or nothing would be left.
    fn keep_off(&mut self, cpu: usize) {
        if self.away_from == Some(cpu) {
            return;
        }
        let mut mask = self.allowed;
        if cpu < CpuSet::MAX_CPU && mask.is_set(cpu) {
            mask.unset(cpu);
        }
        if mask.count() == 0 {
            // One CPU allowed: the thread can only run there.
            return;
        }
        match sched_setaffinity(Some(self.tid), &mask) {
            Ok(()) => self.away_from = Some(cpu),
            Err(e) => {
                tracing::debug!(error = %e, cpu, "a dump reader's CPU mask was not narrowed");
                self.away_from = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The CPUs the calling thread may run on, as the kernel reports them
    /// (`Cpus_allowed_list`, such as `0-1,4`).
    fn allowed_here() -> Vec<usize> {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("/proc/thread-self/status");
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list in /proc/thread-self/status")
            .trim();
        let mut cpus = Vec::new();
        for range in list.split(',') {
            let (from, to) = range.split_once('-').unwrap_or((range, range));
            cpus.extend(
                from.parse::<usize>().expect("a CPU number")..=to.parse::<usize>().expect("a CPU number"),
            );
        }
        cpus
    }

    /// Pin this thread to `cpu`, hand a reader a job, and return the CPUs
    /// the reader may run on and the one it ran on, seen from inside it.
    fn hand_a_job_from(cpu: usize) -> (Vec<usize>, usize) {
        let mut one = CpuSet::new();
        one.set(cpu);
        sched_setaffinity(None, &one).expect("pin the test thread");
        assert_eq!(sched_getcpu(), cpu, "the pinned test thread runs on its CPU");
        let (tx, rx) = mpsc::channel();
        run_off_this_cpu(Box::new(move || {
            let _ = tx.send((allowed_here(), sched_getcpu()));
        }));
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the reader ran the job")
    }

    #[tokio::test]
    async fn a_reader_is_kept_off_the_cpu_of_the_thread_that_hands_it_a_dump() {
        let all = allowed_here();
        let before = sched_getaffinity(None).expect("the test thread's mask");
        let mut seen = Vec::new();
        // Each CPU in turn, then the first again: an idle reader is
        // narrowed anew for each consumer's CPU.
        let order: Vec<usize> = all.iter().copied().take(3).chain(all.first().copied()).collect();
        for &cpu in &order {
            seen.push((cpu, hand_a_job_from(cpu)));
        }
        sched_setaffinity(None, &before).expect("restore the test thread's mask");
        for (cpu, (mask, ran_on)) in seen {
            if all.len() == 1 {
                // Nothing to keep off: the only CPU stays allowed.
                assert_eq!(mask, all);
                continue;
            }
            let expected: Vec<usize> = all.iter().copied().filter(|&c| c != cpu).collect();
            assert_eq!(mask, expected, "a reader handed a dump from CPU {cpu}");
            assert_ne!(ran_on, cpu, "a reader handed a dump from CPU {cpu} ran there");
        }
    }
}
