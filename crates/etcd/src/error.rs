use std::fmt;

/// Everything the etcd client can fail with. Every variant names the endpoint(s) involved and
/// the operation (`op`, like `range "app/"`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no etcd endpoints given; name at least one, like http://127.0.0.1:2379")]
    NoEndpoints,

    #[error("etcd endpoint {endpoint:?} is not usable: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },

    /// No endpoint answered (connect refused, timed out, connection lost). Worth retrying.
    #[error("etcd {op} failed: {}", Attempts(attempts))]
    Unavailable { op: String, attempts: Vec<Attempt> },

    /// etcd answered with an error status (gRPC `code`, see grpc's `codes.proto`).
    #[error("etcd {endpoint} refused {op}: {message} (gRPC code {code})")]
    Rejected {
        endpoint: String,
        op: String,
        code: i32,
        message: String,
    },

    /// etcd answered 200 with something this client cannot read.
    #[error("etcd {endpoint} answered {op} with something unreadable: {reason}")]
    BadResponse {
        endpoint: String,
        op: String,
        reason: String,
    },

    /// A key or value under the prefix that the config center cannot hold (not UTF-8).
    #[error("etcd {endpoint}, {op}: key {key:?}: {problem}")]
    BadEntry {
        endpoint: String,
        op: String,
        key: String,
        problem: String,
    },

    /// A watch's start revision is older than the history etcd keeps (it was compacted up to
    /// `compact_revision`): the changes in between are lost. Read the prefix again
    /// ([`Client::range_prefix`](crate::Client::range_prefix)) and watch from its revision + 1.
    #[error(
        "etcd {endpoint}, {op}: history up to revision {compact_revision} was compacted; \
         read the prefix again and watch from there"
    )]
    Compacted {
        endpoint: String,
        op: String,
        compact_revision: i64,
    },

    /// A watch stream ended: the connection broke, etcd ended or canceled it (a member that
    /// lost its leader cuts its watches), or it sent something unreadable. Watch again from
    /// the last revision delivered + 1, from another endpoint if need be.
    #[error("etcd {endpoint}, {op}: the watch ended: {reason}")]
    WatchEnded {
        endpoint: String,
        op: String,
        reason: String,
    },
}

impl Error {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::WatchEnded { .. } => true,
            // UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (e.g. "too many requests").
            Error::Rejected { code, .. } => matches!(code, 4 | 8 | 14),
            _ => false,
        }
    }
}

/// One endpoint's failure inside [`Error::Unavailable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub endpoint: String,
    pub reason: String,
}

struct Attempts<'a>(&'a [Attempt]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", a.endpoint, a.reason)?;
        }
        Ok(())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
