//! What the terminal can take: colour (a TTY, `NO_COLOR` unset, `TERM` not `dumb`), its width
//! (tables are fitted to it), and spinners on long operations (stderr a TTY). Pipes and files
//! get plain text at full width, so scripts never see escape codes.

use std::io::IsTerminal;
use std::time::Duration;

use anstyle::{AnsiColor, Style};

/// How output to one stream is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// Colour allowed.
    pub color: bool,
    /// Columns to fit tables to; `None` = no limit (not a terminal).
    pub width: Option<usize>,
}

impl Term {
    /// Plain text, no width limit (pipes, files, tests).
    pub const PLAIN: Term = Term {
        color: false,
        width: None,
    };

    /// For stdout, from the environment.
    pub fn stdout() -> Term {
        let tty = std::io::stdout().is_terminal();
        let width = terminal_size::terminal_size_of(std::io::stdout())
            .map(|(w, _)| usize::from(w.0))
            .filter(|_| tty);
        Term::decide(
            tty,
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            std::env::var("TERM").ok().as_deref(),
            width,
            std::env::var("COLUMNS").ok().as_deref(),
        )
    }

    /// The rules, pure: colour on a terminal unless `NO_COLOR` or `TERM=dumb`; the width of the
    /// terminal, else `COLUMNS` when it is set (e.g. `COLUMNS=100 jarfleet status | less`).
    pub fn decide(
        tty: bool,
        no_color: bool,
        term: Option<&str>,
        tty_width: Option<usize>,
        columns: Option<&str>,
    ) -> Term {
        Term {
            color: tty && !no_color && term != Some("dumb"),
            width: tty_width
                .or_else(|| columns.and_then(|c| c.trim().parse().ok()))
                .filter(|w| *w >= 20),
        }
    }

    /// One line of text cut to the width (with `…`); `line` ends with its newline.
    pub fn fit_line(&self, line: &str) -> String {
        let line = line.trim_end_matches('\n');
        match self.width {
            Some(w) => format!("{}\n", cut(line, w)),
            None => format!("{line}\n"),
        }
    }

    /// `text` in `style` when colour is on.
    pub fn paint(&self, style: Style, text: &str) -> String {
        if self.color && style != Style::new() {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_string()
        }
    }
}

/// The colour of an instance state, a deployment outcome or an event kind.
pub fn state_style(word: &str) -> Style {
    let color = match word {
        "ready" | "succeeded" | "running" => AnsiColor::Green,
        "pending" | "starting" | "stopping" | "rolling-back" | "backoff" => AnsiColor::Yellow,
        "unhealthy" | "crash-loop" | "failed" | "rolled-back" => AnsiColor::Red,
        "stopped" => AnsiColor::BrightBlack,
        _ => return Style::new(),
    };
    Style::new().fg_color(Some(color.into()))
}

/// How a table may give way to a narrow terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fit<'a> {
    /// A column whose text is cut (with `…`) first, down to 12 characters.
    pub elastic: Option<usize>,
    /// Columns dropped next, in this order, while the table is still too wide.
    pub optional: &'a [usize],
    /// A column whose cells are coloured by `state_style`.
    pub state: Option<usize>,
}

