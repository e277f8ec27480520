//! Keeping a prefix's config current across outages.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout, timeout_at};

use crate::client::{Client, RawWatch, Snapshot};
use crate::error::Result;
use crate::wire::{self, WatchResult};

/// What a [`Watcher`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The config changed: the whole new state, after one or more changes (a burst arriving
    /// within [`WatchConfig::coalesce`] gives one event). Only sent when the values differ from
    /// the last ones reported; a put of the same value is not a change.
    Changed(Snapshot),
    /// The connection to etcd was lost and could not be re-established. Sent once per outage;
    /// the last snapshot stays the current config. The watcher keeps retrying.
    Unreachable { error: String },
    /// etcd answers again after [`WatchEvent::Unreachable`]. Changes made meanwhile follow as
    /// a `Changed`.
    Reconnected,
}

/// Timing of a [`Watcher`].
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// First delay between reconnect attempts; doubled per failed attempt...
    pub min_backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
    /// After this long without a message, the watcher checks that its endpoint still serves a
    /// linearizable read; if not, it treats the stream as lost. Catches a frozen or partitioned
    /// member, which keeps the stream open but silent.
    pub idle_probe: Duration,
    /// How long to wait for more changes after one arrives before reporting them together.
    pub coalesce: Duration,
    /// Events buffered for a slow reader; when full, the watcher waits (and stops reading etcd).
    pub capacity: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            idle_probe: Duration::from_secs(10),
            coalesce: Duration::from_millis(20),
            capacity: 16,
        }
    }
}

/// A background task keeping a prefix's config current. Read events with [`Watcher::recv`];
/// dropping the watcher (or [`Watcher::stop`]) ends the task at once.
///
/// Design: one task owns the state (last reported values, last applied revision) and reports
/// through a bounded channel, so the consumer's control loop can `select!` on `recv()`. After
/// a lost stream it resumes the watch at the last applied revision + 1, so no change is missed;
/// if that revision was compacted meanwhile, it re-reads the whole prefix and reports the
/// difference, if any.
#[derive(Debug)]
pub struct Watcher {
    events: mpsc::Receiver<WatchEvent>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// Reads `prefix` and starts watching it with [`WatchConfig::default`]. Fails when the first
    /// read fails: the caller decides whether to start without config.
    pub async fn start(client: Client, prefix: &str) -> Result<(Snapshot, Watcher)> {
        Watcher::start_with(client, prefix, WatchConfig::default()).await
    }

    pub async fn start_with(
        client: Client,
        prefix: &str,
        config: WatchConfig,
    ) -> Result<(Snapshot, Watcher)> {
        let snapshot = client.get_prefix(prefix).await?;
        let (tx, events) = mpsc::channel(config.capacity.max(1));
        let task = Task {
            client,
            prefix: prefix.to_owned(),
            backoff: config.min_backoff,
            config,
            tx,
            values: snapshot.values.clone(),
            revision: snapshot.revision,
            unreachable: false,
            resync: false,
            lost: None,
        };
        let task = tokio::spawn(task.run());
        Ok((snapshot, Watcher { events, task }))
    }

    /// The next event. `None` only if the task died (it does not end on its own).
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }

    /// An event already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<WatchEvent> {
        self.events.try_recv().ok()
    }

    /// Ends the task.
    pub fn stop(self) {}
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a session with etcd ended.
enum End {
    /// The receiver is gone.
    Closed,
    /// A working stream broke: try again soon.
    Lost(String),
    /// Could not read or (re)open the watch: etcd is unreachable for now.
    Failed(String),
    /// The watch was canceled for compaction: re-read the prefix right away.
    Compacted,
}

struct Task {
    client: Client,
    prefix: String,
    config: WatchConfig,
    tx: mpsc::Sender<WatchEvent>,
    /// The values last reported (or read at start).
    values: BTreeMap<String, String>,
    /// Every change up to this revision is reflected in `values`.
    revision: i64,
    /// `Unreachable` was sent and `Reconnected` not yet.
    unreachable: bool,
    /// The watch cannot resume: the next session starts with a full read.
    resync: bool,
    /// Why the last working stream ended, for the `Unreachable` that may follow.
    lost: Option<String>,
    backoff: Duration,
}

