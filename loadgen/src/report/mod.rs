//! The benchmark report: `report.md` with the figures, one `sections` function per part of
//! it, and `timeline.png` ([`crate::plot`]) of throughput and latency over the live phase.

mod sections;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::capacity::latency_histogram;
use crate::results::{Live, Results, Second};
use crate::scenario::Request;

/// Writes `report.md` and `timeline.png` into `dir`; returns the Markdown.
pub fn write(results: &Results, dir: &Path) -> anyhow::Result<String> {
    let figures = Figures::of(&results.live);
    let plot = match crate::plot::draw(&figures.seconds, &dir.join("timeline.png")) {
        Ok(()) => "![throughput and latency over the live phase](timeline.png)".to_owned(),
        Err(error) => format!("(the plot was not drawn: {error:#})"),
    };
    let markdown = markdown(results, &figures, &plot)?;
    std::fs::write(dir.join("report.md"), &markdown)?;
    Ok(markdown)
}

/// The whole report, its sections in reading order; `plot` is the Markdown that shows the PNG
/// (or says why there is none).
fn markdown(results: &Results, figures: &Figures, plot: &str) -> Result<String, fmt::Error> {
    let mut out = String::new();
    sections::title_and_environment(&mut out, results)?;
    sections::result(&mut out, results, figures)?;
    sections::workload(&mut out, results)?;
    sections::live_phase(&mut out, results, figures)?;
    sections::live_usage(&mut out, &results.live, figures)?;
    sections::timeline(&mut out, plot)?;
    sections::gateway_capacity(&mut out, results)?;
    sections::replays(&mut out, results)?;
    sections::history(&mut out, results)?;
    sections::read_latency(&mut out, results)?;
    sections::meeting_reports(&mut out, results)?;
    sections::reconciliation(&mut out, results)?;
    sections::differences(&mut out, results)?;
    Ok(out)
}

/// What the live phase's answers and commits add up to.
struct Figures {
    webhook_us: Histogram<u64>,
    heartbeat_us: Histogram<u64>,
    end_to_end_us: Histogram<u64>,
    /// Webhooks answered 200 whose commit was not seen.
    commits_unseen: usize,
    ok: usize,
    /// Answers that were not 2xx, by status (0: no answer).
    not_ok: BTreeMap<u16, usize>,
    retries: usize,
    seconds: Vec<Second>,
    /// From the first request to the last answer.
    span: Duration,
}

impl Figures {
    fn of(live: &Live) -> Figures {
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
    fn requests_per_second(&self) -> f64 {
        self.ok as f64 / self.span.as_secs_f64().max(1e-9)
    }

    fn peak_second(&self) -> u64 {
        self.seconds.iter().map(|s| s.answered).max().unwrap_or(0)
    }
}

/// The figures of the second `at` falls in; `seconds` is indexed by the second, so any before
/// it that had nothing yet are added empty.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::LevelResult;
    use crate::results::{
        Answer, Applied, History, HistorySample, LevelCpu, ReadFormat, ReadLatency, Reconciliation, Replay, Settings,
        Usage,
    };
    use shared::store::admin::StatementStats;

    #[test]
    fn seconds_grow_to_fit() {
        let mut seconds = Vec::new();
        second_of(&mut seconds, Duration::from_millis(2_500)).answered += 1;
        assert_eq!(seconds.len(), 3);
        assert_eq!(seconds[2].answered, 1);
    }

