//! `docs/events.md` names every kind of event the daemon records, and none it does not: the
//! table of kinds there is held to `EventKind::ALL`.

use std::collections::BTreeSet;

use jarfleet_core::events::EventKind;

/// The `AREA.WHAT` names in backticks in the rows of the "area | kinds" table.
fn documented_kinds() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/events.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut in_table = false;
    let mut kinds = BTreeSet::new();
    for line in doc.lines() {
        if line.starts_with("| area | kinds |") {
            in_table = true;
            continue;
        }
        if in_table && !line.starts_with('|') {
            break;
        }
        if !in_table {
            continue;
        }
        let Some(cells) = line.splitn(3, '|').nth(2) else {
            continue;
        };
        for (i, token) in cells.split('`').enumerate() {
            let is_kind = token.split_once('.').is_some_and(|(area, what)| {
                !area.is_empty()
                    && !what.is_empty()
                    && token
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '.' || c == '-')
            });
            if i % 2 == 1 && is_kind {
                kinds.insert(token.to_string());
            }
        }
    }
    kinds
}

#[test]
fn every_event_kind_is_documented_and_every_documented_kind_exists() {
    let documented = documented_kinds();
    let in_code: BTreeSet<String> = EventKind::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .collect();
    let missing: Vec<_> = in_code.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&in_code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/events.md: not documented: {missing:?}; documented but no such kind: {extra:?}"
    );
}

#[test]
fn the_table_is_read_at_all() {
    let documented = documented_kinds();
    assert!(documented.contains("instance.ready"), "{documented:?}");
    assert!(
        documented.contains("security.wrong-token"),
        "{documented:?}"
    );
}

#[test]
fn every_deployment_end_has_its_event() {
    for end in ["succeeded", "rolled-back", "failed", "aborted"] {
        let kind = EventKind::of_deployment_end(end).expect(end);
        assert_eq!(kind.as_str(), format!("deploy.{end}"));
    }
    assert_eq!(EventKind::of_deployment_end("running"), None);
}
