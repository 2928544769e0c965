//! The report's Markdown, one function per section, each appending to the report in turn.

use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use shared::store::admin::StatementStats;

use super::Figures;
use crate::capacity;
use crate::results::{Applied, CapacityRound, History, Live, Replay, Results};
use crate::scenario::Request;

/// The title, when and on what machine the run ran, and the command that ran it.
pub(super) fn title_and_environment(out: &mut String, results: &Results) -> fmt::Result {
    let command: Vec<String> = std::env::args().skip(1).collect();
    writeln!(out, "# Benchmark report\n")?;
    writeln!(
        out,
        "{} · commit {} · {} cores ({}) · NATS {}{} · PostgreSQL {}. The load generator, gateway, workers, \
         sweeper, NATS and PostgreSQL all share this machine.\n",
        results.started_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        git_commit(),
        cores(),
        cpu_model(),
        results.nats_version,
        nats_setup(&results.settings),
        results.postgres_version,
    )?;
    writeln!(out, "Command: `loadgen {}` (seed {})\n", command.join(" "), results.seed)
}

/// How NATS ran, when not as one server with unreplicated streams.
fn nats_setup(settings: &crate::results::Settings) -> String {
    match (settings.nats_servers, settings.stream_replicas) {
        (1, 1) => String::new(),
        (servers, replicas) if servers > 1 => {
            format!(" (**a JetStream cluster of {servers} nodes**, streams with {replicas} replicas)")
        }
        (_, replicas) => format!(" (streams with {replicas} replicas)"),
    }
}

/// `## Result`: whether the attendance came out exact, then the headline figures.
pub(super) fn result(out: &mut String, results: &Results, figures: &Figures) -> fmt::Result {
    let plan = &results.live.plan;
    writeln!(out, "## Result\n")?;
    if results.attendance_exact() {
        writeln!(
            out,
            "**Attendance exact** in all {} meetings of {} rooms: {} attendances ({} participants, each in most \
             meetings of its room) match the workload's own expectation after the live phase and after every \
             replay, and so do the meetings of the read latency and history phases, and the attendance in the \
             latest meeting report of each meeting delivered to the platform.\n",
            plan.meetings.len(),
            plan.rooms.len(),
            plan.participants.len(),
            plan.identities()
        )?;
    } else {
        writeln!(out, "**Attendance differs** from the workload's expectation: see Differences below.\n")?;
    }
    headline_figures(out, results, figures)
}