    #[test]
    fn sections_in_order() {
        for exact in [true, false] {
            let results = fixture(exact);
            let markdown = markdown(&results, &Figures::of(&results.live), "PLOT").unwrap();
            let headers: Vec<&str> = markdown.lines().filter(|line| line.starts_with('#')).collect();
            assert_eq!(
                headers,
                [
                    "# Benchmark report",
                    "## Result",
                    "## Workload",
                    "## Live phase: gateway, 3 workers, sweeper",
                    "## Gateway capacity",
                    "## Workers at saturation (replay)",
                    "## Workers at saturation with history",
                    "## Reading a meeting of 4 participants",
                    "## Meeting reports delivered",
                    "## Reconciliation with the LiveKit server",
                    "## Differences",
                ]
            );
            let plot_follows_usage = "their memory is not theirs for this run alone.\n\nPLOT\n\n## Gateway capacity";
            assert!(markdown.contains(plot_follows_usage));
            assert_eq!(markdown.contains("**Attendance exact** in all 6 meetings of 3 rooms: 22 attendances"), exact);
            assert_eq!(markdown.contains("- … and 53 more\n"), !exact);
            // The ceiling took half the workers' time in both rounds.
            assert!(
                markdown.contains("| workers / their ceiling (event rows alone), 1 worker / 2 workers | 0.50 / 0.50 |")
            );
            assert!(markdown.contains("| 0.50 (0.50, 0.50) | 243 / 243 |"), "{markdown}");
            // 100 requests a level: 4 ms of the gateway's CPU is 40 ms per 1 000.
            assert!(
                markdown.contains("| 16 | 40.0 (40.0–40.0) | 25.0 (25.0–25.0) | 15.0 (15.0–15.0) | 30.0 / 28.0 |"),
                "{markdown}"
            );
            // The one worker's statements of round 1, per 1 000 of its 1 234 events, on one line.
            assert!(markdown.contains("| 32.4 | 100 % | 8.1 | 2.5 | `SELECT a \\| b FROM t` |"), "{markdown}");
            assert!(!markdown.contains("did not count statements"));
        }
    }

