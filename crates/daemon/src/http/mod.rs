//! The TCP side of the API (`[daemon] http`): the same routes as the unix socket behind the
//! token layer ([`auth`]), optionally over TLS ([`tls`]), plus the dashboard ([`dashboard`]) at `/`.
//!
//! [`RemoteApi`] owns the listener. A spec's `[daemon]` settings are *staged* first (token and
//! certificate files read, a new address bound) and only *committed* once the rest of the spec
//! applied, so a bad token file or a busy port changes nothing. With the same address the
//! listener is kept and only the policy, the TLS configuration and the limits ([`limits`]) are
//! swapped.

pub mod auth;
pub mod dashboard;
pub mod limits;
pub mod logtail;
pub mod routes;
mod serve;
pub mod sse;
pub mod tls;

use jarfleet_core::events::EventKind;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use axum::Router;
use jarfleet_api::{ErrorBody, ErrorKind};
use jarfleet_core::spec::DaemonSpec;
use tokio::sync::{Mutex, MutexGuard, watch};

use auth::{Policy, SharedPolicy};
use limits::Limits;
use serve::{SharedLimits, SharedTls};

/// The `[daemon]` settings of the TCP API with their files read.
pub struct Loaded {
    addr: String,
    policy: Policy,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
}

impl Loaded {
    fn describe(&self, local: SocketAddr) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut hosts = "localhost and IP addresses".to_string();
        if !self.policy.hosts.is_empty() {
            hosts = format!("localhost, IP addresses, {}", self.policy.hosts.join(", "));
        }
        let access = match (&self.policy.token, self.policy.open_reads) {
            (Some(_), false) => "token required".to_string(),
            (Some(_), true) => format!("reads open to Host {hosts}, changes need the token"),
            (None, true) => {
                format!("reads open to Host {hosts}, no token configured: changes refused")
            }
            (None, false) => "no token configured: every API request refused".to_string(),
        };
        let l = &self.limits;
        format!(
            "TCP API and dashboard on {scheme}://{local} ({access}; at most {} connections, request heads within {:?}, idle connections closed after {:?})",
            l.max_connections, l.header_timeout, l.idle_timeout
        )
    }
}

/// Reads what the settings name (blocking file IO). `Ok(None)`: no `http` address.
pub fn load(daemon: &DaemonSpec) -> Result<Option<Loaded>, ErrorBody> {
    let Some(addr) = &daemon.http else {
        return Ok(None);
    };
    let token = match &daemon.token_file {
        Some(path) => Some(auth::read_token_file(path).map_err(|e| ErrorBody {
            kind: ErrorKind::Usage,
            hint: Some(e.hint().into()),
            message: e.to_string(),
        })?),
        None => None,
    };
    let tls = match &daemon.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            tls::server_config(&t.cert, &t.key).map_err(|e| ErrorBody {
                kind: ErrorKind::Usage,
                hint: Some(e.hint().into()),
                message: e.to_string(),
            })?,
        )),
        None => None,
    };
    Ok(Some(Loaded {
        addr: addr.clone(),
        policy: Policy {
            token,
            open_reads: daemon.open_reads,
            hosts: daemon.http_hosts.clone(),
        },
        tls,
        limits: Limits::of(daemon),
    }))
}

struct Running {
    local: SocketAddr,
    /// What [`Loaded::describe`] said when it was last committed.
    described: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The TCP listener's owner; one per daemon.
pub struct RemoteApi {
    policy: SharedPolicy,
    tls: SharedTls,
    limits: SharedLimits,
    app: OnceLock<Router>,
    /// Where the accept loop reports refused connections.
    events: OnceLock<tokio::sync::mpsc::Sender<crate::control::Event>>,
    running: Mutex<Option<Running>>,
}

impl Default for RemoteApi {
    fn default() -> Self {
        Self::new()
    }
}

impl RemoteApi {
    pub fn new() -> RemoteApi {
        RemoteApi {
            policy: Arc::new(ArcSwap::from_pointee(Policy {
                token: None,
                open_reads: false,
                hosts: Vec::new(),
            })),
            tls: Arc::new(ArcSwap::from_pointee(None)),
            limits: Arc::new(ArcSwap::from_pointee(Limits::default())),
            app: OnceLock::new(),
            events: OnceLock::new(),
            running: Mutex::new(None),
        }
    }

