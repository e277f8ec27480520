//! Keeping a lease alive in the background, and saying when it can no longer be trusted.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::client::Client;
use crate::error::Result;
use crate::lease::Lease;

/// What a [`LeaseKeeper`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperEvent {
    /// A keep-alive succeeded: the lease has `ttl` seconds again.
    Renewed { ttl: i64 },
    /// A keep-alive failed on every endpoint. Sent once per outage (the next `Renewed` ends
    /// it); the keeper keeps trying every interval.
    Unreachable {
        /// When the first failed keep-alive of this outage was sent.
        since: Instant,
        /// From then on the lease must be assumed expired unless a renewal succeeds first:
        /// the last successful keep-alive's send time + its TTL (etcd counts from when it got
        /// it, a little later, so this errs on the safe side). Work fenced by the lease should
        /// stop before it.
        expires: Instant,
        /// The last failure.
        error: String,
    },
    /// The lease is lost; the keeper has stopped. Register again with a new lease.
    Lost { cause: LeaseLoss },
}

/// Why a lease is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLoss {
    /// etcd answered that the lease does not exist (revoked, or expired on its side).
    Gone,
    /// No keep-alive succeeded within the TTL of the last one that did: etcd may well have
    /// expired it, and the node must act as if it had.
    Expired,
}

/// Timing of a [`LeaseKeeper`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperConfig {
    /// From the start of one keep-alive to the start of the next. A few per TTL, so several
    /// can fail before the lease is in danger (1 s for a 6 s TTL).
    pub interval: Duration,
    /// Bounds a keep-alive to one endpoint, so a hung member costs only this before the next
    /// endpoint is tried. Well below the interval.
    pub attempt_timeout: Duration,
}

impl KeeperConfig {
    /// `interval` with an attempt timeout of half of it, at most 1 s.
    pub fn new(interval: Duration) -> KeeperConfig {
        KeeperConfig {
            interval,
            attempt_timeout: (interval / 2).min(Duration::from_secs(1)),
        }
    }
}

/// Events buffered for a slow reader. `Renewed` and `Unreachable` never wait for room (the
/// keeper must not stop renewing because nobody reads); see [`LeaseKeeper`].
const CAPACITY: usize = 16;

