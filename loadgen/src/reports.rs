//! Meeting reports in the benchmark, from the platform's side of `worker deliver`. A receiver
//! checks every request's Standard Webhooks signature and keeps what it got; the live phase
//! compares the attendance in each meeting's latest report with the workload's expectation and
//! times each `room_finished`'s 200 to the receiver's 2xx for its `meeting.ended`; the delivery
//! phase measures deliveries per second at saturation, with 1 and 2 deliverers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::{Response, StatusCode};
use shared::domain::report::{ReportType, report_id};
use shared::nats::ReportArgs;
use shared::nats::reports::{ReportMessage, ReportStream};
use worker::deliver::signature::{Secret, sign};

use crate::bench::{Run, SaturationClock};
use crate::capacity::latency_histogram;
use crate::results::{Answer, Applied};
use crate::scenario::{Expected, MeetingExpectations, Plan, Request};
use crate::system::with_env;

/// The endpoint's name in the run's endpoints files; its consumer is `deliver-bench`.
pub(crate) const ENDPOINT: &str = "bench";

/// One report as the receiver got it, the first time its id came.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub id: String,
    pub kind: Option<ReportType>,
    pub room_sid: String,
    pub sequence: i64,
    pub answered_at: Instant,
    /// The request's body, as signed.
    pub body: Bytes,
}

#[derive(Default)]
struct Received {
    delivered: Vec<Delivered>,
    ids: HashSet<String>,
    /// Requests for an id already received (at least once: a retry or a redelivery).
    duplicates: u64,
    /// Requests whose signature did not verify, or that were not a report.
    refused: u64,
}

/// An HTTP receiver on 127.0.0.1 that verifies each request with the endpoint's secret and
/// answers 204 (400 to what does not verify); stopped on drop.
pub struct Receiver {
    pub url: String,
    pub secret: String,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/attendance", listener.local_addr()?);
        let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
        let verifier = Secret::parse(&secret)?;
        let received = Arc::new(Mutex::new(Received::default()));
        let task = tokio::spawn({
            let received = received.clone();
            async move {
                loop {
                    let Ok((connection, _)) = listener.accept().await else { continue };
                    let (verifier, received) = (verifier.clone(), received.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let (verifier, received) = (verifier.clone(), received.clone());
                            async move { Ok::<_, std::convert::Infallible>(receive(request, &verifier, &received).await) }
                        });
                        let io = hyper_util::rt::TokioIo::new(connection);
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                    });
                }
            }
        });
        Ok(Receiver { url, secret, received, task })
    }

    /// Every report received so far, each once, in arrival order.
    pub fn delivered(&self) -> Vec<Delivered> {
        self.received.lock().expect("not poisoned").delivered.clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().expect("not poisoned").delivered.len()
    }

    /// (requests for ids received before, requests refused).
    pub fn duplicates_and_refused(&self) -> (u64, u64) {
        let received = self.received.lock().expect("not poisoned");
        (received.duplicates, received.refused)
    }

    /// Writes an endpoints file naming this receiver alone, readable by its owner alone.
    pub fn write_endpoints_file(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let yaml =
            format!("endpoints:\n  - name: {ENDPOINT}\n    url: '{}'\n    secrets: ['{}']\n", self.url, self.secret);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        file.write_all(yaml.as_bytes())?;
        Ok(())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    request: hyper::Request<hyper::body::Incoming>,
    verifier: &Secret,
    received: &Mutex<Received>,
) -> Response<Full<Bytes>> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (id, timestamp, signatures) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return answer(StatusCode::BAD_REQUEST),
    };
    let report = match (id, timestamp.and_then(|t| t.parse::<i64>().ok()), signatures) {
        (Some(id), Some(timestamp), Some(signatures)) => {
            let expected = sign(&id, timestamp, &body, std::slice::from_ref(verifier)).signature;
            let verified = signatures.split(' ').any(|signature| signature == expected);
            verified.then(|| serde_json::from_slice::<serde_json::Value>(&body).ok()).flatten().map(|json| (id, json))
        }
        _ => None,
    };
    let mut received = received.lock().expect("not poisoned");
    let Some((id, json)) = report else {
        received.refused += 1;
        return answer(StatusCode::BAD_REQUEST);
    };
    if !received.ids.insert(id.clone()) {
        received.duplicates += 1;
        return answer(StatusCode::NO_CONTENT);
    }
    let data = &json["data"];
    received.delivered.push(Delivered {
        id,
        kind: json["type"].as_str().and_then(ReportType::parse),
        room_sid: data["room_sid"].as_str().unwrap_or_default().to_owned(),
        sequence: data["sequence"].as_i64().unwrap_or(-1),
        answered_at: Instant::now(),
        body,
    });
    answer(StatusCode::NO_CONTENT)
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// The environment of a `worker deliver` of the run: the run's own, reports from `reports`,
/// endpoints from `endpoints_file`, and the receiver's loopback address allowed.
pub(crate) fn deliverer_env(
    env: Vec<(String, String)>,
    reports: &ReportArgs,
    endpoints_file: &Path,
) -> Vec<(String, String)> {
    let env = with_env(env, "REPORT_STREAM", reports.stream.clone());
    let env = with_env(env, "REPORT_SUBJECT_PREFIX", reports.subject_prefix.clone());
    let env = with_env(env, "DELIVERY_ENDPOINTS_FILE", endpoints_file.display().to_string());
    // The run's streams keep reports for 2 h: the schedule must end well within it.
    let env = with_env(env, "DELIVERY_RETRY_SCHEDULE", "1s,5s,30s");
    let env = with_env(env, "DELIVERY_MAX_RETRY_AFTER", "1m");
    with_env(env, "DELIVERY_ALLOWED_NETWORKS", "127.0.0.0/8")
}