/// The table under `## Result`: gateway throughput and latency, webhook to commit, the
/// gateway's best capacity and the workers' replay rates.
fn headline_figures(out: &mut String, results: &Results, figures: &Figures) -> fmt::Result {
    let replay_rate = |workers: usize| {
        let rates: Vec<f64> = results
            .replays
            .iter()
            .filter(|r| r.applied.workers == workers)
            .map(|r| r.applied.events_per_second())
            .collect();
        if rates.is_empty() { "–".to_owned() } else { format!("{:.0}", median(rates)) }
    };
    let replay_ratio = |workers: usize| {
        let ratios: Vec<f64> =
            results.replays.iter().filter(|r| r.applied.workers == workers).map(Replay::ratio).collect();
        if ratios.is_empty() { "–".to_owned() } else { format!("{:.2}", median(ratios)) }
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
    if let Some(best) = results
        .capacity
        .iter()
        .map(|r| &r.gateway)
        .max_by(|a, b| a.requests_per_second().total_cmp(&b.requests_per_second()))
    {
        writeln!(
            out,
            "| gateway capacity: requests/s (at concurrency {}; p99 ms) | {:.0} ({:.1}) |",
            best.concurrency,
            best.requests_per_second(),
            best.ms(0.99)
        )?;
    }
    writeln!(
        out,
        "| workers at saturation: events/s, 1 worker / 2 workers (median over rounds) | {} / {} |",
        replay_rate(1),
        replay_rate(2)
    )?;
    writeln!(
        out,
        "| workers / their ceiling (event rows alone), 1 worker / 2 workers | {} / {} |",
        replay_ratio(1),
        replay_ratio(2)
    )?;
    let reports = &results.live.reports;
    writeln!(
        out,
        "| meeting reports: room_finished 200 → the platform's 2xx of meeting.ended, p50 / p99 / p99.9 / max ms | \
         {} |",
        quantiles(&reports.finish_to_delivery_us)
    )?;
    let delivery_rate = |deliverers: usize| {
        results
            .deliveries
            .iter()
            .find(|d| d.workers == deliverers)
            .map_or("–".to_owned(), |d| format!("{:.0}", d.events_per_second()))
    };
    writeln!(
        out,
        "| meeting reports at saturation: deliveries/s, 1 deliverer / 2 deliverers | {} / {} |",
        delivery_rate(1),
        delivery_rate(2)
    )?;
    for format in &results.read_latency.formats {
        writeln!(
            out,
            "| reading a meeting of {} participants as {}: p50 / p99 / max ms | {} |",
            results.read_latency.participants,
            format.format.to_uppercase(),
            read_quantiles(&format.latencies_us)
        )?;
    }
    for ratio in history_ratios(&results.history) {
        writeln!(
            out,
            "| events/s with {} earlier meetings per room / without, {} worker(s) (per round) | {:.2} ({}) |",
            results.history.earlier_meetings,
            ratio.workers,
            ratio.of_medians,
            ratio.per_round_text()
        )?;
    }
    writeln!(out)
}

/// `## Workload`: what the plan held, counted from the plan itself.
pub(super) fn workload(out: &mut String, results: &Results) -> fmt::Result {
    let (plan, settings) = (&results.live.plan, &results.settings);
    let count = |event_type: &str| plan.webhooks.iter().filter(|w| w.event_type == event_type).count();
    let heartbeats = plan.sends.iter().filter(|s| matches!(s.request, Request::Heartbeat { .. })).count();
    let duplicates =
        plan.sends.iter().filter(|s| matches!(s.request, Request::Webhook { duplicate: true, .. })).count();
    let sessions = plan.sessions().count();
    let lost = plan.sessions().filter(|s| !s.left_delivered).count();
    let reconnecting = plan.participants.iter().filter(|p| p.sessions.len() > 1).count();
    let finished = plan.meetings.iter().filter(|m| m.finished_at_ms.is_some()).count();
    writeln!(out, "## Workload\n")?;
    writeln!(out, "| | |\n|---|---:|")?;
    writeln!(out, "| rooms | {} |", plan.rooms.len())?;
    writeln!(
        out,
        "| meetings, consecutive in each room (finished with room_finished) | {} ({finished}) |",
        plan.meetings.len()
    )?;
    writeln!(out, "| participants (identities, each in most meetings of its room) | {} |", plan.identities())?;
    writeln!(
        out,
        "| attendances: an identity in a meeting (reconnecting with the same identity) | {} ({reconnecting}) |",
        plan.participants.len()
    )?;
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
        settings.reorder_delay, plan.reordered
    )?;
    writeln!(
        out,
        "| heartbeats (every {:?}; sweeper timeout {:?}) | {heartbeats} |",
        settings.heartbeat_interval, settings.heartbeat_timeout
    )?;
    writeln!(
        out,
        "| requests in all, over {:.0} s | {} |",
        (plan.end_ms() - plan.start_ms) as f64 / 1000.0,
        plan.sends.len()
    )?;
    writeln!(out)
}

/// `## Live phase`: how the gateway answered, what the stream kept, whether every commit was
/// seen and when the database matched the expectation.
pub(super) fn live_phase(out: &mut String, results: &Results, figures: &Figures) -> fmt::Result {
    let live = &results.live;
    writeln!(out, "## Live phase: gateway, {} workers, sweeper\n", results.settings.workers)?;
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
            results.settings.heartbeat_timeout
        ),
        None => writeln!(out, "- The database did not match the expectation: {} differences.", live.differences.len()),
    }
}

/// The live phase's CPU and peak memory, a row per process.
pub(super) fn live_usage(out: &mut String, live: &Live, figures: &Figures) -> fmt::Result {
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
            cpu_ms_per_thousand(usage.cpu_seconds, figures.ok as u64),
            usage.peak_rss_bytes.map_or("–".to_owned(), mib)
        )?;
    }
    writeln!(
        out,
        "\nnats-server and postgres are the machine's servers (all their processes); their memory is not theirs for this run alone.\n"
    )
}

/// The plot of the live phase over time (or why there is none).
pub(super) fn timeline(out: &mut String, plot: &str) -> fmt::Result {
    writeln!(out, "{plot}\n")
}

