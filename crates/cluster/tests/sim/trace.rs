//! What happened, for a failure's report: the last lines of the history (every line when a
//! replay asks for it with `JARFLEET_CLUSTER_SIM_TRACE`).

use std::collections::VecDeque;

use crate::etcd::{Ms, Revision};

/// Lines kept for a failure's report.
const KEPT: usize = 120;

#[derive(Default)]
pub struct Trace {
    lines: VecDeque<String>,
    /// Every line is printed as it comes (a replay of one seed).
    pub echo: bool,
}

impl Trace {
    pub fn say(&mut self, now: Ms, revision: Revision, who: &str, what: &str) {
        let line = format!(
            "{:>4}.{:03}s r{revision:<4} {who:<8} {what}",
            now / 1000,
            now % 1000
        );
        if self.echo {
            eprintln!("{line}");
        }
        if self.lines.len() == KEPT {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The last lines, oldest first.
    pub fn tail(&self) -> String {
        self.lines.iter().fold(String::new(), |mut out, l| {
            out.push_str("  ");
            out.push_str(l);
            out.push('\n');
            out
        })
    }
}
