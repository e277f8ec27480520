//! Instance logs: size rotation under a burst, nothing lost; `logs` multiplexes with prefixes.

use std::time::Duration;

use crate::harness::*;

const START: Duration = Duration::from_secs(60);

#[test]
fn rotation_under_a_burst_keeps_the_size_bound_and_loses_no_line() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef {
        tables: "[apps.fx.logs]\nmax_size = \"64KiB\"\nkeep = 100\n",
        ..Default::default()
    });
    fleet.up();
    let port = fleet.wait_ready("fx", 1, START)[0]["port"]
        .as_u64()
        .expect("port") as u16;
    // 4 × 5000 lines of 100 bytes = ~2 MB through a 64 KiB bound: ~30 rotations.
    let mut expected = 0u64;
    for _ in 0..4 {
        let (code, n) = http_get(port, "/log?lines=5000&size=100").expect("burst");
        assert_eq!(code, 200);
        expected += n.trim().parse::<u64>().expect("count");
    }
    let dir = fleet.log_dir("fx", 0);
    let files = wait_until(
        "every burst line in the logs",
        Duration::from_secs(30),
        || {
            let files = log_files(&dir.join("stdout.log"));
            let lines = numbered_lines(&files);
            (lines.len() as u64 >= expected).then_some(files)
        },
    );
    assert!(
        files.len() >= 20,
        "expected many rotated files, got {}",
        files.len()
    );
    for f in &files {
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        assert!(
            size <= 64 * 1024,
            "{} is {size} bytes, over the 64 KiB bound",
            f.display()
        );
    }
    let numbers = numbered_lines(&files);
    assert_eq!(numbers.len() as u64, expected, "every line exactly once");
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "lines in order, none lost"
    );
}

/// `path.K … path.1, path`, oldest first.
fn log_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut rotated: Vec<(u32, std::path::PathBuf)> =
        std::fs::read_dir(path.parent().expect("log dir"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name.strip_prefix("stdout.log.")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<_> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(path.to_path_buf());
    files
}

fn numbered_lines(files: &[std::path::PathBuf]) -> Vec<u64> {
    files
        .iter()
        .flat_map(|f| line_numbers(&std::fs::read_to_string(f).unwrap_or_default()))
        .collect()
}

#[test]
fn logs_multiplexes_instances_with_prefixes_and_follows() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef {
        instances: 2,
        ..Default::default()
    });
    fleet.up();
    let ready = fleet.wait_ready("fx", 2, START);
    let text = wait_until(
        "both instances' start lines",
        Duration::from_secs(10),
        || {
            let t = fleet.ok(&["logs", "fx", "-n", "50"]);
            (t.contains("fx/0 | listening on port") && t.contains("fx/1 | listening on port"))
                .then_some(t)
        },
    );
    assert!(
        text.lines()
            .all(|l| l.starts_with("fx/0 ") || l.starts_with("fx/1 ")),
        "{text}"
    );
    let one = fleet.ok(&["logs", "fx/1", "-n", "50"]);
    assert!(
        one.lines().all(|l| l.starts_with("fx/1 ")) && !one.is_empty(),
        "{one}"
    );

    // -f shows new lines as they are written.
    let mut follow = fleet
        .command(&["logs", "fx", "-f", "-n", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f");
    let port = ready[0]["port"].as_u64().expect("port") as u16;
    let slot = ready[0]["slot"].as_u64().expect("slot");
    let stdout = follow.stdout.take().expect("stdout");
    let rx = crate::harness::lines_of(stdout);
    let seen = wait_until("a followed line", Duration::from_secs(20), || {
        let _ = http_get(port, "/log?lines=1&size=30");
        rx.recv_timeout(Duration::from_millis(300)).ok()
    });
    assert!(seen.starts_with(&format!("fx/{slot} | line ")), "{seen}");
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn logs_show_an_apps_terminal_escapes_as_text_never_raw() {
    let fleet = Fleet::new(1);
    // The fixture prints its version at start: here a title change (OSC … BEL) and a clear
    // screen (CSI 2J), as a hostile or broken app could print them.
    let spec = fleet.app_toml(&AppDef::default()).replace(
        "args = []",
        r#"args = ["--version=\u001b]0;pwned\u0007\u001b[2J"]"#,
    );
    assert!(spec.contains("pwned"), "the spec has the args line");
    fleet.write_spec(&spec);
    fleet.up();
    fleet.wait_ready("fx", 1, START);

    let shown = wait_until("the start line in `logs`", Duration::from_secs(30), || {
        let out = fleet.run(&["logs", "fx"]);
        let text = out.stdout;
        String::from_utf8_lossy(&text)
            .contains("fixture starting")
            .then_some(text)
    });
    let text = String::from_utf8_lossy(&shown);
    assert!(!shown.contains(&0x1b), "no ESC byte in the output:\n{text}");
    assert!(!shown.contains(&0x07), "no BEL byte in the output:\n{text}");
    assert!(
        text.contains(r"version \x1b]0;pwned\x07\x1b[2J, pid"),
        "the sequence is shown as text:\n{text}"
    );

    // JSON carries the text exactly, escaped the JSON way.
    let json = fleet.ok(&["logs", "fx", "-o", "json"]);
    assert!(!json.contains('\u{1b}'), "{json}");
    let line = json
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["line"].as_str().is_some_and(|l| l.contains("pwned")))
        .expect("the start line in the JSON output");
    assert!(
        line["line"]
            .as_str()
            .is_some_and(|l| l.contains("version \u{1b}]0;pwned\u{7}\u{1b}[2J, pid")),
        "{line}"
    );
}
