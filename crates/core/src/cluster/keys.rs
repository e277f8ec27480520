//! Where cluster state lives in etcd. Every key is under `/jarfleet/<cluster>/`:
//!
//! | key | written by | lease | holds |
//! |---|---|---|---|
//! | `apps/<app>` | `apply` (compare-and-swap) | — | the app's spec |
//! | `nodes/<node>` | the node | its lease | [`NodeRecord`](super::records::NodeRecord) |
//! | `known/<node>` | the node | — | the same, kept after the node goes, so it shows as down |
//! | `admin/<node>` | an operator | — | [`AdminRecord`](super::records::AdminRecord) |
//! | `leader` | the scheduler | its lease | [`LeaderRecord`](super::records::LeaderRecord); its create revision is the fencing epoch |
//! | `alloc/<app>/<slot>` | the scheduler, fenced | — | [`AllocRecord`](super::records::AllocRecord) |
//! | `status/<node>/<app>/<slot>` | the owning node | its lease | [`StatusRecord`](super::records::StatusRecord) |
//! | `rollout/<app>` | `apply` (with the app), then the scheduler, fenced | — | [`RolloutRecord`](super::records::RolloutRecord) |
//! | `stats/<node>/<app>` | the node, during a canary or blue-green rollout | its lease | [`SetStatsRecord`](super::records::SetStatsRecord) |
//!
//! [`Keys::parse`] reads a key back and refuses anything it did not make: a key under the
//! prefix written by someone else is never taken for one of ours.

use crate::spec::{app_name, node_name};

/// The keys of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    root: String,
}

/// What a key of ours names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    App(String),
    Node(String),
    Known(String),
    Admin(String),
    Leader,
    Alloc {
        app: String,
        slot: u32,
    },
    Status {
        node: String,
        app: String,
        slot: u32,
    },
    Rollout(String),
    Stats {
        node: String,
        app: String,
    },
}

impl Keys {
    /// The keys of cluster `name` (a valid cluster name: see `[cluster] name`).
    pub fn new(name: &str) -> Keys {
        Keys {
            root: format!("/jarfleet/{name}/"),
        }
    }

    /// `/jarfleet/<cluster>/`: every key of the cluster starts with it.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn apps(&self) -> String {
        format!("{}apps/", self.root)
    }

    pub fn app(&self, app: &str) -> String {
        format!("{}apps/{app}", self.root)
    }

    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }

    pub fn node(&self, node: &str) -> String {
        format!("{}nodes/{node}", self.root)
    }

    pub fn known_nodes(&self) -> String {
        format!("{}known/", self.root)
    }

    pub fn known(&self, node: &str) -> String {
        format!("{}known/{node}", self.root)
    }

    pub fn admins(&self) -> String {
        format!("{}admin/", self.root)
    }

    pub fn admin(&self, node: &str) -> String {
        format!("{}admin/{node}", self.root)
    }

    pub fn leader(&self) -> String {
        format!("{}leader", self.root)
    }

    pub fn allocs(&self) -> String {
        format!("{}alloc/", self.root)
    }

    pub fn app_allocs(&self, app: &str) -> String {
        format!("{}alloc/{app}/", self.root)
    }

    pub fn alloc(&self, app: &str, slot: u32) -> String {
        format!("{}alloc/{app}/{slot}", self.root)
    }

    pub fn statuses(&self) -> String {
        format!("{}status/", self.root)
    }

    pub fn node_statuses(&self, node: &str) -> String {
        format!("{}status/{node}/", self.root)
    }

    pub fn status(&self, node: &str, app: &str, slot: u32) -> String {
        format!("{}status/{node}/{app}/{slot}", self.root)
    }

    pub fn rollouts(&self) -> String {
        format!("{}rollout/", self.root)
    }

    pub fn rollout(&self, app: &str) -> String {
        format!("{}rollout/{app}", self.root)
    }

    pub fn stats(&self) -> String {
        format!("{}stats/", self.root)
    }

    pub fn node_stats(&self, node: &str, app: &str) -> String {
        format!("{}stats/{node}/{app}", self.root)
    }

    /// What `key` names, or `None` for a key that is not one of ours (outside the root, an
    /// unknown kind, a name that is not valid, a slot that is not a plain number).
    pub fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(&self.root)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let app = |s: &str| app_name(s).ok().map(|()| s.to_string());
        let node = |s: &str| node_name(s).ok().map(|()| s.to_string());
        match parts.as_slice() {
            ["apps", a] => app(a).map(Key::App),
            ["nodes", n] => node(n).map(Key::Node),
            ["known", n] => node(n).map(Key::Known),
            ["admin", n] => node(n).map(Key::Admin),
            ["leader"] => Some(Key::Leader),
            ["rollout", a] => app(a).map(Key::Rollout),
            ["alloc", a, s] => Some(Key::Alloc {
                app: app(a)?,
                slot: slot(s)?,
            }),
            ["stats", n, a] => Some(Key::Stats {
                node: node(n)?,
                app: app(a)?,
            }),
            ["status", n, a, s] => Some(Key::Status {
                node: node(n)?,
                app: app(a)?,
                slot: slot(s)?,
            }),
            _ => None,
        }
    }
}

