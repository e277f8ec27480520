//! Errors of this crate. Every variant names the path it is about.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::discover::Jdk;

#[derive(Debug, thiserror::Error)]
pub enum JavaError {
    #[error("jar not found: {}", path.display())]
    JarNotFound { path: PathBuf },

    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{} is not a jar (not a readable zip archive): {reason}", path.display())]
    NotAJar { path: PathBuf, reason: String },

    #[error("cannot read entry {entry:?} in jar {}: {reason}", path.display())]
    BadEntry {
        path: PathBuf,
        entry: String,
        reason: String,
    },

    #[error(
        "jar {} contains no Java classes (no .class files outside META-INF/versions/), \
         so there is nothing to run",
        path.display()
    )]
    NoClasses { path: PathBuf },

    #[error(
        "{} is not a Java installation: {} is missing or not executable",
        home.display(),
        java.display()
    )]
    NotAJavaHome { home: PathBuf, java: PathBuf },

    #[error("{0}")]
    NoMatchingJdk(Box<NoMatch>),

    #[error(
        "{} is not a Spring Boot executable jar (no Start-Class with BOOT-INF content), \
         so there is no layout to extract: run it as it is",
        path.display()
    )]
    NotBootJar { path: PathBuf },

    #[error("refusing entry {entry:?} of jar {}: {reason}", path.display())]
    UnsafeEntry {
        path: PathBuf,
        entry: String,
        reason: String,
    },

    #[error(
        "cannot extract into {}: it already exists (layouts are made once; remove it to \
         extract again)",
        dest.display()
    )]
    LayoutExists { dest: PathBuf },

    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("class path cannot be archived (CDS needs every entry to be a jar file): {reason}")]
    CdsUnsafeClasspath { reason: String },

    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "training run of {} (pid {pid}) failed: {failure}{}",
        java.display(),
        if output.is_empty() { String::new() } else { format!("\n--- last lines of its output ---\n{output}") }
    )]
    Train {
        java: PathBuf,
        pid: u32,
        failure: TrainFailure,
        /// The last lines of the JVM's stdout and stderr.
        output: String,
    },
}

/// How a training run ([`crate::cds::train`]) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrainFailure {
    #[error("it exited ({status}) before it was ready")]
    ExitedBeforeReady { status: String },

    #[error(
        "it was not ready within {waited:?}; its process group was killed (raise the start \
         timeout or check the readiness probe)"
    )]
    NotReady { waited: Duration },

    #[error(
        "it did not exit within {waited:?} of SIGTERM; its process group was killed (the \
         archive is written at exit: raise the stop timeout)"
    )]
    StopTimeout { waited: Duration },

    #[error("it exited ({status}) after SIGTERM instead of 0 or 143; the archive is not trusted")]
    BadExit { status: String },

    #[error("it wrote no usable archive: {reason}")]
    NoArchive { reason: String },

    #[error("the JVM does not accept the archive it wrote: {reason}")]
    Rejected { reason: String },

    #[error("{action}: {message}")]
    Io { action: String, message: String },
}

/// Why [`crate::select`] found no JDK: the inputs, and every JDK that was considered.
/// Its `Display` is the full user-facing explanation, including how to fix it.
#[derive(Debug, Clone)]
pub struct NoMatch {
    /// The app's `java.version` requirement, if any.
    pub required: Option<String>,
    /// Minimum Java feature version the jar needs (from its class files).
    pub min_feature: u32,
    /// True when the requirement excludes every Java version the jar can run on.
    pub conflict: bool,
    /// A feature version worth installing (an LTS when one fits), if any fits.
    pub suggest: Option<u32>,
    /// Every JDK that was found, in discovery order.
    pub found: Vec<Jdk>,
}

impl fmt::Display for NoMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needs = format!("Java {} or newer", self.min_feature);
        match (&self.required, self.conflict) {
            (Some(req), true) => write!(
                f,
                "no Java can run this app: java.version = {req:?} excludes every Java version \
                 the jar can run on (its classes need {needs})"
            )?,
            (Some(req), false) => write!(
                f,
                "no installed Java matches: java.version = {req:?} is required and the jar needs \
                 {needs}"
            )?,
            (None, _) => write!(f, "no installed Java can run the jar: it needs {needs}")?,
        }
        if self.found.is_empty() {
            writeln!(f, "\nno Java installation was found")?;
        } else {
            writeln!(f, "\nfound {} Java installation(s):", self.found.len())?;
            for jdk in &self.found {
                writeln!(f, "  - {jdk}")?;
            }
        }
        if self.conflict {
            write!(
                f,
                "fix: relax java.version to allow Java {} or newer, or rebuild the jar for an \
                 older Java (javac --release N)",
                self.min_feature
            )
        } else if let Some(n) = self.suggest {
            write!(
                f,
                "fix: install a JDK {n}, e.g. `apt-get install openjdk-{n}-jdk-headless`, \
                 or set java.home to the directory of an installed JDK {n}"
            )
        } else {
            write!(f, "fix: set java.home to the directory of a matching JDK")
        }
    }
}
