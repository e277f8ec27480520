//! Following an instance's logs on another node. The peer endpoint serves
//! `GET /v1/cluster/logs?app=A&slot=N&lines=K&follow=1` as NDJSON lines
//! (`{"app","slot","stream","line"}`), only with `[cluster] tls`: the caller then proved with
//! its certificate that it is a node of the cluster (logs are the app's data; without TLS the
//! endpoint is open to whoever reaches it). [`follow`] asks a peer for them and checks every
//! line it gets: a line that is not one of the instance's, or longer than a line can be, ends
//! the stream.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use crate::artifacts::{Body, full};

/// The endpoint's path for logs.
pub const LOGS_PATH: &str = "/v1/cluster/logs";
/// At most this many past lines per stream are asked for.
pub const MAX_LINES: usize = 10_000;
/// A line from a peer longer than this ends the stream (the node's own logs cut lines far
/// shorter).
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Log streams the endpoint serves at once (its probes and transfers are never starved).
pub const MAX_STREAMS: usize = 16;
/// A followed stream is served at most this long; the caller asks again after.
pub const STREAM_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// Which instance's logs, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAsk {
    pub app: String,
    pub slot: u32,
    /// Past lines of each stream first.
    pub lines: usize,
    /// Then every new line, until the caller goes.
    pub follow: bool,
}

impl LogAsk {
    pub fn query(&self) -> String {
        format!(
            "app={}&slot={}&lines={}&follow={}",
            self.app,
            self.slot,
            self.lines.min(MAX_LINES),
            u8::from(self.follow)
        )
    }

    /// A request's query, read strictly: the four keys once each, nothing else.
    pub fn parse(query: Option<&str>) -> Result<LogAsk, String> {
        let (mut app, mut slot, mut lines, mut follow) = (None, None, None, None);
        for pair in query.unwrap_or_default().split('&') {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let once = |seen: bool| {
                if seen {
                    Err(format!("{k} given twice"))
                } else {
                    Ok(())
                }
            };
            let number = |v: &str| -> Result<u64, String> {
                if v.is_empty()
                    || v.len() > 10
                    || !v.bytes().all(|b| b.is_ascii_digit())
                    || (v.len() > 1 && v.starts_with('0'))
                {
                    return Err(format!("{k}={v:?} is not a plain number"));
                }
                v.parse().map_err(|_| format!("{k}={v:?} is not a number"))
            };
            match k {
                "app" => {
                    once(app.is_some())?;
                    jarfleet_core::spec::app_name(v)?;
                    app = Some(v.to_string());
                }
                "slot" => {
                    once(slot.is_some())?;
                    slot = Some(
                        u32::try_from(number(v)?).map_err(|_| format!("slot {v} is too large"))?,
                    );
                }
                "lines" => {
                    once(lines.is_some())?;
                    let n = number(v)?;
                    if n > MAX_LINES as u64 {
                        return Err(format!("lines={n}: at most {MAX_LINES}"));
                    }
                    lines = Some(n as usize);
                }
                "follow" => {
                    once(follow.is_some())?;
                    follow = Some(match v {
                        "0" => false,
                        "1" => true,
                        _ => return Err(format!("follow={v:?}: 0 or 1")),
                    });
                }
                other => return Err(format!("unknown key {other:?}")),
            }
        }
        Ok(LogAsk {
            app: app.ok_or("no app")?,
            slot: slot.ok_or("no slot")?,
            lines: lines.unwrap_or(0),
            follow: follow.unwrap_or(false),
        })
    }
}

/// One line of an instance's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub app: String,
    pub slot: u32,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

/// What gives the endpoint an instance's log lines (the daemon's log files); the stream ends
/// when the receiver is dropped.
pub type LogSource = Arc<dyn Fn(LogAsk) -> mpsc::Receiver<LogLine> + Send + Sync>;

/// The endpoint's answer to a logs request.
pub(crate) fn answer(
    query: Option<&str>,
    source: Option<&LogSource>,
    tls: bool,
    streams: &Arc<Semaphore>,
) -> Response<Body> {
    let reply = |status: StatusCode, text: String| {
        let mut r = Response::new(full(text));
        *r.status_mut() = status;
        r
    };
    if !tls {
        return reply(
            StatusCode::FORBIDDEN,
            "this node serves its instances' logs to the cluster's nodes only with `[cluster] tls`"
                .into(),
        );
    }
    let Some(source) = source else {
        return reply(StatusCode::NOT_FOUND, "no logs here".into());
    };
    let ask = match LogAsk::parse(query) {
        Ok(a) => a,
        Err(why) => return reply(StatusCode::BAD_REQUEST, why),
    };
    let Ok(permit) = streams.clone().try_acquire_owned() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this node serves {MAX_STREAMS} log streams at once already"),
        );
    };
    let lines = source(ask);
    let stream = futures_util::stream::unfold((lines, permit), |(mut lines, permit)| async {
        let line = lines.recv().await?;
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Some((
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(bytes))),
            (lines, permit),
        ))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Asks `node` (at `addr`:`port`, over TLS: its certificate must name it) for an instance's
