//! The TCP API (`[daemon] http`): the bearer token from a 0600 file, `open_reads`, TLS with a
//! test CA, and a daemon that refuses a token file others can read. Real daemon, real sockets,
//! an HTTP client (ureq with rustls) that trusts only what each test says.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use ureq::tls::{PemItem, RootCerts, TlsConfig};

use crate::harness::*;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

/// An agent that reports every status (no error on 4xx) and trusts only `ca` for https (the
/// system roots when `None`).
pub fn agent(ca: Option<&Path>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("reading the test CA");
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        assert!(!certs.is_empty(), "no certificate in {}", ca.display());
        config = config.tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::from(certs))
                .build(),
        );
    }
    config.build().new_agent()
}

/// One request with the protocol header, and the token as `Authorization: Bearer` if given.
pub fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<Reply, ureq::Error> {
    let protocol = jarfleet_api::PROTOCOL.to_string();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut resp = match method {
        "GET" => {
            let mut req = agent.get(url).header("x-jarfleet-protocol", &protocol);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.call()?
        }
        _ => {
            let mut req = agent
                .post(url)
                .header("x-jarfleet-protocol", &protocol)
                .header("content-type", "application/json");
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.send(body.unwrap_or("{}"))?
        }
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let www_authenticate = header("www-authenticate");
    let content_type = header("content-type");
    let body = resp.body_mut().read_to_string()?;
    Ok(Reply {
        status: resp.status().as_u16(),
        www_authenticate,
        content_type,
        body,
    })
}

/// `jarfleet token new FILE`, then the token it wrote.
pub fn new_token(fleet: &Fleet, name: &str) -> (PathBuf, String) {
    let path = fleet.path(name);
    fleet.ok(&["token", "new", &path.display().to_string()]);
    let mode = std::fs::metadata(&path)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode {mode:o}");
    let token = std::fs::read_to_string(&path).expect("token");
    (path, token.trim().to_string())
}

/// A spec of one fixture app with the TCP API on `api_port` and `daemon` extra lines.
pub fn api_spec(fleet: &Fleet, app: &AppDef, api_port: u16, daemon: &str) -> String {
    format!(
        "[daemon]\nhttp = \"127.0.0.1:{api_port}\"\n{daemon}\n\n{}",
        fleet.app_toml(app)
    )
}

/// A test CA and a server certificate for 127.0.0.1 and localhost signed by it:
/// `(ca.pem, server.pem, server.key)` in `dir`.
pub fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "jarfleet test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write ca.pem");
    std::fs::write(&paths.1, cert.pem()).expect("write server.pem");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write server.key");
    (paths.0, paths.1, paths.2)
}

fn api_port() -> u16 {
    free_ports(1).0
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", reply.body))
}

