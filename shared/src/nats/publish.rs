//! Publishing to JetStream and waiting for its acknowledgement: a message counts as stored only
//! once JetStream says so (a duplicate acknowledgement counts: it was stored earlier).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;

use crate::runtime::trace;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("JetStream did not acknowledge within {0:?}")]
    Timeout(Duration),
    #[error("JetStream refused or could not take the publish: {0}")]
    Unavailable(String),
}

/// What JetStream answered for a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    pub sequence: u64,
    /// True when the message id was already in the stream (a retry or a duplicate).
    pub duplicate: bool,
}

/// Publishes and waits, at most `deadline`, for JetStream's acknowledgement.
pub async fn publish_acknowledged(
    jetstream: &jetstream::Context,
    subject: String,
    message: PublishMessage,
    deadline: Duration,
) -> Result<PublishAck, PublishError> {
    let publish_and_ack = async {
        let ack = jetstream.send_publish(subject, message).await?;
        ack.await
    };
    within(deadline, publish_and_ack).await.map(|ack| PublishAck { sequence: ack.sequence, duplicate: ack.duplicate })
}

/// Runs a publish, mapping its failure, and a deadline passed before it finished, to a
/// [`PublishError`].
pub async fn within<T, E: std::fmt::Display>(
    deadline: Duration,
    publish: impl Future<Output = Result<T, E>>,
) -> Result<T, PublishError> {
    match tokio::time::timeout(deadline, publish).await {
        Err(_elapsed) => Err(PublishError::Timeout(deadline)),
        Ok(Err(error)) => Err(PublishError::Unavailable(error.to_string())),
        Ok(Ok(value)) => Ok(value),
    }
}

/// One message of an outbox, to publish in order with [`publish_outbox`].
pub struct OutboxMessage {
    pub subject: String,
    pub payload: Bytes,
    pub headers: HeaderMap,
    /// JetStream de-duplicates on it: a row published twice is stored once.
    pub message_id: String,
    /// The span of this publish.
    pub span: tracing::Span,
    /// The trace context of the change's cause, stored with the row, if any.
    pub traceparent: Option<String>,
}

/// Publishes an outbox's messages in order, each continuing the trace of its cause, and waits
/// (at most `deadline`) until JetStream acknowledged every one.
pub async fn publish_outbox(
    jetstream: &jetstream::Context,
    messages: Vec<OutboxMessage>,
    deadline: Duration,
) -> Result<(), PublishError> {
    let publish = async {
        let mut acks = Vec::with_capacity(messages.len());
        for OutboxMessage { subject, payload, mut headers, message_id, span, traceparent } in messages {
            if let Some(traceparent) = traceparent {
                headers.insert(trace::TRACEPARENT, traceparent.as_str());
                trace::continue_from_nats(&span, Some(&headers));
            }
            trace::inject_into_nats(&span, &mut headers);
            let message = PublishMessage::build().payload(payload).headers(headers).message_id(message_id);
            acks.push(jetstream.send_publish(subject, message).await?);
        }
        for ack in acks {
            ack.await?;
        }
        Ok::<(), async_nats::Error>(())
    };
    within(deadline, publish).await
}
