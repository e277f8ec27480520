//! tcp mode: one backend per client connection, bytes copied both ways.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::{ConnToken, HARD, Shared};

pub(crate) async fn serve(
    sh: Arc<Shared>,
    mut client: TcpStream,
    mut stop: watch::Receiver<u8>,
    _token: ConnToken,
) {
    let mut table = sh.table.load_full();
    let mut exclude = None;
    for _ in 0..2 {
        let Some((idx, guard)) = crate::enter(&sh, &mut table, &mut exclude) else {
            if exclude.is_none() {
                sh.no_backend.fetch_add(1, Relaxed);
            }
            return; // dropping the client closes it
        };
        if let Some(failed) = exclude.and_then(|i: usize| table.backends.get(i)) {
            failed.state.counters.retries.fetch_add(1, Relaxed);
        }
        let b = &table.backends[idx].state;
        let connected =
            tokio::time::timeout(sh.cfg.timeouts.connect, TcpStream::connect(b.addr)).await;
        let mut upstream = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(listener = %sh.cfg.name, backend = %b.id, error = %e, "tcp connect failed");
                b.counters.errors.fetch_add(1, Relaxed);
                b.eject(&sh, Instant::now());
                exclude = Some(idx);
                continue;
            }
            Err(_) => {
                b.counters.errors.fetch_add(1, Relaxed);
                b.eject(&sh, Instant::now());
                exclude = Some(idx);
                continue;
            }
        };
        let _ = upstream.set_nodelay(true);
        b.counters.conns.fetch_add(1, Relaxed);
        let wait_hard = async {
            loop {
                if *stop.borrow_and_update() >= HARD {
                    return;
                }
                if stop.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = r {
                    tracing::debug!(listener = %sh.cfg.name, backend = %b.id, error = %e, "tcp connection ended with an error");
                }
            }
            _ = wait_hard => {}
        }
        drop(guard);
        return;
    }
}