#[test]
fn the_tcp_api_refuses_a_missing_or_wrong_token_with_401_and_changes_nothing() {
    let fleet = Fleet::new(5);
    let (token_file, token) = new_token(&fleet, "api-token");
    let port = api_port();
    let app = AppDef::default();
    fleet.write_spec(&api_spec(
        &fleet,
        &app,
        port,
        &format!("token_file = {:?}", token_file.display().to_string()),
    ));
    fleet.up();
    let before = fleet.wait_ready("fx", 1, Duration::from_secs(60));
    let pid = before[0]["pid"].as_u64().expect("pid");
    let base = format!("http://127.0.0.1:{port}");
    let agent = agent(None);

    for (token, challenge) in [
        (None, "Bearer realm=\"jarfleet\""),
        (
            Some("not-the-token"),
            "Bearer realm=\"jarfleet\", error=\"invalid_token\"",
        ),
    ] {
        let r = call(&agent, "GET", &format!("{base}/v1/status"), token, None).expect("GET");
        assert_eq!(r.status, 401, "GET /v1/status with {token:?}: {}", r.body);
        assert_eq!(r.www_authenticate.as_deref(), Some(challenge));
        let body = json(&r);
        assert_eq!(body["kind"], "usage", "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("token")),
            "{body}"
        );
        let r = call(
            &agent,
            "POST",
            &format!("{base}/v1/scale"),
            token,
            Some(r#"{"app":"fx","instances":2}"#),
        )
        .expect("POST");
        assert_eq!(r.status, 401, "POST /v1/scale with {token:?}: {}", r.body);
        assert_eq!(r.www_authenticate.as_deref(), Some(challenge));
        let r = call(
            &agent,
            "POST",
            &format!("{base}/v1/action"),
            token,
            Some(r#"{"app":"fx","slot":0,"action":"restart"}"#),
        )
        .expect("POST");
        assert_eq!(r.status, 401, "POST /v1/action with {token:?}: {}", r.body);
    }
    // Nothing changed: one instance wanted and running, the same JVM.
    let status = fleet.status();
    let fx = &status["apps"][0];
    assert_eq!(
        (fx["name"].as_str(), fx["desired"].as_u64()),
        (Some("fx"), Some(1))
    );
    assert_eq!(
        fleet.pids("fx"),
        vec![pid],
        "a refused request restarted something"
    );
    // Refusals are security events (one per 10 s: these six came together).
    let refused: Vec<serde_json::Value> = fleet
        .events()
        .into_iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("security."))
        })
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["kind"], "security.refused");
    assert!(
        refused[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused GET /v1/status over TCP")),
        "{refused:?}"
    );

    // The right token reads and changes.
    let r = call(
        &agent,
        "GET",
        &format!("{base}/v1/status"),
        Some(&token),
        None,
    )
    .expect("GET");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["apps"][0]["name"], "fx");
    let r = call(
        &agent,
        "POST",
        &format!("{base}/v1/scale"),
        Some(&token),
        Some(r#"{"app":"fx","instances":2}"#),
    )
    .expect("POST");
    assert_eq!(r.status, 200, "{}", r.body);
    fleet.wait_ready("fx", 2, Duration::from_secs(60));

    // The routes still want the protocol header, token or not.
    let r = agent
        .get(format!("{base}/v1/status"))
        .header("authorization", format!("Bearer {token}"))
        .call()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 426);

    // The dashboard page holds no data: served without the token.
    let r = call(&agent, "GET", &format!("{base}/"), None, None).expect("GET /");
    assert_eq!(r.status, 200);
    assert!(
        r.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        r.content_type
    );

    // The unix socket stays private and needs no token.
    let mode = std::fs::metadata(fleet.state.join("jarfleet.sock"))
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    assert!(
        fleet.events().iter().any(|e| e["kind"] == "api.listening"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains(&port.to_string()))),
        "no api.listening event naming port {port}"
    );
}

