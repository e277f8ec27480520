//! The accept loop: one per listener, on one worker; each connection goes to the next worker,
//! where it is registered with that worker's reactor and served to its end. Connections are
//! accepted only while the listener's cap and the process budget allow (see `conns`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::conns::{ConnToken, Conns, RUNNING, Room};
use crate::{Mode, Shared, h1, relay, tcp, workers};

/// How long the loop waits at a cap before it looks again (a close wakes it sooner).
const CAP_RECHECK: Duration = Duration::from_millis(200);
/// How often idle connections are asked to close while the loop waits at a cap.
const RECLAIM_EVERY: Duration = Duration::from_millis(200);

/// Runs the accept loop and keeps it running: should it ever panic, the error is logged and
/// the loop starts again on the same socket, so the listen address never closes while the
/// listener lives (the socket is only closed when the listener stops).
pub(crate) async fn supervise(listener: std::net::TcpListener, sh: Arc<Shared>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            tracing::error!(listener = %sh.name, error = %e, "cannot accept");
            return;
        }
    };
    loop {
        match tokio::spawn(accept_loop(listener.clone(), sh.clone())).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                sh.front.accept_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::error!(listener = %sh.name, error = %e, "the accept loop panicked; it starts again on the same socket");
            }
            Err(_) => return,
        }
    }
}

async fn accept_loop(listener: Arc<tokio::net::TcpListener>, sh: Arc<Shared>) {
    let Ok(workers) = workers::workers() else {
        return;
    };
    let mut stop = sh.conns.signal.subscribe();
    let mut last_reclaim: Option<Instant> = None;
    let mut paused = false;
    loop {
        if stop.borrow_and_update().stop != RUNNING {
            return;
        }
        let max = sh.config().limits.max_connections;
        let room = sh.conns.room(max);
        if room != Room::Free {
            if !paused {
                paused = true;
                sh.conns.paused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    listener = %sh.name,
                    connections = sh.conns.live(),
                    max_connections = max,
                    process_budget = crate::connection_budget(),
                    "at the connection cap: not accepting until connections close (idle ones are reclaimed)"
                );
            }
            if last_reclaim.is_none_or(|t| t.elapsed() >= RECLAIM_EVERY) {
                last_reclaim = Some(Instant::now());
                match room {
                    Room::ListenerFull => sh.conns.reclaim(),
                    _ => Conns::reclaim_everywhere(),
                }
            }
            tokio::select! {
                _ = sh.conns.wait_for_room(max, CAP_RECHECK) => {}
                r = stop.changed() => if r.is_err() { return },
            }
            continue;
        }
        paused = false;
        let accepted = tokio::select! {
            r = listener.accept() => r,
            r = stop.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let token = ConnToken::new(&sh.conns);
                let sh = sh.clone();
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                workers.next().spawn(async move {
                    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                        return;
                    };
                    match sh.mode {
                        Mode::Http => h1::serve(sh, stream, peer, token).await,
                        Mode::Tcp => tcp::serve(sh, stream, token).await,
                        Mode::Relay => relay::serve(sh, stream, peer, token).await,
                    }
                });
            }
            Err(e) => {
                // Out of descriptors (or memory): make room, and back off a little instead of
                // spinning on a connection that stays in the backlog.
                if crate::is_local_exhaustion(&e) {
                    Conns::reclaim_everywhere();
                }
                if let Some(since) = sh.warnings.accept_failed.allow(Instant::now()) {
                    tracing::warn!(listener = %sh.name, error = %e, "accept failed{since}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
