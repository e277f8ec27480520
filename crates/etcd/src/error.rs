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
}

impl Error {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unavailable { .. } => true,
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
