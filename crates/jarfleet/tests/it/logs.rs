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
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let seen = wait_until("a followed line", Duration::from_secs(20), || {
        let _ = http_get(port, "/log?lines=1&size=30");
        rx.recv_timeout(Duration::from_millis(300)).ok()
    });
    assert!(seen.starts_with(&format!("fx/{slot} | line ")), "{seen}");
    let _ = follow.kill();
    let _ = follow.wait();
}
