//! What reaches the control loop. Each producer speaks its own type — the API an
//! [`ApiRequest`], a shim connection a [`ShimNote`], a health check a [`ProbeResult`], the
//! balancer a [`BalancerNote`], an etcd watch an [`EtcdNote`], a live refresh's request a
//! [`Refreshed`], the preparation of an etcd change a [`ConfigPrepared`], a class data
//! archive's training a [`Trained`], a signal handler or other
//! outside task a [`Notice`] — and the loop's closed [`Event`] wraps them. Only the loop builds
//! an `Event` (producers hand theirs over with `.into()`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use jarfleet_api::{Ack, ActionRequest, ApplyResponse, ScaleRequest, StatusReport};
use jarfleet_core::events::EventKind;
use jarfleet_core::spec::AppSpec;
use tokio::sync::oneshot;

pub use super::data_plane::BalancerNote;
use super::host::{ConfigPrepared, Refreshed, Trained};
use super::{PreparedApp, Reply};
use crate::cluster_link::ClusterNote;
use crate::etcd_watch::EtcdNote;
use crate::probe::ProbeResult;
use crate::shim_client::ShimNote;

/// A command of the API (HTTP, the CLI's socket, a SIGHUP reload, sd_notify's status), with
/// the channel its answer goes back on.
pub enum ApiRequest {
    Apply {
        apps: BTreeMap<String, PreparedApp>,
        /// The spec's `[daemon]` settings, kept for the next daemon start (the TCP API's).
        daemon: Box<jarfleet_core::spec::DaemonSpec>,
        source: PathBuf,
        dry_run: bool,
        reply: Reply<ApplyResponse>,
    },
    /// Cluster mode: a spec's `[daemon]` settings and its source, kept as `Apply` keeps them
    /// (its apps went to the cluster).
    DaemonSettings {
        daemon: Box<jarfleet_core::spec::DaemonSpec>,
        source: PathBuf,
        reply: Reply<()>,
    },
    Action {
        req: ActionRequest,
        reply: Reply<Ack>,
    },
    Scale {
        req: ScaleRequest,
        reply: Reply<Ack>,
    },
    Status {
        reply: oneshot::Sender<StatusReport>,
    },
    /// The figures of one `/metrics` scrape (`None` while metrics are off).
    Metrics {
        reply: oneshot::Sender<Option<crate::metrics::Snapshot>>,
    },
    /// The current spec of an app (for `deploy`, which builds a release from it).
    CurrentSpec {
        app: String,
        reply: oneshot::Sender<Option<AppSpec>>,
    },
    Deploy {
        app: String,
        prepared: Box<PreparedApp>,
        version: Option<String>,
        reply: Reply<jarfleet_api::DeploymentRecord>,
    },
    Rollback {
        req: jarfleet_api::RollbackRequest,
        reply: Reply<jarfleet_api::DeploymentRecord>,
    },
    Canary {
        req: jarfleet_api::CanaryRequest,
        reply: Reply<jarfleet_api::DeploymentRecord>,
    },
    History {
        app: String,
        reply: Reply<jarfleet_api::HistoryReport>,
    },
    Shutdown {
        stop_instances: bool,
        reply: oneshot::Sender<Ack>,
    },
    /// `jarfleet upgrade`: the data plane hands over to `binary`'s (checked already).
    HandOver {
        binary: std::path::PathBuf,
        grace: std::time::Duration,
        reply: Reply<Ack>,
    },
    /// `jarfleet down --strays`: the strays are handed over to be stopped off the loop.
    TakeStrays {
        reply: oneshot::Sender<Vec<jarfleet_host::survivors::Survivor>>,
    },
}

/// Something that happened outside the loop (a SIGHUP reload, an etcd outage, a login
/// lock-out), recorded like the loop's own events.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: EventKind,
    pub app: Option<String>,
    pub message: String,
}

/// Everything the loop is woken by.
pub enum Event {
    Api(ApiRequest),
    Shim(ShimNote),
    Probe(ProbeResult),
    Notice(Notice),
    Etcd(EtcdNote),
    Balancer(BalancerNote),
    /// Cluster mode: the node's agent (what this node runs, the other nodes' instances).
    Cluster(ClusterNote),
    /// A release prepared (off the loop) for a config change from etcd, ready to roll out.
    ConfigRelease {
        app: String,
        prepared: Box<PreparedApp>,
    },
    /// An instance's answer to a live config refresh.
    Refreshed(Refreshed),
    /// A release's class data archive was trained (or could not be).
    Trained(Trained),
}

impl Event {
    /// The API request inside, if this is one (for stand-ins of the loop in tests).
    pub fn into_api(self) -> Option<ApiRequest> {
        match self {
            Event::Api(req) => Some(req),
            _ => None,
        }
    }

    /// The notice inside, if this is one (for stand-ins of the loop in tests).
    pub fn into_notice(self) -> Option<Notice> {
        match self {
            Event::Notice(n) => Some(n),
            _ => None,
        }
    }
}

impl From<ApiRequest> for Event {
    fn from(r: ApiRequest) -> Event {
        Event::Api(r)
    }
}

impl From<ShimNote> for Event {
    fn from(n: ShimNote) -> Event {
        Event::Shim(n)
    }
}

impl From<ProbeResult> for Event {
    fn from(r: ProbeResult) -> Event {
        Event::Probe(r)
    }
}

impl From<Notice> for Event {
    fn from(n: Notice) -> Event {
        Event::Notice(n)
    }
}

impl From<EtcdNote> for Event {
    fn from(n: EtcdNote) -> Event {
        Event::Etcd(n)
    }
}

impl From<ClusterNote> for Event {
    fn from(n: ClusterNote) -> Event {
        Event::Cluster(n)
    }
}

impl From<BalancerNote> for Event {
    fn from(n: BalancerNote) -> Event {
        Event::Balancer(n)
    }
}

impl From<Refreshed> for Event {
    fn from(r: Refreshed) -> Event {
        Event::Refreshed(r)
    }
}

impl From<Trained> for Event {
    fn from(t: Trained) -> Event {
        Event::Trained(t)
    }
}

impl From<ConfigPrepared> for Event {
    fn from(c: ConfigPrepared) -> Event {
        Event::ConfigRelease {
            app: c.app,
            prepared: c.prepared,
        }
    }
}