/// A slot number as written by [`Keys`]: decimal, no sign, no leading zero.
fn slot(text: &str) -> Option<u32> {
    if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_reads_back_as_what_it_names() {
        let k = Keys::new("prod");
        let cases = [
            (k.app("orders"), Key::App("orders".into())),
            (k.node("web-1"), Key::Node("web-1".into())),
            (k.known("web-1"), Key::Known("web-1".into())),
            (k.admin("web-1"), Key::Admin("web-1".into())),
            (k.leader(), Key::Leader),
            (k.rollout("orders"), Key::Rollout("orders".into())),
            (
                k.node_stats("web-1", "orders"),
                Key::Stats {
                    node: "web-1".into(),
                    app: "orders".into(),
                },
            ),
            (
                k.alloc("orders", 12),
                Key::Alloc {
                    app: "orders".into(),
                    slot: 12,
                },
            ),
            (
                k.status("web-1", "orders", 0),
                Key::Status {
                    node: "web-1".into(),
                    app: "orders".into(),
                    slot: 0,
                },
            ),
        ];
        for (key, want) in cases {
            assert_eq!(k.parse(&key), Some(want), "{key}");
        }
        assert!(k.alloc("orders", 1).starts_with(&k.app_allocs("orders")));
        assert!(k.status("n", "a", 1).starts_with(&k.node_statuses("n")));
    }

    #[test]
    fn keys_that_are_not_ours_are_refused() {
        let k = Keys::new("prod");
        for key in [
            "/jarfleet/other/apps/orders",
            "/jarfleet/prod/apps/Orders",
            "/jarfleet/prod/apps/orders/x",
            "/jarfleet/prod/alloc/orders/01",
            "/jarfleet/prod/alloc/orders/-1",
            "/jarfleet/prod/alloc/orders/+1",
            "/jarfleet/prod/alloc/orders/99999999999",
            "/jarfleet/prod/alloc/orders/",
            "/jarfleet/prod/status/web-1/orders",
            "/jarfleet/prod/nodes/",
            "/jarfleet/prod/nodes/a/b",
            "/jarfleet/prod/leader/x",
            "/jarfleet/prod/rollout/",
            "/jarfleet/prod/rollout/Orders",
            "/jarfleet/prod/rollout/orders/1",
            "/jarfleet/prod/stats/web-1",
            "/jarfleet/prod/stats/web-1/Orders",
            "/jarfleet/prod/stats/web-1/orders/1",
            "/jarfleet/prod/unknown/x",
            "/jarfleet/prod/",
        ] {
            assert_eq!(k.parse(key), None, "{key}");
        }
    }
}