/// A task renewing one lease every interval, across endpoints, reporting through a channel.
/// Dropping it (or [`LeaseKeeper::stop`]) stops renewing at once; the lease then expires after
/// its TTL. [`LeaseKeeper::revoke`] ends it at once instead.
///
/// It never grants a new lease by itself: a lost lease means the node's registration is gone
/// (or must be assumed gone), and re-registering is the caller's decision, with the keys to
/// attach to the new lease.
///
/// Its instants are tokio's ([`tokio::time::Instant`]), so a test's paused clock governs it.
///
/// Reporting never blocks renewing: when the channel is full a `Renewed` is dropped (another
/// follows), and an `Unreachable` is offered again at the next failure, so the last event
/// queued always matches the current state once the reader catches up. `Lost` is always
/// delivered.
#[derive(Debug)]
pub struct LeaseKeeper {
    lease: Lease,
    client: Client,
    events: mpsc::Receiver<KeeperEvent>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl_secs` and keeps it alive every `interval`
    /// ([`KeeperConfig::new`]). Fails if the grant fails.
    pub async fn start(
        client: Client,
        ttl_secs: i64,
        interval: Duration,
    ) -> Result<(Lease, LeaseKeeper)> {
        LeaseKeeper::start_with(client, ttl_secs, KeeperConfig::new(interval)).await
    }

    pub async fn start_with(
        client: Client,
        ttl_secs: i64,
        config: KeeperConfig,
    ) -> Result<(Lease, LeaseKeeper)> {
        let sent = Instant::now();
        let lease = client.grant(ttl_secs).await?;
        Ok((lease, LeaseKeeper::keep(client, lease, sent, config)))
    }

    /// Keeps an already granted `lease` alive. `renewed_at` is when its grant or last renewal
    /// was sent: it is assumed to expire `lease.ttl` seconds after that.
    pub fn keep(
        client: Client,
        lease: Lease,
        renewed_at: Instant,
        config: KeeperConfig,
    ) -> LeaseKeeper {
        let renewer = client.with_timeout(config.attempt_timeout);
        let id = lease.id;
        let renew = move || {
            let renewer = renewer.clone();
            async move { renewer.keep_alive_once(id).await.map_err(|e| e.to_string()) }
        };
        let (tx, events) = mpsc::channel(CAPACITY);
        let task = tokio::spawn(run(renew, lease, renewed_at, config.interval, tx));
        LeaseKeeper {
            lease,
            client,
            events,
            task,
        }
    }

    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// The next event; `None` once the keeper stopped and every event was read (after
    /// `Lost`).
    pub async fn recv(&mut self) -> Option<KeeperEvent> {
        self.events.recv().await
    }

    /// An event already queued, without waiting.
    pub fn try_recv(&mut self) -> Option<KeeperEvent> {
        self.events.try_recv().ok()
    }

    /// Stops renewing and revokes the lease, deleting its keys now (a clean shutdown).
    pub async fn revoke(self) -> Result<()> {
        self.task.abort();
        self.client.revoke(self.lease.id).await
    }

    /// Stops renewing; the lease expires after its TTL.
    pub fn stop(self) {}
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What was last queued for the reader, so a state change is offered until it is queued.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reported {
    Renewed,
    Unreachable,
}

/// The keeper's loop, generic over the keep-alive call so its timing can be tested alone.
/// `renew` answers like [`Client::keep_alive_once`], errors as text.
async fn run<F, Fut>(
    mut renew: F,
    lease: Lease,
    renewed_at: Instant,
    interval: Duration,
    tx: mpsc::Sender<KeeperEvent>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<i64>, String>>,
{
    let id = lease.id;
    let mut expires = renewed_at + secs(lease.ttl);
    let mut outage: Option<Instant> = None;
    let mut reported = Reported::Renewed;
    let mut next = renewed_at + interval;
    loop {
        // Never sleep past the expiry: it is reported when it comes, not a tick later.
        sleep_until(next.min(expires)).await;
        let sent = Instant::now();
        next = sent + interval;
        let error = match timeout_at(expires, renew()).await {
            Ok(Ok(Some(ttl))) => {
                expires = sent + secs(ttl);
                if let Some(since) = outage.take() {
                    tracing::info!(lease = id, down_for = ?sent - since, "etcd lease renewed again");
                }
                match tx.try_send(KeeperEvent::Renewed { ttl }) {
                    Ok(()) => reported = Reported::Renewed,
                    Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Closed(_)) => return,
                }
                continue;
            }
            Ok(Ok(None)) => {
                tracing::warn!(lease = id, "etcd says the lease is gone");
                let _ = tx
                    .send(KeeperEvent::Lost {
                        cause: LeaseLoss::Gone,
                    })
                    .await;
                return;
            }
            Ok(Err(error)) => error,
            Err(_) => "no keep-alive answered before the lease's expiry".to_owned(),
        };
        if Instant::now() >= expires {
            tracing::error!(lease = id, %error, "etcd lease not renewed within its TTL: lost");
            let _ = tx
                .send(KeeperEvent::Lost {
                    cause: LeaseLoss::Expired,
                })
                .await;
            return;
        }
        let since = *outage.get_or_insert(sent);
        if reported != Reported::Unreachable {
            tracing::warn!(lease = id, %error, left = ?expires - Instant::now(), "etcd lease keep-alive failed");
            let event = KeeperEvent::Unreachable {
                since,
                expires,
                error,
            };
            match tx.try_send(event) {
                Ok(()) => reported = Reported::Unreachable,
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Closed(_)) => return,
            }
        }
    }
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// One scripted keep-alive: how long it takes, what it answers.
    type Answer = (Duration, Result<Option<i64>, String>);

    /// A scripted keep-alive: each call takes `delay` and answers the next scripted result
    /// (the last one repeats). Counts calls.
    #[derive(Clone)]
    struct Script {
        answers: Arc<Mutex<VecDeque<Answer>>>,
        calls: Arc<Mutex<Vec<Instant>>>,
    }

    impl Script {
        fn new(answers: Vec<Answer>) -> Script {
            Script {
                answers: Arc::new(Mutex::new(answers.into())),
                calls: Arc::new(Mutex::new(Vec::new())),
            }
        }

        fn renew(&self) -> impl Future<Output = Result<Option<i64>, String>> + use<> {
            let (delay, answer) = {
                let mut answers = self.answers.lock().expect("lock");
                let next = if answers.len() > 1 {
                    answers.pop_front()
                } else {
                    answers.front().cloned()
                };
                next.expect("a scripted answer")
            };
            self.calls.lock().expect("lock").push(Instant::now());
            async move {
                tokio::time::sleep(delay).await;
                answer
            }
        }

        fn calls(&self) -> Vec<Instant> {
            self.calls.lock().expect("lock").clone()
        }
    }

    const MS: Duration = Duration::from_millis(1);
    const LEASE: Lease = Lease { id: 7, ttl: 6 };

    fn ok(delay_ms: u64) -> Answer {
        (MS * delay_ms as u32, Ok(Some(6)))
    }

    fn fail(delay_ms: u64) -> Answer {
        (
            MS * delay_ms as u32,
            Err("refused: etcdserver: no leader".to_owned()),
        )
    }

    fn start(script: &Script) -> (Instant, mpsc::Receiver<KeeperEvent>, JoinHandle<()>) {
        let t0 = Instant::now();
        let (tx, rx) = mpsc::channel(CAPACITY);
        let s = script.clone();
        let task = tokio::spawn(run(
            move || s.renew(),
            LEASE,
            t0,
            Duration::from_secs(1),
            tx,
        ));
        (t0, rx, task)
    }

    async fn next(rx: &mut mpsc::Receiver<KeeperEvent>) -> KeeperEvent {
        rx.recv().await.expect("an event")
    }

    #[tokio::test(start_paused = true)]
    async fn renews_every_interval_and_never_expires() {
        let script = Script::new(vec![ok(50)]);
        let (t0, mut rx, task) = start(&script);
        for i in 1..=20u32 {
            let event = next(&mut rx).await;
            assert_eq!(event, KeeperEvent::Renewed { ttl: 6 });
            assert_eq!(Instant::now() - t0, Duration::from_secs(i.into()) + MS * 50);
        }
        assert!(!task.is_finished());
        let calls = script.calls();
        assert_eq!(calls[0] - t0, Duration::from_secs(1));
        assert_eq!(
            calls[1] - calls[0],
            Duration::from_secs(1),
            "a fixed cadence"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_reported_once_and_its_end_with_a_renewal() {
        // Renewed at 1 s; failing at 2, 3, 4 s; renewed at 5 s; failing from 6 s on.
        let script = Script::new(vec![ok(0), fail(10), fail(10), fail(10), ok(0), fail(10)]);
        let (t0, mut rx, _task) = start(&script);
        assert_eq!(next(&mut rx).await, KeeperEvent::Renewed { ttl: 6 });
        let event = next(&mut rx).await;
        let KeeperEvent::Unreachable {
            since,
            expires,
            error,
        } = event
        else {
            panic!("expected Unreachable, got {event:?}");
        };
        assert_eq!(since - t0, Duration::from_secs(2));
        assert_eq!(expires - t0, Duration::from_secs(7), "renewed at 1 s + 6 s");
        assert!(error.contains("no leader"), "{error}");
        // Only one Unreachable for the three failures: the next event is the renewal.
        assert_eq!(next(&mut rx).await, KeeperEvent::Renewed { ttl: 6 });
        assert_eq!(Instant::now() - t0, Duration::from_secs(5));
        let event = next(&mut rx).await;
        assert!(
            matches!(event, KeeperEvent::Unreachable { since, expires, .. }
                if since - t0 == Duration::from_secs(6) && expires - t0 == Duration::from_secs(11)),
            "{event:?}"
        );
        // Failing on: lost at the expiry exactly, not a tick later.
        assert_eq!(
            next(&mut rx).await,
            KeeperEvent::Lost {
                cause: LeaseLoss::Expired
            }
        );
        assert_eq!(Instant::now() - t0, Duration::from_secs(11));
        assert_eq!(rx.recv().await, None, "the keeper stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_keep_alive_hanging_past_the_expiry_is_lost_at_the_expiry() {
        let script = Script::new(vec![(Duration::from_secs(3600), Ok(Some(6)))]);
        let (t0, mut rx, _task) = start(&script);
        assert_eq!(
            next(&mut rx).await,
            KeeperEvent::Lost {
                cause: LeaseLoss::Expired
            }
        );
        assert_eq!(Instant::now() - t0, Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gone_lease_is_lost_at_once() {
        let script = Script::new(vec![ok(0), ok(0), (MS * 5, Ok(None))]);
        let (t0, mut rx, _task) = start(&script);
        assert_eq!(next(&mut rx).await, KeeperEvent::Renewed { ttl: 6 });
        assert_eq!(next(&mut rx).await, KeeperEvent::Renewed { ttl: 6 });
        assert_eq!(
            next(&mut rx).await,
            KeeperEvent::Lost {
                cause: LeaseLoss::Gone
            }
        );
        assert_eq!(Instant::now() - t0, Duration::from_secs(3) + MS * 5);
        assert_eq!(
            script.calls().len(),
            3,
            "no keep-alive after the lease is gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unread_channel_does_not_stop_renewals_and_the_state_change_gets_through() {
        let mut answers = vec![ok(0); 40];
        answers.extend([fail(0), fail(0)]);
        let script = Script::new(answers);
        let (t0, mut rx, task) = start(&script);
        // Nobody reads for 41 s: 40 renewals (only CAPACITY queued), then failures.
        tokio::time::sleep_until(t0 + Duration::from_secs(41) + MS).await;
        assert_eq!(script.calls().len(), 41, "renewing went on");
        assert!(!task.is_finished());
        let mut events = Vec::new();
        while let Ok(event) = rx.try_recv() {
            events.push(event);
        }
        assert_eq!(events.len(), CAPACITY);
        // The failure at 41 s found the channel full; the next one, at 42 s, is offered again.
        tokio::time::sleep_until(t0 + Duration::from_secs(42) + MS).await;
        let event = rx.try_recv().expect("the Unreachable");
        assert!(
            matches!(event, KeeperEvent::Unreachable { since, .. } if since - t0 == Duration::from_secs(41)),
            "{event:?}"
        );
    }

    #[test]
    fn default_attempt_timeout() {
        assert_eq!(
            KeeperConfig::new(Duration::from_secs(1)).attempt_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(
            KeeperConfig::new(Duration::from_secs(5)).attempt_timeout,
            Duration::from_secs(1)
        );
    }
}
