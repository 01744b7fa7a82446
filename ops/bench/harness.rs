//! The shared harness of every phase: CPU and WAL probes, medians and quartiles, number
//! formatting, and the one summary table a run ends with.

use std::collections::HashMap;

use anyhow::Result;

use super::Ctx;

// Resource probes: client CPU (this process), host CPU, WAL bytes.

#[derive(Clone, Debug, Default)]
pub(crate) struct Probe {
    /// CPU seconds used by this process (all threads).
    pub(crate) self_cpu: f64,
    /// CPU seconds used so far by each server process that serves the scratch database, and
    /// by the WAL writer, checkpointer and background writer.
    pub(crate) pg: HashMap<i32, f64>,
    /// Busy CPU seconds of the whole host (all cores), from /proc/stat.
    pub(crate) host_busy: f64,
    /// WAL insert position in bytes.
    pub(crate) wal: i64,
}

impl Probe {
    /// Server CPU seconds spent between `earlier` and `self`.
    pub(crate) fn pg_since(&self, earlier: &Probe) -> f64 {
        self.pg
            .iter()
            .map(|(pid, t)| t - earlier.pg.get(pid).copied().unwrap_or(0.0))
            .sum()
    }
}

/// On-CPU time of one thread or single-threaded process, from `/proc/…/schedstat`
/// (nanoseconds, exact, unlike the tick-sampled utime/stime).
pub(crate) fn schedstat_seconds(path: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

pub(crate) fn self_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter_map(|t| schedstat_seconds(&t.path().join("schedstat")))
        .sum()
}

pub(crate) fn pid_cpu_seconds(pid: i32) -> Option<f64> {
    schedstat_seconds(&std::path::PathBuf::from(format!("/proc/{pid}/schedstat")))
}

pub(crate) fn host_busy_seconds() -> f64 {
    const USER_HZ: f64 = 100.0; // /proc/stat counts in USER_HZ, fixed at 100 on Linux.
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(line) = stat.lines().next() else {
        return f64::NAN;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    if v.len() < 5 {
        return f64::NAN;
    }
    // user nice system idle iowait irq softirq steal …; guest time is already in user.
    let total: f64 = v.iter().take(8).sum();
    (total - v[3] - v[4]) / USER_HZ
}

pub(crate) async fn probe(ctx: &Ctx) -> Result<Probe> {
    let (wal, pids): (i64, Vec<i32>) = sqlx::query_as(
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint,
                ARRAY(SELECT pid FROM pg_stat_activity
                       WHERE (datname = current_database() AND pid <> pg_backend_pid())
                          OR backend_type IN ('walwriter', 'checkpointer', 'background writer'))",
    )
    .fetch_one(&mut *ctx.probe.lock().await)
    .await?;
    Ok(Probe {
        self_cpu: self_cpu_seconds(),
        pg: pids
            .into_iter()
            .filter_map(|pid| Some((pid, pid_cpu_seconds(pid)?)))
            .collect(),
        host_busy: host_busy_seconds(),
        wal,
    })
}

/// (median, first quartile, third quartile) of `xs`.
pub(crate) fn quartiles(xs: &mut [f64]) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = (xs.len() - 1) as f64 * q;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        xs[lo] + (xs[hi] - xs[lo]) * (pos - lo as f64)
    };
    (at(0.5), at(0.25), at(0.75))
}

/// One line of the final table: what was measured, its figure, the baseline it is compared
/// with in the same run, the ratio, the target and the verdict.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub(crate) measurement: String,
    pub(crate) figure: String,
    pub(crate) baseline: String,
    pub(crate) ratio: Option<f64>,
    pub(crate) target: String,
    /// `None`: shown for comparison, no target.
    pub(crate) pass: Option<bool>,
}

/// A ratio row: passes when `ratio >= target`.
pub(crate) fn verdict(
    what: &str,
    figure: String,
    baseline: String,
    ratio: f64,
    target: f64,
) -> Row {
    Row {
        measurement: what.to_string(),
        figure,
        baseline,
        ratio: Some(ratio),
        target: format!(">= {target}x"),
        pass: Some(ratio >= target),
    }
}

/// The ratio with two decimals, three when two would round across the target.
pub(crate) fn shown_ratio(ratio: f64, target: &str) -> String {
    let target: Option<f64> = target
        .strip_prefix(">= ")
        .and_then(|t| t.strip_suffix('x'))
        .and_then(|t| t.parse().ok());
    match target {
        Some(t) if ((ratio * 100.0).round() / 100.0 >= t) != (ratio >= t) => format!("{ratio:.3}x"),
        _ => format!("{ratio:.2}x"),
    }
}

/// The one table every run ends with (also as Markdown, for the READMEs).
pub(crate) fn print_table(rows: &[Row]) {
    let w =
        |f: fn(&Row) -> usize, head: &str| rows.iter().map(f).max().unwrap_or(0).max(head.len());
    let ratio = |r: &Row| {
        r.ratio
            .map_or("-".to_string(), |x| shown_ratio(x, &r.target))
    };
    let wm = w(|r| r.measurement.chars().count(), "measurement");
    let wf = w(|r| r.figure.chars().count(), "figure");
    let wb = w(|r| r.baseline.chars().count(), "baseline");
    println!();
    println!("SUMMARY");
    println!(
        "{:<wm$}  {:<wf$}  {:<wb$}  {:>7}  {:<9}  verdict",
        "measurement", "figure", "baseline", "ratio", "target"
    );
    for r in rows {
        println!(
            "{:<wm$}  {:<wf$}  {:<wb$}  {:>7}  {:<9}  {}",
            r.measurement,
            r.figure,
            r.baseline,
            ratio(r),
            r.target,
            match r.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "-",
            }
        );
    }
    println!();
    println!("| measurement | figure | baseline | ratio | target | |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.measurement,
            r.figure,
            r.baseline,
            ratio(r),
            r.target.replace(">=", "≥"),
            match r.pass {
                Some(true) => "pass",
                Some(false) => "**miss**",
                None => "–",
            }
        );
    }
}

pub(crate) fn fmt_rate(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 100_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if x >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

pub(crate) fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}
