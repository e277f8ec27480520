//! Integration tests of jarfleet-bundle: one binary, a shared `helper`.

mod embed;
mod helper;
mod refusals;
mod render;
mod roundtrip;
