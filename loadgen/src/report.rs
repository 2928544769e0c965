//! The benchmark report: Markdown with the figures, and a PNG of throughput and latency over
//! the live phase.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::bench::{BenchArgs, Live, Replay};
use crate::capacity::{self, LevelResult, latency_histogram};
use crate::scenario::Request;

pub struct Report<'a> {
    pub args: &'a BenchArgs,
    pub seed: u64,
    pub started_at: time::OffsetDateTime,
    pub nats_version: String,
    pub postgres_version: String,
    pub live: &'a Live,
    pub capacity: &'a [LevelResult],
    pub replays: &'a [Replay],
    pub heartbeat_timeout: Duration,
}

/// Per-second figures of the live phase.
pub struct Second {
    pub answered: u64,
    pub gateway_us: Histogram<u64>,
    pub commits: u64,
    pub end_to_end_us: Histogram<u64>,
}

/// What the live phase's answers and commits add up to.
pub struct Figures {
    pub webhook_us: Histogram<u64>,
    pub heartbeat_us: Histogram<u64>,
    pub end_to_end_us: Histogram<u64>,
    /// Webhooks answered 200 whose commit was not seen.
    pub commits_unseen: usize,
    pub ok: usize,
    /// Answers that were not 2xx, by status (0: no answer).
    pub not_ok: BTreeMap<u16, usize>,
    pub retries: usize,
    pub seconds: Vec<Second>,
    /// From the first request to the last answer.
    pub span: Duration,
}

impl Figures {
    pub fn of(live: &Live) -> Figures {
        let mut figures = Figures {
            webhook_us: latency_histogram(),
            heartbeat_us: latency_histogram(),
            end_to_end_us: latency_histogram(),
            commits_unseen: 0,
            ok: 0,
            not_ok: BTreeMap::new(),
            retries: 0,
            seconds: Vec::new(),
            span: Duration::ZERO,
        };
        let mut first_ok: HashMap<usize, Duration> = HashMap::new();
        let mut attempts: HashMap<(usize, bool), usize> = HashMap::new();
        let first_sent = live.answers.iter().map(|a| a.sent_at).min().unwrap_or_default();
        for answer in &live.answers {
            let latency_us = answer.latency.as_micros() as u64;
            figures.span = figures.span.max(answer.answered_at().saturating_sub(first_sent));
            match answer.request {
                Request::Webhook { index, duplicate } => {
                    figures.webhook_us.saturating_record(latency_us);
                    *attempts.entry((index, duplicate)).or_default() += 1;
                    if answer.ok() {
                        let at = first_ok.entry(index).or_insert(answer.answered_at());
                        *at = (*at).min(answer.answered_at());
                    }
                }
                Request::Heartbeat { .. } => figures.heartbeat_us.saturating_record(latency_us),
            }
            if answer.ok() {
                figures.ok += 1;
                let second = second_of(&mut figures.seconds, answer.answered_at());
                second.answered += 1;
                second.gateway_us.saturating_record(latency_us);
            } else {
                *figures.not_ok.entry(answer.status).or_default() += 1;
            }
        }
        figures.retries = attempts.values().map(|n| n - 1).sum();
        for (index, ok_at) in first_ok {
            match live.commits.get(&live.plan.webhooks[index].id) {
                Some(&committed) => {
                    let us = committed.saturating_sub(ok_at).as_micros().max(1) as u64;
                    figures.end_to_end_us.saturating_record(us);
                    let second = second_of(&mut figures.seconds, committed);
                    second.commits += 1;
                    second.end_to_end_us.saturating_record(us);
                }
                None => figures.commits_unseen += 1,
            }
        }
        figures
    }

    /// Mean successful requests per second over the phase.
    pub fn requests_per_second(&self) -> f64 {
        self.ok as f64 / self.span.as_secs_f64().max(1e-9)
    }