/// logs. Every line that arrives is checked to be one of that instance's; the receiver ends
/// when the peer ends the stream, sends something else, or the connection breaks.
pub async fn follow(
    addr: &str,
    port: u16,
    node: &str,
    tls: &Arc<rustls::ClientConfig>,
    ask: &LogAsk,
    limit: Duration,
) -> Result<mpsc::Receiver<LogLine>, String> {
    let connect = async {
        let stream = TcpStream::connect((addr.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("connecting to node {node} at {addr}:{port}: {e}"))?;
        let name = crate::tls::PeerTls::name_of(node)
            .ok_or_else(|| format!("{node:?} cannot be named in a certificate"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS with node {node}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("node {node}: {e}"))?;
        tokio::spawn(conn);
        let req = Request::get(format!("{LOGS_PATH}?{}", ask.query()))
            .header(hyper::header::HOST, format!("{addr}:{port}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("node {node}: {e}"))?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = Limited::new(resp.into_body(), 4096)
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
                .unwrap_or_default();
            return Err(format!("node {node} answered {status}: {body}"));
        }
        Ok(resp.into_body())
    };
    let body = tokio::time::timeout(limit, connect)
        .await
        .map_err(|_| format!("node {node} did not answer within {limit:?}"))??;
    let (tx, rx) = mpsc::channel(256);
    let want = ask.clone();
    tokio::spawn(async move {
        if let Err(why) = forward(body, &want, &tx).await {
            tracing::debug!("logs of {}/{} from a peer: {why}", want.app, want.slot);
        }
    });
    Ok(rx)
}

/// Splits the peer's body into lines, checks each, and sends it on.
async fn forward(
    mut body: Incoming,
    want: &LogAsk,
    tx: &mpsc::Sender<LogLine>,
) -> Result<(), String> {
    let mut pending = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let raw = pending.split_to(end + 1);
            let line = checked(&raw[..end], want)?;
            if tx.send(line).await.is_err() {
                return Ok(());
            }
        }
        if pending.len() > MAX_LINE_BYTES {
            return Err(format!("a line longer than {MAX_LINE_BYTES} bytes"));
        }
    }
    if pending.is_empty() {
        Ok(())
    } else {
        Err("the stream ended inside a line".into())
    }
}

/// One line from a peer, if it is one of the instance's.
fn checked(raw: &[u8], want: &LogAsk) -> Result<LogLine, String> {
    let line: LogLine =
        serde_json::from_slice(raw).map_err(|e| format!("a line that does not read: {e}"))?;
    if line.app != want.app || line.slot != want.slot {
        return Err(format!(
            "a line of {}/{} in the logs of {}/{}",
            line.app, line.slot, want.app, want.slot
        ));
    }
    if line.stream != "stdout" && line.stream != "stderr" {
        return Err(format!("a line of stream {:?}", line.stream));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logs_query_is_read_strictly() {
        let ask = LogAsk {
            app: "web".into(),
            slot: 3,
            lines: 50,
            follow: true,
        };
        assert_eq!(LogAsk::parse(Some(&ask.query())), Ok(ask));
        for bad in [
            None,
            Some(""),
            Some("app=web"),
            Some("app=web&slot=1&slot=2"),
            Some("app=Web&slot=1"),
            Some("app=../x&slot=1"),
            Some("app=web&slot=01"),
            Some("app=web&slot=-1"),
            Some("app=web&slot=99999999999"),
            Some("app=web&slot=1&lines=10001"),
            Some("app=web&slot=1&follow=yes"),
            Some("app=web&slot=1&path=/etc/passwd"),
            Some("app=web&slot"),
        ] {
            assert!(LogAsk::parse(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn a_line_from_a_peer_must_be_the_instance_s() {
        let want = LogAsk {
            app: "web".into(),
            slot: 3,
            lines: 0,
            follow: false,
        };
        let ok = br#"{"app":"web","slot":3,"stream":"stdout","line":"hello"}"#;
        assert_eq!(checked(ok, &want).map(|l| l.line), Ok("hello".to_string()));
        for bad in [
            &br#"{"app":"db","slot":3,"stream":"stdout","line":"x"}"#[..],
            br#"{"app":"web","slot":4,"stream":"stdout","line":"x"}"#,
            br#"{"app":"web","slot":3,"stream":"/etc/shadow","line":"x"}"#,
            br#"{"app":"web","slot":3}"#,
            b"not json",
        ] {
            assert!(
                checked(bad, &want).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
