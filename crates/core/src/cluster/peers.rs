//! Each node's probes of its peers: the data-plane tier of failure detection. It reacts in
//! about a second and may only take a peer's instances out of *this* node's balancers (always
//! safe); re-placing them is the control plane's, on lease expiry.
//!
//! Hysteresis: [`MISSES_TO_EJECT`] misses in a row take a peer out, [`ANSWERS_TO_RESTORE`]
//! answers in a row bring it back, so a peer on the edge does not flap.

/// Misses in a row before a peer's instances leave this node's balancers.
pub const MISSES_TO_EJECT: u32 = 3;
/// Answers in a row before they come back.
pub const ANSWERS_TO_RESTORE: u32 = 2;

/// A change in a peer's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Take its instances out of this node's balancers.
    Eject,
    /// Put them back.
    Restore,
}

/// One peer's probe history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerProbe {
    misses: u32,
    answers: u32,
    ejected: bool,
}

impl PeerProbe {
    /// Whether its instances are out of this node's balancers.
    pub fn ejected(&self) -> bool {
        self.ejected
    }

    /// Misses in a row so far.
    pub fn misses(&self) -> u32 {
        self.misses
    }

    /// Records one probe's outcome; returns the change it makes, if any.
    pub fn observe(&mut self, answered: bool) -> Option<Verdict> {
        if answered {
            self.misses = 0;
            self.answers = self.answers.saturating_add(1);
            if self.ejected && self.answers >= ANSWERS_TO_RESTORE {
                self.ejected = false;
                return Some(Verdict::Restore);
            }
        } else {
            self.answers = 0;
            self.misses = self.misses.saturating_add(1);
            if !self.ejected && self.misses >= MISSES_TO_EJECT {
                self.ejected = true;
                return Some(Verdict::Eject);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcomes: &str) -> Vec<Option<Verdict>> {
        let mut p = PeerProbe::default();
        outcomes.chars().map(|c| p.observe(c == '+')).collect()
    }

    #[test]
    fn three_misses_eject_and_two_answers_restore() {
        use Verdict::*;
        assert_eq!(
            run("--+--+---++"),
            vec![
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                Some(Eject),
                None,
                None
            ]
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i == 10 { Some(Restore) } else { v })
            .collect::<Vec<_>>()
        );
        assert_eq!(
            run("---+-++"),
            vec![None, None, Some(Eject), None, None, None, Some(Restore)]
        );
        assert_eq!(run("----"), vec![None, None, Some(Eject), None]);
    }
}
