//! tcp mode: one backend per client connection, bytes copied both ways until either side
//! closes or nothing moves for `tcp_idle`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::backend::EjectReason;
use crate::conns::{ConnToken, HARD};
use crate::upstream::Upstream;
use crate::{Shared, table, tunnel};

pub(crate) async fn serve(sh: Arc<Shared>, mut client: TcpStream, token: ConnToken) {
    let mut signal = token.signal();
    let mut table = sh.table.load_full();
    let mut exclude = Vec::new();
    let (connect_timeout, idle) = {
        let cfg = sh.config();
        (cfg.timeouts.connect, cfg.timeouts.tcp_idle)
    };
    for _ in 0..table::ATTEMPTS {
        let Some((idx, guard)) = table::enter(&sh, &mut table, &mut exclude) else {
            if exclude.is_empty() {
                sh.no_backend.fetch_add(1, Relaxed);
            }
            return; // dropping the client closes it
        };
        if let Some(failed) = exclude.last().and_then(|i| table.backends.get(*i)) {
            failed.state.counters.retries.fetch_add(1, Relaxed);
        }
        let b = &table.backends[idx].state;
        let mut upstream = match Upstream::connect(b, connect_timeout).await {
            Ok(s) => s,
            Err(e) if crate::is_local_exhaustion(&e) => {
                sh.front.local_errors.fetch_add(1, Relaxed);
                if let Some(since) = sh.warnings.local_error.allow(Instant::now()) {
                    tracing::warn!(listener = %sh.name, error = %e, "cannot connect to an instance: the load balancer is out of resources{since}");
                }
                return;
            }
            Err(e) => {
                tracing::debug!(listener = %sh.name, backend = %b.id, error = %e, "tcp connect failed");
                b.counters.errors.fetch_add(1, Relaxed);
                b.eject(&sh, Instant::now(), EjectReason::Connect);
                exclude.push(idx);
                continue;
            }
        };
        b.counters.conns.fetch_add(1, Relaxed);
        tokio::select! {
            r = tunnel::pump(&mut client, &mut upstream, idle) => {
                if let Err(e) = r {
                    tracing::debug!(listener = %sh.name, backend = %b.id, error = %e, "tcp connection ended");
                }
            }
            _ = signal.wait_for(|s| s.stop >= HARD) => {}
        }
        drop(guard);
        return;
    }
}
