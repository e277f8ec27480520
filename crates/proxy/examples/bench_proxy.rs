//! A jarfleet proxy listener for `bench/proxy.py`:
//! `bench_proxy LISTEN BACKEND... [--threads N] [--least-request]`.
//! Runs until SIGTERM or SIGINT, then prints the listener's stats as JSON on stdout.

use std::net::SocketAddr;
use std::time::Duration;

use jarfleet_proxy::{Backend, Balance, Listener, ListenerConfig, Mode, Snapshot};

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut threads = 2;
    let mut balance = Balance::RoundRobin;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--threads N")?;
            }
            "--least-request" => balance = Balance::LeastRequest,
            _ => addrs.push(a.parse().map_err(|e| format!("{a}: {e}"))?),
        }
    }
    if addrs.len() < 2 {
        return Err("usage: bench_proxy LISTEN BACKEND... [--threads N] [--least-request]".into());
    }
    let listen = addrs.remove(0);
    jarfleet_proxy::set_worker_threads(threads);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut cfg = ListenerConfig::new("bench", listen, Mode::Http);
        cfg.balance = balance;
        let l = Listener::bind(cfg).await.map_err(|e| e.to_string())?;
        l.update(Snapshot {
            backends: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| Backend::new(format!("b{i}"), *a))
                .collect(),
        });
        eprintln!("bench_proxy listening on {}", l.local_addr());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let stats = serde_json::to_string(&l.stats()).map_err(|e| e.to_string())?;
        println!("{stats}");
        l.shutdown(Duration::from_millis(200)).await;
        Ok(())
    })
}
