//! The process-wide connection budget: how many client connections every listener together may
//! hold, so that the data plane can never take the file descriptors the control plane needs
//! (health checks, the API, the store, log files).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Until [`set_connection_budget`] is called: as good as no global cap (listeners still have
/// their own `max_connections`).
static BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets how many client connections all listeners of this process may hold together. The
/// daemon derives it from its open-file limit minus a reserve for the control plane: each
/// client connection may also hold a connection to an instance, so it counts twice.
pub fn set_connection_budget(max_client_connections: usize) {
    BUDGET.store(max_client_connections.max(1), Ordering::SeqCst);
}

/// The budget in force (`usize::MAX`: none set).
pub fn connection_budget() -> usize {
    BUDGET.load(Ordering::SeqCst)
}
