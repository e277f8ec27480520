//! Release bundles (work in progress).