/// `## Gateway capacity`: a row per concurrency level.
pub(super) fn gateway_capacity(out: &mut String, results: &Results) -> fmt::Result {
    writeln!(out, "## Gateway capacity\n")?;
    let rounds = results.capacity.iter().map(|r| r.round).max().unwrap_or(0);
    writeln!(
        out,
        "A gateway alone (no workers), distinct signed participant_joined webhooks as fast as it answers, against its \
         ceiling in the same run: `loadgen ceiling-gateway`, an axum handler on the gateway's own server loop that \
         publishes the body to the same stream with a unique `Nats-Msg-Id` and answers 200 after the ack (no \
         verification, parsing, redaction, body limits, tracing or metrics); and raw JetStream publishes from the \
         load generator with as many in flight. \
         Interleaved, {rounds} rounds (ceiling first in odd rounds, gateway first in even ones): medians, with the \
         range over the rounds.\n"
    )?;
    writeln!(
        out,
        "| concurrency | gateway req/s | ceiling req/s | gateway / ceiling (per round) | raw publish msgs/s |"
    )?;
    writeln!(out, "|---:|---:|---:|---|---:|")?;
    // Each concurrency level with its rounds, in the order measured.
    let mut levels: Vec<(usize, Vec<&CapacityRound>)> = Vec::new();
    for round in &results.capacity {
        match levels.iter_mut().find(|(concurrency, _)| *concurrency == round.gateway.concurrency) {
            Some((_, rounds)) => rounds.push(round),
            None => levels.push((round.gateway.concurrency, vec![round])),
        }
    }
    for (concurrency, at) in &levels {
        let gateway: Vec<f64> = at.iter().map(|r| r.gateway.requests_per_second()).collect();
        let ceiling: Vec<f64> = at.iter().map(|r| r.ceiling.requests_per_second()).collect();
        let raw: Vec<f64> = at.iter().map(|r| r.raw_publish.requests_per_second()).collect();
        let ratios: Vec<f64> = gateway.iter().zip(&ceiling).map(|(g, c)| g / c.max(f64::EPSILON)).collect();
        let per_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        writeln!(
            out,
            "| {concurrency} | {} | {} | {:.2} ({}) | {} |",
            spread(&gateway),
            spread(&ceiling),
            median(ratios.clone()),
            per_round.join(", "),
            spread(&raw)
        )?;
    }
    writeln!(
        out,
        "\nCPU per 1 000 webhooks, in ms (medians, with the range over the rounds): what a webhook costs the \
         process that answers it, and NATS, however fast the machine runs that round. The gateway's work beyond \
         its ceiling's is the difference.\n"
    )?;
    writeln!(out, "| concurrency | gateway | ceiling | gateway − ceiling | NATS, for the gateway / for the ceiling |")?;
    writeln!(out, "|---:|---:|---:|---:|---:|")?;
    for (concurrency, at) in &levels {
        let gateway: Vec<f64> = at.iter().map(|r| r.gateway_cpu.service_ms_per_1000(&r.gateway)).collect();
        let ceiling: Vec<f64> = at.iter().map(|r| r.ceiling_cpu.service_ms_per_1000(&r.ceiling)).collect();
        let nats_gateway: Vec<f64> = at.iter().map(|r| r.gateway_cpu.nats_ms_per_1000(&r.gateway)).collect();
        let nats_ceiling: Vec<f64> = at.iter().map(|r| r.ceiling_cpu.nats_ms_per_1000(&r.ceiling)).collect();
        let differences: Vec<f64> = gateway.iter().zip(&ceiling).map(|(g, c)| g - c).collect();
        writeln!(
            out,
            "| {concurrency} | {} | {} | {} | {:.1} / {:.1} |",
            spread_tenths(&gateway),
            spread_tenths(&ceiling),
            spread_tenths(&differences),
            median(nats_gateway),
            median(nats_ceiling)
        )?;
    }
    writeln!(out, "\nThe gateway's latency in the last round:\n")?;
    writeln!(out, "{}", capacity::TABLE_HEADER)?;
    for round in results.capacity.iter().filter(|r| r.round == rounds) {
        writeln!(out, "{}", round.gateway.row())?;
    }
    writeln!(out)
}