/// Every way the latest report of each meeting differs from the expectation, one line each: a
/// meeting that got `room_finished` must have been reported ended with the expected attendance;
/// another one started at least, and, if its end was inferred, with the expected attendance too.
pub fn differences(delivered: &[Delivered], plan: &Plan, expected: &MeetingExpectations) -> Vec<String> {
    let mut latest: HashMap<&str, &Delivered> = HashMap::new();
    for report in delivered {
        let newest = latest.entry(report.room_sid.as_str()).or_insert(report);
        if report.sequence > newest.sequence {
            *newest = report;
        }
    }
    let finished = finished_meetings(plan);
    let mut differences = Vec::new();
    for (room_sid, participants) in expected {
        let report = match latest.remove(room_sid.as_str()) {
            None => {
                differences.push(format!("reports of {room_sid}: none delivered"));
                continue;
            }
            Some(report) => report,
        };
        if report.kind == Some(ReportType::Started) {
            if finished.contains(room_sid.as_str()) {
                differences.push(format!("reports of {room_sid}: the latest ({}) is meeting.started", report.sequence));
            }
            continue;
        }
        match delivered_attendance(&report.body) {
            Err(error) => differences.push(format!("report {} of {room_sid}: {error:#}", report.sequence)),
            Ok(mut got) => {
                for (identity, want) in participants {
                    match got.remove(identity) {
                        None => {
                            differences.push(format!("report of {room_sid} / {identity}: missing, expected {want:?}"))
                        }
                        Some(got) if got != *want => {
                            differences.push(format!("report of {room_sid} / {identity}: {got:?}, expected {want:?}"))
                        }
                        Some(_) => {}
                    }
                }
                differences.extend(
                    got.keys().map(|identity| format!("report of {room_sid} / {identity}: not in the workload")),
                );
            }
        }
    }
    differences.extend(latest.keys().map(|room_sid| format!("reports of {room_sid}: not in the workload")));
    differences
}

/// The room sids of the meetings the plan finishes with `room_finished`.
fn finished_meetings(plan: &Plan) -> HashSet<&str> {
    plan.webhooks
        .iter()
        .filter(|webhook| webhook.event_type == "room_finished")
        .map(|webhook| plan.meetings[webhook.meeting].sid.as_str())
        .collect()
}

