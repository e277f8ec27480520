//! `docs/spec.md` documents every key the spec parser takes, in the section of its table, and no
//! key the parser does not take: the reference cannot fall behind the code.

use std::collections::{BTreeMap, BTreeSet};

use jarfleet_core::spec::TABLES;

/// The keys documented in each section of the reference: a heading names its table in its first
/// backticked word (`## `[daemon]``, `### `java``, `### `[apps.NAME.balancer]`: …`), and a line
/// "`canary` keys:" opens a sub-table's section. A key is the backticked first cell of a table row.
struct Reference {
    keys: BTreeMap<String, BTreeSet<String>>,
    text: BTreeMap<String, String>,
}

fn table_name(raw: &str) -> String {
    let name = raw.trim_matches(|c| c == '[' || c == ']');
    match name.strip_prefix("apps.NAME.") {
        Some(sub) => sub.to_string(),
        None => name.to_string(),
    }
}

fn first_backticked(line: &str) -> Option<&str> {
    let start = line.find('`')? + 1;
    let len = line[start..].find('`')?;
    Some(&line[start..start + len])
}

fn read_reference() -> Reference {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/spec.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut text: BTreeMap<String, String> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in doc.lines() {
        let sub_table = line.starts_with('`') && line.trim_end().ends_with("` keys:");
        if line.starts_with('#') || sub_table {
            section = first_backticked(line).map(table_name);
            continue;
        }
        let Some(name) = &section else { continue };
        text.entry(name.clone()).or_default().push_str(line);
        text.entry(name.clone()).or_default().push('\n');
        if let Some(row) = line.strip_prefix("| `") {
            let cell = row.split(" | ").next().unwrap_or_default();
            let cell = format!("`{cell}");
            for (i, token) in cell.split('`').enumerate() {
                if i % 2 == 1 && !token.starts_with('[') {
                    keys.entry(name.clone())
                        .or_default()
                        .insert(token.to_string());
                }
            }
        }
    }
    Reference { keys, text }
}

#[test]
fn every_table_in_its_own_section_documents_exactly_the_keys_the_parser_takes() {
    let reference = read_reference();
    let mut problems = Vec::new();
    for (table, parsed) in TABLES
        .iter()
        .filter(|(t, _)| !t.contains('.') || *t == "apps.NAME")
    {
        let parsed: BTreeSet<String> = parsed.iter().map(|k| k.to_string()).collect();
        let Some(documented) = reference.keys.get(*table) else {
            problems.push(format!("docs/spec.md has no section for `{table}`"));
            continue;
        };
        for missing in parsed.difference(documented) {
            problems.push(format!(
                "`{table}.{missing}` is taken by the parser but not documented"
            ));
        }
        for extra in documented.difference(&parsed) {
            problems.push(format!(
                "`{table}.{extra}` is documented but the parser refuses it"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/spec.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_inline_table_is_documented_in_its_parents_section() {
    let reference = read_reference();
    let mut problems = Vec::new();
    for (table, parsed) in TABLES
        .iter()
        .filter(|(t, _)| t.contains('.') && *t != "apps.NAME")
    {
        // The nearest enclosing table that has a section of its own.
        let mut parent = *table;
        let section = loop {
            match parent.rsplit_once('.') {
                Some((up, _)) => parent = up,
                None => break None,
            }
            if let Some(text) = reference.text.get(parent) {
                break Some(text);
            }
        };
        let Some(section) = section else {
            problems.push(format!("no section of docs/spec.md encloses `{table}`"));
            continue;
        };
        for key in parsed.iter() {
            let named = section.match_indices(key).any(|(at, _)| {
                let before = section[..at].chars().next_back();
                let after = section[at + key.len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(before) && !word(after)
            });
            if !named {
                problems.push(format!(
                    "`{table}.{key}` is taken by the parser but not named in the `{parent}` section"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/spec.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_reference_reader_finds_what_it_reads() {
    // The checks above mean something only if sections and rows are read at all.
    let reference = read_reference();
    assert!(reference.keys["daemon"].contains("state_dir"));
    assert!(reference.keys["balancer"].contains("head_timeout"));
    assert!(reference.keys["canary"].contains("steps"));
    assert!(
        !reference.keys["deploy"].contains("steps"),
        "canary keys are their own section"
    );
}
