//! What can go wrong building, changing or tearing down a lab, each saying what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the network lab needs root (it creates network namespaces, veth pairs and a bridge); \
         run the tests as root"
    )]
    NeedsRoot,
    #[error("the network lab needs `{tool}` on PATH: apt-get install -y {package}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("a lab has at most {max} hosts, not {asked}")]
    TooManyHosts { asked: usize, max: usize },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("all {0} lab indexes are taken (lock files in {1}); are that many labs alive at once?")]
    NoFreeIndex(u16, PathBuf),
    #[error(
        "processes {pids:?} were still in network namespace {netns} after {waited:?} of SIGKILL"
    )]
    StillRunning {
        netns: String,
        pids: Vec<i32>,
        waited: std::time::Duration,
    },
    #[error("tearing down lab {index} left problems:\n{}", problems.join("\n"))]
    Teardown { index: u16, problems: Vec<String> },
}