/// The attendance a report's body carries, people and bots, by identity.
fn delivered_attendance(body: &[u8]) -> anyhow::Result<BTreeMap<String, Expected>> {
    let json: serde_json::Value = serde_json::from_slice(body)?;
    let data = &json["data"];
    let listed = ["participants", "bots"].map(|list| data[list].as_array().context(list).cloned());
    let mut attendance = BTreeMap::new();
    for participant in listed.into_iter().collect::<anyhow::Result<Vec<_>>>()?.into_iter().flatten() {
        let field = |name: &str| participant[name].as_i64().with_context(|| format!("{name} of {participant}"));
        let time = |name: &str| -> anyhow::Result<Option<i64>> {
            match &participant[name] {
                serde_json::Value::Null => Ok(None),
                value => {
                    let text = value.as_str().with_context(|| format!("{name} of {participant}"))?;
                    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)?;
                    Ok(Some((at.unix_timestamp_nanos() / 1_000_000) as i64))
                }
            }
        };
        let identity = participant["identity"].as_str().context("identity")?.to_owned();
        let got = Expected {
            attended_ms: field("attended_ms")?,
            join_count: field("join_count")?,
            leave_count: field("leave_count")?,
            first_joined_at_ms: time("first_joined_at")?,
            last_left_at_ms: time("last_left_at")?,
            present: participant["present"].as_bool().context("present")?,
        };
        attendance.insert(identity, got);
    }
    Ok(attendance)
}

/// For each meeting finished by `room_finished`: from its first 200 to the receiver's 2xx of
/// its `meeting.ended`, in µs. The second value counts finished meetings whose end was not
/// delivered.
pub fn finish_to_delivery_us(
    delivered: &[Delivered],
    plan: &Plan,
    answers: &[Answer],
    phase_start: Instant,
) -> (Histogram<u64>, usize) {
    let mut finished_ok: HashMap<&str, Duration> = HashMap::new();
    for answer in answers.iter().filter(|answer| answer.ok()) {
        if let Request::Webhook { index, .. } = answer.request {
            let webhook = &plan.webhooks[index];
            if webhook.event_type == "room_finished" {
                let at = finished_ok.entry(plan.meetings[webhook.meeting].sid.as_str()).or_insert(answer.answered_at());
                *at = (*at).min(answer.answered_at());
            }
        }
    }
    let ended: HashMap<&str, Duration> = delivered
        .iter()
        .filter(|report| report.kind == Some(ReportType::Ended))
        .map(|report| (report.room_sid.as_str(), report.answered_at.saturating_duration_since(phase_start)))
        .collect();
    let mut latencies_us = latency_histogram();
    let mut undelivered = 0;
    for (room_sid, finished_at) in finished_ok {
        match ended.get(room_sid) {
            Some(delivered_at) => {
                latencies_us.saturating_record(delivered_at.saturating_sub(finished_at).as_micros().max(1) as u64);
            }
            None => undelivered += 1,
        }
    }
    (latencies_us, undelivered)
}