    /// A small run: a real plan, answers with failures, one commit unseen; with `exact` false,
    /// differences past the listed many.
    fn fixture(exact: bool) -> Results {
        let config = crate::scenario::ScenarioConfig {
            seed: 1,
            rooms: 3,
            participants: 12,
            meetings_per_room: 2,
            duration_ms: 60_000,
            heartbeat_interval_ms: 10_000,
            heartbeat_timeout_ms: 30_000,
            reconnect_rate: 0.3,
            lost_left_rate: 0.2,
            abort_rate: 0.1,
            finish_rate: 0.7,
            duplicate_rate: 0.2,
            reorder_rate: 0.2,
            reorder_delay_ms: 5_000,
        };
        let plan = crate::scenario::Plan::build(&config, 1_700_000_000_000);
        let answers: Vec<Answer> = plan
            .sends
            .iter()
            .enumerate()
            .map(|(n, send)| Answer {
                request: send.request,
                sent_at: Duration::from_millis((send.at_ms - plan.start_ms) as u64),
                latency: Duration::from_micros(500 + (37 * n as u64) % 9_000),
                status: match n % 50 {
                    7 => 503,
                    13 => 0,
                    _ => 200,
                },
                received_at_ms: None,
            })
            .collect();
        let commits = answers
            .iter()
            .enumerate()
            .filter_map(|(n, answer)| match answer.request {
                Request::Webhook { index, duplicate: false } if index > 0 && answer.ok() => Some((
                    plan.webhooks[index].id.clone(),
                    answer.answered_at() + Duration::from_millis(3 + n as u64 % 7),
                )),
                _ => None,
            })
            .collect();
        let usage = |name: &str, cpu_seconds: f64, peak_rss_bytes: Option<u64>| Usage {
            name: name.into(),
            cpu_seconds,
            peak_rss_bytes,
        };
        let differences = |n: usize| (0..n).map(|i| format!("room-{i} / user-{i}: missing")).collect::<Vec<_>>();
        let live = Live {
            plan,
            answers,
            commits,
            max_lag: Duration::from_millis(12),
            converged_after: exact.then(|| Duration::from_millis(2_500)),
            differences: differences(if exact { 0 } else { 3 }),
            usage: vec![
                usage("gateway", 1.25, Some(30 << 20)),
                usage("worker-1", 2.5, Some(20 << 20)),
                usage("nats-server", 0.75, None),
                usage("loadgen", 3.0, Some(90 << 20)),
            ],
            stored_messages: 1_234,
            dead_letters: 0,
            machine_busy: 0.42,
            expected: BTreeMap::new(),
            reports: crate::results::LiveReports {
                delivered: Vec::new(),
                duplicates: 1,
                refused: 0,
                finish_to_delivery_us: latency_histogram(),
                ends_undelivered: 0,
                differences: Vec::new(),
            },
        };
        let level = |concurrency: usize, elapsed_ms: u64| {
            let mut latencies_us = latency_histogram();
            for us in [300, 900, 1_500, 12_000] {
                latencies_us.record(us * concurrency as u64).unwrap();
            }
            LevelResult {
                concurrency,
                requests: 100,
                elapsed: Duration::from_millis(elapsed_ms),
                latencies_us,
                failures: 0,
            }
        };
        let applied = |workers: usize, elapsed_ms: u64| Applied {
            workers,
            messages: 1_234,
            elapsed: Duration::from_millis(elapsed_ms / workers as u64),
            cpu_seconds: 0.6,
            peak_rss_bytes: 25 << 20,
            postgres_cpu_seconds: 0.3,
            nats_cpu_seconds: 0.1,
            machine_busy: 0.9,
        };
        let replay = |round: usize, workers: usize, differences: Vec<String>| Replay {
            round,
            applied: applied(workers, 700),
            ceiling: applied(workers, 350),
            differences,
            statements: (round == 1 && workers == 1).then(|| {
                vec![StatementStats { query: "SELECT a |\n  b FROM t".into(), calls: 10, rows: 25, total_ms: 40.0 }]
            }),
        };
        let replays = vec![
            replay(1, 1, Vec::new()),
            replay(1, 2, differences(if exact { 0 } else { 250 })),
            replay(2, 1, Vec::new()),
            replay(2, 2, Vec::new()),
        ];
        let mut latencies_us = latency_histogram();
        for us in [2_000, 2_500, 9_000] {
            latencies_us.record(us).unwrap();
        }
        let read_latency = ReadLatency {
            participants: 4,
            formats: vec![
                ReadFormat { format: "json", latencies_us: latencies_us.clone(), response_bytes: 4_096 },
                ReadFormat { format: "csv", latencies_us, response_bytes: 1_024 },
            ],
            differences: Vec::new(),
        };
        let samples = (1..=2)
            .flat_map(|round| {
                [(1, false), (1, true), (2, false), (2, true)].map(|(workers, with_history)| HistorySample {
                    round,
                    with_history,
                    applied: applied(workers, if with_history { 720 } else { 700 }),
                    differences: Vec::new(),
                })
            })
            .collect();
        let history = History { rooms: 3, participants: 12, earlier_meetings: 20, history_messages: 24_680, samples };
        Results {
            settings: Settings {
                workers: 3,
                heartbeat_interval: Duration::from_secs(10),
                heartbeat_timeout: Duration::from_secs(30),
                reorder_delay: Duration::from_secs(5),
                nats_servers: 1,
                stream_replicas: 1,
            },
            seed: 7,
            started_at: time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            nats_version: "2.10.0".into(),
            postgres_version: "17.2".into(),
            live,
            capacity: (1..=2)
                .flat_map(|round| {
                    [(1, 1_000), (16, 400)].map(|(concurrency, elapsed_ms)| crate::results::CapacityRound {
                        round,
                        gateway: level(concurrency, elapsed_ms),
                        ceiling: level(concurrency, elapsed_ms * 4 / 5),
                        raw_publish: level(concurrency, elapsed_ms / 2),
                        gateway_cpu: LevelCpu { service_seconds: 0.004, nats_seconds: 0.003 },
                        ceiling_cpu: LevelCpu { service_seconds: 0.0025, nats_seconds: 0.0028 },
                    })
                })
                .collect(),
            replays,
            read_latency,
            history,
            deliveries: vec![applied(1, 900), applied(2, 900)],
            reconciliation: Reconciliation {
                meetings: 1_000,
                sessions: 10_000,
                interval: Duration::from_secs(10),
                heartbeat_interval: Duration::from_secs(10),
                window: Duration::from_secs(20),
                calls: 4_000,
                sweeper_cpu_seconds: 1.0,
                postgres_cpu_seconds: 2.0,
                lost_lefts: 500,
                closed_reconciled: 500,
                closed_heartbeat: 0,
                early_ms: Histogram::new_with_bounds(1, 3_600_000, 3).unwrap(),
                differences: Vec::new(),
            },
        }
    }
}
