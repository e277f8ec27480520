//! A load balancer listener that cannot bind (its port taken, e.g. as another connection's
//! source port) is shown as not bound with its error, reported, and retried by itself until it
//! binds and serves.

use std::net::TcpListener;
use std::time::Duration;

use crate::harness::*;

fn listener(fleet: &Fleet) -> serde_json::Value {
    fleet.status()["apps"][0]["listener"].clone()
}

#[test]
fn a_listener_that_cannot_bind_is_retried_until_it_serves() {
    let fleet = Fleet::new(6);
    let lb = free_port();
    fleet.write_app(&AppDef {
        extra: &format!("listen = \"127.0.0.1:{lb}\""),
        ..Default::default()
    });
    fleet.up();
    fleet.wait_ready("fx", 1, Duration::from_secs(60));
    wait_until("the balancer to serve", Duration::from_secs(20), || {
        matches!(http_get(lb, "/"), Ok((200, _))).then_some(())
    });
    assert_eq!(listener(&fleet)["bound"], true);

    // The daemon and its load balancer's process both die (nothing holds the socket any more);
    // a foreign socket takes the port before the next daemon starts.
    let daemon = fleet.daemon_pid().expect("daemon pid");
    let data_plane = crate::front_door::data_plane_pid(&fleet);
    kill9(daemon);
    kill9(data_plane);
    wait_until(
        "the daemon and the data plane to die",
        Duration::from_secs(10),
        || (!pid_alive(daemon) && !pid_alive(data_plane)).then_some(()),
    );
    let foreign = wait_until(
        "the foreign socket to bind",
        Duration::from_secs(10),
        || TcpListener::bind(("127.0.0.1", lb)).ok(),
    );
    fleet.ok(&["up", "-d", "--wait"]);
    let state = wait_until(
        "status to show the listener unbound",
        Duration::from_secs(20),
        || {
            let l = listener(&fleet);
            (l["bound"] == false).then_some(l)
        },
    );
    let error = state["error"].as_str().unwrap_or_default();
    assert!(error.contains("in use"), "{state}");
    assert!(state["retry_in_ms"].as_u64().is_some(), "{state}");
    let table = fleet.ok(&["status"]);
    assert!(
        table.contains("NOT BOUND") && table.contains("retrying in"),
        "{table}"
    );
    let failed = fleet.events_of("lb.bind-failed", "fx", None);
    assert_eq!(
        failed.len(),
        1,
        "reported once, not at every attempt: {failed:?}"
    );

    // Free the port: the listener binds by itself and serves.
    drop(foreign);
    wait_until(
        "the listener to bind by itself and serve",
        Duration::from_secs(60),
        || {
            (matches!(http_get(lb, "/"), Ok((200, _))) && listener(&fleet)["bound"] == true)
                .then_some(())
        },
    );
    assert!(
        fleet
            .events_of("lb.listening", "fx", None)
            .iter()
            .any(|e| e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("failed attempt")),
        "the bind after the failures is reported"
    );
}
