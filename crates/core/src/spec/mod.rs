//! The fleet spec: TOML text → validated, typed [`FleetSpec`].
//!
//! Pipeline: parse TOML keeping spans → walk every table collecting *all* errors (unknown keys,
//! wrong types, bad values, failed interpolation) → typed model in which invalid states cannot be
//! represented. `jarfleet validate`, `up` and `apply` all go through [`load`].

mod model;
mod parse;

pub use model::*;
pub use parse::{load, SpecError, SpecErrors};
