//! Client commands: each one talks to the daemon over its socket.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use jarfleet_api::{
    Ack, Action, ActionRequest, ApplyRequest, ApplyResponse, Client, DeployRequest,
    DeploymentRecord, EventRecord, HistoryReport, LogLine, RollbackRequest, ScaleRequest,
    ShutdownRequest, StatusReport, VersionInfo,
};

use crate::args::Output;
use crate::context::{self, CliError};
use crate::render;
use crate::term::Term;

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::failed(e.to_string()))?;
    println!("{text}");
    Ok(())
}

pub async fn apply(
    remote: Option<Client>,
    state: Option<&Path>,
    spec_arg: Option<&Path>,
    dry_run: bool,
    output: Output,
) -> Result<(), CliError> {
    let spec = context::load_spec(spec_arg)?;
    let client = remote.unwrap_or_else(|| context::client(state, Some(&spec)));
    let resp: ApplyResponse = client
        .post("/v1/apply", &ApplyRequest { spec, dry_run })
        .await?;
    match output {
        Output::Json => print_json(&resp)?,
        Output::Table => {
            print!("{}", render::plan(&resp.plan));
            if dry_run {
                eprintln!("dry run: nothing was changed");
            }
        }
    }
    Ok(())
}

pub async fn validate(
    spec_arg: Option<&Path>,
    offline: bool,
    output: Output,
) -> Result<(), CliError> {
    let spec = context::load_spec(spec_arg)?;
    if !offline {
        let checked = spec.clone();
        tokio::task::spawn_blocking(move || jarfleet_host::prepare::prepare(&checked))
            .await
            .map_err(|e| CliError::failed(e.to_string()))?
            .map_err(|e| CliError::usage(e.message, e.hint.as_deref()))?;
        // The TCP API's token and certificate files, read as the daemon will read them.
        let daemon = spec.daemon.clone();
        tokio::task::spawn_blocking(move || {
            jarfleet_daemon::load_api_settings(&daemon).map(|_| ())
        })
        .await
        .map_err(|e| CliError::failed(e.to_string()))?
        .map_err(|e| CliError::usage(e.message, e.hint.as_deref()))?;
        let mut port_errors = Vec::new();
        let none = std::collections::BTreeSet::new();
        for app in spec.apps.values() {
            let survey = jarfleet_host::ports::survey(app.ports, &none);
            if let Some(u) = survey.unchecked {
                return Err(CliError::failed(format!(
                    "apps.{}.ports = \"{}-{}\": {u}; run `jarfleet validate` again once it has descriptors to spare",
                    app.name, app.ports.first, app.ports.last
                )));
            }
            let free = survey.free.len();
            if free < app.instances as usize {
                port_errors.push(format!(
                    "apps.{}.ports: {} instance(s) need {} free port(s) in {}-{}, only {free} free now",
                    app.name, app.instances, app.instances, app.ports.first, app.ports.last
                ));
            }
        }
        if !port_errors.is_empty() {
            // A running fleet holds its own ports: say so rather than fail.
            let client = context::client(None, Some(&spec));
            if client.get::<VersionInfo>("/v1/version").await.is_err() {
                return Err(CliError::usage(
                    port_errors.join("\n"),
                    Some("free those ports or widen `ports`"),
                ));
            }
        }
    }
    let n = spec.apps.len();
    if output == Output::Json {
        return print_json(&serde_json::json!({
            "spec": spec.source,
            "ok": true,
            "checked": if offline { "file" } else { "file, artifacts, JDKs, ports" },
            "apps": spec.apps.keys().collect::<Vec<_>>(),
        }));
    }
    println!(
        "{}: ok ({n} app{})",
        spec.source.display(),
        if n == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Apps whose port range lacks enough free ports right now (before any daemon holds them), or
/// whose ports could not be checked.
/// Ports the spec's apps cannot have; `ours`: ports held by the fleet's own JVMs (surviving
/// shims of this state dir), which the daemon re-adopts: not counted as in use.
pub fn port_errors(
    spec: &jarfleet_core::spec::FleetSpec,
    ours: &std::collections::BTreeSet<u16>,
) -> Vec<String> {
    spec.apps
        .values()
        .filter_map(|app| {
            let survey = jarfleet_host::ports::survey(app.ports, ours);
            if let Some(u) = &survey.unchecked {
                return Some(format!(
                    "apps.{}.ports = \"{}-{}\": {u}",
                    app.name, app.ports.first, app.ports.last
                ));
            }
            // The fleet's own JVMs keep their ports when the daemon re-adopts them.
            let held = ours
                .iter()
                .filter(|p| (app.ports.first..=app.ports.last).contains(*p))
                .count();
            let free = survey.free.len();
            (free + held < app.instances as usize).then(|| {
                let shown: Vec<String> = survey.in_use.iter().take(8).map(u16::to_string).collect();
                format!(
                    "apps.{}.ports = \"{}-{}\": {} instance(s) need {} free port(s), only {free} free (in use: {})",
                    app.name,
                    app.ports.first,
                    app.ports.last,
                    app.instances,
                    app.instances,
                    shown.join(", ")
                )
            })
        })
        .collect()
}

pub async fn status(client: &Client, app: Option<&str>, output: Output) -> Result<(), CliError> {
    let report: StatusReport = client.get("/v1/status").await?;
    print!(
        "{}",
        status_text(report, app, output, &Term::stdout(), true)?
    );
    Ok(())
}

/// `status --watch`: the status again every `interval` until Ctrl-C. On a terminal the screen
/// is redrawn in place; into a pipe each report follows the last (JSON: one per line).
pub async fn status_watch(
    client: &Client,
    app: Option<&str>,
    interval: std::time::Duration,
    output: Output,
) -> Result<(), CliError> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    loop {
        let term = Term::stdout();
        let text = match client
            .get::<StatusReport>("/v1/status")
            .await
            .map_err(CliError::from)
        {
            Ok(report) => status_text(report, app, output, &term, false)?,
            // The daemon went away or restarts: say so and keep watching.
            Err(e) if e.code == context::EXIT_UNREACHABLE => format!("{}\n", e.message),
            Err(e) => return Err(e),
        };
        let frame = match (tty, output) {
            (true, Output::Table) => format!(
                "\x1b[H\x1b[2J{}\n\n{text}",
                term.paint(
                    anstyle::Style::new().bold(),
                    &format!(
                        "every {}: jarfleet status  (Ctrl-C to stop)",
                        jarfleet_core::units::format_duration(interval)
                    )
                )
            ),
            (false, Output::Table) => format!("{text}\n"),
            (_, Output::Json) => text,
        };
        {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(frame.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                return Ok(()); // the reader went away
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// One status report as text: a table, or (`-o json`) JSON, `pretty` or on one line.
fn status_text(
    report: StatusReport,
    app: Option<&str>,
    output: Output,
    term: &Term,
    pretty: bool,
) -> Result<String, CliError> {
    if let Some(name) = app
        && !report.apps.iter().any(|a| a.name == name)
    {
        let names: Vec<&str> = report.apps.iter().map(|a| a.name.as_str()).collect();
        return Err(CliError::usage(
            format!("no app named {name:?}"),
            Some(&format!("apps: {}", names.join(", "))),
        ));
    }
    match output {
        Output::Json => {
            let mut report = report;
            if let Some(name) = app {
                report.apps.retain(|a| a.name == name);
            }
            let json = if pretty {
                serde_json::to_string_pretty(&report)
            } else {
                serde_json::to_string(&report)
            };
            json.map(|j| j + "\n")
                .map_err(|e| CliError::failed(format!("encoding JSON: {e}")))
        }
        Output::Table => Ok(render::status(&report, app, term)),
    }
}

/// `jarfleet metrics`: the exposition as a scraper gets it.
pub async fn metrics(client: &Client) -> Result<(), CliError> {
    let text = client.get_text(jarfleet_api::METRICS_PATH).await?;
    print!("{text}");
    Ok(())
}

pub async fn action(
    client: &Client,
    target: &str,
    action: Action,
    output: Output,
) -> Result<(), CliError> {
    let (app, slot) = context::parse_target(target)?;
    let ack: Ack = client
        .post("/v1/action", &ActionRequest { app, slot, action })
        .await?;
    print_ack(&ack, output)
}

/// `restart TARGET --wait`: an app's rolling restart is a deployment, followed to its end like
/// `deploy --wait`; one instance is waited for until it is ready again with a new process.
pub async fn restart_wait(client: &Client, target: &str, output: Output) -> Result<(), CliError> {
    let (app, slot) = context::parse_target(target)?;
    match slot {
        None => {
            let history = |app: String| async move {
                client
                    .get::<HistoryReport>(&format!("/v1/history?app={app}"))
                    .await
            };
            let before = history(app.clone())
                .await?
                .deployments
                .iter()
                .map(|d| d.id)
                .max()
                .unwrap_or(0);
            let ack: Ack = client
                .post(
                    "/v1/action",
                    &ActionRequest {
                        app: app.clone(),
                        slot: None,
                        action: Action::Restart,
                    },
                )
                .await?;
            eprintln!("{}", ack.message);
            // Another deployment of the app cannot start while this one runs: the first one
            // after those known before is the restart.
            let started = history(app.clone())
                .await?
                .deployments
                .into_iter()
                .filter(|d| d.id > before)
                .min_by_key(|d| d.id)
                .ok_or_else(|| {
                    CliError::failed(format!(
                        "the restart of {app} started no deployment to wait for"
                    ))
                })?;
            follow_deployment(client, started, 1, true, output).await
        }
        Some(slot) => {
            let pid_of = |report: &StatusReport| {
                report
                    .apps
                    .iter()
                    .filter(|a| a.name == app)
                    .flat_map(|a| a.instances.iter())
                    .find(|i| i.slot == slot)
                    .map(|i| (i.pid, i.state.clone(), i.ready))
            };
            let before: StatusReport = client.get("/v1/status").await?;
            let old_pid = pid_of(&before).and_then(|(pid, _, _)| pid);
            let ack: Ack = client
                .post(
                    "/v1/action",
                    &ActionRequest {
                        app: app.clone(),
                        slot: Some(slot),
                        action: Action::Restart,
                    },
                )
                .await?;
            eprintln!("{}", ack.message);
            let spinner = crate::term::Spinner::start(&format!("restarting {target}"));
            let deadline = Instant::now() + Duration::from_secs(3600);
            loop {
                let now: StatusReport = client.get("/v1/status").await?;
                let Some((pid, state, ready)) = pid_of(&now) else {
                    return Err(CliError::failed(format!("{target} is gone")));
                };
                spinner.set(&format!("{target}: {state}"));
                if ready && pid.is_some() && pid != old_pid {
                    drop(spinner);
                    eprintln!("{target} is ready (pid {})", pid.unwrap_or_default());
                    return match output {
                        Output::Json => print_json(&ack),
                        Output::Table => Ok(()),
                    };
                }
                if matches!(state.as_str(), "crash-loop" | "failed" | "stopped") {
                    return Err(CliError::failed(format!(
                        "{target} did not come back: {state} (see `jarfleet logs {target}`)"
                    )));
                }
                if Instant::now() > deadline {
                    return Err(CliError::failed(format!(
                        "{target} is not ready after an hour: {state}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// What a state-changing call said: a line on stderr, or (`-o json`) the reply on stdout.
fn print_ack(ack: &Ack, output: Output) -> Result<(), CliError> {
    match output {
        Output::Json => print_json(ack),
        Output::Table => {
            eprintln!("{}", ack.message);
            Ok(())
        }
    }
}

pub async fn deploy(
    client: &Client,
    app: &str,
    artifact: &Path,
    version: Option<String>,
    strategy: Option<jarfleet_core::spec::Strategy>,
    wait: bool,
    output: Output,
) -> Result<(), CliError> {
    let artifact = context::absolute(artifact);
    if !artifact.is_file() {
        return Err(CliError::usage(
            format!("{} does not exist (or is not a file)", artifact.display()),
            Some("pass the path of the new jar"),
        ));
    }
    let req = DeployRequest {
        app: app.to_string(),
        artifact: artifact.display().to_string(),
        version,
        strategy,
    };
    let started: DeploymentRecord = client.post("/v1/deploy", &req).await?;
    follow_deployment(client, started, 1, wait, output).await
}

pub async fn rollback(
    client: &Client,
    app: &str,
    to: Option<String>,
    wait: bool,
    output: Output,
) -> Result<(), CliError> {
    let req = RollbackRequest {
        app: app.to_string(),
        to,
    };
    let started: DeploymentRecord = client.post("/v1/rollback", &req).await?;
    follow_deployment(client, started, 1, wait, output).await
}

/// `promote` (`Some(full)`) of a canary / `abort` (`None`) of any deployment.
pub async fn canary(
    client: &Client,
    app: &str,
    promote: Option<bool>,
    wait: bool,
    output: Output,
) -> Result<(), CliError> {
    let req = jarfleet_api::CanaryRequest {
        app: app.to_string(),
        promote: promote.is_some(),
        full: promote == Some(true),
    };
    let promote = req.promote;
    let d: DeploymentRecord = client.post("/v1/canary", &req).await?;
    // Only what happens from now on is shown (a canary promoted from a pause has a past).
    let shown = d
        .steps
        .iter()
        .rposition(|s| {
            s.message.starts_with("promoted by")
                || s.message.starts_with("rolling back")
                || s.message.starts_with("aborted by")
        })
        .unwrap_or(d.steps.len().saturating_sub(1));
    if promote || !wait {
        return follow_deployment(client, d, shown, wait, output).await;
    }
    // An abort "succeeds" when the deployment is rolled back (or, a restart, ended).
    match follow_deployment(client, d, shown, true, output).await {
        Err(e) if e.message.contains(" rolled-back:") || e.message.contains(" aborted:") => Ok(()),
        other => other,
    }
}

/// How the record of a canary that waits for `promote` begins (see the daemon's canary steps).
const PAUSED_STEP: &str = "paused at ";

/// Prints a started deployment; with `wait`, follows it to its end (exit 1 unless it succeeded),
/// or until a canary pauses for `promote`.
async fn follow_deployment(
    client: &Client,
    started: DeploymentRecord,
    shown_before: usize,
    wait: bool,
    output: Output,
) -> Result<(), CliError> {
    eprintln!(
        "deployment #{} of {}: {} → {}",
        started.id, started.app, started.from, started.to
    );
    if !wait {
        if output == Output::Json {
            print_json(&started)?;
        }
        return Ok(());
    }
    let mut shown = shown_before;
    let spinner = crate::term::Spinner::start(&format!("deployment #{} running", started.id));
    let done = loop {
        let report: HistoryReport = client
            .get(&format!("/v1/history?app={}", started.app))
            .await?;
        let Some(d) = report.deployments.into_iter().find(|d| d.id == started.id) else {
            return Err(CliError::failed(format!(
                "deployment #{} vanished",
                started.id
            )));
        };
        let paused = d
            .steps
            .iter()
            .skip(shown)
            .any(|s| s.message.starts_with(PAUSED_STEP));
        for step in d.steps.iter().skip(shown) {
            spinner.line(&format!("  {}", step.message));
        }
        shown = d.steps.len();
        spinner.set(&format!(
            "deployment #{} {}: {:.0} s",
            d.id,
            d.outcome,
            crate::up::elapsed_secs(d.started_at)
        ));
        if paused && d.is_active() {
            // A canary waiting for `promote`: nothing more happens until someone acts.
            if output == Output::Json {
                print_json(&d)?;
            }
            return Ok(());
        }
        if !d.is_active() {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(spinner);
    if output == Output::Json {
        print_json(&done)?;
    }
    match done.outcome.as_str() {
        "succeeded" => Ok(()),
        outcome => Err(CliError::failed(format!(
            "deployment #{} {outcome}: {}",
            done.id,
            done.reason.as_deref().unwrap_or("no reason recorded")
        ))),
    }
}

async fn set_eligible(client: &Client, node: String, eligible: bool) -> Result<(), CliError> {
    let ack: Ack = client
        .post(
            "/v1/cluster/eligibility",
            &jarfleet_api::EligibilityRequest { node, eligible },
        )
        .await?;
    println!("{}", ack.message);
    Ok(())
}

/// `jarfleet cluster …`.
pub async fn cluster(
    client: &Client,
    command: crate::args::ClusterCommand,
) -> Result<(), CliError> {
    use crate::args::ClusterCommand;
    match command {
        ClusterCommand::Nodes { output } => {
            let report: jarfleet_api::ClusterNodes = client.get("/v1/cluster/nodes").await?;
            match output {
                Output::Json => print_json(&report),
                Output::Table => {
                    print!("{}", render::cluster_nodes(&report));
                    Ok(())
                }
            }
        }
        ClusterCommand::Eligible { node } => set_eligible(client, node, true).await,
        ClusterCommand::Ineligible { node } => set_eligible(client, node, false).await,
        ClusterCommand::Drain {
            node,
            deadline,
            detach,
        } => drain(client, node, deadline, detach).await,
        ClusterCommand::Ca { name, out, days } => cluster_ca(&name, &out, days),
        ClusterCommand::Cert {
            node,
            ca_dir,
            addresses,
            out,
            days,
        } => cluster_cert(&node, &ca_dir, &addresses, &out, days),
        ClusterCommand::Undrain { node } => {
            let ack: Ack = client
                .post(
                    "/v1/cluster/drain",
                    &jarfleet_api::DrainRequest {
                        node,
                        drain: false,
                        deadline_secs: None,
                    },
                )
                .await?;
            println!("{}", ack.message);
            Ok(())
        }
    }
}

/// `cluster ca`: the cluster's certificate authority.
pub fn cluster_ca(name: &str, out: &Path, days: u32) -> Result<(), CliError> {
    jarfleet_core::spec::node_name(name)
        .map_err(|e| CliError::usage(format!("--name {name:?}: {e}"), None))?;
    let (cert, key) = jarfleet_cluster::pki::make_ca(out, name, days)
        .map_err(|e| CliError::failed(e.to_string()))?;
    println!(
        "the CA of cluster {name}: {} (every node gets it) and {} (its key, mode 0600: keep it off the nodes, it only issues certificates: `jarfleet cluster cert NODE --ca-dir DIR`)",
        cert.display(),
        key.display()
    );
    Ok(())
}

/// `cluster cert NODE`: a node's certificate from the cluster's CA.
pub fn cluster_cert(
    node: &str,
    ca: &Path,
    addresses: &[std::net::IpAddr],
    out: &Path,
    days: u32,
) -> Result<(), CliError> {
    jarfleet_core::spec::node_name(node).map_err(|e| CliError::usage(e, None))?;
    let (cert, key) = jarfleet_cluster::pki::issue_node(ca, node, addresses, out, days)
        .map_err(|e| CliError::failed(e.to_string()))?;
    println!(
        "node {node}'s certificate: {} and its key {} (mode 0600), valid for {node} and {}; copy both to the node",
        cert.display(),
        key.display(),
        addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// `cluster drain NODE`: starts the drain and, unless `detach`, follows it until the node
/// runs nothing (exit 1 if that is not so a little after the deadline).
async fn drain(
    client: &Client,
    node: String,
    deadline: Duration,
    detach: bool,
) -> Result<(), CliError> {
    let started = std::time::Instant::now();
    let ack: Ack = client
        .post(
            "/v1/cluster/drain",
            &jarfleet_api::DrainRequest {
                node: node.clone(),
                drain: true,
                deadline_secs: Some(deadline.as_secs().max(1)),
            },
        )
        .await?;
    eprintln!("{}", ack.message);
    if detach {
        return Ok(());
    }
    // The node stops what is left at the deadline; give that stop its drain time too.
    let give_up = deadline + Duration::from_secs(60);
    let spinner = crate::term::Spinner::start(&format!("draining node {node}"));
    let mut last = None;
    loop {
        let report: jarfleet_api::ClusterNodes = client.get("/v1/cluster/nodes").await?;
        let Some(n) = report.nodes.iter().find(|n| n.name == node) else {
            return Err(CliError::failed(format!(
                "node {node} is no longer known to the cluster"
            )));
        };
        if n.state == "down" {
            return Err(CliError::failed(format!(
                "node {node} went down while draining: its instances are placed elsewhere by the scheduler"
            )));
        }
        if n.state != "draining" && n.state != "suspect" {
            return Err(CliError::failed(format!(
                "node {node} is {} now: someone undrained it",
                n.state
            )));
        }
        let left = (n.instances, n.running);
        if last != Some(left) {
            spinner.line(&format!(
                "  {:.1} s: {} placed on {node}, {} running there",
                started.elapsed().as_secs_f64(),
                n.instances,
                n.running
            ));
            last = Some(left);
        }
        if left == (0, 0) {
            drop(spinner);
            println!(
                "node {node} drained in {:.1} s: it runs nothing and nothing new is placed on it (`jarfleet cluster undrain {node}` takes it back)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let overdue = n.drain_deadline_ms.is_some_and(|d| now_ms >= d);
        if overdue && n.running == 0 {
            return Err(CliError::failed(format!(
                "node {node} reached its drain deadline with {} instance(s) that fit on no other node: they were stopped and run nowhere now",
                n.instances
            ))
            .with_hint(format!(
                "`jarfleet events` on the scheduler ({}) says why they fit nowhere; add room (a node, memory, a higher max_per_node) and they are placed, or `jarfleet cluster undrain {node}` runs them there again",
                report.leader.as_deref().unwrap_or("none elected")
            )));
        }
        if started.elapsed() > give_up {
            return Err(CliError::failed(format!(
                "node {node} still has {} placed and {} running after the deadline",
                n.instances, n.running
            ))
            .with_hint(format!(
                "an instance that fits nowhere else stays placed on {node}: `jarfleet events` on the scheduler ({}) says why",
                report.leader.as_deref().unwrap_or("none elected")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn history(client: &Client, app: &str, output: Output) -> Result<(), CliError> {
    let report: HistoryReport = client.get(&format!("/v1/history?app={app}")).await?;
    match output {
        Output::Json => print_json(&report),
        Output::Table => {
            print!("{}", render::history(&report, &Term::stdout()));
            Ok(())
        }
    }
}

pub async fn scale(
    client: &Client,
    app: &str,
    instances: u32,
    output: Output,
) -> Result<(), CliError> {
    let ack: Ack = client
        .post(
            "/v1/scale",
            &ScaleRequest {
                app: app.to_string(),
                instances,
            },
        )
        .await?;
    print_ack(&ack, output)
}

/// `down`: stops every instance and the daemon. On a terminal each instance and app is named as
/// it stops, under a spinner; in a pipe only the summary line is written.
pub async fn down(client: &Client) -> Result<(), CliError> {
    let before: Option<StatusReport> = client.get("/v1/status").await.ok();
    let ack: Ack = client
        .post(
            "/v1/shutdown",
            &ShutdownRequest {
                stop_instances: true,
            },
        )
        .await?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = before.as_ref().map(render::DownProgress::new);
    let spinner = tty.then(|| crate::term::Spinner::start("stopping the fleet"));
    // Wait until the daemon is really gone, naming what stopped meanwhile.
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let Ok(now) = client.get::<StatusReport>("/v1/status").await else {
            break;
        };
        if let Some(p) = progress.as_mut() {
            let lines = p.seen(Some(&now));
            if let Some(s) = &spinner {
                for line in lines {
                    s.line(&line);
                }
                s.set(&p.summary());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(p) = progress.as_mut() {
        // The daemon is gone: it stopped everything it had.
        let lines = p.seen(None);
        if let Some(s) = &spinner {
            for line in lines {
                s.line(&line);
            }
        }
    }
    drop(spinner);
    match &progress {
        Some(p) => eprintln!("{}; {}", ack.message, p.summary()),
        None => eprintln!("{}", ack.message),
    }
    Ok(())
}

/// `down --strays`: stops the JVMs of stray shims only (`status` lists them).
/// `jarfleet version`.
pub fn version(json: bool) -> Result<(), CliError> {
    let own = jarfleet_host::build::own();
    if json {
        let info = jarfleet_api::BuildInfo {
            version: own.version.to_string(),
            build: own.id.clone().unwrap_or_default(),
            protocol: jarfleet_api::PROTOCOL,
            data_plane_protocol: jarfleet_dataplane::PROTOCOL,
        };
        let text = serde_json::to_string(&info).map_err(|e| CliError::failed(e.to_string()))?;
        println!("{text}");
    } else {
        println!("jarfleet {}", own.describe());
    }
    Ok(())
}

/// `jarfleet upgrade`: asks the daemon to hand over to `binary`, then waits until the same
/// daemon (same pid) answers as the new build.
pub async fn upgrade(
    client: &Client,
    binary: Option<&std::path::Path>,
    grace: Duration,
) -> Result<(), CliError> {
    let binary = match binary {
        Some(b) => crate::context::absolute(b),
        None => std::env::current_exe()
            .map_err(|e| CliError::failed(format!("cannot find this binary: {e}")))?,
    };
    let before: jarfleet_api::VersionInfo = client.get("/v1/version").await?;
    let want = jarfleet_host::build::build_id(&binary).unwrap_or_default();
    let ack: Ack = client
        .post(
            "/v1/upgrade",
            &jarfleet_api::UpgradeRequest {
                binary: binary.display().to_string(),
                grace_ms: grace.as_millis() as u64,
            },
        )
        .await?;
    eprintln!("{}", ack.message);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(now) = client.get::<jarfleet_api::VersionInfo>("/v1/version").await
            && now.pid == before.pid
            && (want.is_empty() || now.build == want)
            && (now.build != before.build || want == before.build)
        {
            let build = if now.build.is_empty() {
                String::new()
            } else {
                format!(" (build {})", &now.build[..now.build.len().min(12)])
            };
            eprintln!(
                "upgraded: daemon pid {} runs jarfleet {}{build}; the old load balancer finishes its connections (up to {} s) and exits",
                now.pid,
                now.version,
                grace.as_secs()
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::failed(format!(
                "the daemon did not come back as {} within 120 s; see its log ({}/daemon.log)",
                binary.display(),
                before.state_dir
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn down_strays(client: &Client) -> Result<(), CliError> {
    let ack: Ack = client
        .post("/v1/strays/stop", &jarfleet_api::StopStraysRequest {})
        .await?;
    eprintln!("{}", ack.message);
    Ok(())
}

pub async fn logs(
    client: &Client,
    target: &str,
    follow: bool,
    lines: usize,
    output: Output,
) -> Result<(), CliError> {
    let (app, slot) = context::parse_target(target)?;
    let mut path = format!("/v1/logs?app={app}&lines={lines}&follow={follow}");
    if let Some(s) = slot {
        path.push_str(&format!("&slot={s}"));
    }
    let mut stream = client.stream::<LogLine>(&path).await?;
    let stdout = std::io::stdout();
    while let Some(line) = stream.next().await? {
        let mut out = stdout.lock();
        let text = match output {
            Output::Json => serde_json::to_string(&line).unwrap_or_default(),
            Output::Table => render::log_line(&line),
        };
        if writeln!(out, "{text}").is_err() {
            break; // stdout closed (e.g. piped into head)
        }
    }
    Ok(())
}

pub async fn events(
    client: &Client,
    follow: bool,
    lines: usize,
    output: Output,
) -> Result<(), CliError> {
    let mut stream = client
        .stream::<EventRecord>(&format!("/v1/events?lines={lines}&follow={follow}"))
        .await?;
    let stdout = std::io::stdout();
    while let Some(e) = stream.next().await? {
        let text = match output {
            Output::Json => serde_json::to_string(&e).unwrap_or_default(),
            Output::Table => render::event(&e),
        };
        if writeln!(stdout.lock(), "{text}").is_err() {
            break;
        }
    }
    Ok(())
}

pub async fn doctor(state: &Path, output: Output) -> Result<(), CliError> {
    let jdks = jarfleet_java::discover();
    let client = Client::for_state_dir(state);
    let daemon = client.get::<VersionInfo>("/v1/version").await.ok();
    let report = match daemon {
        Some(_) => client.get::<StatusReport>("/v1/status").await.ok(),
        None => None,
    };
    let daemon_files = report.as_ref().and_then(|r| r.daemon.open_files.clone());
    let daemon_store = report.as_ref().and_then(|r| r.daemon.store.clone());
    let free = jarfleet_daemon::free_bytes(state);
    let strays = match daemon {
        Some(_) => client
            .get::<StatusReport>("/v1/status")
            .await
            .map(|r| r.strays)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let store = {
        let state = state.to_path_buf();
        tokio::task::spawn_blocking(move || store_check(&state))
            .await
            .map_err(|e| CliError::failed(format!("checking the store: {e}")))?
    };
    let here = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok();
    let writable = std::fs::create_dir_all(state).is_ok() && tempfile_probe(state);
    if output == Output::Json {
        return print_json(&serde_json::json!({
            "jdks": jdks,
            "state_dir": state,
            "state_dir_writable": writable,
            "state_dir_free_bytes": free,
            "daemon": daemon,
            "daemon_store": daemon_store,
            "store": store.json(),
            "strays": strays,
            "open_files": {
                // This shell's limit, and what a daemon started from here would make of it.
                "here": here.map(|(soft, hard)| {
                    let l = jarfleet_shim::fdlimit::Limits::of(
                        soft,
                        hard,
                        jarfleet_shim::fdlimit::raise_target(soft, hard),
                    );
                    serde_json::json!({
                        "soft": soft,
                        "hard": hard,
                        "daemon_limit": l.soft,
                        "daemon_reserve": l.reserve,
                        "balancer_budget": l.budget,
                    })
                }),
                "daemon": daemon_files,
            },
        }));
    }
    println!("Java installations ({}):", jdks.len());
    let rows: Vec<Vec<String>> = jdks
        .iter()
        .map(|j| {
            vec![
                j.version
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                j.vendor.clone(),
                if j.is_jdk { "JDK".into() } else { "JRE".into() },
                j.home.display().to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        render::table(&["VERSION", "VENDOR", "KIND", "HOME"], &rows)
    );
    if jdks.is_empty() {
        println!("  none found: install one, e.g. apt-get install -y openjdk-17-jdk-headless");
    }
    println!();
    println!(
        "state dir: {} ({}{})",
        state.display(),
        if writable { "writable" } else { "NOT writable" },
        free.map(|b| format!(", {} free", render::bytes(b)))
            .unwrap_or_default()
    );
    match daemon {
        Some(v) => println!(
            "daemon: running (pid {}, version {}, protocol {})",
            v.pid, v.version, v.protocol
        ),
        None => println!("daemon: not running (start it with `jarfleet up`)"),
    }
    println!("{}", open_files_line(daemon_files.as_ref(), here));
    if let Some(line) = daemon_store.as_ref().and_then(store_line) {
        println!("{line}");
    }
    for line in store.lines() {
        println!("{line}");
    }
    for s in &strays {
        println!(
            "WARNING: stray JVM {} ({}/{}, shim {}{}) runs but no instance accounts for it; `jarfleet down --strays` stops it",
            s.pid,
            s.app,
            s.slot,
            s.shim_pid,
            s.port.map(|p| format!(", port {p}")).unwrap_or_default()
        );
    }
    Ok(())
}

/// `doctor`'s line on the daemon's writes, when they fail (a full disk).
fn store_line(s: &jarfleet_api::StoreHealth) -> Option<String> {
    let mut parts = Vec::new();
    if !s.writable {
        let since = s
            .failing_since
            .map(|t| format!(" for {:.0} s", crate::up::elapsed_secs(t)))
            .unwrap_or_default();
        parts.push(format!(
            "store writes failing{since} ({}); {} write(s) kept in memory until there is room{}",
            s.last_error.as_deref().unwrap_or("unknown error"),
            s.pending_writes,
            if s.exclusive {
                "; the store is open for the daemon alone (event listings wait)"
            } else {
                ""
            }
        ));
    }
    if s.events_dropped > 0 {
        parts.push(format!("{} event(s) dropped", s.events_dropped));
    }
    if let Some(why) = &s.log_failing {
        parts.push(format!(
            "its log cannot be written ({why}), {} line(s) dropped",
            s.log_lines_dropped
        ));
    }
    (!parts.is_empty()).then(|| {
        format!(
            "daemon: {}\n  free space under the state dir (df -h); the daemon recovers by itself",
            parts.join("; ")
        )
    })
}

/// `doctor`'s look at the store (read-only: integrity, schema, records) beside the shims that
/// run in `run/`.
struct StoreCheck {
    db: std::path::PathBuf,
    inspection: jarfleet_daemon::Inspection,
    shims: Vec<jarfleet_host::survivors::Survivor>,
    unclear: usize,
}

fn store_check(state: &Path) -> StoreCheck {
    let db = jarfleet_host::paths::StateDir::new(state).db();
    let inspection = jarfleet_daemon::inspect_store(&db, true);
    let found = jarfleet_host::survivors::find(state);
    StoreCheck {
        db,
        inspection,
        unclear: found.unclear.len(),
        shims: found.alive,
    }
}

impl StoreCheck {
    fn running(&self) -> usize {
        self.shims.len() + self.unclear
    }

    /// A problem the next daemon start would meet, with what to do.
    fn problem(&self) -> Option<String> {
        use jarfleet_core::recovery::StoreFound;
        let i = &self.inspection;
        let db = self.db.display();
        match i.found {
            StoreFound::Unreadable => Some(format!(
                "the store {}: a daemon will refuse to start; move it aside and restore a backup, or start the daemon with `--new-store`",
                i.what(&self.db)
            )),
            found if found.holds_no_fleet() && self.running() > 0 => Some(format!(
                "the store {db} {} while {} shim(s) run JVMs: a daemon will refuse to start; restore the store from a backup, or start the daemon with `--new-store` (the JVMs are left running as strays)",
                i.what(&self.db),
                self.running()
            )),
            _ if self.running() > i.instances => Some(format!(
                "{} shim(s) run JVMs but the store has {} instance record(s): the others are strays",
                self.running(),
                i.instances
            )),
            _ => None,
        }
    }

    fn lines(&self) -> Vec<String> {
        let i = &self.inspection;
        let mut out = vec![format!(
            "store: {} {}{}; {} shim(s) running",
            self.db.display(),
            match i.found {
                jarfleet_core::recovery::StoreFound::Unreadable => "UNREADABLE".to_string(),
                _ => format!("ok ({})", i.what(&self.db)),
            },
            i.schema_version
                .map(|v| format!(", schema version {v}, {} instance record(s)", i.instances))
                .unwrap_or_default(),
            self.running()
        )];
        if let Some(p) = self.problem() {
            out.push(format!("WARNING: {p}"));
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let i = &self.inspection;
        serde_json::json!({
            "path": self.db,
            "state": format!("{:?}", i.found),
            "error": i.error,
            "schema_version": i.schema_version,
            "apps": i.apps,
            "instances": i.instances,
            "shims_running": self.running(),
            "problem": self.problem(),
        })
    }
}

/// `doctor`'s line on open files: the daemon's own figures when it runs, else what a daemon
/// started from here would get.
fn open_files_line(daemon: Option<&jarfleet_api::OpenFiles>, here: Option<(u64, u64)>) -> String {
    use jarfleet_shim::fdlimit::{LOW_LIMIT, Limits, raise_target};
    match (daemon, here) {
        (Some(f), _) => {
            let mut line = format!(
                "daemon open files: limit {} ({}; hard {}), {} open, {} kept for the control plane, load balancer budget {} client connections",
                f.limit,
                if f.limit > f.started_with {
                    format!("raised from {}", f.started_with)
                } else {
                    "not raised".to_string()
                },
                f.hard_limit,
                f.open.map_or_else(|| "?".to_string(), |n| n.to_string()),
                f.reserve,
                f.balancer_budget,
            );
            if f.shortages > 0 {
                line.push_str(&format!(
                    "; {} shortage(s) so far, the latest: {}",
                    f.shortages,
                    f.last_shortage.as_deref().unwrap_or("-")
                ));
            }
            if f.limit < LOW_LIMIT {
                line.push_str("\n  low: raise the daemon's hard limit (LimitNOFILE= in its unit, or `ulimit -Hn` before starting it)");
            }
            line
        }
        (None, Some((soft, hard))) => {
            let l = Limits::of(soft, hard, raise_target(soft, hard));
            let mut line = format!(
                "open files here: soft {soft}, hard {hard}; a daemon started from here raises its soft limit to {}, keeps {} for the control plane and gives the load balancer {} client connections",
                l.soft, l.reserve, l.budget
            );
            if l.soft < LOW_LIMIT {
                line.push_str("\n  low: raise the hard limit (LimitNOFILE= in the daemon's unit, or `ulimit -Hn`)");
            }
            line
        }
        (None, None) => "open files: the limit cannot be read".to_string(),
    }
}

fn tempfile_probe(dir: &Path) -> bool {
    let p = dir.join(".doctor-probe");
    let ok = std::fs::write(&p, b"ok").is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}
