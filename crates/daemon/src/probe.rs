//! Health checks: http, tcp, exec. Each ends in an [`Outcome`]: a pass, a failure with a short
//! reason, or — when the daemon could not even run the check because it is short of something
//! itself (file descriptors, memory, local ports, processes) — inconclusive, which is never held
//! against the instance (`jarfleet_core::instance::Input::ProbeInconclusive`).

use std::collections::BTreeMap;
use std::time::Duration;

use jarfleet_core::spec::HealthCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use jarfleet_shim::fdlimit::{self, Op, Shortage};
use jarfleet_shim::protocol::RunAs;

/// A health check's finding for one instance, as the prober hands it to the control loop.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub app: String,
    pub slot: u32,
    pub generation: u64,
    pub outcome: Outcome,
    /// How long the check took.
    pub took: std::time::Duration,
}

/// What one health check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// The check could not be run: the daemon's own shortage, not the instance's answer.
    Inconclusive {
        shortage: Shortage,
        error: String,
    },
}

/// Why a check did not pass: a reason, and whether it was the daemon's own shortage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    pub message: String,
    pub shortage: Option<Shortage>,
}

impl CheckError {
    fn instance(message: impl Into<String>) -> CheckError {
        CheckError {
            message: message.into(),
            shortage: None,
        }
    }

    fn io(message: String, e: &std::io::Error, op: Op) -> CheckError {
        CheckError {
            message,
            shortage: fdlimit::of_io(e, op),
        }
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A check's result as an outcome. Pure.
pub fn outcome(result: Result<(), CheckError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Pass,
        Err(CheckError {
            message,
            shortage: Some(shortage),
        }) => Outcome::Inconclusive {
            shortage,
            error: message,
        },
        Err(CheckError { message, .. }) => Outcome::Fail(message),
    }
}

/// `run_as`: the app's user, as which an `exec` check runs (like the app's JVMs).
pub async fn check(
    check: &HealthCheck,
    port: u16,
    timeout: Duration,
    vars: &BTreeMap<&'static str, String>,
    run_as: Option<RunAs>,
) -> Outcome {
    match tokio::time::timeout(timeout, run(check, port, vars, run_as)).await {
        Ok(result) => outcome(result),
        Err(_) => Outcome::Fail(format!("timed out after {} ms", timeout.as_millis())),
    }
}

async fn run(
    check: &HealthCheck,
    port: u16,
    vars: &BTreeMap<&'static str, String>,
    run_as: Option<RunAs>,
) -> Result<(), CheckError> {
    match check {
        HealthCheck::Tcp => {
            let stream = open(port).await?;
            // The check has passed; the close runs on its own, so a slow one neither fails nor
            // delays it.
            tokio::spawn(close_gracefully(stream, TCP_CLOSE_WAIT));
            Ok(())
        }
        HealthCheck::Http { path } => http_get(port, path).await,
        HealthCheck::Exec { argv } => exec(argv, vars, run_as).await,
    }
}

/// How a failed connect to an instance reads. Pure.
fn connect_error(port: u16, e: &std::io::Error) -> CheckError {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            CheckError::instance(format!("connection refused on port {port}"))
        }
        _ => CheckError::io(format!("connect to port {port}: {e}"), e, Op::Connect),
    }
}

async fn open(port: u16) -> Result<TcpStream, CheckError> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| connect_error(port, &e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A connection for an HTTP check. Closed with a reset, as load balancers do: no FIN exchange
/// and no TIME_WAIT socket left behind for every check (hundreds a minute on a large fleet);
/// the response has been read by then, so the server has nothing left to say.
async fn connect(port: u16) -> Result<TcpStream, CheckError> {
    let stream = open(port).await?;
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(std::time::Duration::ZERO));
    Ok(stream)
}

/// How long a passed TCP check waits for the instance to close its side after ours.
const TCP_CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The most a TCP check reads (and drops) from the instance while it waits for that close.
const TCP_CLOSE_READ_MAX: usize = 64 * 1024;

/// Closes a TCP check's connection as a well-behaved client does: our FIN first, then what the
/// instance sends (a greeting) is read and dropped until its own FIN, for at most `wait`. A
/// reset instead (`SO_LINGER` 0, or unread bytes at close) made servers such as ZooKeeper log an
/// exception with a stack trace for every check.
async fn close_gracefully(mut stream: TcpStream, wait: Duration) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    let mut read = 0;
    let _ = tokio::time::timeout(wait, async {
        while read < TCP_CLOSE_READ_MAX {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

async fn http_get(port: u16, path: &str) -> Result<(), CheckError> {
    let status = http_call(port, "GET", path).await?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(CheckError::instance(format!(
            "GET {path} answered {status}"
        )))
    }
}

/// One request without a body to the instance on `port`; its status code.
pub async fn http_call(port: u16, method: &str, path: &str) -> Result<u16, CheckError> {
    let mut stream = connect(port).await?;
    let length = if method == "GET" || method == "HEAD" {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: jarfleet\r\n{length}Connection: close\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| CheckError::io(format!("sending request: {e}"), &e, Op::File))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| CheckError::io(format!("reading response: {e}"), &e, Op::File))?;
        if n == 0 {
            return Err(CheckError::instance("connection closed before a response"));
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            return Err(CheckError::instance("response status line too long"));
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            CheckError::instance(format!(
                "not an HTTP response: {}",
                line.lines().next().unwrap_or("")
            ))
        })
}

