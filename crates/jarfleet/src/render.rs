//! Human-readable output: tables and plans. `-o json` bypasses all of this.

use std::collections::{BTreeMap, BTreeSet};

use jarfleet_api::{EventRecord, HistoryReport, StatusReport};
use jarfleet_core::reconcile::{AppChange, Plan};

use crate::term::{self, Fit, Term};

/// Left-aligned columns, two spaces apart, at full width and without colour.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    term::table(&Term::PLAIN, header, rows, Fit::default())
}

pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

pub fn bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= 1024.0 * MIB {
        format!("{:.1}G", b as f64 / (1024.0 * MIB))
    } else {
        format!("{:.0}M", b as f64 / MIB)
    }
}

/// `cluster nodes`: one row per node, the scheduler marked.
pub fn cluster_nodes(report: &jarfleet_api::ClusterNodes) -> String {
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| {
            let mut name = n.name.clone();
            if report.leader.as_deref() == Some(n.name.as_str()) {
                name.push_str(" (scheduler)");
            }
            if n.name == report.me {
                name.push_str(" *");
            }
            let state = if n.state == "draining" && n.instances == 0 && n.running == 0 {
                "draining (done)".to_string()
            } else {
                n.state.clone()
            };
            vec![
                name,
                state,
                format!("{}:{}", n.address, n.peer_port),
                n.version.clone(),
                format!("{}/{}", bytes(n.memory_used), bytes(n.memory)),
                format!("{}/{}", n.ready, n.instances),
                n.heartbeat_secs_ago
                    .map(|s| format!("{} ago", duration(s)))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = format!("cluster {}\n", report.cluster);
    if let Some(why) = &report.stale {
        out.push_str(&format!("(may be out of date: {why})\n"));
    }
    out.push_str(&table(
        &[
            "NODE",
            "STATE",
            "ADDRESS",
            "VERSION",
            "MEMORY",
            "READY",
            "HEARTBEAT",
        ],
        &rows,
    ));
    out
}

/// Two lines on a canary under way: where it is, and its current step's figures.
fn canary(app: &str, c: &jarfleet_api::CanaryStatus) -> String {
    let state = if c.passed {
        "every step passed".to_string()
    } else if c.step == 0 {
        "starting its instances".to_string()
    } else if c.percent == 0 {
        "failed: traffic back to stable".to_string()
    } else {
        let mut s = format!("step {} of {} at {} %", c.step, c.steps.len(), c.percent);
        if c.paused {
            s.push_str(&format!(
                ", paused: `jarfleet promote {app}` goes on, `jarfleet abort {app}` rolls back"
            ));
        }
        if let Some(ms) = c.step_elapsed_ms {
            s.push_str(&format!(
                ", {} of {}",
                duration(ms / 1000),
                duration(c.step_time_ms / 1000)
            ));
        }
        s
    };
    let set = |name: &str, f: &jarfleet_api::SetSummary| {
        format!(
            "{name} {} requests, {:.2} % failed, p99 {}",
            f.requests,
            100.0 * f.error_rate,
            f.p99_ms
                .map(|p| format!("{p:.1} ms"))
                .unwrap_or_else(|| "-".into())
        )
    };
    format!(
        "  canary {}: {state}\n    this step: {}; {}\n",
        c.release,
        set("canary", &c.canary_figures),
        set("stable", &c.stable_figures)
    )
}

pub fn status(report: &StatusReport, only: Option<&str>, term: &Term) -> String {
    let mut out = String::new();
    for w in &report.daemon.warnings {
        out.push_str(&term.paint(
            anstyle::Style::new().fg_color(Some(anstyle::AnsiColor::Yellow.into())),
            &format!("warning: {w}\n"),
        ));
    }
    let dash = || "-".to_string();
    for app in report
        .apps
        .iter()
        .filter(|a| only.is_none_or(|o| o == a.name))
    {
        out.push_str(&term.fit_line(&format!(
            "{}  {}/{} ready  release {}{}  java {}\n",
            app.name,
            app.ready,
            app.desired,
            app.release,
            app.deployment
                .as_ref()
                .map(|d| format!(" (deployment {d})"))
                .unwrap_or_default(),
            app.java.as_deref().unwrap_or("-"),
        )));
        if let Some(listen) = &app.listen {
            let b = app.balancer.as_ref();
            let totals = b.map(|b| &b["totals"]);
            let classes: Vec<u64> = totals
                .and_then(|t| t["requests"].as_array())
                .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                .unwrap_or_default();
            let n = |k: &str| totals.and_then(|t| t[k].as_u64()).unwrap_or(0);
            let in_flight: u64 = b
                .and_then(|b| b["backends"].as_array())
                .map(|a| a.iter().filter_map(|x| x["in_flight"].as_u64()).sum())
                .unwrap_or(0);
            if let Some(l) = app.listener.as_ref().filter(|l| !l.bound) {
                out.push_str(&term.fit_line(&format!(
                    "  load balancer {listen}: NOT BOUND: {}; retrying in {} ({} failed attempt(s))\n",
                    l.error.as_deref().unwrap_or("unknown error"),
                    duration(l.retry_in_ms.unwrap_or(0).div_ceil(1000)),
                    l.failures
                )));
            }
            out.push_str(&term.fit_line(&format!(
                "  load balancer {listen}: {} requests ({} 5xx), {} errors, {} retries, {in_flight} in flight\n",
                classes.iter().sum::<u64>(),
                classes.get(4).copied().unwrap_or(0),
                n("errors"),
                n("retries"),
            )));
        }
        if let Some(c) = &app.canary {
            for line in canary(&app.name, c).lines() {
                out.push_str(&term.fit_line(line));
            }
        }
        let rows: Vec<Vec<String>> = app
            .instances
            .iter()
            .map(|i| {
                vec![
                    format!("{}/{}", i.app, i.slot),
                    i.state.clone(),
                    i.pid.map(|p| p.to_string()).unwrap_or_else(dash),
                    i.port.map(|p| p.to_string()).unwrap_or_else(dash),
                    i.uptime_secs.map(duration).unwrap_or_else(dash),
                    i.restarts.to_string(),
                    i.cpu_percent
                        .map(|c| format!("{c:.1}%"))
                        .unwrap_or_else(dash),
                    i.rss_bytes.map(bytes).unwrap_or_else(dash),
                    i.release.clone(),
                    i.health_error
                        .clone()
                        .or_else(|| i.last_exit.clone())
                        .unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&term::table(
            term,
            &[
                "INSTANCE", "STATE", "PID", "PORT", "UPTIME", "RESTARTS", "CPU", "RSS", "RELEASE",
                "LAST",
            ],
            &rows,
            Fit {
                // LAST is cut first, then the columns least needed at a glance go.
                elastic: Some(9),
                optional: &[7, 6, 4, 2, 8],
                state: Some(1),
            },
        ));
        if let Some(c) = &report.cluster {
            out.push_str(&cluster_instances(c, &app.name, term));
        }
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("no apps\n");
    }
    if only.is_none() && !report.strays.is_empty() {
        out.push_str(&format!(
            "{} stray JVM(s): running, but no instance accounts for them (`jarfleet down --strays` stops them)\n",
            report.strays.len()
        ));
        for s in &report.strays {
            out.push_str(&term.fit_line(&format!(
                "  stray {}/{}  pid {}  shim {}  port {}  {}\n",
                s.app,
                s.slot,
                s.pid,
                s.shim_pid,
                s.port.map(|p| p.to_string()).unwrap_or_else(dash),
                s.run_dir
            )));
        }
    }
    out
}

/// An app's last rollout across the cluster's nodes, one line.
fn cluster_rollout(c: &jarfleet_api::ClusterStatus, app: &str, term: &Term) -> String {
    match c.rollouts.iter().find(|r| r.app == app) {
        Some(r) => rollout_lines(r, term),
        None => String::new(),
    }
}

/// A release across the cluster: how it goes out, the nodes it reached, the canary's judged
/// steps with each node's figures.
fn rollout_lines(r: &jarfleet_api::ClusterRollout, term: &Term) -> String {
    let nodes = r
        .steps
        .iter()
        .map(|s| format!("{} at {}", s.node, clock(s.at_ms)))
        .collect::<Vec<_>>()
        .join(", ");
    let reached = if nodes.is_empty() {
        "no node yet".to_string()
    } else {
        nodes
    };
    let how = match r.strategy.as_str() {
        "canary" => "as a canary on every node",
        "blue-green" => "blue-green on every node",
        _ => "node by node",
    };
    let mut line = match r.state.as_str() {
        "rolling" if r.paused => format!(
            "  release {} going out {how} (from {}): paused at {} %, waiting for `jarfleet promote {}` (or `abort`)\n",
            r.release, r.from, r.percent, r.app
        ),
        "rolling" if r.strategy == "canary" && r.percent > 0 => format!(
            "  release {} going out {how} (from {}): {} % of the traffic\n",
            r.release, r.from, r.percent
        ),
        "rolling" if r.strategy != "rolling" => format!(
            "  release {} going out {how} (from {}): new sets starting on {reached}\n",
            r.release, r.from
        ),
        "rolling" => format!(
            "  release {} going out {how} (from {}): {reached}\n",
            r.release, r.from
        ),
        "rolled-back" => format!(
            "  release {} rolled back on every node: {}\n",
            r.release,
            r.why
                .as_deref()
                .unwrap_or("a node's deployment of it failed")
        ),
        _ => format!("  release {} went out {how}: {reached}\n", r.release),
    };
    for v in &r.verdicts {
        let verdict = if v.passed { "passed" } else { "failed" };
        line.push_str(&format!(
            "    canary step {} ({} %) {verdict} at {}: {}\n",
            v.step,
            v.percent,
            clock(v.at_ms),
            v.figures
        ));
        for (node, figures) in &v.nodes {
            line.push_str(&format!("      {node}: {figures}\n"));
        }
    }
    line.lines().map(|l| term.fit_line(l)).collect()
}

/// An app's instances on the cluster's other nodes (this node's are in the table above).
fn cluster_instances(c: &jarfleet_api::ClusterStatus, app: &str, term: &Term) -> String {
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = c
        .instances
        .iter()
        .filter(|i| i.app == app && i.node != c.me)
        .map(|i| {
            let mut state = i.state.clone();
            if let Some(to) = i.placed_on.as_ref().filter(|to| **to != i.node) {
                state.push_str(&format!(" (moving to {to})"));
            }
            vec![
                format!("{}/{}", i.app, i.slot),
                i.node.clone(),
                state,
                match (&i.address, i.port) {
                    (Some(a), Some(p)) => format!("{a}:{p}"),
                    _ => dash(),
                },
                i.pid.map(|p| p.to_string()).unwrap_or_else(dash),
                i.restarts.to_string(),
                if i.release.is_empty() {
                    dash()
                } else {
                    i.release.clone()
                },
            ]
        })
        .collect();
    let mut out = cluster_rollout(c, app, term);
    if rows.is_empty() {
        return out;
    }
    out.push_str(&format!("  on the other nodes of cluster {}:\n", c.cluster));
    out.push_str(&term::table(
        term,
        &[
            "INSTANCE", "NODE", "STATE", "ADDRESS", "PID", "RESTARTS", "RELEASE",
        ],
        &rows,
        Fit {
            elastic: None,
            optional: &[4, 5, 6],
            state: Some(2),
        },
    ));
    out
}

pub fn plan(plan: &Plan) -> String {
    let mut out = String::new();
    for c in &plan.changes {
        let line = match c {
            AppChange::Add { app, instances } => {
                format!("+ {app}: add with {instances} instance(s)")
            }
            AppChange::Remove { app } => format!("- {app}: remove (stop all instances)"),
            AppChange::Scale { app, from, to } => {
                format!("~ {app}: scale {from} → {to} (nothing else restarts)")
            }
            AppChange::Roll { app, from, to, why } => {
                format!(
                    "~ {app}: rolling restart, release {from} → {to} ({} changed)",
                    why.join(", ")
                )
            }
            AppChange::Update { app, fields } => {
                format!("~ {app}: update live ({})", fields.join(", "))
            }
            AppChange::Deploying { app, id, from, to } => format!(
                "  {app}: deployment #{id} {from} → {to} under way; the spec names {from}, where it started: its release is left to the deployment (`jarfleet abort {app}` goes back to {from})"
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    for app in &plan.unchanged {
        out.push_str(&format!("  {app}: unchanged\n"));
    }
    if plan.changes.is_empty() && plan.unchanged.is_empty() {
        out.push_str("nothing to do\n");
    }
    out
}

/// `HH:MM:SS` (UTC) of a millisecond timestamp.
fn clock(ts: u64) -> String {
    let secs = ts / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

pub fn history(h: &HistoryReport, term: &Term) -> String {
    let mut out = format!("{}: current release {}\n\nRELEASES\n", h.app, h.current);
    let rows: Vec<Vec<String>> = h
        .releases
        .iter()
        .map(|r| {
            vec![
                if r.current { "*".into() } else { " ".into() },
                r.id.clone(),
                r.version.clone().unwrap_or_else(|| "-".into()),
                clock(r.created_at),
                r.jdk.clone().unwrap_or_else(|| "-".into()),
                r.artifact.clone(),
            ]
        })
        .collect();
    out.push_str(&term::table(
        term,
        &["", "RELEASE", "VERSION", "CREATED", "JDK", "ARTIFACT"],
        &rows,
        Fit {
            elastic: Some(5),
            optional: &[4, 3],
            state: None,
        },
    ));
    out.push_str("\nDEPLOYMENTS\n");
    let rows: Vec<Vec<String>> = h
        .deployments
        .iter()
        .map(|d| {
            vec![
                format!("#{}", d.id),
                format!("{} → {}", d.from, d.to),
                d.outcome.clone(),
                clock(d.started_at),
                d.ended_at
                    .map(|e| format!("{:.1}s", e.saturating_sub(d.started_at) as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                d.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&term::table(
        term,
        &["ID", "RELEASES", "OUTCOME", "STARTED", "TOOK", "REASON"],
        &rows,
        Fit {
            elastic: Some(5),
            optional: &[3, 4],
            state: Some(2),
        },
    ));
    if let Some(r) = &h.cluster_rollout {
        out.push_str("\nACROSS THE CLUSTER\n");
        out.push_str(&rollout_lines(r, term));
    }
    out
}

/// What `down` has seen stop: the instances and apps of the report taken before it, named once
/// each as they go. Pure.
pub struct DownProgress {
    /// `app/slot` → pid, of the instances that had a process.
    running: BTreeMap<String, u32>,
    apps: BTreeSet<String>,
    stopped: BTreeSet<String>,
    removed: BTreeSet<String>,
}

impl DownProgress {
    pub fn new(before: &StatusReport) -> DownProgress {
        DownProgress {
            running: Self::running(before),
            apps: before.apps.iter().map(|a| a.name.clone()).collect(),
            stopped: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }

    fn running(report: &StatusReport) -> BTreeMap<String, u32> {
        report
            .apps
            .iter()
            .flat_map(|a| a.instances.iter())
            .filter_map(|i| Some((format!("{}/{}", i.app, i.slot), i.pid?)))
            .collect()
    }

    /// Lines for what stopped since the last call: `now` is the latest report, `None` once the
    /// daemon is gone (everything stopped).
    pub fn seen(&mut self, now: Option<&StatusReport>) -> Vec<String> {
        let still = now.map(Self::running).unwrap_or_default();
        let apps: BTreeSet<String> = now
            .map(|r| r.apps.iter().map(|a| a.name.clone()).collect())
            .unwrap_or_default();
        let mut lines = Vec::new();
        for (key, pid) in &self.running {
            // A new process in the slot (a restart racing the shutdown) is the old one gone.
            if still.get(key) != Some(pid) && self.stopped.insert(key.clone()) {
                lines.push(format!("  stopped {key} (pid {pid})"));
            }
        }
        for app in &self.apps {
            if !apps.contains(app) && self.removed.insert(app.clone()) {
                lines.push(format!("  removed {app}"));
            }
        }
        lines
    }

    /// `N of M instances stopped, K of L apps removed`.
    pub fn summary(&self) -> String {
        format!(
            "{} of {} instance{} stopped, {} of {} app{} removed",
            self.stopped.len(),
            self.running.len(),
            if self.running.len() == 1 { "" } else { "s" },
            self.removed.len(),
            self.apps.len(),
            if self.apps.len() == 1 { "" } else { "s" },
        )
    }
}

/// Text from an app (log lines, event messages) made safe to print: every control character
/// but the tab (C0, DEL, C1: ESC, BEL, CR, a terminal's title and clear-screen sequences) and
/// the invisible bidirectional overrides are written as visible escapes (`\x1b`, `\u{9b}`,
/// `\u{202e}`), so output can never move the cursor, retitle or clear a terminal, or reorder
/// what is shown. Borrowed when there is nothing to escape.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write;
    let hidden = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.contains(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !hidden(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// One log line for people: `APP/SLOT | text` (`!` for stderr), the text made [`visible`].
pub fn log_line(line: &jarfleet_api::LogLine) -> String {
    let mark = if line.stream == "stderr" { "!" } else { "|" };
    format!(
        "{}/{} {mark} {}",
        visible(&line.app),
        line.slot,
        visible(&line.line)
    )
}

pub fn event(e: &EventRecord) -> String {
    let secs = e.ts / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let target = match (&e.app, e.slot) {
        (Some(a), Some(s)) => format!("{a}/{s}"),
        (Some(a), None) => a.clone(),
        _ => "-".into(),
    };
    format!(
        "{h:02}:{m:02}:{s:02}.{:03}Z  {:<24} {:<12} {}",
        e.ts % 1000,
        visible(&e.kind),
        visible(&target),
        visible(&e.message)
    )
}

#[cfg(test)]
mod tests {
    use jarfleet_api::{AppStatus, DaemonStatus, InstanceStatus};

    use super::*;

    fn instance(slot: u32, state: &str, pid: Option<u32>) -> InstanceStatus {
        InstanceStatus {
            app: "orders".into(),
            slot,
            state: state.into(),
            ready: state == "ready",
            release: "3f2a9c1b7d00".into(),
            pid,
            shim_pid: pid.map(|p| p - 1),
            port: pid.map(|_| 9100 + slot as u16),
            uptime_secs: pid.map(|_| 3725),
            restarts: slot,
            cpu_percent: pid.map(|_| 1.25),
            rss_bytes: pid.map(|_| 187 * 1024 * 1024),
            last_exit: (slot == 2).then(|| "killed by signal 9".into()),
            health_error: (state == "unhealthy").then(|| "GET /health answered 503".into()),
        }
    }

    /// A status report of one app.
    fn report(app: AppStatus) -> StatusReport {
        StatusReport {
            daemon: DaemonStatus {
                pid: 1,
                version: "0.1.0".into(),
                build: String::new(),
                data_plane: None,
                state_dir: "/srv/state".into(),
                uptime_secs: 10,
                spec: None,
                open_files: None,
                store: None,
                warnings: Vec::new(),
            },
            strays: vec![],
            cluster: None,
            apps: vec![app],
        }
    }

    #[test]
    fn status_table() {
        let report = report(AppStatus {
            name: "orders".into(),
            release: "3f2a9c1b7d00".into(),
            desired: 3,
            ready: 1,
            rolling: false,
            deployment: None,
            listen: None,
            listener: None,
            health: None,
            balancer: None,
            java: Some("17.0.15 (/usr/lib/jvm/java-17-openjdk-amd64)".into()),
            canary: None,
            instances: vec![
                instance(0, "ready", Some(4242)),
                instance(1, "unhealthy", Some(4250)),
                instance(2, "backoff", None),
            ],
        });
        insta::assert_snapshot!(status(&report, None, &Term::PLAIN));
    }

    #[test]
    fn status_in_a_cluster_lists_the_other_nodes_instances() {
        let mut report = report(AppStatus {
            name: "orders".into(),
            release: "3f2a9c1b7d00".into(),
            desired: 1,
            ready: 1,
            rolling: false,
            deployment: None,
            listen: Some("0.0.0.0:8080".into()),
            listener: None,
            health: None,
            balancer: None,
            java: Some("17.0.15 (/usr/lib/jvm/java-17-openjdk-amd64)".into()),
            canary: None,
            instances: vec![instance(0, "ready", Some(4242))],
        });
        let other =
            |slot: u32, node: &str, state: &str, placed_on: &str| jarfleet_api::ClusterInstance {
                app: "orders".into(),
                slot,
                node: node.into(),
                generation: 1,
                state: state.into(),
                placed_on: Some(placed_on.into()),
                address: (state != "placed").then(|| format!("10.0.0.1{}", node.len())),
                port: (state != "placed").then_some(9100 + slot as u16),
                release: if state == "placed" {
                    String::new()
                } else {
                    "3f2a9c1b7d00".into()
                },
                pid: (state != "placed").then_some(5000 + slot),
                restarts: 0,
            };
        report.cluster = Some(jarfleet_api::ClusterStatus {
            cluster: "prod".into(),
            me: "web-1".into(),
            instances: vec![
                other(0, "web-1", "ready", "web-1"),
                other(1, "web-2", "ready", "web-2"),
                other(2, "web-3", "ready", "web-2"),
                other(3, "web-3", "placed", "web-3"),
            ],
            rollouts: vec![jarfleet_api::ClusterRollout {
                app: "orders".into(),
                release: "3f2a9c1b7d00".into(),
                from: "0e069a319568".into(),
                state: "rolling".into(),
                steps: vec![
                    jarfleet_api::RolloutStep {
                        node: "web-1".into(),
                        at_ms: 0,
                    },
                    jarfleet_api::RolloutStep {
                        node: "web-2".into(),
                        at_ms: 0,
                    },
                ],
                why: None,
                started_ms: 0,
                ended_ms: None,
                strategy: "rolling".into(),
                percent: 0,
                paused: false,
                verdicts: Vec::new(),
            }],
        });
        let out = status(&report, None, &Term::PLAIN);
        assert!(
            !out.contains("web-1  "),
            "this node's own instance is listed twice:\n{out}"
        );
        insta::assert_snapshot!(out);
    }

    #[test]
    fn status_fits_a_narrow_terminal() {
        let report = report(AppStatus {
            name: "orders".into(),
            release: "3f2a9c1b7d00".into(),
            desired: 2,
            ready: 1,
            rolling: false,
            deployment: None,
            listen: Some("127.0.0.1:8080".into()),
            listener: None,
            balancer: None,
            java: Some("17.0.15 (/usr/lib/jvm/java-17-openjdk-amd64)".into()),
            health: None,
            canary: None,
            instances: vec![
                instance(0, "ready", Some(4242)),
                instance(1, "unhealthy", Some(4250)),
            ],
        });
        let narrow = Term {
            color: false,
            width: Some(60),
        };
        let out = status(&report, None, &narrow);
        for line in out.lines() {
            assert!(line.chars().count() <= 60, "{line:?}");
        }
        insta::assert_snapshot!(out);
    }

    #[test]
    fn history_table() {
        let step = |message: &str| jarfleet_api::DeployStep {
            at: 0,
            message: message.into(),
        };
        let h = HistoryReport {
            app: "orders".into(),
            current: "9e8d7c6b5a41".into(),
            releases: vec![
                jarfleet_api::ReleaseInfo {
                    id: "3f2a9c1b7d00".into(),
                    version: Some("1.4.1".into()),
                    created_at: 1_700_000_000_000,
                    current: false,
                    artifact: "/srv/orders/orders-1.4.1.jar".into(),
                    jdk: Some("17.0.15 (/usr/lib/jvm/java-17-openjdk-amd64)".into()),
                },
                jarfleet_api::ReleaseInfo {
                    id: "9e8d7c6b5a41".into(),
                    version: Some("1.4.2".into()),
                    created_at: 1_700_000_360_000,
                    current: true,
                    artifact: "/srv/orders/orders-1.4.2.jar".into(),
                    jdk: None,
                },
            ],
            deployments: vec![jarfleet_api::DeploymentRecord {
                id: 7,
                app: "orders".into(),
                from: "3f2a9c1b7d00".into(),
                to: "9e8d7c6b5a41".into(),
                strategy: "canary".into(),
                outcome: "succeeded".into(),
                reason: None,
                started_at: 1_700_000_400_000,
                ended_at: Some(1_700_000_642_500),
                steps: vec![step("canary step 1 (5 %) passed")],
                canary: None,
            }],
            cluster_rollout: None,
        };
        insta::assert_snapshot!(history(&h, &Term::PLAIN));
        // In cluster mode, the release across the cluster follows, each node's figures too.
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "web-2".to_string(),
            "canary 70 requests (0 failed), stable 1391 requests (0 failed)".to_string(),
        );
        let h = HistoryReport {
            cluster_rollout: Some(jarfleet_api::ClusterRollout {
                app: "orders".into(),
                release: "9e8d7c6b5a41".into(),
                from: "3f2a9c1b7d00".into(),
                state: "rolled-back".into(),
                steps: vec![jarfleet_api::RolloutStep {
                    node: "web-2".into(),
                    at_ms: 0,
                }],
                why: Some("canary step 1 (5 %) failed on the whole cluster's figures".into()),
                started_ms: 0,
                ended_ms: Some(1),
                strategy: "canary".into(),
                percent: 0,
                paused: false,
                verdicts: vec![jarfleet_api::RolloutVerdict {
                    step: 1,
                    percent: 5,
                    passed: false,
                    figures: "error rate 28.57 % above max_error_rate 1.00 %".into(),
                    nodes,
                    at_ms: 0,
                }],
            }),
            ..h
        };
        let text = history(&h, &Term::PLAIN);
        let across = text
            .split("ACROSS THE CLUSTER\n")
            .nth(1)
            .unwrap_or_default();
        assert!(
            across.starts_with("  release 9e8d7c6b5a41 rolled back on every node: canary step 1")
                && across.contains("    canary step 1 (5 %) failed at ")
                && across.contains("      web-2: canary 70 requests (0 failed)"),
            "{text}"
        );
    }

    #[test]
    fn status_of_a_paused_canary() {
        let figures = |requests, failures, p99| jarfleet_api::SetSummary {
            requests,
            failures,
            error_rate: failures as f64 / requests as f64,
            p99_ms: Some(p99),
        };
        let report = report(AppStatus {
            name: "orders".into(),
            release: "3f2a9c1b7d00".into(),
            desired: 1,
            ready: 2,
            rolling: true,
            deployment: Some("#7 3f2a9c1b7d00 → 9e8d7c6b5a41 running".into()),
            listen: None,
            listener: None,
            balancer: None,
            java: Some("17.0.15 (/usr/lib/jvm/java-17-openjdk-amd64)".into()),
            health: None,
            canary: Some(jarfleet_api::CanaryStatus {
                release: "9e8d7c6b5a41".into(),
                step: 2,
                steps: vec![5, 25, 50, 100],
                percent: 25,
                paused: true,
                passed: false,
                step_elapsed_ms: Some(12_400),
                step_time_ms: 60_000,
                canary_figures: figures(120, 0, 3.2),
                stable_figures: figures(360, 1, 2.9),
                last_verdict: Some("step 2 passed".into()),
            }),
            instances: vec![instance(0, "ready", Some(4242))],
        });
        insta::assert_snapshot!(status(&report, None, &Term::PLAIN));
    }

    #[test]
    fn plan_lines() {
        let plan = Plan {
            changes: vec![
                AppChange::Add {
                    app: "billing".into(),
                    instances: 2,
                },
                AppChange::Roll {
                    app: "orders".into(),
                    from: "3f2a9c1b7d00".into(),
                    to: "9e8d7c6b5a41".into(),
                    why: vec!["env".into(), "java".into()],
                },
                AppChange::Scale {
                    app: "orders".into(),
                    from: 3,
                    to: 5,
                },
                AppChange::Update {
                    app: "orders".into(),
                    fields: vec!["health".into()],
                },
                AppChange::Remove {
                    app: "legacy".into(),
                },
                AppChange::Deploying {
                    app: "web".into(),
                    id: 3,
                    from: "3f2a9c1b7d00".into(),
                    to: "9e8d7c6b5a41".into(),
                },
            ],
            unchanged: vec!["search".into()],
        };
        insta::assert_snapshot!(super::plan(&plan));
        insta::assert_snapshot!("empty_plan", super::plan(&Plan::default()));
    }

    #[test]
    fn event_line() {
        let e = EventRecord {
            id: 7,
            ts: 1_795_645_127_867,
            kind: "instance.exited".into(),
            app: Some("orders".into()),
            slot: Some(1),
            message: "pid 4250 killed by signal 9".into(),
        };
        insta::assert_snapshot!(event(&e));
    }

    #[test]
    fn app_output_cannot_drive_the_terminal() {
        let cases = [
            ("plain text, tabs\tkept", "plain text, tabs\tkept"),
            // A title change (OSC … BEL) and a clear screen (CSI 2J).
            ("\x1b]0;pwned\x07\x1b[2J", "\\x1b]0;pwned\\x07\\x1b[2J"),
            ("cr\rover", "cr\\x0dover"),
            ("nul\0 del\x7f", "nul\\x00 del\\x7f"),
            ("c1 csi \u{9b}31m", "c1 csi \\u{9b}31m"),
            ("bidi \u{202e}txt.exe", "bidi \\u{202e}txt.exe"),
            ("ünïcödé ✓", "ünïcödé ✓"),
        ];
        for (text, want) in cases {
            assert_eq!(visible(text), want, "{text:?}");
        }
        let line = jarfleet_api::LogLine {
            app: "fx".into(),
            slot: 0,
            stream: "stdout".into(),
            line: "\x1b]0;pwned\x07\x1b[2J".into(),
        };
        assert_eq!(log_line(&line), "fx/0 | \\x1b]0;pwned\\x07\\x1b[2J");
        let e = EventRecord {
            id: 8,
            ts: 1_795_645_127_867,
            kind: "instance.exited".into(),
            app: Some("orders".into()),
            slot: Some(1),
            message: "last stderr: \x1b[2Jgone".into(),
        };
        assert!(!event(&e).contains('\x1b'), "{}", event(&e));
        assert!(event(&e).ends_with("last stderr: \\x1b[2Jgone"));
    }

    #[test]
    fn down_names_each_instance_and_app_once_as_they_stop() {
        let app = |name: &str, pids: &[(u32, Option<u32>)]| AppStatus {
            name: name.into(),
            release: "3f2a9c1b7d00".into(),
            desired: 2,
            ready: 0,
            rolling: false,
            deployment: None,
            listen: None,
            listener: None,
            health: None,
            balancer: None,
            java: None,
            canary: None,
            instances: pids
                .iter()
                .map(|(slot, pid)| InstanceStatus {
                    app: name.into(),
                    ..instance(*slot, "ready", *pid)
                })
                .collect(),
        };
        let fleet = |apps: Vec<AppStatus>| {
            let mut r = report(app("x", &[]));
            r.apps = apps;
            r
        };
        let before = fleet(vec![
            app("api", &[(0, Some(10)), (1, Some(11))]),
            app("web", &[(0, Some(20)), (1, None)]),
        ]);
        let mut p = DownProgress::new(&before);
        assert_eq!(p.summary(), "0 of 3 instances stopped, 0 of 2 apps removed");
        assert!(p.seen(Some(&before)).is_empty());
        let later = fleet(vec![
            app("api", &[(0, Some(10)), (1, None)]),
            app("web", &[(0, Some(20))]),
        ]);
        assert_eq!(p.seen(Some(&later)), ["  stopped api/1 (pid 11)"]);
        assert!(p.seen(Some(&later)).is_empty(), "named once");
        let later = fleet(vec![app("web", &[(0, Some(21))])]);
        assert_eq!(
            p.seen(Some(&later)),
            [
                "  stopped api/0 (pid 10)",
                "  stopped web/0 (pid 20)",
                "  removed api"
            ]
        );
        assert_eq!(p.seen(None), ["  removed web"]);
        assert_eq!(p.summary(), "3 of 3 instances stopped, 2 of 2 apps removed");
    }

    #[test]
    fn durations_and_sizes() {
        let cases = [(5, "5s"), (125, "2m5s"), (3725, "1h2m"), (90_000, "1d1h")];
        for (secs, want) in cases {
            assert_eq!(duration(secs), want);
        }
        assert_eq!(bytes(187 * 1024 * 1024), "187M");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0G");
    }
}