/// `## Workers at saturation (replay)`: the workers against their ceiling, then a row per
/// measurement.
pub(super) fn replays(out: &mut String, results: &Results) -> fmt::Result {
    writeln!(out, "## Workers at saturation (replay)\n")?;
    let rounds = results.replays.iter().map(|r| r.round).max().unwrap_or(0);
    writeln!(
        out,
        "The live phase's stream (webhooks and heartbeats as stored) applied from its start into a fresh database; \
         time from the processes' start to everything acknowledged. The workers' ceiling, in the same run: \
         `loadgen ceiling-workers`, as many processes reading the same stream the workers' way (their consumer \
         settings, batches of the same size) and writing each batch's event rows with the event log's own batched \
         insert in one transaction, acknowledged after the commit: the cheapest correct write of the same events, \
         without attendance. Interleaved, {rounds} rounds (ceiling first in odd rounds): medians, with the range \
         over the rounds. After each workers' run, the sweeper, then the comparison with the expectation.\n"
    )?;
    writeln!(
        out,
        "| workers | workers events/s | ceiling events/s | workers / ceiling (per round) | PostgreSQL CPU ms per 1 000 \
         events: workers / ceiling |"
    )?;
    writeln!(out, "|---:|---:|---:|---|---:|")?;
    let mut counts: Vec<usize> = Vec::new();
    for replay in &results.replays {
        if !counts.contains(&replay.applied.workers) {
            counts.push(replay.applied.workers);
        }
    }
    for workers in counts {
        let at: Vec<&Replay> = results.replays.iter().filter(|r| r.applied.workers == workers).collect();
        let rate = |applied: fn(&Replay) -> &Applied| -> Vec<f64> {
            at.iter().map(|r| applied(r).events_per_second()).collect()
        };
        let postgres = |applied: fn(&Replay) -> &Applied| -> f64 {
            median(
                at.iter().map(|r| cpu_ms_per_thousand(applied(r).postgres_cpu_seconds, applied(r).messages)).collect(),
            )
        };
        let ratios: Vec<f64> = at.iter().map(|r| r.ratio()).collect();
        let per_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        writeln!(
            out,
            "| {workers} | {} | {} | {:.2} ({}) | {:.0} / {:.0} |",
            spread(&rate(|r| &r.applied)),
            spread(&rate(|r| &r.ceiling)),
            median(ratios.clone()),
            per_round.join(", "),
            postgres(|r| &r.applied),
            postgres(|r| &r.ceiling),
        )?;
    }
    writeln!(
        out,
        "\nEach measurement. CPU ms per 1 000 events: the measured processes' (all of them), then PostgreSQL's and \
         NATS's over the same time.\n"
    )?;
    writeln!(
        out,
        "| round | writer | processes | messages | s | events/s | CPU ms per 1 000 events: processes / postgres / \
         nats | machine busy | peak RSS MiB (largest process) | attendance |"
    )?;
    writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for replay in &results.replays {
        writeln!(
            out,
            "| {} | workers | {} | {} |",
            replay.round,
            applied_cells(&replay.applied),
            attendance_cell(&replay.differences)
        )?;
        writeln!(out, "| {} | ceiling | {} | – |", replay.round, applied_cells(&replay.ceiling))?;
    }
    writeln!(out)?;
    replay_statements(out, results)
}

/// Statements shown per replay in the table of the workers' statements.
const STATEMENTS_SHOWN: usize = 15;

