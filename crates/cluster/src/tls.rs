//! Mutual TLS between the nodes (`[cluster] tls`): the peer endpoint's server side, which takes
//! only clients presenting a certificate of the cluster's CA, and the client side this node's
//! probes and artifact transfers use, presenting its own certificate and checking that the
//! peer's names the node it meant to reach.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jarfleet_core::spec::ClusterTlsSpec;
use rustls::pki_types::ServerName;

use crate::pki::{NodeTls, verify_node};

/// A node's TLS, ready to serve and to call its peers.
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// The PEM files it was read from (an artifact transfer reads them again).
    pub files: ClusterTlsSpec,
    /// The same, for the node's relay (handed to the load balancer's process).
    pub relay: jarfleet_proxy::relay::RelayTls,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Reads the cluster's CA, this node's certificate and key, and checks that the
    /// certificate is the CA's and names `node` (else every peer would refuse it).
    pub fn load(files: &ClusterTlsSpec, node: &str) -> Result<PeerTls, String> {
        let tls = NodeTls::load(&files.ca, &files.cert, &files.key).map_err(|e| e.to_string())?;
        verify_node(&tls.ca, &tls.chain, node).map_err(|why| {
            format!(
                "{} is not a certificate of the cluster's CA ({}) for node {node}: {why}",
                files.cert.display(),
                files.ca.display()
            )
        })?;
        let relay = jarfleet_proxy::relay::RelayTls {
            node: node.to_string(),
            ca: tls.ca.iter().map(|c| c.to_vec()).collect(),
            chain: tls.chain.iter().map(|c| c.to_vec()).collect(),
            key: tls.key.secret_der().to_vec(),
        };
        let mutual = jarfleet_proxy::relay::mutual_tls(&tls.ca, tls.chain, tls.key.clone_key())
            .map_err(|e| {
                format!(
                    "{} / {} / {}: {e}",
                    files.ca.display(),
                    files.cert.display(),
                    files.key.display()
                )
            })?;
        Ok(PeerTls {
            server: mutual.server,
            client: mutual.client,
            files: files.clone(),
            relay,
        })
    }

    /// The name a peer's certificate must carry: its node name.
    pub fn name_of(node: &str) -> Option<ServerName<'static>> {
        ServerName::try_from(node.to_string()).ok()
    }
}

/// How often a refusal from the same address is said again.
const SAY_AGAIN: Duration = Duration::from_secs(60);

/// Which refusals were said, so that a client knocking every half second is one event a
/// minute, not a flood.
#[derive(Debug, Default)]
pub struct Refusals {
    said: Mutex<std::collections::BTreeMap<IpAddr, Instant>>,
}

impl Refusals {
    /// Whether a refusal of `from` is to be said now.
    pub fn say(&self, from: IpAddr) -> bool {
        let Ok(mut said) = self.said.lock() else {
            return true;
        };
        let now = Instant::now();
        said.retain(|_, at| now.duration_since(*at) < SAY_AGAIN);
        if said.contains_key(&from) {
            return false;
        }
        // Bounded: a scan from many addresses is said for the first 1024 of them a minute.
        if said.len() >= 1024 {
            return false;
        }
        said.insert(from, now);
        true
    }
}
