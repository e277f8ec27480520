//! Java runtime support for jarfleet: find installed JDKs, read what a jar needs, pick the JDK.
//!
//! * [`discover`] / [`discover_in`]: JDKs from `JAVA_HOME`, `java` on `PATH`, `/usr/lib/jvm/*`,
//!   macOS `JavaVirtualMachines`, SDKMAN! and configured homes (e.g. a bundled JRE), each
//!   identified by its `release` file (never by running `java -version`, which is slow).
//! * [`inspect_jar`]: manifest attributes and the newest class-file version in a jar, hence
//!   the minimum Java feature version it needs.
//! * [`select`]: the best installed JDK for an app's `java.version` requirement and its jar.
//! * [`boot`]: Spring Boot executable jars: [`boot::detect`] and [`boot::extract_layout`], the
//!   extracted layout (one `app.jar` plus plain library jars) that starts fast and can be archived.
//! * [`cds`]: per-release class data sharing archives (dynamic AppCDS before JDK 25, the AOT
//!   cache from 25 on): [`cds::train`] makes one, [`cds::run_flags`] uses it.

pub mod boot;
pub mod cds;

mod discover;
mod error;
mod jar;
mod select;
#[cfg(test)]
mod testutil;

pub use discover::{Jdk, Source, Sources, discover, discover_in, jdk_at, thread_dump_tool};
pub use error::{JavaError, NoMatch, TrainFailure};
pub use jar::{JarInfo, inspect_jar};
pub use jarfleet_core::javaver::{JavaVersion, VersionReq, parse_java_version};
pub use select::select;
