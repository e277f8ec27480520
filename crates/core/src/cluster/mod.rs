//! Cluster mode's pure decisions: one fleet across several hosts, with etcd as the only shared
//! state.
//!
//! - [`keys`]: where everything lives in etcd (`/jarfleet/<cluster>/…`), and keys read back
//!   into what they name, refusing anything else.
//! - [`records`]: the values stored there (JSON): a node's registration, an operator's word on
//!   a node, the leader, a slot's placement, an instance's observed state.
//! - [`placement`]: which node an instance goes to (filter, score, rendezvous tie-break).
//! - [`schedule`]: the scheduler's reconciliation: desired apps, live nodes and current
//!   placements in, compare-and-swap writes out.
//! - [`rollout`]: a new release across the cluster, one node after the other, rolled back
//!   everywhere when one node's deployment of it fails.
//! - [`assign`]: a node's side: which slots it runs, and which copies it keeps until their
//!   replacement elsewhere is ready.
//! - [`peers`]: each node's probes of its peers, with hysteresis (the data-plane tier of
//!   failure detection: it may only take instances out of this node's balancers).
//! - [`nodes`]: what `cluster nodes` says of each node.
//!
//! Desired state (apps, placements, an operator's word) is stored without a lease and survives
//! anything; observed state (a node's registration, its instances' state, the leader) rides
//! the node's lease and vanishes with the node.

pub mod assign;
pub mod keys;
pub mod nodes;
pub mod peers;
pub mod placement;
pub mod records;
pub mod rollout;
pub mod schedule;