impl Task {
    async fn run(mut self) {
        loop {
            let wait = match self.session().await {
                End::Closed => return,
                End::Compacted => {
                    self.resync = true;
                    continue;
                }
                End::Lost(reason) => {
                    tracing::debug!(prefix = %self.prefix, %reason, "etcd watch lost, reconnecting");
                    self.lost = Some(reason);
                    self.config.min_backoff
                }
                End::Failed(error) => {
                    if !self.unreachable {
                        let error = match self.lost.take() {
                            Some(lost) => format!("{lost}; reconnecting: {error}"),
                            None => error,
                        };
                        tracing::warn!(prefix = %self.prefix, %error, "etcd unreachable, keeping the last config");
                        self.unreachable = true;
                        if self
                            .tx
                            .send(WatchEvent::Unreachable { error })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    let wait = self.backoff;
                    self.backoff = (self.backoff * 2).min(self.config.max_backoff);
                    wait
                }
            };
            sleep(wait).await;
        }
    }

    /// Etcd answered: report it if it had not, reset the backoff.
    async fn reachable(&mut self) -> Result<(), End> {
        self.backoff = self.config.min_backoff;
        self.lost = None;
        if self.unreachable {
            self.unreachable = false;
            tracing::info!(prefix = %self.prefix, "etcd reachable again");
            self.tx
                .send(WatchEvent::Reconnected)
                .await
                .map_err(|_| End::Closed)?;
        }
        Ok(())
    }

    /// Adopts `values` as of `revision`; reports them if they differ from the last ones.
    async fn publish(
        &mut self,
        values: BTreeMap<String, String>,
        revision: i64,
    ) -> Result<(), End> {
        self.revision = self.revision.max(revision);
        if values != self.values {
            self.values = values;
            let snapshot = Snapshot {
                revision: self.revision,
                values: self.values.clone(),
            };
            self.tx
                .send(WatchEvent::Changed(snapshot))
                .await
                .map_err(|_| End::Closed)?;
        }
        Ok(())
    }

    async fn session(&mut self) -> End {
        match self.try_session().await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn try_session(&mut self) -> Result<std::convert::Infallible, End> {
        if self.resync {
            let snapshot = self
                .client
                .get_prefix(&self.prefix)
                .await
                .map_err(|e| End::Failed(e.to_string()))?;
            self.reachable().await?;
            self.resync = false;
            tracing::info!(prefix = %self.prefix, revision = snapshot.revision, "etcd prefix re-read");
            // A full read replaces the state: the revision may only move forward, but the
            // values are taken as read.
            self.revision = snapshot.revision;
            self.publish(snapshot.values, snapshot.revision).await?;
        }
        let (mut stream, first) = self
            .client
            .open_watch(&self.prefix, self.revision + 1)
            .await
            .map_err(|e| End::Failed(e.to_string()))?;
        self.reachable().await?;
        let endpoint = self.client.endpoint(stream.endpoint).to_owned();
        tracing::debug!(prefix = %self.prefix, %endpoint, from = self.revision + 1, "etcd watch open");
        let mut pending = None;
        self.take(first, &mut pending, &endpoint)?;
        loop {
            let message = match timeout(self.config.idle_probe, stream.next()).await {
                Ok(message) => message,
                Err(_) => {
                    let probe = self.client.probe(stream.endpoint, &self.prefix).await;
                    probe.map_err(|e| End::Lost(format!("{endpoint} stopped answering: {e}")))?;
                    continue;
                }
            };
            let message = message.map_err(|e| End::Lost(format!("{endpoint}: {e}")))?;
            self.take(message, &mut pending, &endpoint)?;
            if pending.is_some() {
                let result = self.coalesce(&mut stream, &mut pending, &endpoint).await;
                if let Some((values, revision)) = pending.take() {
                    self.publish(values, revision).await?;
                }
                result?;
            }
        }
    }

    /// Takes more messages arriving within the coalescing window into `pending`.
    async fn coalesce(
        &mut self,
        stream: &mut RawWatch,
        pending: &mut Option<(BTreeMap<String, String>, i64)>,
        endpoint: &str,
    ) -> Result<(), End> {
        let deadline = Instant::now() + self.config.coalesce;
        while let Ok(message) = timeout_at(deadline, stream.next()).await {
            let message = message.map_err(|e| End::Lost(format!("{endpoint}: {e}")))?;
            self.take(message, pending, endpoint)?;
        }
        Ok(())
    }

    /// Applies one watch message to `pending` (the values not yet reported, with their
    /// revision).
    fn take(
        &mut self,
        message: WatchResult,
        pending: &mut Option<(BTreeMap<String, String>, i64)>,
        endpoint: &str,
    ) -> Result<(), End> {
        if message.canceled {
            if message.compact_revision > 0 {
                tracing::info!(
                    prefix = %self.prefix,
                    from = self.revision + 1,
                    compacted = message.compact_revision,
                    "etcd compacted past the watcher, re-reading"
                );
                return Err(End::Compacted);
            }
            // Not for compaction (e.g. permissions): start over with a full read, later.
            self.resync = true;
            let reason = if message.cancel_reason.is_empty() {
                "no reason given".to_owned()
            } else {
                message.cancel_reason
            };
            return Err(End::Failed(format!(
                "{endpoint} canceled the watch: {reason}"
            )));
        }
        if message.created {
            return Ok(());
        }
        if message.events.is_empty() {
            // A progress notification: every change up to its revision was sent. Only
            // synced watchers get one, so it is safe to resume after it.
            match pending {
                Some((_, revision)) => *revision = (*revision).max(message.header.revision),
                None => self.revision = self.revision.max(message.header.revision),
            }
            return Ok(());
        }
        let (values, revision) =
            pending.get_or_insert_with(|| (self.values.clone(), self.revision));
        let mut next = values.clone();
        // The response header's revision is the store's current one even when etcd split a
        // catch-up into several responses: only the events' own revisions say what was seen.
        let seen = wire::apply_events(&self.prefix, &mut next, message.events).map_err(|e| {
            self.resync = true;
            End::Failed(format!(
                "{endpoint}, watch {:?}: key {:?}: {}",
                self.prefix, e.key, e.problem
            ))
        })?;
        *values = next;
        *revision = (*revision).max(seen);
        Ok(())
    }
}
