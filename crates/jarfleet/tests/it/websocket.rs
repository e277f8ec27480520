//! WebSocket tunnels through the load balancer to real JVMs running `jarfleet.fixture.WsEcho`
//! (the fixture jar's second main class, an RFC 6455 echo server; see `fixtures/README.md`),
//! with a real client (tungstenite, blocking, over a `TcpStream` with read and write timeouts):
//! messages of every length encoding cross the balancer; an open tunnel counts as in flight, so a
//! stop drains until the client closes it, bounded by `drain_timeout`; `status` counts tunnels.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use crate::fixture::fixture_jar;
use crate::harness::*;

const START: Duration = Duration::from_secs(90);
/// Bound on every read and write of the client: a tunnel that stops answering fails the test
/// (a timeout error), it never hangs it.
const IO: Duration = Duration::from_secs(10);
/// Bound on a stop once nothing holds it: shorter than the long `drain_timeout` below, so an
/// instance that only stopped at its drain deadline cannot pass.
const STOP: Duration = Duration::from_secs(30);
/// The long drain of the first test.
const LONG_DRAIN_MS: u64 = 60_000;
/// The short drain of the second test.
const SHORT_DRAIN_MS: u64 = 2_000;

type Ws = WebSocket<TcpStream>;

/// App `ws`: `instances` WsEcho JVMs with `drain_timeout`, behind `127.0.0.1:LB`. The fleet's
/// ports are the instances' (with one spare) and, the last one, the balancer's.
fn ws_fleet(instances: u16, drain_timeout_ms: u64) -> (Fleet, u16) {
    let fleet = Fleet::new(instances + 2);
    let (first, lb) = fleet.ports;
    let spec = format!(
        r#"[apps.ws]
main_class = "jarfleet.fixture.WsEcho"
classpath = [{jar:?}]
instances = {instances}
ports = "{first}-{last}"
listen = "127.0.0.1:{lb}"
java = {{ opts = {JVM_OPTS}, fast_start = false }}

[apps.ws.health]
http = "/health"
interval = "500ms"
start_timeout = "60s"

[apps.ws.stop]
drain_timeout = "{drain_timeout_ms}ms"
"#,
        jar = fixture_jar().display().to_string(),
        last = lb - 1,
    );
    fleet.write_spec(&spec);
    fleet.up();
    fleet.wait_ready("ws", instances as usize, START);
    (fleet, lb)
}

