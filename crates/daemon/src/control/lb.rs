//! The built-in load balancer, from the control loop's side: one listener per app with a
//! `listen` address, fed a snapshot of the app's ready instances whenever it changes, and the
//! drain step of every stop. The listeners themselves live in the data plane
//! ([`data_plane::DataPlane`](super::data_plane::DataPlane)), which the loop only sends
//! settings and snapshots to and reads counters and notes from.

use jarfleet_core::events::EventKind;
use std::net::{SocketAddr, ToSocketAddrs};

use jarfleet_proxy::{ListenerConfig, Mode};

use super::data_plane::{BackendEntry, DataPlane, DrainRequest};
use super::*;

/// The listeners the loop asked for, as it knows them (the data plane holds the sockets).
#[derive(Default)]
pub(super) struct Balancer {
    apps: BTreeMap<String, AppListener>,
    /// Listeners that did not bind, by app: tried again until they do.
    unbound: BTreeMap<String, Unbound>,
    /// Failed binds by app since the daemon started (`/metrics`).
    bind_failures: BTreeMap<String, u64>,
}

struct AppListener {
    addr: SocketAddr,
    mode: Mode,
    /// The backends of the last snapshot pushed (with their weights), to push only changes.
    last: Vec<(String, SocketAddr, u32)>,
}

/// `listen` as a mode and socket address (`0.0.0.0:8080`, `http://127.0.0.1:8080`,
/// `tcp://localhost:5432`).
pub(super) fn listen_mode(listen: &str) -> (Mode, &str) {
    match listen.strip_prefix("tcp://") {
        Some(rest) => (Mode::Tcp, rest),
        None => (Mode::Http, listen.strip_prefix("http://").unwrap_or(listen)),
    }
}

