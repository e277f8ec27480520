//! Links the `jarfleet` executable as non-PIE on Linux: its own data then needs no run-time
//! relocation, so its relocated read-only data stays shared between the daemon and every
//! instance shim instead of being copied into each one (about 140 KiB less private memory per
//! shim; see docs/BENCHMARKS.md).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