/// Left-aligned columns, two spaces apart, fitted to `term.width`.
pub fn table(term: &Term, header: &[&str], rows: &[Vec<String>], fit: Fit<'_>) -> String {
    let n = header.len();
    let natural: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let (keep, widths) = layout(&natural, term.width, fit);
    let mut out = String::new();
    let mut line = |cells: Vec<(String, Style)>| {
        let mut l = String::new();
        let last = cells.len().saturating_sub(1);
        for (k, (cell, style)) in cells.iter().enumerate() {
            let text = cut(cell, widths[k]);
            let pad = widths[k].saturating_sub(text.chars().count());
            l.push_str(&term.paint(*style, &text));
            if k != last {
                l.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(
        keep.iter()
            .map(|&i| (header[i].to_string(), Style::new()))
            .collect(),
    );
    for row in rows {
        line(
            keep.iter()
                .map(|&i| {
                    let cell = row.get(i).cloned().unwrap_or_default();
                    let style = if fit.state == Some(i) {
                        state_style(&cell)
                    } else {
                        Style::new()
                    };
                    (cell, style)
                })
                .collect(),
        );
    }
    out
}

/// Which columns stay and how wide each is (pure).
fn layout(natural: &[usize], width: Option<usize>, fit: Fit<'_>) -> (Vec<usize>, Vec<usize>) {
    let mut keep: Vec<usize> = (0..natural.len()).collect();
    let mut widths: Vec<usize> = natural.to_vec();
    let Some(limit) = width else {
        return (keep, widths);
    };
    let total = |keep: &[usize], widths: &[usize]| {
        keep.iter().map(|&i| widths[i]).sum::<usize>() + 2 * keep.len().saturating_sub(1)
    };
    if let Some(e) = fit.elastic {
        let over = total(&keep, &widths).saturating_sub(limit);
        widths[e] = widths[e].saturating_sub(over).max(12.min(natural[e]));
    }
    for &drop in fit.optional {
        if total(&keep, &widths) <= limit {
            break;
        }
        keep.retain(|&i| i != drop);
    }
    // Room freed by dropped columns goes back to the cut one.
    if let Some(e) = fit.elastic {
        let room = limit.saturating_sub(total(&keep, &widths));
        widths[e] = (widths[e] + room).min(natural[e]);
    }
    let shown = keep.iter().map(|&i| widths[i]).collect();
    (keep, shown)
}

/// `s` cut to `w` characters, the last one `…` when cut.
fn cut(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    let mut out: String = s.chars().take(w.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A spinner with a message on stderr while something long runs, when stderr is a terminal;
/// otherwise nothing (the caller's lines are the progress).
pub struct Spinner(Option<indicatif::ProgressBar>);

impl Spinner {
    pub fn start(message: &str) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(Some(bar))
    }

    /// The current state, next to the spinner.
    pub fn set(&self, message: &str) {
        if let Some(b) = &self.0 {
            b.set_message(message.to_string());
        }
    }

    /// A line printed above the spinner (or plainly on stderr without one).
    pub fn line(&self, text: &str) {
        match &self.0 {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_and_width_rules() {
        assert_eq!(
            Term::decide(true, false, Some("xterm"), Some(100), None),
            Term {
                color: true,
                width: Some(100)
            }
        );
        // NO_COLOR, TERM=dumb and pipes: no colour.
        assert!(!Term::decide(true, true, Some("xterm"), Some(100), None).color);
        assert!(!Term::decide(true, false, Some("dumb"), Some(100), None).color);
        assert!(!Term::decide(false, false, Some("xterm"), None, None).color);
        // A pipe has no width, unless COLUMNS says one.
        assert_eq!(Term::decide(false, false, None, None, None).width, None);
        assert_eq!(
            Term::decide(false, false, None, None, Some("90")).width,
            Some(90)
        );
        assert_eq!(
            Term::decide(false, false, None, None, Some("x")).width,
            None
        );
    }

    #[test]
    fn a_table_gives_way_to_a_narrow_terminal() {
        let header = ["A", "STATE", "LONG", "EXTRA"];
        let rows = vec![vec![
            "a1".to_string(),
            "ready".to_string(),
            "a rather long explanation of what happened".to_string(),
            "x".to_string(),
        ]];
        let fit = Fit {
            elastic: Some(2),
            optional: &[3],
            state: Some(1),
        };
        let wide = table(&Term::PLAIN, &header, &rows, fit);
        assert!(wide.contains("a rather long explanation of what happened"));
        let narrow = Term {
            color: false,
            width: Some(24),
        };
        let out = table(&narrow, &header, &rows, fit);
        for l in out.lines() {
            assert!(l.chars().count() <= 24, "{l:?} is wider than 24");
        }
        assert!(out.contains('…'), "{out}");
        assert!(!out.contains("EXTRA"), "the optional column goes: {out}");
        let coloured = Term {
            color: true,
            width: None,
        };
        let out = table(&coloured, &header, &rows, fit);
        assert!(out.contains("\u{1b}[32mready\u{1b}[0m"), "{out:?}");
    }
}
