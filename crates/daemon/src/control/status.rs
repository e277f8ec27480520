//! The `status` report.

use super::*;

impl Control {
    pub(super) fn status(&mut self) -> StatusReport {
        let now = self.now_ms();
        let mut balancers: BTreeMap<String, serde_json::Value> = self
            .apps
            .keys()
            .filter_map(|a| self.lb_stats(a).map(|v| (a.clone(), v)))
            .collect();
        let mut canaries: BTreeMap<String, jarfleet_api::CanaryStatus> = self
            .apps
            .keys()
            .filter_map(|a| self.canary_status(a, now).map(|c| (a.clone(), c)))
            .collect();
        let mut listeners: BTreeMap<String, jarfleet_api::ListenerState> = self
            .apps
            .keys()
            .filter_map(|a| self.listener_state(a).map(|l| (a.clone(), l)))
            .collect();
        let mut apps = Vec::new();
        // Every process read once: an instance's figures are those of all its processes.
        let procs = self.host.processes();
        for (name, rt) in self.apps.iter_mut() {
            let mut instances = Vec::new();
            for s in rt.slots.values_mut() {
                let i = &s.record.instance;
                let pid = i.process.as_ref().map(|p| p.pid);
                let (cpu_percent, rss_bytes) = match pid {
                    Some(pid) => (
                        sample_cpu(&mut s.cpu, procs.cpu_ticks(pid)),
                        procs.rss_bytes(pid),
                    ),
                    None => (None, None),
                };
                instances.push(InstanceStatus {
                    app: name.clone(),
                    slot: i.slot,
                    state: i.state_word().to_string(),
                    ready: i.is_ready(),
                    release: i.release.clone(),
                    pid,
                    shim_pid: i.process.as_ref().map(|p| p.shim_pid),
                    port: i.process.as_ref().map(|p| p.port),
                    uptime_secs: i
                        .process
                        .as_ref()
                        .map(|p| now.saturating_sub(p.started_at) / 1000),
                    restarts: i.restarts,
                    cpu_percent,
                    rss_bytes,
                    last_exit: i.last_exit.as_ref().map(|(_, class)| class.describe()),
                    health_error: i.probes.last_error.clone(),
                });
            }
            let ready = instances.iter().filter(|i| i.ready).count() as u32;
            let rolling = rt.deployment.is_some();
            apps.push(AppStatus {
                name: name.clone(),
                release: rt.rec.release.clone(),
                desired: if rt.removing {
                    0
                } else {
                    rt.rec.spec.instances
                },
                ready,
                rolling,
                deployment: rt
                    .deployment
                    .as_ref()
                    .map(|d| format!("#{} {} → {} {}", d.id, d.from, d.to, d.phase.as_str())),
                listen: rt.rec.spec.listen.clone(),
                listener: listeners.remove(name),
                health: Some(health_info(&rt.rec.spec.health)),
                balancer: balancers.remove(name),
                java: Some(super::commands::java_label(&rt.rec.runtime)),
                canary: canaries.remove(name),
                instances,
            });
        }
        let store = self.store_report();
        StatusReport {
            daemon: DaemonStatus {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                build: jarfleet_host::build::own().id.clone().unwrap_or_default(),
                data_plane: self
                    .data_plane
                    .process()
                    .map(|h| jarfleet_api::DataPlaneStatus {
                        pid: h.pid,
                        replaced: h.replaced,
                        last_replaced_because: h.last_replaced_because,
                    }),
                state_dir: self.dirs.root().display().to_string(),
                uptime_secs: self.started.elapsed().as_secs(),
                spec: self.spec_source.clone(),
                open_files: jarfleet_shim::fdlimit::limits().map(|l| jarfleet_api::OpenFiles {
                    limit: l.soft,
                    hard_limit: l.hard,
                    started_with: l.started_with,
                    reserve: l.reserve,
                    balancer_budget: l.budget,
                    open: jarfleet_shim::fdlimit::open_count(),
                    shortages: self.shortages.total,
                    last_shortage: self.shortages.last.clone(),
                }),
                store: Some(store.clone()),
                warnings: warnings(&store, &self.dirs, self.now_ms()),
            },
            apps,
            strays: self
                .strays
                .iter()
                .map(|s| jarfleet_api::StrayStatus {
                    run_dir: s.run_dir.display().to_string(),
                    app: s.app.clone(),
                    slot: s.slot,
                    generation: s.generation,
                    shim_pid: s.shim_pid,
                    pid: s.pid,
                    port: s.port,
                })
                .collect(),
            // Filled in outside the loop, from the cluster's state (`ClusterLink::status`).
            cluster: None,
        }
    }
}

fn health_info(h: &jarfleet_core::spec::HealthSpec) -> jarfleet_api::HealthInfo {
    use jarfleet_core::spec::HealthCheck;
    let (check, path) = match &h.check {
        HealthCheck::Http { path } => ("http", Some(path.clone())),
        HealthCheck::Tcp => ("tcp", None),
        HealthCheck::Exec { .. } => ("exec", None),
    };
    jarfleet_api::HealthInfo {
        check: check.to_string(),
        path,
        interval_ms: h.interval.as_millis() as u64,
        timeout_ms: h.timeout.as_millis() as u64,
        failures: h.failures,
    }
}

/// CPU % since the previous sample (first call: since process start is not known, so none).
fn sample_cpu(prev: &mut Option<(u64, Instant, f64)>, ticks: Option<u64>) -> Option<f64> {
    let ticks = ticks?;
    let now = Instant::now();
    let result = match prev {
        Some((t0, at, last)) => {
            let dt = now.duration_since(*at).as_secs_f64();
            if dt < 0.5 {
                Some(*last)
            } else {
                let pct =
                    (ticks.saturating_sub(*t0)) as f64 / procinfo::CLOCK_TICKS_PER_SEC as f64 / dt
                        * 100.0;
                *prev = Some((ticks, now, pct));
                return Some((pct * 10.0).round() / 10.0);
            }
        }
        None => None,
    };
    if result.is_none() {
        *prev = Some((ticks, now, 0.0));
    }
    result
}

/// The daemon-level lines `status` shows: the store or the log cannot be written.
fn warnings(
    store: &jarfleet_api::StoreHealth,
    dirs: &jarfleet_host::paths::StateDir,
    now: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    if store.disk_full {
        out.push(format!(
            "the disk under {} is full ({} KiB free): instance logs, the store and new instances' files cannot be written until there is room",
            dirs.root().display(),
            store.disk_free_bytes.unwrap_or(0) / 1024
        ));
    }
    if !store.writable {
        let since = store
            .failing_since
            .map(|t| format!(" for {} s", now.saturating_sub(t) / 1000))
            .unwrap_or_default();
        out.push(format!(
            "the store cannot be written{since} ({}): {} write(s) kept in memory{}; instances are supervised and balanced as before. Free space under {}",
            store.last_error.as_deref().unwrap_or("unknown error"),
            store.pending_writes,
            if store.exclusive {
                ", the store is open for the daemon alone (event listings wait)"
            } else {
                ""
            },
            dirs.root().display()
        ));
    }
    if let Some(why) = &store.log_failing {
        out.push(format!(
            "the daemon's log cannot be written ({why}): {} line(s) dropped so far",
            store.log_lines_dropped
        ));
    }
    out
}