    pub fn peak_second(&self) -> u64 {
        self.seconds.iter().map(|s| s.answered).max().unwrap_or(0)
    }
}

fn second_of(seconds: &mut Vec<Second>, at: Duration) -> &mut Second {
    let index = at.as_secs() as usize;
    while seconds.len() <= index {
        seconds.push(Second {
            answered: 0,
            gateway_us: latency_histogram(),
            commits: 0,
            end_to_end_us: latency_histogram(),
        });
    }
    &mut seconds[index]
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn quantiles(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "–".into();
    }
    format!(
        "{:.1} / {:.1} / {:.1} / {:.1}",
        ms(histogram, 0.5),
        ms(histogram, 0.99),
        ms(histogram, 0.999),
        histogram.max() as f64 / 1000.0
    )
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1024.0 * 1024.0))
}

/// Writes `report.md` and `timeline.png` into `dir`; returns the Markdown.
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<String> {
    let figures = Figures::of(report.live);
    let plot = match crate::plot::draw(&figures.seconds, &dir.join("timeline.png")) {
        Ok(()) => "![throughput and latency over the live phase](timeline.png)".to_owned(),
        Err(error) => format!("(the plot was not drawn: {error:#})"),
    };
    let markdown = markdown(report, &figures, &plot)?;
    std::fs::write(dir.join("report.md"), &markdown)?;
    Ok(markdown)
}

