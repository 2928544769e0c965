//! `GET /v1/rooms/{room}/presence`: the room's presence changes as Server-Sent Events, read
//! from the presence stream in JetStream (an ordered consumer per connection, filtered to the
//! room), so that nothing is lost to a slow reader or a reconnection:
//! - every event's `id:` is its position in the stream; a client that reconnects with
//!   `Last-Event-ID` resumes right after it. One too old to resume (the stream keeps changes for
//!   `PRESENCE_STREAM_MAX_AGE`) first gets an `event: reload`: read the whole state again;
//! - a reader so far behind that the changes it receives are half-way to expiry is sent
//!   `event: resync` and the stream ends: it reconnects, reloads, and follows from now;
//! - the stream ends when the token expires (a client then needs a fresh token) and when the
//!   gateway shuts down;
//! - streams are bounded overall and per identity (the token's subject, or its API key for a
//!   token without one): past either, 429.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt as _};
use shared::domain::identifiers::{self, Field};
use shared::domain::time::now_unix_ms;
use shared::livekit::token::Claims;
use shared::nats::presence::{self, PresenceMessage, PresenceStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::read_access;
use crate::read_api::ReadState;

/// Bounds on the presence streams.
#[derive(Debug, Clone, clap::Args)]
pub struct PresenceStreamArgs {
    /// Presence streams open at once, all clients together; more get 429.
    #[arg(long = "presence-streams-max", env = "PRESENCE_STREAMS_MAX", default_value_t = 1_000)]
    pub max: usize,
    /// Presence streams one identity (or one API key's tokens without identity) may hold open.
    #[arg(long = "presence-streams-per-identity", env = "PRESENCE_STREAMS_PER_IDENTITY", default_value_t = 4)]
    pub per_identity: usize,
}

/// The open presence streams, and where they read from.
pub struct PresenceStreams {
    total: Arc<Semaphore>,
    per_identity: Mutex<HashMap<String, usize>>,
    max_per_identity: usize,
    /// The presence stream in JetStream (name, subjects, retention), created here too when a
    /// stream is opened before any sweeper created it.
    args: shared::nats::PresenceArgs,
}

/// One open stream's place, given back when the stream ends (dropped with it).
struct Slot {
    streams: Arc<PresenceStreams>,
    identity: String,
    _total: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.per_identity.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.identity) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

impl PresenceStreams {
    pub fn new(args: &PresenceStreamArgs, presence: &shared::nats::PresenceArgs) -> Arc<Self> {
        Arc::new(PresenceStreams {
            total: Arc::new(Semaphore::new(args.max)),
            per_identity: Mutex::new(HashMap::new()),
            max_per_identity: args.per_identity,
            args: presence.clone(),
        })
    }

    fn take(self: &Arc<Self>, identity: String) -> Result<Slot, ApiError> {
        let total = self.total.clone().try_acquire_owned().map_err(|_| ApiError::TooManyStreams)?;
        let mut open = self.per_identity.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(identity.clone()).or_insert(0);
        if *count >= self.max_per_identity {
            return Err(ApiError::TooManyStreams);
        }
        *count += 1;
        Ok(Slot { streams: self.clone(), identity, _total: total })
    }
}

/// Who a stream counts against: the token's identity, else its API key.
fn holder(claims: &Claims) -> String {
    match claims.sub.as_deref().filter(|sub| !sub.is_empty()) {
        Some(identity) => format!("identity {identity}"),
        None => format!("api key {}", claims.iss),
    }
}

/// The stream position after which to resume, from `Last-Event-ID`.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok(None) };
    let parsed = value.to_str().ok().and_then(|text| text.trim().parse::<u64>().ok());
    parsed.map(Some).ok_or(ApiError::InvalidParameter {
        field: "last_event_id",
        reason: "Last-Event-ID is not an event id of this stream".into(),
    })
}

/// What goes out: a change, or an instruction, possibly the last.
struct Out {
    event: Event,
    last: bool,
}

