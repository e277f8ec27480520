#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

/// One scratch directory per fuzzing process, in `$JARFLEET_FUZZ_TMP` (scripts/fuzz makes one
/// on tmpfs and removes it afterwards) or the system's temp dir.
fn scratch() -> &'static PathBuf {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let base = std::env::var_os("JARFLEET_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        tempfile::Builder::new()
            .prefix("jarfleet-fuzz-bundle-")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("a scratch directory in {}: {e}", base.display()))
            .keep()
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| jarfleet_fuzz::bundle::bundle(data, scratch()));
