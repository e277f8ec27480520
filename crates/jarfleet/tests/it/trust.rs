//! `[trust] keys` in the spec: every artifact (apply, deploy, and a remote one through its
//! `URL.minisig`) must be signed by a listed key, checked before anything starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fixture::fixture_variant;
use crate::harness::{AppDef, Fleet, JVM_OPTS, http_get};
use crate::https_server::{FileRoute, Route, TestServer};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn keygen(fleet: &Fleet, name: &str) -> (PathBuf, PathBuf) {
    let base = fleet.path(name);
    fleet.ok(&["keygen", "--no-password", "-o", s(&base)]);
    (base.with_extension("key"), base.with_extension("pub"))
}

#[test]
fn with_trusted_keys_only_signed_artifacts_run_locally_and_remotely() {
    let fleet = Fleet::new(4);
    let (key, public) = keygen(&fleet, "release");
    let (intruder, _) = keygen(&fleet, "intruder");
    let v1 = fixture_variant(&fleet.path("fx-v1.jar"), &[("version", "v1")]);
    let spec = |artifact: &Path| {
        format!(
            "[trust]\nkeys = [{:?}]\n\n{}",
            s(&public),
            fleet
                .app_toml(&AppDef {
                    tables: "[apps.fx.deploy]\nmin_healthy = \"0s\"\n",
                    ..AppDef::default()
                })
                .replace(
                    &format!("{:?}", crate::fixture::fixture_jar().display().to_string()),
                    &format!("{:?}", s(artifact))
                )
        )
    };
    fleet.write_spec(&spec(&v1));

    // Unsigned: refused before anything starts, naming the file and what to do.
    let out = fleet.run(&["up", "-d", "--wait"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fx-v1.jar") && err.contains("not signed") && err.contains("jarfleet sign"),
        "{err}"
    );
    assert!(fleet.daemon_pid().is_none());

    fleet.ok(&["sign", s(&v1), "--key", s(&key)]);
    fleet.up();
    fleet.wait_ready("fx", 1, Duration::from_secs(60));

    // A deploy signed by an unknown key is refused, naming the key; nothing changes.
    let v2 = fixture_variant(&fleet.path("fx-v2.jar"), &[("version", "v2")]);
    fleet.ok(&["sign", s(&v2), "--key", s(&intruder)]);
    let before = fleet.pids("fx");
    let out = fleet.run(&["deploy", "fx", s(&v2), "--wait"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("fx-v2.jar"),
        "{err}"
    );
    assert_eq!(fleet.pids("fx"), before);

    fleet.ok(&["sign", s(&v2), "--key", s(&key)]);
    fleet.ok(&["deploy", "fx", s(&v2), "--wait"]);
    let port = fleet.instance("fx", 1)["port"].as_u64().expect("port") as u16;
    assert_eq!(http_get(port, "/version").expect("get").1, "v2");
}

#[test]
fn a_remote_artifact_without_a_pin_is_checked_against_its_signature() {
    let fleet = Fleet::new(4);
    let (key, public) = keygen(&fleet, "release");
    let (intruder, _) = keygen(&fleet, "intruder");
    let jar = fixture_variant(&fleet.path("fx-remote.jar"), &[("version", "remote-1")]);
    let server = TestServer::start();
    let body = std::fs::read(&jar).expect("jar");
    server.route("/fx.jar", Route::File(FileRoute::new(body, "v1")));
    let write_spec = || {
        fleet.write_spec(&format!(
            "[trust]\nkeys = [{:?}]\nca = {:?}\n\n[apps.fx]\nartifact = {:?}\ninstances = 1\nports = \"{}-{}\"\njava = {{ opts = {JVM_OPTS}, fast_start = false }}\n\n[apps.fx.health]\nhttp = \"/health\"\n",
            s(&public),
            s(&server.ca_path()),
            server.url("/fx.jar"),
            fleet.ports.0,
            fleet.ports.1
        ))
    };
    write_spec();
    // Signed by a key that is not trusted: refused.
    fleet.ok(&["sign", s(&jar), "--key", s(&intruder)]);
    let sig = std::fs::read(jar.with_extension("jar.minisig")).expect("sig");
    server.route("/fx.jar.minisig", Route::File(FileRoute::new(sig, "s1")));
    let out = fleet.run(&["up", "-d", "--wait"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fleet.daemon_pid().is_none());

    fleet.ok(&["sign", s(&jar), "--key", s(&key)]);
    let sig = std::fs::read(jar.with_extension("jar.minisig")).expect("sig");
    server.route("/fx.jar.minisig", Route::File(FileRoute::new(sig, "s2")));
    fleet.up();
    let ready = fleet.wait_ready("fx", 1, Duration::from_secs(60));
    let port = ready[0]["port"].as_u64().expect("port") as u16;
    assert_eq!(http_get(port, "/version").expect("get").1, "remote-1");
}
