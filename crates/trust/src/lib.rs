//! Signatures and trust (work in progress).