pub async fn open(
    state: &ReadState,
    room: String,
    headers: &HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, ApiError> {
    identifiers::check(Field::RoomName, &room)?;
    let now_s = now_unix_ms() / 1000;
    let claims = read_access::verify(headers, &state.keys, now_s)?;
    // Within the clock-skew leeway a token still verifies, but a stream that ends at its expiry
    // would end at once: say it expired, so that the client stops and gets a new one.
    if claims.exp.is_some_and(|exp| exp <= now_s) {
        return Err(ApiError::InvalidToken(shared::livekit::TokenError::Expired));
    }
    let access = read_access::access(&claims, &room)?;
    let resume_after = last_event_id(headers)?;
    let streams = &state.presence;
    let slot = streams.take(holder(&claims))?;

    let unavailable = |error: &dyn std::fmt::Display| {
        tracing::warn!(%error, "cannot follow presence changes");
        ApiError::ReadUnavailable
    };
    let jetstream = jetstream::new(state.nats.clone());
    let mut stream = match jetstream.get_stream(&streams.args.stream).await {
        Ok(stream) => stream,
        // The sweepers create it; a gateway asked first creates it the same way.
        Err(_) => {
            PresenceStream::new(state.nats.clone(), &streams.args).ensure().await.map_err(|e| unavailable(&e))?;
            jetstream.get_stream(&streams.args.stream).await.map_err(|e| unavailable(&e))?
        }
    };
    let first = stream.info().await.map_err(|e| unavailable(&e))?.state.first_sequence;
    let (deliver_policy, reload) = match resume_after {
        None => (DeliverPolicy::New, false),
        Some(after) if after.saturating_add(1) >= first => {
            (DeliverPolicy::ByStartSequence { start_sequence: after.saturating_add(1) }, false)
        }
        Some(_) => (DeliverPolicy::New, true),
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: presence::subject(&streams.args.subject_prefix, &room),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let messages = consumer.messages().await.map_err(|e| unavailable(&e))?;

    let too_late_ms = i64::try_from(streams.args.max_age.as_millis() / 2).unwrap_or(i64::MAX);
    let changes = messages.filter_map(move |message| {
        let out = match message {
            Ok(message) => message.info().ok().and_then(|info| {
                let published_ms = i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                if now_unix_ms() - published_ms > too_late_ms {
                    let event = Event::default().event("resync").data(r#"{"reason":"too far behind"}"#);
                    return Some(Out { event, last: true });
                }
                let change = PresenceMessage::decode(&message.payload).filter(|c| access.covers(&c.identity))?;
                let event =
                    Event::default().event("presence").id(info.stream_sequence.to_string()).data(change.to_json());
                Some(Out { event, last: false })
            }),
            Err(error) => {
                tracing::debug!(%error, "presence consumer error");
                None
            }
        };
        std::future::ready(out)
    });
    let head = futures::stream::iter(reload.then(|| Out {
        event: Event::default().event("reload").data(r#"{"reason":"too old to resume"}"#),
        last: false,
    }));
    // A token without expiry (LiveKit always sets one) is followed for a day at most.
    let expires_in = claims.exp.map_or(Duration::from_secs(86_400), |exp| {
        Duration::from_secs(u64::try_from(exp.saturating_sub(now_s)).unwrap_or(0))
    });
    let events = head
        .chain(changes)
        // An instruction that ends the stream is sent, then the stream ends at once.
        .flat_map(|out| {
            futures::stream::iter(if out.last { vec![Some(out.event), None] } else { vec![Some(out.event)] })
        })
        .take_while(|event| std::future::ready(event.is_some()))
        .filter_map(std::future::ready)
        .take_until(tokio::time::sleep(expires_in))
        .take_until(state.shutdown.clone().cancelled_owned())
        // The slot is held as long as the stream.
        .map(move |event| {
            let _held = &slot;
            Ok(event)
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
