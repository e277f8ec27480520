//! Health checks: http, tcp, exec. Each returns `Ok(())` or a short reason.

use std::collections::BTreeMap;
use std::time::Duration;

use jarfleet_core::spec::HealthCheck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn check(
    check: &HealthCheck,
    port: u16,
    timeout: Duration,
    vars: &BTreeMap<&'static str, String>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(check, port, vars)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
    }
}

async fn run(
    check: &HealthCheck,
    port: u16,
    vars: &BTreeMap<&'static str, String>,
) -> Result<(), String> {
    match check {
        HealthCheck::Tcp => connect(port).await.map(|_| ()),
        HealthCheck::Http { path } => http_get(port, path).await,
        HealthCheck::Exec { argv } => exec(argv, vars).await,
    }
}

async fn connect(port: u16) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => format!("connection refused on port {port}"),
            _ => format!("connect to port {port}: {e}"),
        })?;
    let _ = stream.set_nodelay(true);
    // Close checks with a reset, as load balancers do: no FIN exchange and no TIME_WAIT socket
    // left behind for every check (hundreds a minute on a large fleet).
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(std::time::Duration::ZERO));
    Ok(stream)
}

async fn http_get(port: u16, path: &str) -> Result<(), String> {
    let status = http_call(port, "GET", path).await?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status}"))
    }
}

/// One request without a body to the instance on `port`; its status code.
pub async fn http_call(port: u16, method: &str, path: &str) -> Result<u16, String> {
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
        .map_err(|e| format!("sending request: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading response: {e}"))?;
        if n == 0 {
            return Err("connection closed before a response".into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 8192 {
            return Err("response status line too long".into());
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: {}",
                line.lines().next().unwrap_or("")
            )
        })
}

async fn exec(argv: &[String], vars: &BTreeMap<&'static str, String>) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("empty exec check".into());
    };
    let args: Vec<String> = argv[1..]
        .iter()
        .map(|a| jarfleet_core::interp::resolve_instance(a, vars))
        .collect();
    let status = tokio::process::Command::new(program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} exited with {status}"))
    }
}