/// A WebSocket session through the balancer: TCP connect, then tungstenite's handshake, which
/// checks the `101` and the instance's `Sec-WebSocket-Accept`.
fn connect(lb: u16) -> Result<Ws, String> {
    let stream = TcpStream::connect(("127.0.0.1", lb)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(IO))
        .and_then(|()| stream.set_write_timeout(Some(IO)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| format!("socket options: {e}"))?;
    let (ws, _response) = tungstenite::client(format!("ws://127.0.0.1:{lb}/ws"), stream)
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// Sends `msg` and returns the next message from the instance.
fn ask(ws: &mut Ws, msg: Message) -> Message {
    ws.send(msg).expect("send through the tunnel");
    ws.read().expect("an answer through the tunnel")
}

/// The instance's answer to the text message `q` (`pid`, `stats`, or an echo).
fn text(ws: &mut Ws, q: &str) -> String {
    match ask(ws, Message::text(q)) {
        Message::Text(t) => t.as_str().to_string(),
        other => panic!("{q:?} answered with {other:?}"),
    }
}

/// Sends `msg` and asserts the same message (type and bytes) comes back.
fn echo(ws: &mut Ws, msg: Message, what: &str) {
    let got = ask(ws, msg.clone());
    assert!(
        got == msg,
        "{what}: sent {} bytes, got back {:?} of {} bytes",
        msg.len(),
        std::mem::discriminant(&got),
        got.len()
    );
}

/// Our half of the close handshake: a close frame, then reads until the instance has answered
/// with its own and closed the connection.
fn close(mut ws: Ws) {
    ws.close(None).expect("send a close frame");
    loop {
        match ws.read() {
            Ok(_) => continue, // the instance's close frame (or an echo still on its way)
            Err(tungstenite::Error::ConnectionClosed) => return,
            Err(e) => panic!("the close handshake through the tunnel: {e}"),
        }
    }
}

fn balancer(fleet: &Fleet) -> Value {
    let status = fleet.status();
    status["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == "ws")
        .map(|a| a["balancer"].clone())
        .expect("app ws in status")
}

/// `front.tunnels` and `front.tunnels_open` of `status -o json`.
fn tunnels(fleet: &Fleet) -> (u64, u64) {
    let front = &balancer(fleet)["front"];
    (
        front["tunnels"].as_u64().expect("front.tunnels"),
        front["tunnels_open"].as_u64().expect("front.tunnels_open"),
    )
}

/// The balancer's backend entries of `slot` (a removed one still reports its in-flight count).
fn backends_of(fleet: &Fleet, slot: u64) -> Vec<Value> {
    balancer(fleet)["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["labels"]["slot"] == slot.to_string().as_str())
        .cloned()
        .collect()
}

fn slot_of_pid(fleet: &Fleet, pid: u32) -> u64 {
    fleet.remember(pid);
    fleet
        .instances("ws")
        .iter()
        .find(|i| i["pid"].as_u64() == Some(u64::from(pid)))
        .and_then(|i| i["slot"].as_u64())
        .unwrap_or_else(|| panic!("no instance of ws has pid {pid}"))
}

/// The JVM's stdout so far (WsEcho's status lines).
fn stdout_of(fleet: &Fleet, slot: u64) -> String {
    std::fs::read_to_string(fleet.log_dir("ws", slot as u32).join("stdout.log")).unwrap_or_default()
}

/// The events of `ws/slot` from its last `instance.stopping` on: kind and timestamp.
fn stop_events(fleet: &Fleet, slot: u64) -> Vec<(String, u64, String)> {
    let events: Vec<Value> = fleet
        .events()
        .into_iter()
        .filter(|e| e["app"] == "ws" && e["slot"].as_u64() == Some(slot))
        .collect();
    let from = events
        .iter()
        .rposition(|e| e["kind"] == "instance.stopping")
        .unwrap_or_else(|| panic!("no instance.stopping event for ws/{slot}: {events:#?}"));
    events[from..]
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_string(),
                e["ts"].as_u64().expect("event ts"),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The daemon's time from `instance.stopping` to `instance.stopped` of the last stop of `slot`.
fn stop_took_ms(fleet: &Fleet, slot: u64) -> (u64, Vec<(String, u64, String)>) {
    let events = stop_events(fleet, slot);
    let start = events[0].1;
    let end = events
        .iter()
        .find(|e| e.0 == "instance.stopped")
        .unwrap_or_else(|| panic!("no instance.stopped after instance.stopping: {events:#?}"))
        .1;
    (end.saturating_sub(start), events)
}

/// The JVM ended by the stop's SIGTERM (exit 143), not by the SIGKILL after `stop_timeout`.
fn assert_clean_exit(events: &[(String, u64, String)], pid: u32) {
    let want = format!("pid {pid} stopped cleanly");
    assert!(
        events
            .iter()
            .any(|e| e.0 == "instance.exited" && e.2 == want),
        "{want}: {events:#?}"
    );
}

fn wait_state(fleet: &Fleet, slot: u64, state: &str, timeout: Duration) {
    wait_until_explained(&format!("ws/{slot} {state}"), timeout, || {
        let i = fleet.instance("ws", slot);
        if i["state"] == state {
            Ok(())
        } else {
            Err(format!("{i:#}"))
        }
    });
}

#[test]
fn websocket_messages_cross_the_balancer_and_a_stop_drains_until_the_tunnel_closes() {
    let (fleet, lb) = ws_fleet(2, LONG_DRAIN_MS);
    let mut ws = wait_until_explained("a WebSocket handshake through the balancer", START, || {
        connect(lb)
    });

    // Messages both ways, every payload length encoding: 7-bit (≤ 125 bytes), 16-bit
    // (126..=65535), 64-bit (> 64 KiB), in both directions (the instance echoes each one).
    echo(&mut ws, Message::text("hello"), "a short text");
    echo(&mut ws, Message::text("grüße, WebSocket ✓"), "a UTF-8 text");
    echo(
        &mut ws,
        Message::binary((0..=255u8).collect::<Vec<u8>>()),
        "256 bytes",
    );
    echo(
        &mut ws,
        Message::binary(Vec::new()),
        "an empty binary message",
    );
    let medium: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
    echo(
        &mut ws,
        Message::binary(medium),
        "40 000 bytes (16-bit length)",
    );
    let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    echo(
        &mut ws,
        Message::binary(large),
        "200 000 bytes (64-bit length)",
    );
    echo(
        &mut ws,
        Message::text("0123456789abcdef".repeat(5_000)),
        "80 000 bytes of text (64-bit length)",
    );
    for n in 0..20 {
        echo(
            &mut ws,
            Message::text(format!("message {n}")),
            "a run of messages",
        );
    }
    assert_eq!(
        ask(&mut ws, Message::Ping(b"are you there".to_vec().into())),
        Message::Pong(b"are you there".to_vec().into()),
        "a ping is answered by the instance through the tunnel"
    );
    assert_eq!(
        text(&mut ws, "stats"),
        "1",
        "one session open on the instance"
    );
    let pid: u32 = text(&mut ws, "pid").parse().expect("the instance's pid");
    let slot = slot_of_pid(&fleet, pid);

    // status: one tunnel opened, open now, held as the instance's one request in flight.
    assert_eq!(tunnels(&fleet), (1, 1), "front.tunnels, front.tunnels_open");
    let held = backends_of(&fleet, slot);
    assert!(
        held.iter().any(|b| b["in_flight"] == 1),
        "the tunnel is in flight on ws/{slot}: {held:#?}"
    );

    // Stop the instance that holds the tunnel: it leaves the balancer and drains.
    fleet.ok(&["stop", &format!("ws/{slot}")]);
    wait_state(&fleet, slot, "stopping", STOP);
    let draining = backends_of(&fleet, slot);
    assert!(
        draining
            .iter()
            .any(|b| b["in_snapshot"] == false && b["in_flight"] == 1),
        "ws/{slot} is out of the balancer with its tunnel still in flight: {draining:#?}"
    );
    // New tunnels go to the other instance meanwhile.
    let mut other =
        connect(lb).unwrap_or_else(|e| panic!("a second tunnel while ws/{slot} drains: {e}"));
    let other_pid: u32 = text(&mut other, "pid").parse().expect("pid");
    assert_ne!(other_pid, pid, "a new tunnel went to the draining instance");
    close(other);

    // The open tunnel keeps working while the stop waits for it: no SIGTERM yet (WsEcho's
    // shutdown hook would have closed the session), the JVM is alive, the state is stopping.
    for n in 0..20 {
        echo(
            &mut ws,
            Message::text(format!("during the drain {n}")),
            "a message during the drain",
        );
    }
    let large: Vec<u8> = (0..100_000u32).map(|i| (i % 13) as u8).collect();
    echo(
        &mut ws,
        Message::binary(large),
        "a large message during the drain",
    );
    assert_eq!(text(&mut ws, "stats"), "1");
    assert_eq!(text(&mut ws, "pid"), pid.to_string(), "same instance");
    assert!(
        pid_alive(pid),
        "the JVM of ws/{slot} runs while its tunnel is open"
    );
    let i = fleet.instance("ws", slot);
    assert_eq!(
        (i["state"].as_str(), i["pid"].as_u64()),
        (Some("stopping"), Some(u64::from(pid))),
        "ws/{slot} is still stopping: {i:#}"
    );
    let so_far = stop_events(&fleet, slot);
    assert!(
        so_far
            .iter()
            .all(|e| e.0 == "instance.stopping" || !e.0.starts_with("instance.")),
        "ws/{slot} has not gone past stopping: {so_far:#?}"
    );
    assert!(
        !stdout_of(&fleet, slot).contains("shutting down"),
        "no SIGTERM while the tunnel is open:\n{}",
        stdout_of(&fleet, slot)
    );

    // The client closes the tunnel: the drain ends, the instance stops now, not at the deadline.
    close(ws);
    wait_state(&fleet, slot, "stopped", STOP);
    assert!(!pid_alive(pid), "the JVM of ws/{slot} is gone");
    // The SIGTERM came after the tunnel closed: the shutdown hook found no session open.
    let out = stdout_of(&fleet, slot);
    assert!(
        out.contains("shutting down (0 sessions open)"),
        "the SIGTERM came once the tunnel was closed:\n{out}"
    );
    // By the daemon's clock, the stop ended long before the 60 s drain deadline.
    let (took, events) = stop_took_ms(&fleet, slot);
    assert!(
        took < LONG_DRAIN_MS / 2,
        "the stop ended with the tunnel, not at the drain deadline ({took} ms): {events:#?}"
    );
    assert_clean_exit(&events, pid);
    wait_until_explained("no tunnel open", STOP, || match tunnels(&fleet) {
        (2, 0) => Ok(()),
        other => Err(format!("(tunnels, tunnels_open) = {other:?}")),
    });
}

#[test]
fn websocket_tunnel_does_not_hold_a_stop_beyond_the_drain_timeout() {
    let (fleet, lb) = ws_fleet(1, SHORT_DRAIN_MS);
    let mut ws = wait_until_explained("a WebSocket handshake through the balancer", START, || {
        connect(lb)
    });
    echo(&mut ws, Message::text("hello"), "a short text");
    let pid: u32 = text(&mut ws, "pid").parse().expect("the instance's pid");
    let slot = slot_of_pid(&fleet, pid);
    assert_eq!(tunnels(&fleet), (1, 1), "front.tunnels, front.tunnels_open");

    // The client keeps its tunnel open and quiet; the stop goes on after the 2 s drain.
    fleet.ok(&["stop", &format!("ws/{slot}")]);
    wait_state(&fleet, slot, "stopped", STOP);
    assert!(!pid_alive(pid), "the JVM of ws/{slot} is gone");
    let out = stdout_of(&fleet, slot);
    assert!(
        out.contains("shutting down (1 sessions open)"),
        "the SIGTERM came with the tunnel still open:\n{out}"
    );
    let (took, events) = stop_took_ms(&fleet, slot);
    assert!(
        took >= SHORT_DRAIN_MS,
        "the drain waited its {SHORT_DRAIN_MS} ms for the open tunnel ({took} ms): {events:#?}"
    );
    assert_clean_exit(&events, pid);

    // The client's tunnel is closed: the instance's going-away close frame came through, then
    // the connection ended (a read that timed out instead would fail here). The client then
    // closes its socket: the proxy passes half-closes on, so until the client's side is closed
    // too the tunnel still counts as open (a half-closed tunnel lasts until its other side closes,
    // or `tcp_idle`).
    match ws.read() {
        Ok(Message::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::Away, "WsEcho's shutdown close")
        }
        other => panic!("the tunnel ends with the instance's close frame, got {other:?}"),
    }
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) => {}
        other => panic!("the tunnel closes after the close frame, got {other:?}"),
    }
    drop(ws);
    wait_until_explained("no tunnel open", STOP, || match tunnels(&fleet) {
        (1, 0) => Ok(()),
        other => Err(format!("(tunnels, tunnels_open) = {other:?}")),
    });
}