/// Waits until the latest report of every meeting agrees with the expectation, or `deadline`
/// passes; the differences left.
pub async fn converge(
    receiver: &Receiver,
    plan: &Plan,
    expected: &MeetingExpectations,
    deadline: Instant,
) -> Vec<String> {
    loop {
        let differences = differences(&receiver.delivered(), plan, expected);
        if differences.is_empty() || Instant::now() > deadline {
            return differences;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `count` reports to deliver at saturation: copies of `sample` (the live phase's), each with an
/// id of its own, so that the receiver counts each one.
pub fn saturation_reports(sample: &[Delivered], count: usize, label: &str) -> anyhow::Result<Vec<ReportMessage>> {
    if sample.is_empty() {
        bail!("no report was delivered in the live phase: nothing to deliver at saturation");
    }
    Ok((0..count)
        .map(|n| {
            let source = &sample[n % sample.len()];
            ReportMessage {
                id: report_id(&format!("{}-{label}-{n}", source.room_sid), source.sequence),
                kind: source.kind.unwrap_or(ReportType::Updated),
                room_sid: source.room_sid.clone(),
                sequence: source.sequence,
                body: source.body.clone(),
            }
        })
        .collect())
}

/// Deliveries at saturation: `reports` wait in a report stream of their own, then `deliverers`
/// replicas of `worker deliver` start and push them to a receiver of their own; measured from
/// their start to the receiver holding every one and the consumer drained.
pub(crate) async fn delivery_phase(
    run: &Run<'_>,
    database_url: &str,
    deliverers: usize,
    reports: &[ReportMessage],
) -> anyhow::Result<Applied> {
    let label = format!("deliver{deliverers}");
    let args = run.names.report_args(&label);
    let stream = ReportStream::new(run.client.clone(), &args);
    stream.ensure().await.context("the delivery phase's report stream")?;
    let result = async {
        let receiver = Receiver::start().await?;
        let endpoints_file = run.dir.join(format!("endpoints-{label}.yaml"));
        receiver.write_endpoints_file(&endpoints_file)?;
        let env = deliverer_env(run.env(database_url), &args, &endpoints_file);
        // Its consumer is made by a first start: a new endpoint receives what comes after it.
        let first = run.start_deliverer(&format!("{label}-setup"), &env)?;
        wait_for_consumer(run, &args.stream).await?;
        first.stop().await?;
        let messages: Vec<(ReportMessage, Option<String>)> = reports.iter().map(|r| (r.clone(), None)).collect();
        stream.publish_all(&messages, Duration::from_secs(120)).await.context("publish the reports")?;

        let clock = SaturationClock::start();
        let mut running = Vec::new();
        for n in 0..deliverers.max(1) {
            running.push(run.start_deliverer(&format!("{label}-{}", n + 1), &env)?);
        }
        let deadline = clock.started() + Duration::from_secs(600);
        while receiver.count() < reports.len() {
            if Instant::now() > deadline {
                bail!("{} of {} reports delivered after 600 s", receiver.count(), reports.len());
            }
            for deliverer in &mut running {
                deliverer.check_running()?;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let applied = clock.applied(&running, reports.len() as u64);
        for deliverer in running {
            deliverer.stop().await?;
        }
        let (duplicates, refused) = receiver.duplicates_and_refused();
        if refused > 0 {
            bail!("the receiver refused {refused} requests of the delivery phase (signature)");
        }
        if duplicates > 0 {
            eprintln!("[bench] {label}: {duplicates} reports delivered more than once");
        }
        anyhow::Ok(applied)
    }
    .await;
    let _ = run.jetstream.delete_stream(&args.stream).await;
    result
}

/// Waits up to 30 s for the endpoint's durable consumer on `stream`.
async fn wait_for_consumer(run: &Run<'_>, stream: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let consumer = format!("deliver-{ENDPOINT}");
    loop {
        if let Ok(stream) = run.jetstream.get_stream(stream).await
            && stream.consumer_info(&consumer).await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no consumer {consumer} on {stream} 30 s after a deliverer started");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ScenarioConfig;
    use shared::domain::time::rfc3339_ms;

    fn plan() -> Plan {
        let config = ScenarioConfig {
            seed: 3,
            rooms: 2,
            participants: 8,
            meetings_per_room: 2,
            duration_ms: 60_000,
            heartbeat_interval_ms: 10_000,
            heartbeat_timeout_ms: 30_000,
            reconnect_rate: 0.3,
            lost_left_rate: 0.0,
            abort_rate: 0.0,
            finish_rate: 0.5,
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
            reorder_delay_ms: 0,
        };
        Plan::build(&config, 1_700_000_000_000)
    }

    /// A report of `room_sid` carrying `attendance` as the deliverer's documents do.
    fn report(room_sid: &str, sequence: i64, kind: ReportType, attendance: &BTreeMap<String, Expected>) -> Delivered {
        let participants: Vec<serde_json::Value> = attendance
            .iter()
            .map(|(identity, e)| {
                serde_json::json!({
                    "identity": identity,
                    "present": e.present,
                    "attended_ms": e.attended_ms,
                    "join_count": e.join_count,
                    "leave_count": e.leave_count,
                    "first_joined_at": e.first_joined_at_ms.map(rfc3339_ms),
                    "last_left_at": e.last_left_at_ms.map(rfc3339_ms),
                    "status": "attended",
                })
            })
            .collect();
        let body = serde_json::json!({
            "type": kind.as_str(),
            "data": {"room_sid": room_sid, "sequence": sequence, "participants": participants, "bots": []},
        });
        Delivered {
            id: report_id(room_sid, sequence),
            kind: Some(kind),
            room_sid: room_sid.to_owned(),
            sequence,
            answered_at: Instant::now(),
            body: serde_json::to_vec(&body).unwrap().into(),
        }
    }

    #[test]
    fn the_latest_report_of_each_meeting_is_compared_with_the_expectation() {
        let plan = plan();
        let expected = plan.expected(|_| None);
        let finished = finished_meetings(&plan);
        assert!(!finished.is_empty() && finished.len() < plan.meetings.len(), "some meetings finish, not all");
        // Every meeting started, then ended with what the workload implies.
        let mut delivered: Vec<Delivered> = expected
            .iter()
            .flat_map(|(sid, attendance)| {
                [report(sid, 1, ReportType::Started, &BTreeMap::new()), report(sid, 2, ReportType::Ended, attendance)]
            })
            .collect();
        assert_eq!(differences(&delivered, &plan, &expected), Vec::<String>::new());

        // An update with other figures is the latest: it differs; a stale one does not count.
        let (sid, attendance) = expected.iter().find(|(_, a)| !a.is_empty()).unwrap();
        let mut wrong = attendance.clone();
        let identity = wrong.keys().next().unwrap().clone();
        wrong.get_mut(&identity).unwrap().attended_ms += 1;
        delivered.push(report(sid, 3, ReportType::Updated, &wrong));
        let found = differences(&delivered, &plan, &expected);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains(&identity), "{found:?}");
        delivered.push(report(sid, 4, ReportType::Updated, attendance));
        assert_eq!(differences(&delivered, &plan, &expected), Vec::<String>::new());

        // A finished meeting only reported started differs; an unfinished one does not.
        let only_started = |sid: &String| {
            let mut reports: Vec<Delivered> =
                delivered.iter().filter(|r| r.room_sid != *sid || r.sequence == 1).cloned().collect();
            reports.retain(|r| r.room_sid != *sid || r.kind == Some(ReportType::Started));
            differences(&reports, &plan, &expected)
        };
        let finished_sid = expected.keys().find(|sid| finished.contains(sid.as_str())).unwrap();
        let unfinished_sid = expected.keys().find(|sid| !finished.contains(sid.as_str())).unwrap();
        assert_eq!(only_started(finished_sid).len(), 1);
        assert_eq!(only_started(unfinished_sid), Vec::<String>::new());

        // A meeting with no report, and a report of no planned meeting.
        let mut missing: Vec<Delivered> = delivered.iter().filter(|r| r.room_sid != *finished_sid).cloned().collect();
        missing.push(report("RM_unplanned", 1, ReportType::Started, &BTreeMap::new()));
        let found = differences(&missing, &plan, &expected);
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn saturation_copies_have_ids_of_their_own() {
        let plan = plan();
        let sid = &plan.meetings[0].sid;
        let sample = [report(sid, 1, ReportType::Started, &BTreeMap::new())];
        let copies = saturation_reports(&sample, 5, "d1").unwrap();
        let ids: HashSet<&str> = copies.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), 5);
        assert!(copies.iter().all(|c| c.body == sample[0].body && c.room_sid == *sid));
        assert!(saturation_reports(&[], 5, "d1").is_err());
    }
}