    /// Gives the API routes (the unix socket's router) to serve over TCP, and where refused
    /// requests are reported; called once, before anything is staged.
    pub fn set_api(&self, api: Router, events: tokio::sync::mpsc::Sender<crate::control::Event>) {
        let guard = auth::Guard {
            policy: self.policy.clone(),
            alerts: Arc::new(auth::Alerts::new(events.clone())),
        };
        let _ = self.events.set(events);
        let guarded = api.layer(axum::middleware::from_fn_with_state(guard, auth::require));
        let _ = self.app.set(dashboard::routes().merge(guarded));
    }

    /// Starts a change of settings; the returned guard keeps other changes out until it is
    /// committed or dropped.
    pub async fn begin(&self) -> Change<'_> {
        Change {
            api: self,
            running: self.running.lock().await,
        }
    }

    /// Stops listening; open connections finish their current answer, then close (streams
    /// included).
    pub async fn stop(&self) {
        if let Some(r) = self.running.lock().await.take() {
            stop(r).await;
        }
    }
}

async fn stop(r: Running) {
    let _ = r.stop.send(true);
    let _ = r.task.await;
}

/// One change of settings in progress.
pub struct Change<'a> {
    api: &'a RemoteApi,
    running: MutexGuard<'a, Option<Running>>,
}

/// An event for the log: `api.listening` (address, scheme, access) or `api.stopped`.
pub struct Announcement {
    pub kind: EventKind,
    pub message: String,
}

impl From<Announcement> for crate::control::Notice {
    fn from(a: Announcement) -> Self {
        crate::control::Notice {
            kind: a.kind,
            app: None,
            message: a.message,
        }
    }
}

/// Settings checked and, for a new address, already bound: committing cannot fail.
pub struct Staged {
    loaded: Option<Loaded>,
    /// A listener on a new address (`None`: keep the current one, or none is wanted).
    listener: Option<tokio::net::TcpListener>,
}

impl Change<'_> {
    /// Reads the settings' files and binds a new address; an error leaves everything as it was.
    pub async fn stage(&self, daemon: &DaemonSpec) -> Result<Staged, ErrorBody> {
        let daemon = daemon.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&daemon))
            .await
            .map_err(|e| ErrorBody {
                kind: ErrorKind::Failed,
                message: format!("a background task failed: {e}"),
                hint: None,
            })??;
        let Some(l) = &loaded else {
            return Ok(Staged {
                loaded,
                listener: None,
            });
        };
        let bind_error = |e: std::io::Error| ErrorBody {
            kind: ErrorKind::Usage,
            message: format!("cannot listen on {} for the TCP API: {e}", l.addr),
            hint: Some(
                "[daemon] http must be a free local address, e.g. \"127.0.0.1:9900\"".into(),
            ),
        };
        let wanted: Vec<SocketAddr> = tokio::net::lookup_host(&l.addr)
            .await
            .map_err(bind_error)?
            .collect();
        if let Some(r) = self.running.as_ref()
            && wanted.contains(&r.local)
        {
            return Ok(Staged {
                loaded,
                listener: None,
            });
        }
        let listener = tokio::net::TcpListener::bind(wanted.as_slice())
            .await
            .map_err(bind_error)?;
        Ok(Staged {
            loaded,
            listener: Some(listener),
        })
    }

    /// Puts staged settings in force; returns the event that says what changed (`None`:
    /// nothing). A replaced listener is closed in the background: the request that applied the
    /// change may be one of its connections, and gets its answer first.
    pub async fn commit(mut self, staged: Staged) -> Option<Announcement> {
        let Some(loaded) = staged.loaded else {
            let r = self.running.take()?;
            let local = r.local;
            tokio::spawn(stop(r));
            return Some(Announcement {
                kind: EventKind::ApiStopped,
                message: format!("TCP API on {local} stopped ([daemon] http removed)"),
            });
        };
        self.api.policy.store(Arc::new(loaded.policy.clone()));
        self.api.tls.store(Arc::new(loaded.tls.clone()));
        self.api.limits.store(Arc::new(loaded.limits));
        if let Some(listener) = staged.listener {
            if let Some(old) = self.running.take() {
                tokio::spawn(stop(old));
            }
            let local = listener.local_addr().ok()?;
            let serving = serve::Serving {
                app: self.api.app.get()?.clone(),
                tls: self.api.tls.clone(),
                limits: self.api.limits.clone(),
                events: self.api.events.get()?.clone(),
            };
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(serve::accept_loop(listener, serving, stop_rx));
            *self.running = Some(Running {
                local,
                described: String::new(),
                stop: stop_tx,
                task,
            });
        }
        let running = self.running.as_mut()?;
        let description = loaded.describe(running.local);
        if running.described == description {
            return None;
        }
        running.described = description.clone();
        Some(Announcement {
            kind: EventKind::ApiListening,
            message: description,
        })
    }
}
