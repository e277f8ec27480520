//! `kill -9` of an instance under real load behind the balancer, with JVM backends: several
//! keep-alive clients running, requests provably parked inside the instance that is killed, and
//! the balancer's own counters showing the retries that saved them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::balancer::{START, fleet_behind_lb};
use crate::harness::*;

/// How long a parked request sleeps inside its instance.
const PARK_MS: u64 = 8_000;

/// An answer to a parked request: status, body, and the pid of the JVM that answered (`X-Pid`).
pub(crate) type Parked = (u16, String, Option<u64>);

/// One GET on its own connection with a read deadline long enough for a parked request that is
/// retried on another instance (two parks).
pub(crate) fn get_parked(port: u16) -> Result<Parked, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(3 * PARK_MS)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /slow?ms={PARK_MS} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response: {text:?}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let pid = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("x-pid"))
        .and_then(|(_, v)| v.trim().parse().ok());
    Ok((code, body.to_string(), pid))
}

/// `n` clients, each on one keep-alive connection pool (ureq's agent), GETting `/` through the
/// balancer until stopped.
pub(crate) struct KeepAliveClients {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl KeepAliveClients {
    pub(crate) fn start(port: u16, n: usize) -> KeepAliveClients {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handles =
            (0..n)
                .map(|_| {
                    let (stop, ok, failed, errors) =
                        (stop.clone(), ok.clone(), failed.clone(), errors.clone());
                    std::thread::spawn(move || {
                        let agent: ureq::Agent = ureq::Agent::config_builder()
                            .timeout_global(Some(Duration::from_secs(20)))
                            .build()
                            .into();
                        let url = format!("http://127.0.0.1:{port}/");
                        let mut sent = 0;
                        while !stop.load(Ordering::SeqCst) && sent < 500_000 {
                            sent += 1;
                            let answer =
                                agent.get(&url).call().map_err(|e| e.to_string()).and_then(
                                    |mut r| {
                                        r.body_mut().read_to_string().map_err(|e| e.to_string())
                                    },
                                );
                            match answer {
                                Ok(body) if body.starts_with("hello from") => {
                                    ok.fetch_add(1, Ordering::SeqCst);
                                }
                                other => {
                                    failed.fetch_add(1, Ordering::SeqCst);
                                    if let Ok(mut e) = errors.lock() {
                                        e.push(format!("{other:?}"));
                                    }
                                }
                            }
                        }
                    })
                })
                .collect();
        KeepAliveClients {
            stop,
            ok,
            failed,
            errors,
            handles,
        }
    }

    pub(crate) fn wait_more(&self, n: u64) {
        let from = self.ok.load(Ordering::SeqCst);
        wait_until("more requests answered", Duration::from_secs(60), || {
            (self.ok.load(Ordering::SeqCst) >= from + n).then_some(())
        });
    }

    pub(crate) fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            let _ = h.join();
        }
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}

/// How many `/slow` requests sleep inside the instance on `port` now.
pub(crate) fn parked_in(port: u16) -> Option<u64> {
    match http_get(port, "/parked") {
        Ok((200, body)) => body.trim().parse().ok(),
        _ => None,
    }
}

/// Parks `/slow` requests through the balancer on `lb`, one at a time, each seen sleeping inside
/// one of the instances on `ports`, until `enough` says so (at most 30: `spread` says what it
/// means if the balancer never gets there). The parked requests' threads, to join for answers.
pub(crate) fn park_until(
    lb: u16,
    ports: &[u16],
    enough: impl Fn() -> bool,
    spread: &str,
) -> Vec<std::thread::JoinHandle<Result<Parked, String>>> {
    let mut parked = Vec::new();
    while !enough() {
        assert!(parked.len() < 30, "30 parked requests and {spread}");
        parked.push(std::thread::spawn(move || get_parked(lb)));
        let want = parked.len() as u64;
        wait_until(
            "the new request parked inside an instance",
            Duration::from_secs(10),
            || {
                let total: u64 = ports.iter().filter_map(|p| parked_in(*p)).sum();
                (total >= want).then_some(())
            },
        );
    }
    parked
}

fn balancer_totals(fleet: &Fleet) -> serde_json::Value {
    fleet.status()["apps"][0]["balancer"]["totals"].clone()
}

#[test]
fn kill9_with_requests_parked_inside_loses_none_and_the_balancer_retries_them() {
    let (fleet, lb) = fleet_behind_lb(3, None, "round-robin");
    let clients = KeepAliveClients::start(lb, 4);
    clients.wait_more(200);
    let instances = fleet.instances("fx");
    let victim = &instances[1];
    let victim_pid = victim["pid"].as_u64().expect("victim pid") as u32;
    let victim_port = victim["port"].as_u64().expect("victim port") as u16;
    let ports: Vec<u16> = instances
        .iter()
        .filter_map(|i| i["port"].as_u64())
        .map(|p| p as u16)
        .collect();

    // Park requests through the balancer, one at a time, each seen sleeping inside some
    // instance, until at least two sleep inside the victim.
    let parked = park_until(
        lb,
        &ports,
        || parked_in(victim_port).unwrap_or(0) >= 2,
        "fewer than 2 reached the victim: the balancer does not spread them",
    );
    let in_victim = parked_in(victim_port).unwrap_or(0);
    let retries_before = balancer_totals(&fleet)["retries"].as_u64().unwrap_or(0);

    kill9(victim_pid);

    // Every parked request is answered: the victim's by another instance, after a retry.
    for (i, h) in parked.into_iter().enumerate() {
        let answer = h.join().expect("parked request thread");
        assert_eq!(
            answer.as_ref().map(|(c, b, _)| (*c, b.trim().to_string())),
            Ok((200, "slow done".to_string())),
            "parked request {i}"
        );
        let by = answer.ok().and_then(|(_, _, pid)| pid);
        assert!(
            by.is_some_and(|p| p != u64::from(victim_pid)),
            "parked request {i} answered by {by:?}, the killed JVM was {victim_pid}"
        );
    }
    wait_until("the killed instance to be replaced", START, || {
        let i = fleet.instances("fx");
        (i.iter().filter(|i| i["ready"] == true).count() == 3
            && i.iter()
                .all(|i| i["pid"].as_u64() != Some(victim_pid as u64)))
        .then_some(())
    });
    clients.wait_more(200);
    let (ok, failed, errors) = clients.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} keep-alive requests failed: {errors:?}",
        ok + failed
    );
    let totals = balancer_totals(&fleet);
    let retries = totals["retries"].as_u64().unwrap_or(0);
    assert!(
        retries >= retries_before + in_victim,
        "{in_victim} requests parked in the killed instance, the balancer counted {} retries: {totals}",
        retries - retries_before
    );
    assert!(
        totals["errors"].as_u64().unwrap_or(0) >= in_victim,
        "each retry follows a failed attempt: {totals}"
    );
}
