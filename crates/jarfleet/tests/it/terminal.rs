//! What a person at a terminal sees, and what a script reading a pipe gets: `status --watch`
//! redraws in place with colour on a terminal (a real pty from `script`), plain text and no
//! escape codes into a pipe, one JSON document per line with `-o json`; `NO_COLOR` is obeyed;
//! tables fit the terminal's width.

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

/// A running command whose stdout is collected in the background.
struct Running {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    fn start(mut cmd: std::process::Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the command");
        let mut stdout = child.stdout.take().expect("stdout");
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut o) = sink.lock() {
                    o.extend_from_slice(&buf[..n]);
                }
            }
        });
        Running { child, out }
    }

    fn text(&self) -> String {
        self.out
            .lock()
            .map(|o| String::from_utf8_lossy(&o).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the output holds `n` of `needle`; returns the output.
    fn wait_for(&self, needle: &str, n: usize) -> String {
        wait_until(
            &format!("{n} × {needle:?} in the output"),
            Duration::from_secs(30),
            || {
                let t = self.text();
                (t.matches(needle).count() >= n).then_some(t)
            },
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `jarfleet ARGS` on a pseudo-terminal of `cols` columns, through `script(1)`.
fn on_a_terminal(fleet: &Fleet, args: &str, cols: u16, no_color: bool) -> Running {
    let mut cmd = std::process::Command::new("script");
    let line = format!(
        "stty cols {cols} rows 50; exec {} {args}",
        jarfleet_bin().display()
    );
    cmd.args(["-qfec", &line, "/dev/null"])
        .current_dir(fleet.path("."))
        .env("JARFLEET_STATE", &fleet.state)
        .env("TERM", "xterm-256color")
        .env_remove("COLUMNS")
        .stdin(Stdio::null());
    if no_color {
        cmd.env("NO_COLOR", "1");
    } else {
        cmd.env_remove("NO_COLOR");
    }
    Running::start(cmd)
}

/// A fleet of two ready `fx` instances, once `script(1)` (the terminal) is known to be there.
fn two_instances_and_script() -> Fleet {
    assert!(
        run_with_deadline(
            std::process::Command::new("script").arg("--version"),
            Duration::from_secs(30)
        )
        .is_ok_and(|o| o.status.success()),
        "script(1) is missing: apt-get install -y bsdutils"
    );
    let fleet = Fleet::new(4);
    fleet.write_app(&AppDef {
        instances: 2,
        ..AppDef::default()
    });
    fleet.up();
    fleet.wait_ready("fx", 2, Duration::from_secs(60));
    fleet
}

#[test]
fn status_watch_redraws_in_colour_on_a_terminal_and_stays_plain_in_a_pipe() {
    let fleet = two_instances_and_script();

    // A terminal: the screen is cleared and redrawn, states in colour, rows fit 60 columns.
    let tty = on_a_terminal(&fleet, "status --watch --interval 200ms", 60, false);
    let screen = tty.wait_for("\u{1b}[2J", 2);
    assert!(
        screen.contains("jarfleet status  (Ctrl-C to stop)"),
        "{screen:?}"
    );
    assert!(
        screen.contains("\u{1b}[32mready"),
        "ready in green: {screen:?}"
    );
    let frame = screen.rsplit("\u{1b}[2J").nth(1).unwrap_or_default();
    for line in frame.lines() {
        let plain = strip_escapes(line);
        assert!(plain.chars().count() <= 60, "wider than 60: {plain:?}");
    }
    drop(tty);

    // NO_COLOR: still redrawn, no colour.
    let tty = on_a_terminal(&fleet, "status --watch --interval 200ms", 120, true);
    let screen = tty.wait_for("\u{1b}[2J", 2);
    assert!(!screen.contains("\u{1b}[32m"), "{screen:?}");
    drop(tty);

    // A pipe: reports one after the other, no escape codes at all.
    let mut cmd = fleet.command(&["status", "--watch", "--interval", "200ms"]);
    cmd.env_remove("NO_COLOR");
    let piped = Running::start(cmd);
    let text = piped.wait_for("INSTANCE", 3);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    drop(piped);

    // -o json: one report per line.
    let json =
        Running::start(fleet.command(&["status", "--watch", "--interval", "200ms", "-o", "json"]));
    let text = json.wait_for("\n", 3);
    for line in text.lines().take(3) {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON document a line");
        assert_eq!(v["apps"][0]["name"], "fx");
    }
}

#[test]
fn every_state_changing_verb_answers_json_with_o_json() {
    let fleet = Fleet::new(4);
    fleet.write_app(&AppDef::default());
    let v: serde_json::Value =
        serde_json::from_str(&fleet.ok(&["validate", "--offline", "-o", "json"])).expect("json");
    assert_eq!(v["ok"], true);
    fleet.up();
    fleet.wait_ready("fx", 1, Duration::from_secs(60));
    for args in [
        vec!["scale", "fx", "2", "-o", "json"],
        vec!["restart", "fx/0", "-o", "json"],
        vec!["stop", "fx/1", "-o", "json"],
        vec!["start", "fx/1", "-o", "json"],
    ] {
        let out = fleet.ok(&args);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert!(v["message"].is_string(), "{args:?}: {out}");
    }
}

/// `s` without ANSI escape sequences.
fn strip_escapes(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[test]
fn down_names_what_it_stops_on_a_terminal_and_writes_one_line_into_a_pipe() {
    let fleet = two_instances_and_script();
    let pids = fleet.pids("fx");

    // A terminal: each instance and the app named as they stop, then the summary.
    let tty = on_a_terminal(&fleet, "down", 100, true);
    let screen = strip_escapes(&tty.wait_for("1 of 1 app removed", 1));
    for (slot, pid) in pids.iter().enumerate() {
        assert!(
            screen.contains(&format!("stopped fx/{slot} (pid {pid})")),
            "{screen:?}"
        );
    }
    assert!(screen.contains("removed fx"), "{screen:?}");
    assert!(
        screen.contains("2 of 2 instances stopped, 1 of 1 app removed"),
        "{screen:?}"
    );
    let mut tty = tty;
    let status = wait_until("`down` finished", Duration::from_secs(30), || {
        tty.child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{screen:?}");

    // A pipe: the summary line only.
    fleet.up();
    fleet.wait_ready("fx", 2, Duration::from_secs(60));
    let out = fleet.run(&["down"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains("2 of 2 instances stopped, 1 of 1 app removed"),
        "{err:?}"
    );
    assert!(!err.contains('\u{1b}'), "{err:?}");
}
