//! What `cluster nodes` says of a node.

use serde::{Deserialize, Serialize};

use super::records::AdminRecord;

/// A node's state, from the most to the least severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Its lease expired: its instances are placed elsewhere.
    Down,
    /// Up, but the node asking cannot reach it (its probes fail): its instances are out of
    /// that node's balancers while the lease runs.
    Suspect,
    /// An operator is moving its instances elsewhere.
    Draining,
    /// Up; an operator said nothing new goes there.
    Ineligible,
    Ready,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Down => "down",
            NodeState::Suspect => "suspect",
            NodeState::Draining => "draining",
            NodeState::Ineligible => "ineligible",
            NodeState::Ready => "ready",
        })
    }
}

/// The state of a node that is `up` (its registration is there), as the asking node's probes
/// see it (`unreachable`), with what an operator said of it.
pub fn state(up: bool, unreachable: bool, admin: &AdminRecord) -> NodeState {
    if !up {
        NodeState::Down
    } else if unreachable {
        NodeState::Suspect
    } else if admin.draining {
        NodeState::Draining
    } else if admin.ineligible {
        NodeState::Ineligible
    } else {
        NodeState::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_severe_state_wins() {
        let drain = AdminRecord {
            ineligible: true,
            draining: true,
            drain_deadline_ms: None,
        };
        assert_eq!(state(false, true, &drain), NodeState::Down);
        assert_eq!(state(true, true, &drain), NodeState::Suspect);
        assert_eq!(state(true, false, &drain), NodeState::Draining);
        let inel = AdminRecord {
            ineligible: true,
            ..AdminRecord::default()
        };
        assert_eq!(state(true, false, &inel), NodeState::Ineligible);
        assert_eq!(
            state(true, false, &AdminRecord::default()),
            NodeState::Ready
        );
    }
}