/// The workers' statements in PostgreSQL during the first round's replays, when the server
/// counted them; otherwise how to have them counted.
fn replay_statements(out: &mut String, results: &Results) -> fmt::Result {
    let counted: Vec<(&Replay, &Vec<StatementStats>)> =
        results.replays.iter().filter(|r| r.round == 1).filter_map(|r| Some((r, r.statements.as_ref()?))).collect();
    if counted.is_empty() {
        return writeln!(
            out,
            "PostgreSQL did not count statements (`pg_stat_statements` not preloaded); \
             `DATABASE_URL=$(scripts/postgres-statements.sh start) make bench` runs against a server of the run's own \
             that does, and this report then shows the workers' statements.\n"
        );
    }
    for (replay, statements) in counted {
        let total: f64 = statements.iter().map(|s| s.total_ms).sum();
        let events = replay.applied.messages.max(1) as f64 / 1000.0;
        writeln!(
            out,
            "The workers' statements during the replay of round 1 with {} worker(s) (`pg_stat_statements`: execution \
             and planning time; {:.0} ms per 1 000 events in all, the costliest {STATEMENTS_SHOWN} shown):\n",
            replay.applied.workers,
            total / events,
        )?;
        writeln!(out, "| ms per 1 000 events | share | calls per 1 000 events | rows per call | statement |")?;
        writeln!(out, "|---:|---:|---:|---:|---|")?;
        for statement in statements.iter().take(STATEMENTS_SHOWN) {
            writeln!(
                out,
                "| {:.1} | {:.0} % | {:.1} | {:.1} | `{}` |",
                statement.total_ms / events,
                100.0 * statement.total_ms / total.max(f64::EPSILON),
                statement.calls as f64 / events,
                statement.rows as f64 / statement.calls.max(1) as f64,
                statement_excerpt(&statement.query),
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// A statement's first words on one line, fit for a table cell.
fn statement_excerpt(query: &str) -> String {
    const LENGTH: usize = 90;
    let words: Vec<&str> = query.split_whitespace().collect();
    let line = words.join(" ").replace('|', "\\|").replace('`', "'");
    match line.char_indices().nth(LENGTH) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// A median with the range: `1 234 (1 100–1 300)`.
fn spread(values: &[f64]) -> String {
    spread_to(values, 0)
}

/// A median with the range, to a tenth: `23.4 (21.0–25.9)`.
fn spread_tenths(values: &[f64]) -> String {
    spread_to(values, 1)
}

fn spread_to(values: &[f64], decimals: usize) -> String {
    let (min, max) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    format!("{:.*} ({min:.decimals$}–{max:.decimals$})", decimals, median(values.to_vec()))
}

/// "exact", or how many differences from the expectation.
fn attendance_cell(differences: &[String]) -> String {
    if differences.is_empty() { "exact".to_owned() } else { format!("{} differences", differences.len()) }
}

/// The cells every table of workers at saturation shares: workers, messages, seconds, events/s,
/// CPU per 1 000 events, machine busy, peak RSS.
fn applied_cells(a: &Applied) -> String {
    format!(
        "{} | {} | {:.1} | {:.0} | {:.0} / {:.0} / {:.0} | {:.0} % | {}",
        a.workers,
        a.messages,
        a.elapsed.as_secs_f64(),
        a.events_per_second(),
        cpu_ms_per_thousand(a.cpu_seconds, a.messages),
        cpu_ms_per_thousand(a.postgres_cpu_seconds, a.messages),
        cpu_ms_per_thousand(a.nats_cpu_seconds, a.messages),
        a.machine_busy * 100.0,
        mib(a.peak_rss_bytes),
    )
}

/// `## Workers at saturation with history`: a row per measurement, then the medians and ratios.
pub(super) fn history(out: &mut String, results: &Results) -> fmt::Result {
    let history = &results.history;
    writeln!(out, "## Workers at saturation with history\n")?;
    writeln!(
        out,
        "{} rooms, {} participants. Each room's meeting number {} applied at saturation into a copy of an empty \
         database (\"first\": no earlier meeting), and the very same events into a copy of a database holding \
         the {} earlier meetings of every room ({} messages, stored beforehand, not measured) (\"last\"). \
         Interleaved: first, last, for each worker count, round after round. Then the attendance of every \
         meeting in the database is compared with the plan's.\n",
        history.rooms,
        history.participants,
        history.earlier_meetings + 1,
        history.earlier_meetings,
        history.history_messages
    )?;
    writeln!(
        out,
        "| round | meeting | workers | messages | s | events/s | CPU ms per 1 000 events: workers / postgres / nats \
         | machine busy | peak RSS MiB (largest worker) | attendance |"
    )?;
    writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for sample in &history.samples {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            sample.round,
            if sample.with_history { "last" } else { "first" },
            applied_cells(&sample.applied),
            attendance_cell(&sample.differences)
        )?;
    }
    writeln!(out, "\n| workers | median events/s, first | median events/s, last | last / first (per round) |")?;
    writeln!(out, "|---:|---:|---:|---|")?;
    for ratio in history_ratios(history) {
        writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.2} ({}) |",
            ratio.workers,
            ratio.median_without,
            ratio.median_with,
            ratio.of_medians,
            ratio.per_round_text()
        )?;
    }
    writeln!(out)
}

/// For one worker count: events/s with the history over without, as the ratio of the medians
/// and per round (each round's "last" over the same round's "first").
struct HistoryRatio {
    workers: usize,
    median_without: f64,
    median_with: f64,
    of_medians: f64,
    per_round: Vec<f64>,
}

impl HistoryRatio {
    fn per_round_text(&self) -> String {
        self.per_round.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
    }
}

fn history_ratios(history: &History) -> Vec<HistoryRatio> {
    let mut worker_counts: Vec<usize> = history.samples.iter().map(|s| s.applied.workers).collect();
    worker_counts.sort_unstable();
    worker_counts.dedup();
    worker_counts
        .into_iter()
        .map(|workers| {
            let rates = |with_history: bool| -> Vec<(usize, f64)> {
                history
                    .samples
                    .iter()
                    .filter(|s| s.applied.workers == workers && s.with_history == with_history)
                    .map(|s| (s.round, s.applied.events_per_second()))
                    .collect()
            };
            let (without, with) = (rates(false), rates(true));
            let per_round = with
                .iter()
                .filter_map(|(round, rate)| without.iter().find(|(r, _)| r == round).map(|(_, base)| rate / base))
                .collect();
            let median_without = median(without.iter().map(|(_, rate)| *rate).collect());
            let median_with = median(with.iter().map(|(_, rate)| *rate).collect());
            HistoryRatio { workers, median_without, median_with, of_medians: median_with / median_without, per_round }
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// `## Reading a meeting`: latency of the read API on one large meeting, per format.
pub(super) fn read_latency(out: &mut String, results: &Results) -> fmt::Result {
    let read = &results.read_latency;
    writeln!(out, "## Reading a meeting of {} participants\n", read.participants)?;
    writeln!(
        out,
        "`GET /v1/meetings/{{room_sid}}` through a gateway of the run, one request at a time after a few \
         unmeasured ones, each timed to the last byte of its body. The meeting was planned like the live \
         workload and applied by a worker (attendance: {}).\n",
        attendance_cell(&read.differences)
    )?;
    writeln!(out, "| format | requests | p50 ms | p99 ms | max ms | response bytes |\n|---|---:|---:|---:|---:|---:|")?;
    for format in &read.formats {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            format.format.to_uppercase(),
            format.latencies_us.len(),
            read_quantiles(&format.latencies_us).replace(" / ", " | "),
            format.response_bytes
        )?;
    }
    writeln!(out)
}

/// `## Meeting reports delivered`: the live phase's reports as the platform got them, then the
/// delivery phase's rates.
pub(super) fn meeting_reports(out: &mut String, results: &Results) -> fmt::Result {
    let reports = &results.live.reports;
    writeln!(
        out,
        "## Meeting reports delivered
"
    )?;
    writeln!(
        out,
        "In the live phase a `worker deliver` pushed every meeting report to a receiver of the run, which checked \
         each Standard Webhooks signature and answered 204 at once. The latest report of each meeting must carry \
         the attendance the workload implies (a meeting finished by room_finished must have been reported \
         ended). Latency: from a room_finished's first 200 to the receiver's answer to its meeting.ended (the \
         sweeper publishes the outbox every 250 ms).\n"
    )?;
    writeln!(out, "| | |\n|---|---:|")?;
    writeln!(out, "| reports received (each once) | {} |", reports.delivered.len())?;
    writeln!(
        out,
        "| received again (at least once) / refused (signature) | {} / {} |",
        reports.duplicates, reports.refused
    )?;
    writeln!(
        out,
        "| room_finished 200 → receiver's 2xx, p50 / p99 / p99.9 / max ms | {} |",
        quantiles(&reports.finish_to_delivery_us)
    )?;
    writeln!(out, "| meetings finished whose meeting.ended never came | {} |", reports.ends_undelivered)?;
    writeln!(out, "| attendance in the latest report of each meeting | {} |\n", attendance_cell(&reports.differences))?;
    writeln!(
        out,
        "Deliveries at saturation: copies of those reports (each with an id of its own) waiting in a report stream, \
         then `worker deliver` replicas started; time from their start to the receiver holding every one. Each \
         delivery is signed, sent, answered and recorded in `delivery_attempts`. CPU ms per 1 000 deliveries: the \
         deliverers', then PostgreSQL's and NATS's.\n"
    )?;
    writeln!(
        out,
        "| deliverers | reports | s | deliveries/s | CPU ms per 1 000 deliveries: deliverers / postgres / nats | \
         machine busy | peak RSS MiB (largest deliverer) |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|")?;
    for delivery in &results.deliveries {
        writeln!(out, "| {} |", applied_cells(delivery))?;
    }
    writeln!(out)
}

/// p50 / p99 / max in milliseconds, or a dash for no samples.
fn read_quantiles(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "–".into();
    }
    format!("{:.1} / {:.1} / {:.1}", ms(histogram, 0.5), ms(histogram, 0.99), histogram.max() as f64 / 1000.0)
}

/// Differences listed at the most; the rest are counted.
const DIFFERENCES_LISTED: usize = 200;

/// `## Differences`: how the stored attendance differs from the expectation, live phase first.
pub(super) fn differences(out: &mut String, results: &Results) -> fmt::Result {
    writeln!(out, "## Differences\n")?;
    let all: Vec<&String> = results.all_differences().collect();
    if all.is_empty() {
        return writeln!(out, "None.");
    }
    for line in all.iter().take(DIFFERENCES_LISTED) {
        writeln!(out, "- {line}")?;
    }
    if all.len() > DIFFERENCES_LISTED {
        writeln!(out, "- … and {} more", all.len() - DIFFERENCES_LISTED)?;
    }
    Ok(())
}

/// CPU milliseconds per 1 000 events (at least one event, so that an idle phase reads 0, not NaN).
fn cpu_ms_per_thousand(cpu_seconds: f64, events: u64) -> f64 {
    cpu_seconds * 1000.0 / (events.max(1) as f64 / 1000.0)
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

/// p50 / p99 / p99.9 / max in milliseconds, or a dash for no samples.
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

pub(super) fn reconciliation(out: &mut String, results: &Results) -> fmt::Result {
    let r = &results.reconciliation;
    writeln!(out, "## Reconciliation with the LiveKit server\n")?;
    writeln!(
        out,
        "{} live meetings, {} sessions (half of the clients heartbeat every {:?}, half never), checked by one sweeper \
         against a stand-in LiveKit RoomService every {:?} (`RECONCILE_INTERVAL`; 60 s in production, where the \
         calls per second are {:.1}x fewer). Steady window of {:.1} s, nobody leaving; then {} sessions left at \
         random moments of one interval without their `participant_left`.\n",
        r.meetings,
        r.sessions,
        r.heartbeat_interval,
        r.interval,
        60.0 / r.interval.as_secs_f64().max(f64::EPSILON),
        r.window.as_secs_f64(),
        r.lost_lefts
    )?;
    let expected = 2.0 * r.meetings as f64 / r.interval.as_secs_f64().max(f64::EPSILON);
    writeln!(out, "| figure | value |")?;
    writeln!(out, "|---|---:|")?;
    writeln!(
        out,
        "| calls/s to LiveKit (expected 2 per meeting per interval: {expected:.1}) | {:.1} |",
        r.calls_per_second()
    )?;
    writeln!(
        out,
        "| sweeper CPU per 1 000 meetings per interval, ms | {:.0} |",
        r.cpu_per_thousand_meetings(r.sweeper_cpu_seconds) * 1000.0
    )?;
    writeln!(
        out,
        "| PostgreSQL CPU per 1 000 meetings per interval, ms (with the heartbeats this phase applies) | {:.0} |",
        r.cpu_per_thousand_meetings(r.postgres_cpu_seconds) * 1000.0
    )?;
    writeln!(
        out,
        "| sweeper CPU share of one core | {:.1} % |",
        100.0 * r.sweeper_cpu_seconds / r.window.as_secs_f64().max(f64::EPSILON)
    )?;
    writeln!(
        out,
        "| lost lefts closed by reconciliation / by the heartbeat time-out | {} / {} of {} |",
        r.closed_reconciled, r.closed_heartbeat, r.lost_lefts
    )?;
    writeln!(
        out,
        "| closed before the real leave by, ms: p50 / p99 / max (within one interval: {} ms) | {} / {} / {} |",
        r.interval.as_millis(),
        r.early_ms.value_at_quantile(0.5),
        r.early_ms.value_at_quantile(0.99),
        r.early_ms.max()
    )?;
    writeln!(out, "| attendance | {} |\n", attendance_cell(&r.differences))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::latency_histogram;

    #[test]
    fn quantiles_read_in_milliseconds() {
        let mut histogram = latency_histogram();
        for us in [1_000, 2_000, 3_000] {
            histogram.record(us).unwrap();
        }
        assert_eq!(quantiles(&histogram), "2.0 / 3.0 / 3.0 / 3.0");
        assert_eq!(quantiles(&latency_histogram()), "–");
    }
}
