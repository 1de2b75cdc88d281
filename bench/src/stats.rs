//! Latency samples and throughput, summarised as the table prints them.

use std::time::{Duration, Instant};

/// One measured row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Workload.
    pub workload: String,
    /// Path (raw, plugin, http, pyroute2).
    pub path: String,
    /// Operations or messages per second.
    pub rate: f64,
    /// What `rate` counts.
    pub unit: &'static str,
    /// Median latency of one operation, if measured.
    pub p50: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// Anything worth saying (counts returned, drops).
    pub note: String,
}

/// Run `op` `n` times (after `warm` unmeasured runs); latency per call and
/// the rate of `per_op` units per call.
pub fn measure(
    n: usize,
    warm: usize,
    per_op: impl Fn() -> f64,
    mut op: impl FnMut(),
) -> (f64, Duration, Duration) {
    for _ in 0..warm {
        op();
    }
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        op();
        samples.push(t.elapsed());
    }
    let total = start.elapsed();
    summarise(&mut samples, total, n as f64 * per_op())
}

/// Run the async `op` `n` times, each timed, with no warm-up runs;
/// latency per call and calls per second.
pub async fn measure_async<F>(
    n: usize,
    mut op: impl FnMut() -> F,
) -> anyhow::Result<(f64, Duration, Duration)>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        op().await?;
        samples.push(t.elapsed());
    }
    Ok(summarise(&mut samples, start.elapsed(), n as f64))
}

/// Rounds the paths of one comparison take turns in (`in_rounds`).
pub const ROUNDS: usize = 10;

/// Run `round` `ROUNDS` times with a share of `n` each (the shares add
/// up to `n`). The paths compared in a ratio each run their share inside
/// every round, one after the other, so a slow spell of this shared
/// machine (docs/performance.md) falls on all of them alike instead of on
/// whichever row it happened to come in: two runs of one build had given
/// the in-process dump 0.53x and 0.71x when each path ran all its dumps
/// in one go. Callers open each turn with one operation they do not time,
/// so that no path pays for the caches the path before it left behind.
pub fn in_rounds(n: usize, mut round: impl FnMut(usize) -> anyhow::Result<()>) -> anyhow::Result<()> {
    for i in 0..ROUNDS {
        let share = n / ROUNDS + usize::from(i < n % ROUNDS);
        round(share)?;
    }
    Ok(())
}

/// One path's timed operations, gathered over rounds: its rate is its
/// units over the time its own operations took, so the other paths'
/// turns between them do not count.
#[derive(Debug, Default)]
pub struct Tally {
    samples: Vec<Duration>,
    busy: Duration,
    units: f64,
}

impl Tally {
    /// One operation that took `took` and did `units` units of work.
    pub fn add(&mut self, took: Duration, units: f64) {
        self.samples.push(took);
        self.busy += took;
        self.units += units;
    }

    /// Rate, p50 and p99, as `summarise` gives them.
    pub fn summary(&mut self) -> (f64, Duration, Duration) {
        summarise(&mut self.samples, self.busy, self.units)
    }

    /// Units per operation on average.
    pub fn units_per_op(&self) -> f64 {
        self.units / self.samples.len().max(1) as f64
    }
}

/// p50, p99 of `samples`, and `units` over `total` as a rate.
pub fn summarise(samples: &mut [Duration], total: Duration, units: f64) -> (f64, Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    (units / total.as_secs_f64(), at(0.5), at(0.99))
}

fn fmt_dur(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d < Duration::from_millis(1) => format!("{:.1} µs", d.as_secs_f64() * 1e6),
        Some(d) => format!("{:.2} ms", d.as_secs_f64() * 1e3),
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// The table, as Markdown; ratios against the `raw` row of each workload.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | path | rate | p50 | p99 | vs raw | notes |\n|---|---|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let raw = rows
            .iter()
            .find(|x| x.workload == r.workload && x.path == "raw")
            .map(|x| x.rate);
        let ratio = match raw {
            Some(raw) if raw > 0.0 => format!("{:.2}x", r.rate / raw),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} {} | {} | {} | {} | {} |\n",
            r.workload,
            r.path,
            fmt_rate(r.rate),
            r.unit,
            fmt_dur(r.p50),
            fmt_dur(r.p99),
            ratio,
            r.note
        ));
    }
    out
}
