//! Publishing to JetStream and waiting for its acknowledgement: a message counts as stored only
//! once JetStream says so (a duplicate acknowledgement counts: it was stored earlier).

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};

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
