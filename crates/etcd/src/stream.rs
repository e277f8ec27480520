//! A prefix's changes from a revision on, event by event: the low-level watch cluster mode
//! builds on (list with [`Client::range_prefix`], then watch from its revision + 1). Unlike
//! [`Watcher`](crate::Watcher) it keeps no state and does not reconnect: any end is an error,
//! and the caller decides how to resume.

use crate::client::{Client, RawWatch};
use crate::error::{Error, Result};
use crate::kv::Event;
use crate::wire::WatchResult;

/// What one watch message carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    /// The changes, in revision order. Empty for a progress notification.
    pub events: Vec<Event>,
    /// The message's header revision: the store's revision when it was sent. After a progress
    /// notification every change up to it has been delivered; after events, only up to the
    /// last event's (see [`WatchBatch::delivered_through`]), since etcd may split a catch-up
    /// over several messages that all carry the current revision.
    pub revision: i64,
}

impl WatchBatch {
    /// Whether this is a progress notification (no events).
    pub fn is_progress(&self) -> bool {
        self.events.is_empty()
    }

    /// Every change up to this revision has been delivered: resume a broken watch from it + 1.
    pub fn delivered_through(&self) -> i64 {
        match self.events.last() {
            Some(event) => event.kv.mod_revision,
            None => self.revision,
        }
    }
}

/// An open watch on a prefix; read it with [`WatchStream::next`]. Dropping it closes the watch.
///
/// Opened with [`Client::watch_prefix`], which asks etcd for progress notifications (sent to an
/// idle watch every 10 minutes by default) so a quiet watch still learns how current it is.
/// The stream does not detect on its own a member that stops answering while keeping the
/// connection open (frozen, partitioned from this client): bound `next` with a timeout if that
/// matters, it is cancel-safe. A member that loses its leader does cut the watch (after three
/// election timeouts), thanks to the no-leader header every request carries.
#[derive(Debug)]
pub struct WatchStream {
    endpoint: String,
    op: String,
    /// `None` once the stream ended (which closes the connection, and the watch on the server).
    raw: Option<RawWatch>,
    /// A message read while opening that is not the `created` one.
    pending: Option<WatchResult>,
    /// Why the stream ended.
    ended: Option<String>,
}

impl Client {
    /// Watches every key under `prefix` from `start_revision` on (inclusive; 0 means "from
    /// now"). Fails over across endpoints while opening.
    ///
    /// A start revision etcd has compacted away is not refused here: the first
    /// [`WatchStream::next`] returns [`Error::Compacted`] (etcd first accepts the watch, then
    /// cancels it).
    pub async fn watch_prefix(&self, prefix: &str, start_revision: i64) -> Result<WatchStream> {
        let (raw, first) = self.open_watch(prefix, start_revision).await?;
        Ok(WatchStream {
            endpoint: self.endpoint(raw.endpoint).to_owned(),
            op: format!("watch {prefix:?} from revision {start_revision}"),
            raw: Some(raw),
            pending: (!first.created).then_some(first),
            ended: None,
        })
    }
}

impl WatchStream {
    /// The endpoint the watch is open on.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next batch of changes or progress notification. Errors end the stream (every
    /// later call fails too): [`Error::Compacted`] when the start revision's history is gone,
    /// [`Error::WatchEnded`] when the connection broke or etcd ended or canceled the watch,
    /// [`Error::BadEntry`] for a key or value that is not UTF-8.
    ///
    /// Cancel-safe: bytes already read are kept for the next call.
    pub async fn next(&mut self) -> Result<WatchBatch> {
        if let Some(reason) = &self.ended {
            return Err(self.error(format!("it had already ended ({reason})")));
        }
        loop {
            let message = match (self.pending.take(), self.raw.as_mut()) {
                (Some(message), _) => message,
                (None, Some(raw)) => match raw.next().await {
                    Ok(message) => message,
                    Err(reason) => return Err(self.end(reason)),
                },
                (None, None) => return Err(self.end("it had already ended".to_owned())),
            };
            if message.canceled {
                if message.compact_revision > 0 {
                    self.end(format!(
                        "compacted up to revision {}",
                        message.compact_revision
                    ));
                    return Err(Error::Compacted {
                        endpoint: self.endpoint.clone(),
                        op: self.op.clone(),
                        compact_revision: message.compact_revision,
                    });
                }
                let reason = if message.cancel_reason.is_empty() {
                    "no reason given".to_owned()
                } else {
                    message.cancel_reason
                };
                return Err(self.end(format!("etcd canceled it: {reason}")));
            }
            if message.created {
                continue;
            }
            let mut events = Vec::with_capacity(message.events.len());
            for event in message.events {
                match event.kv.into_public() {
                    Ok(kv) => events.push(Event {
                        kind: event.kind,
                        kv,
                    }),
                    Err(e) => {
                        self.end(format!("key {:?}: {}", e.key, e.problem));
                        return Err(Error::BadEntry {
                            endpoint: self.endpoint.clone(),
                            op: self.op.clone(),
                            key: e.key,
                            problem: e.problem.to_string(),
                        });
                    }
                }
            }
            return Ok(WatchBatch {
                events,
                revision: message.header.revision,
            });
        }
    }

    /// Marks the stream ended (closing it) and returns the error saying why.
    fn end(&mut self, reason: String) -> Error {
        self.raw = None;
        self.pending = None;
        let error = self.error(reason.clone());
        self.ended = Some(reason);
        error
    }

    fn error(&self, reason: String) -> Error {
        Error::WatchEnded {
            endpoint: self.endpoint.clone(),
            op: self.op.clone(),
            reason,
        }
    }
}
