//! `artifact = "https://…"`: downloaded over TLS (a test CA from `[trust] ca`), pinned by
//! sha256, cached by digest; a wrong pin is refused with both digests named.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::fixture::fixture_variant;
use crate::harness::{Fleet, JVM_OPTS, http_get, run_with_deadline};
use crate::https_server::{FileRoute, Route, TestServer};

fn spec(fleet: &Fleet, url: &str, pin: &str, ca: &std::path::Path) -> String {
    format!(
        "[trust]\nca = {ca:?}\n\n[apps.fx]\nartifact = {url:?}\nsha256 = {pin:?}\ninstances = 2\nports = \"{}-{}\"\njava = {{ opts = {JVM_OPTS} }}\n\n[apps.fx.health]\nhttp = \"/health\"\n",
        fleet.ports.0,
        fleet.ports.1,
        ca = ca.display().to_string(),
    )
}

/// Runs `cmd` under `script`, on a pseudo-terminal; returns what it printed.
fn fleet_script(fleet: &Fleet, cmd: &str) -> String {
    let out = run_with_deadline(
        std::process::Command::new("script")
            .args(["-q", "-e", "-c", cmd, "/dev/null"])
            .current_dir(fleet.dir.path())
            .env("JARFLEET_STATE", &fleet.state),
        Duration::from_secs(180),
    )
    .expect("script (util-linux) runs");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_pinned_https_artifact_is_downloaded_once_and_a_wrong_pin_is_refused() {
    let fleet = Fleet::new(4);
    let jar = fixture_variant(&fleet.path("fx-remote.jar"), &[("version", "remote-1")]);
    let body = std::fs::read(&jar).expect("jar");
    let digest: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let server = TestServer::start();
    server.route("/releases/fx.jar", Route::File(FileRoute::new(body, "v1")));
    let url = server.url("/releases/fx.jar");

    let wrong = "0".repeat(64);
    fleet.write_spec(&spec(&fleet, &url, &wrong, &server.ca_path()));
    let out = fleet.run(&["up", "-d", "--wait"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&wrong) && err.contains(&digest), "{err}");
    assert!(fleet.daemon_pid().is_none(), "nothing may start");

    fleet.write_spec(&spec(&fleet, &url, &digest, &server.ca_path()));
    // On a terminal, a download shows its progress (`script` gives the command a pty).
    let cmd = format!(
        "{} validate {}",
        crate::harness::jarfleet_bin().display(),
        fleet.spec_path().display()
    );
    let out = fleet_script(&fleet, &cmd);
    assert!(
        out.contains(&format!("downloading {url}")) && out.contains("MiB"),
        "{out}"
    );
    fleet.up();
    let ready = fleet.wait_ready("fx", 2, Duration::from_secs(60));
    for i in ready {
        let port = i["port"].as_u64().expect("port") as u16;
        assert_eq!(http_get(port, "/version").expect("get").1, "remote-1");
    }
    let cached = fleet.state.join("cache/sha256").join(&digest);
    assert!(cached.is_file(), "{} is cached", cached.display());
    let gets = server.seen().len();
    // Applying again (e.g. after an edit elsewhere) needs no download: the pin hits the cache.
    fleet.ok(&["apply"]);
    assert_eq!(server.seen().len(), gets, "no request on a cache hit");
}
