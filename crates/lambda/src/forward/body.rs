//! What an SQS record's body holds: an event's envelope or an operator's erasure request; or why it cannot be read.

use crate::envelope::{Envelope, EnvelopeError};
use crate::erasure::ErasureRequest;
use crate::queue::SqsRecord;

/// What a message holds: an event, or an operator's erasure request.
pub(super) enum Body {
    Event(Box<Envelope>),
    Erasure(ErasureRequest),
}

impl Body {
    /// Reads a record's body: an erasure request when it is one, else an event's envelope.
    pub(super) fn read(record: &SqsRecord) -> Result<Body, UnreadableBody> {
        let Some(body) = &record.body else { return Err(UnreadableBody::Missing) };
        match ErasureRequest::from_body(body) {
            Some(request) => Ok(Body::Erasure(request)),
            None => Ok(Body::Event(Box::new(Envelope::from_body(body)?))),
        }
    }

    pub(super) fn ordering_key(&self) -> &str {
        match self {
            Body::Event(envelope) => envelope.event.ordering_key(),
            Body::Erasure(request) => request.ordering_key(),
        }
    }

    pub(super) fn message_id(&self) -> &str {
        match self {
            Body::Event(envelope) => &envelope.event.message_id,
            Body::Erasure(request) => &request.request_id,
        }
    }

    pub(super) fn kind(&self) -> &str {
        match self {
            Body::Event(envelope) => envelope.event.kind.as_str(),
            Body::Erasure(_) => "erasure",
        }
    }
}

/// Why a record's body could not be read; dead-lettered as `malformed_envelope` with this message.
#[derive(Debug, thiserror::Error)]
pub(super) enum UnreadableBody {
    #[error("the message has no body")]
    Missing,
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}
