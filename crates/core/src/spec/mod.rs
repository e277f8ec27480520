//! The fleet spec: TOML text → validated, typed [`FleetSpec`].
//!
//! Pipeline: parse TOML keeping spans → walk every table collecting *all* errors (unknown keys,
//! wrong types, bad values, failed interpolation) → typed model in which invalid states cannot be
//! represented. `jarfleet validate`, `up` and `apply` all go through [`load`].
//! The file format is documented in `docs/spec.md`.

mod check;
mod clash;
mod error;
mod model;
mod parse;
mod parse_cluster;
mod reader;

pub use check::{app_name, host_port};
pub use error::{SpecError, SpecErrors};
pub use model::*;
pub use parse::{DEFAULT_HEALTH_PATH, DEFAULT_STATE_DIR, TABLES, load, load_bytes};
pub use parse_cluster::node_name;