fn markdown(report: &Report, figures: &Figures, plot: &str) -> anyhow::Result<String> {
    let (live, plan, args) = (report.live, &report.live.plan, report.args);
    let mut out = String::new();
    let command: Vec<String> = std::env::args().skip(1).collect();
    writeln!(out, "# Benchmark report\n")?;
    writeln!(
        out,
        "{} · commit {} · {} cores ({}) · NATS {} · PostgreSQL {}. The load generator, gateway, workers, \
         sweeper, NATS and PostgreSQL all share this machine.\n",
        report.started_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        git_commit(),
        cores(),
        cpu_model(),
        report.nats_version,
        report.postgres_version,
    )?;
    writeln!(out, "Command: `loadgen {}` (seed {})\n", command.join(" "), report.seed)?;

    let exact = live.differences.is_empty() && report.replays.iter().all(|r| r.differences.is_empty());
    let participants = plan.participants.len();
    writeln!(out, "## Result\n")?;
    if exact {
        writeln!(
            out,
            "**Attendance exact**: all {participants} participants of {} rooms match the workload's own expectation \
             after the live phase and after every replay.\n",
            plan.rooms.len()
        )?;
    } else {
        writeln!(out, "**Attendance differs** from the workload's expectation: see Differences below.\n")?;
    }
    let replay = |workers: usize| {
        report
            .replays
            .iter()
            .find(|r| r.workers == workers)
            .map_or("–".to_owned(), |r| format!("{:.0}", r.messages as f64 / r.elapsed.as_secs_f64()))
    };
    writeln!(out, "| figure | value |\n|---|---:|")?;
    writeln!(
        out,
        "| gateway, live: requests/s (mean / peak second) | {:.0} / {} |",
        figures.requests_per_second(),
        figures.peak_second()
    )?;
    writeln!(
        out,
        "| gateway, live: webhook latency p50 / p99 / p99.9 / max ms | {} |",
        quantiles(&figures.webhook_us)
    )?;
    writeln!(
        out,
        "| gateway, live: heartbeat latency p50 / p99 / p99.9 / max ms | {} |",
        quantiles(&figures.heartbeat_us)
    )?;
    writeln!(
        out,
        "| webhook 200 → attendance committed, p50 / p99 / p99.9 / max ms | {} |",
        quantiles(&figures.end_to_end_us)
    )?;
    if let Some(best) =
        report.capacity.iter().max_by(|a, b| a.requests_per_second().total_cmp(&b.requests_per_second()))
    {
        writeln!(
            out,
            "| gateway capacity: requests/s (at concurrency {}; p99 ms) | {:.0} ({:.1}) |",
            best.concurrency,
            best.requests_per_second(),
            best.ms(0.99)
        )?;
    }
    writeln!(out, "| workers at saturation: events/s, 1 worker / 2 workers | {} / {} |", replay(1), replay(2))?;
    writeln!(out)?;

    writeln!(out, "## Workload\n")?;
    let count = |event_type: &str| plan.webhooks.iter().filter(|w| w.event_type == event_type).count();
    let heartbeats = plan.sends.iter().filter(|s| matches!(s.request, Request::Heartbeat { .. })).count();
    let duplicates =
        plan.sends.iter().filter(|s| matches!(s.request, Request::Webhook { duplicate: true, .. })).count();
    let sessions = plan.sessions().count();
    let lost = plan.sessions().filter(|s| !s.left_delivered).count();
    let reconnecting = plan.participants.iter().filter(|p| p.sessions.len() > 1).count();
    let finished = plan.rooms.iter().filter(|r| r.finished_at_ms.is_some()).count();
    writeln!(out, "| | |\n|---|---:|")?;
    writeln!(out, "| rooms (finished with room_finished) | {} ({finished}) |", plan.rooms.len())?;
    writeln!(out, "| participants (reconnecting with the same identity) | {participants} ({reconnecting}) |")?;
    writeln!(out, "| sessions (left never delivered: closed by the sweeper) | {sessions} ({lost}) |")?;
    for event_type in [
        "room_started",
        "participant_joined",
        "track_published",
        "participant_left",
        "participant_connection_aborted",
        "room_finished",
    ] {
        writeln!(out, "| {event_type} webhooks | {} |", count(event_type))?;
    }
    writeln!(
        out,
        "| webhooks delivered twice / late (by up to {:?}) | {duplicates} / {} |",
        args.reorder_delay, plan.reordered
    )?;
    writeln!(
        out,
        "| heartbeats (every {:?}; sweeper timeout {:?}) | {heartbeats} |",
        args.heartbeat_interval, report.heartbeat_timeout
    )?;
    writeln!(
        out,
        "| requests in all, over {:.0} s | {} |",
        (plan.end_ms() - plan.start_ms) as f64 / 1000.0,
        plan.sends.len()
    )?;
    writeln!(out)?;

    writeln!(out, "## Live phase: gateway, {} workers, sweeper\n", args.workers)?;
    let failures: Vec<String> = figures
        .not_ok
        .iter()
        .map(|(status, n)| format!("{n} × {}", if *status == 0 { "no answer".to_owned() } else { status.to_string() }))
        .collect();
    writeln!(
        out,
        "- {} requests answered 2xx over {:.1} s; not 2xx: {}; webhook retries: {}. Sending fell behind schedule by at most {:.0} ms.",
        figures.ok,
        figures.span.as_secs_f64(),
        if failures.is_empty() { "none".to_owned() } else { failures.join(", ") },
        figures.retries,
        live.max_lag.as_secs_f64() * 1000.0
    )?;
    writeln!(
        out,
        "- The stream stored {} messages (duplicates removed by JetStream's message id); dead letters: {}.",
        live.stored_messages, live.dead_letters
    )?;
    writeln!(
        out,
        "- Commit seen for every webhook answered 200: {} (unseen: {}).",
        if figures.commits_unseen == 0 { "yes" } else { "no" },
        figures.commits_unseen
    )?;
    match live.converged_after {
        Some(after) => writeln!(
            out,
            "- The database matched the expectation {:.1} s after the last request (the sweeper closes a session \
             whose left never came once its heartbeat is {:?} old).",
            after.as_secs_f64(),
            report.heartbeat_timeout
        )?,
        None => writeln!(out, "- The database did not match the expectation: {} differences.", live.differences.len())?,
    }
    writeln!(
        out,
        "\nCPU and memory over the phase (the machine's {} cores were {:.0} % busy); \"per 1 000 events\" divides by \
         the {} requests answered 2xx.\n",
        cores(),
        live.machine_busy * 100.0,
        figures.ok
    )?;
    writeln!(out, "| process | CPU s | CPU ms per 1 000 events | peak RSS MiB |\n|---|---:|---:|---:|")?;
    for usage in &live.usage {
        writeln!(
            out,
            "| {} | {:.1} | {:.1} | {} |",
            usage.name,
            usage.cpu_seconds,
            usage.cpu_seconds * 1000.0 / (figures.ok.max(1) as f64 / 1000.0),
            usage.peak_rss_bytes.map_or("–".to_owned(), mib)
        )?;
    }
    writeln!(
        out,
        "\nnats-server and postgres are the machine's servers (all their processes); their memory is not theirs for this run alone.\n"
    )?;
    writeln!(out, "{plot}\n")?;

    writeln!(out, "## Gateway capacity\n")?;
    writeln!(out, "A gateway alone (no workers), distinct participant_joined webhooks as fast as it answers.\n")?;
    writeln!(out, "{}", capacity::TABLE_HEADER)?;
    for level in report.capacity {
        writeln!(out, "{}", level.row())?;
    }
    writeln!(out)?;

    writeln!(out, "## Workers at saturation (replay)\n")?;
    writeln!(
        out,
        "The live phase's stream (webhooks and heartbeats as stored) applied from its start into a fresh database; \
         time from the workers' start to everything acknowledged, then the sweeper, then the comparison. CPU ms \
         per 1 000 events: the workers' (all of them), then PostgreSQL's and NATS's over the same time.\n"
    )?;
    writeln!(
        out,
        "| workers | messages | s | events/s | CPU ms per 1 000 events: workers / postgres / nats | machine busy | \
         peak RSS MiB (largest worker) | attendance |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for r in report.replays {
        let per_thousand = |seconds: f64| seconds * 1000.0 / (r.messages.max(1) as f64 / 1000.0);
        writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {:.0} / {:.0} / {:.0} | {:.0} % | {} | {} |",
            r.workers,
            r.messages,
            r.elapsed.as_secs_f64(),
            r.messages as f64 / r.elapsed.as_secs_f64(),
            per_thousand(r.cpu_seconds),
            per_thousand(r.postgres_cpu_seconds),
            per_thousand(r.nats_cpu_seconds),
            r.machine_busy * 100.0,
            mib(r.peak_rss_bytes),
            if r.differences.is_empty() { "exact".to_owned() } else { format!("{} differences", r.differences.len()) }
        )?;
    }
    writeln!(out)?;

    writeln!(out, "## Differences\n")?;
    let all: Vec<&String> =
        live.differences.iter().chain(report.replays.iter().flat_map(|r| r.differences.iter())).collect();
    if all.is_empty() {
        writeln!(out, "None.")?;
    } else {
        for line in all.iter().take(200) {
            writeln!(out, "- {line}")?;
        }
        if all.len() > 200 {
            writeln!(out, "- … and {} more", all.len() - 200)?;
        }
    }
    Ok(out)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map_or("?".into(), |commit| commit.trim().to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_read_in_milliseconds() {
        let mut histogram = latency_histogram();
        for us in [1_000, 2_000, 3_000] {
            histogram.record(us).unwrap();
        }
        assert_eq!(quantiles(&histogram), "2.0 / 3.0 / 3.0 / 3.0");
        assert_eq!(quantiles(&latency_histogram()), "–");
    }

    #[test]
    fn seconds_grow_to_fit() {
        let mut seconds = Vec::new();
        second_of(&mut seconds, Duration::from_millis(2_500)).answered += 1;
        assert_eq!(seconds.len(), 3);
        assert_eq!(seconds[2].answered, 1);
    }
}