pub(super) fn listen_addr(listen: &str) -> Result<SocketAddr, String> {
    let (_, addr) = listen_mode(listen);
    addr.to_socket_addrs()
        .map_err(|e| format!("listen = {listen:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("listen = {listen:?} names no address"))
}

/// The proxy's settings of an app's listener, from its `[balancer]` table and its health check
/// (whose `http` path the stall probe asks for; else `/`). Pure.
pub(super) fn listener_config(
    app: &str,
    addr: SocketAddr,
    mode: Mode,
    b: &jarfleet_core::spec::BalancerSpec,
    health: &jarfleet_core::spec::HealthSpec,
) -> ListenerConfig {
    let mut cfg = ListenerConfig::new(app, addr, mode);
    cfg.balance = match b.balance {
        jarfleet_core::spec::Balance::RoundRobin => jarfleet_proxy::Balance::RoundRobin,
        jarfleet_core::spec::Balance::LeastRequest => jarfleet_proxy::Balance::LeastRequest,
    };
    cfg.slow_start = b.slow_start;
    cfg.timeouts = jarfleet_proxy::Timeouts {
        head: b.head_timeout,
        keep_alive: b.keepalive_timeout,
        body: b.body_timeout,
        connect: b.connect_timeout,
        response: b.response_timeout,
        backend_idle: b.backend_idle_timeout,
        tcp_idle: b.tcp_idle_timeout,
    };
    cfg.limits = jarfleet_proxy::Limits {
        max_connections: b.max_connections as usize,
        max_idle_per_backend: b.max_idle_per_backend as usize,
        request_buffer: usize::try_from(b.request_buffer).unwrap_or(usize::MAX),
    };
    cfg.outlier = jarfleet_proxy::Outlier {
        eject_for: b.eject_for,
        failures: b.eject_after,
        stall: b.stall_timeout,
        probe_timeout: b.stall_probe_timeout,
        probe_path: match &health.check {
            jarfleet_core::spec::HealthCheck::Http { path } => path.clone(),
            _ => "/".into(),
        },
    };
    cfg
}

/// The proxy's id of an instance's current process: a new process is a new backend.
pub(super) fn backend_id(app: &str, slot: u32, generation: u64) -> String {
    format!("{app}/{slot}#{generation}")
}

/// An app's listener that could not be bound: tried again with backoff until it binds.
#[derive(Debug, Clone)]
pub(super) struct Unbound {
    listen: String,
    error: String,
    /// Failed attempts in a row.
    failures: u32,
    /// When the next attempt is due (epoch ms).
    next_try: u64,
}

impl Balancer {
    /// Binds `app`'s listener for `cfg` (replacing one on another address or mode); `true` when
    /// a listener was (re)bound. On the same address every setting changes live.
    fn bind(&mut self, dp: &dyn DataPlane, app: &str, cfg: ListenerConfig) -> Result<bool, String> {
        if let Some(l) = self.apps.get(app)
            && l.addr == cfg.listen
            && l.mode == cfg.mode
        {
            // Same address: timeouts, limits, ejection and balancing change live.
            dp.configure(app, &cfg);
            return Ok(false);
        }
        if self.apps.remove(app).is_some() {
            dp.close(app);
        }
        dp.bind(app, &cfg)?;
        self.apps.insert(
            app.to_string(),
            AppListener {
                addr: cfg.listen,
                mode: cfg.mode,
                last: Vec::new(),
            },
        );
        Ok(true)
    }

    /// Stops `app`'s listener, if it has one.
    fn close(&mut self, dp: &dyn DataPlane, app: &str) {
        if self.apps.remove(app).is_some() {
            dp.close(app);
        }
    }
}

impl Control {
    /// Makes the app's listener match its spec: bound on `listen`, or gone without one.
    pub(super) fn ensure_listener(&mut self, app: &str) {
        let listen = self.apps.get(app).and_then(|a| a.rec.spec.listen.clone());
        let (balancer, health) = match self.apps.get(app) {
            Some(a) => (a.rec.spec.balancer.clone(), a.rec.spec.health.clone()),
            None => {
                self.lb.close(&*self.data_plane, app);
                return;
            }
        };
        let result = match &listen {
            None => {
                self.lb.close(&*self.data_plane, app);
                Ok(false)
            }
            Some(listen) => {
                let mode = listen_mode(listen).0;
                listen_addr(listen).and_then(|addr| {
                    let cfg = listener_config(app, addr, mode, &balancer, &health);
                    self.lb.bind(&*self.data_plane, app, cfg)
                })
            }
        };
        match (result, listen) {
            (Ok(true), Some(l)) => {
                let after = self
                    .lb
                    .unbound
                    .remove(app)
                    .map(|u| format!(" (after {} failed attempt(s))", u.failures))
                    .unwrap_or_default();
                self.emit(
                    EventKind::LbListening,
                    Some(app),
                    None,
                    format!("load balancer listening on {l}{after}"),
                );
            }
            (Ok(_), _) => {
                self.lb.unbound.remove(app);
            }
            (Err(e), Some(l)) => self.listener_failed(app, &l, e),
            (Err(e), None) => self.emit(EventKind::LbBindFailed, Some(app), None, e),
        }
        self.sync_lb(app);
    }

    /// A listener that did not bind: shown in `status`, counted, reported when it first fails
    /// (or fails differently), and tried again after a backoff (1 s → 30 s).
    fn listener_failed(&mut self, app: &str, listen: &str, error: String) {
        if self.record_unbound(app, listen, &error) {
            self.emit(
                EventKind::LbBindFailed,
                Some(app),
                None,
                format!(
                    "load balancer cannot listen on {listen}: {error}; retrying by itself (every {} s at most)",
                    jarfleet_core::backoff::listener_retry_delay(u32::MAX).as_secs()
                ),
            );
        }
    }

    /// The relay did not bind: an event when it first fails (or fails differently), and
    /// another attempt after the listeners' backoff.
    pub(super) fn relay_failed(&mut self, listen: &str, error: String) {
        if self.record_unbound(super::relay::RELAY, listen, &error) {
            self.emit(
                EventKind::LbBindFailed,
                None,
                None,
                format!(
                    "the relay for the other nodes' balancers cannot listen on {listen}: {error}; retrying by itself (every {} s at most). Until it does, the other nodes do not reach this node's instances",
                    jarfleet_core::backoff::listener_retry_delay(u32::MAX).as_secs()
                ),
            );
        }
    }

    /// A listener bound after failing.
    pub(super) fn lb_unbound_cleared(&mut self, key: &str) {
        self.lb.unbound.remove(key);
    }

    /// Counts a failed bind and schedules the next attempt; `true` when it is news (a first
    /// failure, or a different one).
    fn record_unbound(&mut self, app: &str, listen: &str, error: &str) -> bool {
        let now = self.now_ms();
        *self.lb.bind_failures.entry(app.to_string()).or_default() += 1;
        let previous = self.lb.unbound.get(app).cloned();
        let failures = previous
            .as_ref()
            .filter(|u| u.listen == listen)
            .map_or(1, |u| u.failures.saturating_add(1));
        let delay = jarfleet_core::backoff::listener_retry_delay(failures);
        let news = previous
            .as_ref()
            .is_none_or(|u| u.listen != listen || u.error != error);
        self.lb.unbound.insert(
            app.to_string(),
            Unbound {
                listen: listen.to_string(),
                error: error.to_string(),
                failures,
                next_try: now.saturating_add(delay.as_millis() as u64),
            },
        );
        news
    }

    /// Listeners due for another attempt.
    pub(super) fn retry_listeners(&mut self, now: u64) {
        let due: Vec<String> = self
            .lb
            .unbound
            .iter()
            .filter(|(_, u)| u.next_try <= now)
            .map(|(app, _)| app.clone())
            .collect();
        for app in due {
            if app == super::relay::RELAY {
                self.ensure_relay();
            } else if self.apps.contains_key(&app) {
                self.ensure_listener(&app);
            } else {
                self.lb.unbound.remove(&app);
            }
        }
    }

    /// When the next listener attempt is due.
    pub(super) fn listener_wakeup(&self) -> Option<u64> {
        self.lb.unbound.values().map(|u| u.next_try).min()
    }

    /// The app's listener as `status` shows it (none without `listen`).
    pub(super) fn listener_state(&self, app: &str) -> Option<jarfleet_api::ListenerState> {
        let now = self.now_ms();
        if let Some(u) = self.lb.unbound.get(app) {
            return Some(jarfleet_api::ListenerState {
                bound: false,
                error: Some(u.error.clone()),
                failures: u.failures,
                retry_in_ms: Some(u.next_try.saturating_sub(now)),
            });
        }
        self.lb.apps.get(app).map(|_| jarfleet_api::ListenerState {
            bound: true,
            error: None,
            failures: 0,
            retry_in_ms: None,
        })
    }

    /// `/metrics`: whether the app's listener is bound (none without `listen`) and its failed
    /// binds since the daemon started.
    pub(super) fn listener_figures(&self, app: &str) -> (Option<bool>, u64) {
        let up = if self.lb.unbound.contains_key(app) {
            Some(false)
        } else {
            self.lb.apps.get(app).map(|_| true)
        };
        (up, self.lb.bind_failures.get(app).copied().unwrap_or(0))
    }

    /// Stops the app's listener (the app is gone).
    pub(super) fn drop_listener(&mut self, app: &str) {
        self.lb.close(&*self.data_plane, app);
        self.lb.unbound.remove(app);
    }

    /// Pushes the app's ready instances to its listener if they changed.
    pub(super) fn sync_lb(&mut self, app: &str) {
        self.sync_relay();
        // A canary splits the traffic between its release and the rest by weight (the other
        // nodes' instances this balancer sends to count with the rest or the canary by their
        // release, like this node's).
        let held = self.held_blue_green(app);
        let mut remote = self.remote_backends(app);
        let split = self.apps.get(app).and_then(|rt| {
            if let Some(release) = held {
                // Led by the cluster: its new set waits for every node's switch.
                return Some((release, 100, 0));
            }
            let release = rt.canary()?.release.clone();
            let ready = |of_canary: bool| {
                rt.slots
                    .values()
                    .filter(|s| {
                        matches!(s.record.instance.phase, Phase::Ready { .. })
                            && s.record.standby_until.is_none()
                            && (s.record.instance.release == release) == of_canary
                    })
                    .count()
                    + remote
                        .iter()
                        .filter(|b| (b.release == release) == of_canary)
                        .count()
            };
            self.canary_weights(app, ready(false), ready(true))
        });
        if let Some((canary, ws, wc)) = &split {
            for b in remote.iter_mut() {
                b.weight = if b.release == *canary { *wc } else { *ws };
            }
        }
        let now = self.now_ms();
        let Some(rt) = self.apps.get(app) else { return };
        let Some(lb) = self.lb.apps.get_mut(app) else {
            return;
        };
        let mut ready: Vec<BackendEntry> = rt
            .slots
            .iter()
            .filter_map(|(slot, s)| {
                let i = &s.record.instance;
                let Phase::Ready { since } = i.phase else {
                    return None;
                };
                if s.record.standby_until.is_some() {
                    return None; // blue-green's old set, kept warm out of traffic
                }
                let port = i.process.as_ref()?.port;
                let weight = match &split {
                    Some((canary, ws, wc)) => {
                        if i.release == *canary {
                            *wc
                        } else {
                            *ws
                        }
                    }
                    None => 100,
                };
                Some(BackendEntry {
                    id: backend_id(app, *slot, s.record.generation),
                    slot: *slot,
                    generation: s.record.generation,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    weight,
                    ready_for: Duration::from_millis(now.saturating_sub(since)),
                    release: i.release.clone(),
                    via: None,
                })
            })
            .collect();
        ready.extend(remote);
        let key: Vec<(String, SocketAddr, u32)> = ready
            .iter()
            .map(|b| (b.id.clone(), b.addr, b.weight))
            .collect();
        if key == lb.last {
            return;
        }
        self.data_plane.update(app, ready);
        lb.last = key;
    }

    pub(super) fn sync_all_lbs(&mut self) {
        let apps: Vec<String> = self.lb.apps.keys().cloned().collect();
        for app in apps {
            self.sync_lb(&app);
        }
    }

    /// The drain step of a stop: out of the load balancer, then `Drained` once nothing is in
    /// flight on it (or at once when the app has no listener).
    pub(super) fn drain(&mut self, app: &str, slot: u32, timeout: Duration) {
        self.sync_lb(app);
        if self.drain_across_nodes(app, slot, timeout) {
            return;
        }
        self.drain_here(app, slot, timeout);
    }

    /// The drain on this node's balancer: `Drained` once nothing is in flight on it here.
    pub(super) fn drain_here(&mut self, app: &str, slot: u32, timeout: Duration) {
        let generation = self.current_generation(app, slot).unwrap_or(0);
        if !self.lb.apps.contains_key(app) {
            self.step(app, slot, Input::Drained);
            return;
        }
        let backend = backend_id(app, slot, generation);
        if self.data_plane.in_flight(app, &backend) == 0 {
            self.step(app, slot, Input::Drained);
            return;
        }
        self.data_plane.watch_drain(
            DrainRequest {
                app: app.to_string(),
                slot,
                generation,
                backend,
                timeout,
            },
            self.tx.clone(),
        );
    }

    /// The listener's counters, as the data plane keeps them (`status`, canary judgement).
    pub(super) fn lb_counters(&self, app: &str) -> Option<jarfleet_proxy::ListenerStats> {
        if !self.lb.apps.contains_key(app) {
            return None;
        }
        self.data_plane.stats(app)
    }

    /// The apps that have a listener and the data plane to read their counters from, for a
    /// `/metrics` scrape (read off the loop).
    pub(super) fn lb_listeners(&self) -> (Vec<String>, Arc<dyn DataPlane>) {
        (
            self.lb.apps.keys().cloned().collect(),
            self.data_plane.clone(),
        )
    }

    pub(super) fn lb_stats(&self, app: &str) -> Option<serde_json::Value> {
        serde_json::to_value(self.lb_counters(app)?).ok()
    }

    /// Whether `listen` can be bound (or is already ours for `app`).
    pub(super) fn listen_free(
        &self,
        app: &str,
        listen: &str,
    ) -> Result<(), jarfleet_shim::fdlimit::Failure> {
        use jarfleet_shim::fdlimit::{Failure, Op};
        let addr = listen_addr(listen).map_err(Failure::plain)?;
        if self.lb.apps.get(app).is_some_and(|l| l.addr == addr) {
            return Ok(());
        }
        if self.lb.apps.values().any(|l| l.addr == addr) {
            return Err(Failure::plain(format!(
                "listen = {listen:?} is already used by another app"
            )));
        }
        self.data_plane.can_listen(addr).map_err(|e| {
            match jarfleet_shim::fdlimit::of_io(&e, Op::Bind) {
                Some(s) => Failure {
                    message: format!(
                        "listen = {listen:?}: could not check whether it can be listened on: {} ({e})",
                        s.describe_here()
                    ),
                    shortage: Some(s),
                },
                None => Failure::plain(format!("listen = {listen:?}: cannot listen there: {e}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jarfleet_core::spec::{BalancerSpec, HealthCheck, HealthSpec};

    use super::*;

    fn health(check: HealthCheck) -> HealthSpec {
        HealthSpec {
            check,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            failures: 3,
            start_timeout: Duration::from_secs(120),
            unhealthy_restart_after: Duration::from_secs(45),
        }
    }

    #[test]
    fn the_spec_defaults_are_the_proxys() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 8080));
        let cfg = listener_config(
            "fx",
            addr,
            Mode::Http,
            &BalancerSpec::default(),
            &health(HealthCheck::Tcp),
        );
        let proxy = ListenerConfig::new("fx", addr, Mode::Http);
        assert_eq!(cfg.balance, proxy.balance);
        assert_eq!(cfg.slow_start, proxy.slow_start);
        assert_eq!(cfg.timeouts, proxy.timeouts);
        assert_eq!(cfg.limits, proxy.limits);
        assert_eq!(cfg.outlier, proxy.outlier);
    }

    #[test]
    fn every_key_reaches_the_listener() {
        let ms = Duration::from_millis;
        let b = BalancerSpec {
            balance: jarfleet_core::spec::Balance::LeastRequest,
            slow_start: ms(1),
            head_timeout: ms(2),
            keepalive_timeout: ms(3),
            body_timeout: ms(4),
            connect_timeout: ms(5),
            response_timeout: ms(6),
            backend_idle_timeout: ms(7),
            tcp_idle_timeout: ms(8),
            max_connections: 9,
            max_idle_per_backend: 10,
            request_buffer: 11,
            eject_for: ms(12),
            eject_after: 13,
            stall_timeout: ms(14),
            stall_probe_timeout: ms(15),
        };
        let addr = SocketAddr::from(([0, 0, 0, 0], 5432));
        let http = HealthCheck::Http {
            path: "/actuator/health/liveness".into(),
        };
        let cfg = listener_config("db", addr, Mode::Tcp, &b, &health(http));
        assert_eq!(
            (cfg.name.as_str(), cfg.listen, cfg.mode),
            ("db", addr, Mode::Tcp)
        );
        assert_eq!(cfg.balance, jarfleet_proxy::Balance::LeastRequest);
        assert_eq!(cfg.slow_start, ms(1));
        assert_eq!(
            cfg.timeouts,
            jarfleet_proxy::Timeouts {
                head: ms(2),
                keep_alive: ms(3),
                body: ms(4),
                connect: ms(5),
                response: ms(6),
                backend_idle: ms(7),
                tcp_idle: ms(8),
            }
        );
        assert_eq!(
            cfg.limits,
            jarfleet_proxy::Limits {
                max_connections: 9,
                max_idle_per_backend: 10,
                request_buffer: 11,
            }
        );
        assert_eq!(
            cfg.outlier,
            jarfleet_proxy::Outlier {
                eject_for: ms(12),
                failures: 13,
                stall: ms(14),
                probe_timeout: ms(15),
                probe_path: "/actuator/health/liveness".into(),
            }
        );
        // Without an http check the stall probe asks for `/`.
        for check in [
            HealthCheck::Tcp,
            HealthCheck::Exec {
                argv: vec!["true".into()],
            },
        ] {
            let cfg = listener_config("db", addr, Mode::Tcp, &b, &health(check));
            assert_eq!(cfg.outlier.probe_path, "/");
        }
    }
}