#[test]
fn open_reads_lets_reads_through_without_the_token_but_not_changes() {
    let fleet = Fleet::new(5);
    let (token_file, token) = new_token(&fleet, "api-token");
    let port = api_port();
    fleet.write_spec(&api_spec(
        &fleet,
        &AppDef::default(),
        port,
        &format!(
            "token_file = {:?}\nopen_reads = true",
            token_file.display().to_string()
        ),
    ));
    fleet.up();
    let pid = fleet.wait_ready("fx", 1, Duration::from_secs(60))[0]["pid"]
        .as_u64()
        .expect("pid");
    let base = format!("http://127.0.0.1:{port}");
    let agent = agent(None);

    for path in ["/v1/status", "/v1/history?app=fx", "/v1/version"] {
        let r = call(&agent, "GET", &format!("{base}{path}"), None, None).expect("GET");
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    }
    let r = call(
        &agent,
        "POST",
        &format!("{base}/v1/action"),
        None,
        Some(r#"{"app":"fx","slot":0,"action":"restart"}"#),
    )
    .expect("POST");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(fleet.pids("fx"), vec![pid], "a refused restart restarted");
    let r = call(
        &agent,
        "POST",
        &format!("{base}/v1/action"),
        Some(&token),
        Some(r#"{"app":"fx","slot":0,"action":"restart"}"#),
    )
    .expect("POST");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(
        "fx/0 restarted with a new JVM",
        Duration::from_secs(60),
        || {
            let i = fleet.instance("fx", 0);
            (i["ready"] == true && i["pid"].as_u64().is_some_and(|p| p != pid)).then_some(())
        },
    );

    // `down` over TCP: refused without the token; with it, acknowledged, then the daemon goes.
    let out = fleet.run(&["--api", &base, "down"]);
    assert_eq!(out.status.code(), Some(2), "down without the token");
    assert!(fleet.state.join("jarfleet.sock").exists());
    let tf = token_file.display().to_string();
    let out = fleet.run(&["--api", &base, "--token-file", &tf, "down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("daemon stopped"));
    wait_until("the daemon to be gone", Duration::from_secs(30), || {
        (!fleet.state.join("jarfleet.sock").exists() && port_free(port)).then_some(())
    });
}

#[test]
fn the_tcp_api_speaks_tls_with_the_configured_certificate() {
    let fleet = Fleet::new(5);
    let (token_file, token) = new_token(&fleet, "api-token");
    let (ca, cert, key) = test_pki(fleet.dir.path());
    let port = api_port();
    fleet.write_spec(&api_spec(
        &fleet,
        &AppDef::default(),
        port,
        &format!(
            "token_file = {:?}\ntls = {{ cert = {:?}, key = {:?} }}",
            token_file.display().to_string(),
            cert.display().to_string(),
            key.display().to_string()
        ),
    ));
    fleet.up();
    let url = format!("https://127.0.0.1:{port}/v1/status");

    let trusting = agent(Some(&ca));
    let r = call(&trusting, "GET", &url, Some(&token), None).expect("GET over TLS");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["apps"][0]["name"], "fx");
    let r = call(&trusting, "GET", &url, None, None).expect("GET over TLS");
    assert_eq!(r.status, 401, "{}", r.body);

    // A client that does not trust the test CA refuses the server's certificate.
    let err = call(&agent(None), "GET", &url, Some(&token), None)
        .expect_err("the certificate must not be trusted without the test CA");
    let text = format!("{err}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer"),
        "not a certificate error: {err}"
    );
    // The CLI as a remote client: --api, --token-file, --ca.
    let api = format!("https://127.0.0.1:{port}");
    let (tf, ca_s) = (token_file.display().to_string(), ca.display().to_string());
    let out = fleet.ok(&[
        "--api",
        &api,
        "--token-file",
        &tf,
        "--ca",
        &ca_s,
        "status",
        "-o",
        "json",
    ]);
    let remote: serde_json::Value = serde_json::from_str(&out).expect("status -o json");
    assert_eq!(remote["apps"][0]["name"], "fx");
    fleet.ok(&[
        "--api",
        &api,
        "--token-file",
        &tf,
        "--ca",
        &ca_s,
        "scale",
        "fx",
        "2",
    ]);
    fleet.wait_ready("fx", 2, Duration::from_secs(60));
    let out = fleet.run(&["--api", &api, "--ca", &ca_s, "scale", "fx", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("needs the API token") && stderr.contains("--token-file"),
        "{stderr}"
    );
    let out = fleet.run(&["--api", &api, "--token-file", &tf, "status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("TLS") && stderr.contains("--ca"),
        "{stderr}"
    );
    assert_eq!(
        fleet.status()["apps"][0]["desired"],
        2,
        "a refused remote scale changed something"
    );

    // Plain HTTP on the TLS port gets no API answer.
    let plain = call(
        &agent(None),
        "GET",
        &format!("http://127.0.0.1:{port}/v1/status"),
        Some(&token),
        None,
    );
    assert!(
        plain.as_ref().map_or(true, |r| r.status != 200),
        "plain HTTP was answered on the TLS port"
    );
}

#[test]
fn a_token_file_others_can_read_is_refused_by_up_and_by_a_restarted_daemon() {
    let fleet = Fleet::new(5);
    let (token_file, token) = new_token(&fleet, "api-token");
    let shown = token_file.display().to_string();
    let port = api_port();
    fleet.write_spec(&api_spec(
        &fleet,
        &AppDef::default(),
        port,
        &format!("token_file = {shown:?}"),
    ));
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let out = fleet.run(&["up", "-d", "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "up accepted a 0644 token file");
    assert!(
        stderr.contains(&shown) && stderr.contains(&format!("chmod 600 {shown}")),
        "the error must name the file and `chmod 600`: {stderr}"
    );
    // `up` stopped the daemon it started (its socket goes last, as it exits).
    wait_until(
        "the refused daemon to be gone",
        Duration::from_secs(10),
        || (!fleet.state.join("jarfleet.sock").exists()).then_some(()),
    );
    let out = fleet.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));

    // Fixed: it starts; a daemon started later serves the TCP API from the stored settings.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    fleet.up();
    let pid = fleet.wait_ready("fx", 1, Duration::from_secs(60))[0]["pid"]
        .as_u64()
        .expect("pid");
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon to die", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    let log = fleet.dir.path().join("restarted-daemon.log");
    let mut child = fleet
        .command(&["daemon"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("daemon log"))
        .spawn()
        .expect("jarfleet daemon");
    fleet.remember(child.id());
    let agent = agent(None);
    let url = format!("http://127.0.0.1:{port}/v1/status");
    wait_until_explained(
        "the restarted daemon's TCP API",
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the restarted daemon ended ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            match call(&agent, "GET", &url, Some(&token), None) {
                Ok(r) if r.status == 200 => Ok(()),
                last => Err(format!(
                    "reply {last:?}\ndaemon log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )),
            }
        },
    );
    assert_eq!(fleet.pids("fx"), vec![pid], "the JVM was not re-adopted");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    wait_until("the daemon to stop", Duration::from_secs(30), || {
        child.try_wait().ok().flatten()
    });

    // Readable by others again: the next daemon refuses to start, and says why.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = fleet.run(&["daemon"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the daemon started with a 0640 token file"
    );
    assert!(
        stderr.contains(&format!("chmod 600 {shown}")),
        "the error must name the file and `chmod 600`: {stderr}"
    );
    assert!(pid_alive(pid as u32), "the refusing daemon touched the JVM");
}

#[test]
fn a_certificate_and_a_key_that_do_not_match_are_named() {
    let fleet = Fleet::new(2);
    let (token_file, _) = new_token(&fleet, "api-token");
    let (_, cert, _) = test_pki(fleet.dir.path());
    let other = fleet.path("other");
    std::fs::create_dir(&other).expect("mkdir");
    let (_, _, other_key) = test_pki(&other);
    fleet.write_spec(&api_spec(
        &fleet,
        &AppDef::default(),
        api_port(),
        &format!(
            "token_file = {:?}\ntls = {{ cert = {:?}, key = {:?} }}",
            token_file.display().to_string(),
            cert.display().to_string(),
            other_key.display().to_string()
        ),
    ));
    let out = fleet.run(&["validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("do not go together")
            && stderr.contains(&cert.display().to_string())
            && stderr.contains(&other_key.display().to_string()),
        "{stderr}"
    );
    let out = fleet.run(&["up", "-d"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not go together"));
}

/// The `(event, data)` pairs of a server-sent-event stream, read by a thread as they come.
fn sse_events(
    port: u16,
    path: &str,
    token: &str,
) -> (
    std::sync::mpsc::Receiver<(String, serde_json::Value)>,
    Option<String>,
) {
    use std::io::BufRead;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let resp = agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("x-jarfleet-protocol", jarfleet_api::PROTOCOL.to_string())
        .header("authorization", format!("Bearer {token}"))
        .call()
        .expect("GET the stream");
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        let mut event = String::new();
        for line in reader.lines().map_while(Result::ok) {
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let value = serde_json::from_str(data).unwrap_or(serde_json::Value::Null);
                if tx.send((event.clone(), value)).is_err() {
                    return;
                }
            }
        }
    });
    (rx, content_type)
}

/// Waits for the first pair that `pred` accepts.
fn next_matching(
    rx: &std::sync::mpsc::Receiver<(String, serde_json::Value)>,
    what: &str,
    pred: impl Fn(&str, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((event, data)) if pred(&event, &data) => return data,
            Ok(_) => {}
            Err(_) => panic!("timed out after 30s waiting for {what} on the stream"),
        }
    }
}

#[test]
fn the_streams_send_status_events_and_logs_as_server_sent_events() {
    let fleet = Fleet::new(5);
    let (token_file, token) = new_token(&fleet, "api-token");
    let port = api_port();
    fleet.write_spec(&api_spec(
        &fleet,
        &AppDef::default(),
        port,
        &format!("token_file = {:?}", token_file.display().to_string()),
    ));
    fleet.up();
    let pid = fleet.wait_ready("fx", 1, Duration::from_secs(60))[0]["pid"]
        .as_u64()
        .expect("pid");
    let r = call(
        &agent(None),
        "GET",
        &format!("http://127.0.0.1:{port}/v1/stream"),
        None,
        None,
    )
    .expect("GET");
    assert_eq!(r.status, 401, "the stream is a read: it needs the token");

    let (stream, content_type) = sse_events(port, "/v1/stream?events=5", &token);
    assert_eq!(content_type.as_deref(), Some("text/event-stream"));
    next_matching(&stream, "a past instance.ready event", |e, d| {
        e == "event" && d["kind"] == "instance.ready"
    });
    next_matching(&stream, "a status snapshot with fx/0's pid", |e, d| {
        e == "status" && d["apps"][0]["instances"][0]["pid"] == pid
    });
    fleet.ok(&["restart", "fx/0"]);
    next_matching(&stream, "the live instance.stopping event", |e, d| {
        e == "event" && d["kind"] == "instance.stopping" && d["slot"] == 0
    });
    next_matching(&stream, "a status snapshot with fx/0's new JVM", |e, d| {
        let i = &d["apps"][0]["instances"][0];
        e == "status" && i["ready"] == true && i["pid"].as_u64().is_some_and(|p| p != pid)
    });

    let (logs, _) = sse_events(port, "/v1/stream/logs?app=fx&slot=0&lines=20", &token);
    let line = next_matching(&logs, "fx/0's log", |e, d| {
        e == "log"
            && d["line"]
                .as_str()
                .is_some_and(|l| l.contains("listening on port"))
    });
    assert_eq!(
        (line["app"].as_str(), line["slot"].as_u64()),
        (Some("fx"), Some(0))
    );
}

#[test]
fn an_applied_spec_rotates_the_token_in_place_and_removing_http_closes_the_port() {
    let fleet = Fleet::new(5);
    let (old_file, old) = new_token(&fleet, "old-token");
    let (new_file, new) = new_token(&fleet, "new-token");
    let port = api_port();
    let app = AppDef::default();
    let with = |file: &Path| {
        api_spec(
            &fleet,
            &app,
            port,
            &format!("token_file = {:?}", file.display().to_string()),
        )
    };
    fleet.write_spec(&with(&old_file));
    fleet.up();
    let pid = fleet.wait_ready("fx", 1, Duration::from_secs(60))[0]["pid"]
        .as_u64()
        .expect("pid");
    let url = format!("http://127.0.0.1:{port}/v1/status");
    let agent = agent(None);
    let status_with = |token: &str| {
        call(&agent, "GET", &url, Some(token), None)
            .expect("GET")
            .status
    };
    assert_eq!((status_with(&old), status_with(&new)), (200, 401));

    // A broken token file in the new spec changes nothing, the apps neither.
    std::fs::set_permissions(&new_file, std::fs::Permissions::from_mode(0o604)).expect("chmod");
    fleet.write_spec(&with(&new_file).replace("instances = 1", "instances = 2"));
    let out = fleet.run(&["apply"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    assert_eq!((status_with(&old), status_with(&new)), (200, 401));
    assert_eq!(
        fleet.status()["apps"][0]["desired"],
        1,
        "the apps' part was applied"
    );

    // Fixed: the new token is in force on the same listener, the old one refused.
    std::fs::set_permissions(&new_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    fleet.write_spec(&with(&new_file));
    fleet.ok(&["apply"]);
    assert_eq!((status_with(&old), status_with(&new)), (401, 200));

    // Without `http` the port closes; the instances go on.
    fleet.write_spec(&fleet.app_toml(&app));
    fleet.ok(&["apply"]);
    wait_until(
        "the TCP API's port to close",
        Duration::from_secs(10),
        || port_free(port).then_some(()),
    );
    assert!(
        fleet.events().iter().any(|e| e["kind"] == "api.stopped"),
        "no api.stopped event"
    );
    assert_eq!(fleet.pids("fx"), vec![pid]);
}
