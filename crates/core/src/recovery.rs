//! What the daemon does with its store at start, given what it found and which shims still run:
//! a store that lost the fleet's records is never taken for "no fleet" while JVMs run.

/// What the daemon found at the store's path before opening it for writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFound {
    /// No file.
    Missing,
    /// A 0-byte file.
    Empty,
    /// A database without jarfleet's schema (e.g. its write-ahead log was deleted).
    NoSchema,
    /// jarfleet's schema, no app.
    NoApps,
    /// jarfleet's schema with this many apps.
    Fleet { apps: usize },
    /// Not a database SQLite can read, or one that fails its integrity check.
    Unreadable,
}

impl StoreFound {
    /// The store holds no record of a fleet (it may never have had one).
    pub fn holds_no_fleet(self) -> bool {
        matches!(
            self,
            StoreFound::Missing | StoreFound::Empty | StoreFound::NoSchema | StoreFound::NoApps
        )
    }
}

/// The daemon's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreVerdict {
    /// Open it as it is (and carry on with what it holds).
    Open,
    /// Move the file aside (kept for inspection) and start with a new, empty store; the running
    /// shims are left running as strays.
    MoveAsideAndStartEmpty,
    /// Do not start: the records of running JVMs are lost (or unreadable). Nothing is stopped.
    Refuse,
}

/// `live_shims`: shims in `run/` that answer (or could not be checked: counted as running).
/// `new_store`: the operator asked to start with a new store (`--new-store`).
pub fn store_verdict(found: StoreFound, live_shims: usize, new_store: bool) -> StoreVerdict {
    match found {
        StoreFound::Fleet { .. } => StoreVerdict::Open,
        StoreFound::Unreadable if new_store => StoreVerdict::MoveAsideAndStartEmpty,
        StoreFound::Unreadable => StoreVerdict::Refuse,
        StoreFound::Missing => match (live_shims, new_store) {
            (0, _) | (_, true) => StoreVerdict::Open,
            _ => StoreVerdict::Refuse,
        },
        StoreFound::Empty | StoreFound::NoSchema | StoreFound::NoApps => {
            match (live_shims, new_store) {
                (0, _) => StoreVerdict::Open,
                (_, true) => StoreVerdict::MoveAsideAndStartEmpty,
                _ => StoreVerdict::Refuse,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreFound::*;
    use super::StoreVerdict::*;
    use super::*;

    #[test]
    fn a_store_without_the_fleet_is_refused_while_shims_run() {
        let table = [
            // found, live shims, --new-store, verdict
            (Missing, 0, false, Open),
            (Missing, 3, false, Refuse),
            (Missing, 3, true, Open),
            (Empty, 0, false, Open),
            (Empty, 1, false, Refuse),
            (Empty, 1, true, MoveAsideAndStartEmpty),
            (NoSchema, 0, false, Open),
            (NoSchema, 2, false, Refuse),
            (NoSchema, 2, true, MoveAsideAndStartEmpty),
            (NoApps, 0, false, Open),
            (NoApps, 2, false, Refuse),
            (NoApps, 2, true, MoveAsideAndStartEmpty),
            (Fleet { apps: 1 }, 0, false, Open),
            (Fleet { apps: 1 }, 5, false, Open),
            (Fleet { apps: 1 }, 5, true, Open),
            (Unreadable, 0, false, Refuse),
            (Unreadable, 4, false, Refuse),
            (Unreadable, 0, true, MoveAsideAndStartEmpty),
            (Unreadable, 4, true, MoveAsideAndStartEmpty),
        ];
        for (found, live, new_store, want) in table {
            assert_eq!(
                store_verdict(found, live, new_store),
                want,
                "{found:?} with {live} live shim(s), new_store={new_store}"
            );
        }
    }

    #[test]
    fn only_a_store_with_apps_holds_a_fleet() {
        for found in [Missing, Empty, NoSchema, NoApps] {
            assert!(found.holds_no_fleet(), "{found:?}");
        }
        for found in [Fleet { apps: 1 }, Unreadable] {
            assert!(!found.holds_no_fleet(), "{found:?}");
        }
    }
}