/// Runs the check's command with an argv (never a shell), as the app's user when it has one and
/// with `PR_SET_NO_NEW_PRIVS` (`jarfleet_shim::spawn::child_command`).
async fn exec(
    argv: &[String],
    vars: &BTreeMap<&'static str, String>,
    run_as: Option<RunAs>,
) -> Result<(), CheckError> {
    let Some(program) = argv.first() else {
        return Err(CheckError::instance("empty exec check"));
    };
    let args: Vec<String> = argv[1..]
        .iter()
        .map(|a| jarfleet_core::interp::resolve_instance(a, vars))
        .collect();
    let mut cmd =
        tokio::process::Command::from(jarfleet_shim::spawn::child_command(program, run_as));
    let status = cmd
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| CheckError::io(format!("cannot run {program}: {e}"), &e, Op::Spawn))?;
    if status.success() {
        Ok(())
    } else {
        Err(CheckError::instance(format!(
            "{program} exited with {status}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_the_daemon_could_not_run_is_inconclusive() {
        let e = |errno| std::io::Error::from_raw_os_error(errno);
        // (errno of the connect, outcome)
        let table = [
            (
                libc::ECONNREFUSED,
                Outcome::Fail("connection refused on port 9100".into()),
            ),
            (
                libc::ETIMEDOUT,
                Outcome::Fail(format!("connect to port 9100: {}", e(libc::ETIMEDOUT))),
            ),
            (
                libc::ECONNRESET,
                Outcome::Fail(format!("connect to port 9100: {}", e(libc::ECONNRESET))),
            ),
            (
                libc::EMFILE,
                Outcome::Inconclusive {
                    shortage: Shortage::Descriptors,
                    error: format!("connect to port 9100: {}", e(libc::EMFILE)),
                },
            ),
            (
                libc::ENFILE,
                Outcome::Inconclusive {
                    shortage: Shortage::SystemFiles,
                    error: format!("connect to port 9100: {}", e(libc::ENFILE)),
                },
            ),
            (
                libc::ENOBUFS,
                Outcome::Inconclusive {
                    shortage: Shortage::Memory,
                    error: format!("connect to port 9100: {}", e(libc::ENOBUFS)),
                },
            ),
            (
                libc::EADDRNOTAVAIL,
                Outcome::Inconclusive {
                    shortage: Shortage::LocalPorts,
                    error: format!("connect to port 9100: {}", e(libc::EADDRNOTAVAIL)),
                },
            ),
        ];
        for (errno, want) in table {
            assert_eq!(
                outcome(Err(connect_error(9100, &e(errno)))),
                want,
                "errno {errno}"
            );
        }
        assert_eq!(outcome(Ok(())), Outcome::Pass);
        assert_eq!(
            outcome(Err(CheckError::instance("GET /health answered 503"))),
            Outcome::Fail("GET /health answered 503".into())
        );
    }

    /// A raw server that accepts one connection, writes `greeting`, and reads until the end:
    /// what it saw there, a clean end of stream (a FIN) or an error (a reset).
    fn one_connection_server(
        greeting: &'static [u8],
    ) -> (u16, std::thread::JoinHandle<Result<&'static str, String>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a test port");
        let port = listener.local_addr().expect("its address").port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .map_err(|e| e.to_string())?;
            s.write_all(greeting).map_err(|e| format!("write: {e}"))?;
            let mut buf = [0u8; 64];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return Ok("end of stream"),
                    Ok(_) => {}
                    Err(e) => return Err(format!("{:?}: {e}", e.kind())),
                }
            }
        });
        (port, server)
    }

    #[tokio::test]
    async fn a_tcp_check_closes_with_a_fin_not_a_reset() {
        // A silent server (ZooKeeper), and one that greets first (its bytes are still unread
        // when the check is done).
        for greeting in [&b""[..], &b"220 hello\r\n"[..]] {
            let (port, server) = one_connection_server(greeting);
            let got = check(
                &HealthCheck::Tcp,
                port,
                Duration::from_secs(10),
                &BTreeMap::new(),
                None,
            )
            .await;
            assert_eq!(got, Outcome::Pass);
            let seen = tokio::task::spawn_blocking(move || server.join())
                .await
                .expect("joined")
                .expect("the server thread ran");
            assert_eq!(
                seen,
                Ok("end of stream"),
                "greeting {:?}",
                String::from_utf8_lossy(greeting)
            );
        }
    }
}
