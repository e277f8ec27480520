//! What a member says about itself and the leader (`POST /v3/maintenance/status`), and who
//! leads given the answers.

/// The parts of a status answer the cluster helper uses. The gateway writes 64-bit numbers
/// as JSON strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The answering member's id.
    pub member_id: String,
    /// The id of the member it follows (its own when it leads; "0" when it knows none, also
    /// when the field is absent).
    pub leader: String,
    pub raft_term: u64,
}

/// A status answer's body; `None` when it is not one.
pub fn parse(body: &str) -> Option<Status> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let header = json.get("header")?;
    Some(Status {
        member_id: text(header.get("member_id")?)?,
        // Absent when it knows none: the gateway leaves out proto3 zero values.
        leader: json
            .get("leader")
            .and_then(text)
            .unwrap_or_else(|| "0".into()),
        raft_term: header
            .get("raft_term")
            .and_then(text)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
    })
}

/// Which of the members (their answers, `None` for no answer) leads: one that says it leads
/// itself, the one of the latest term if a deposed leader has not noticed yet.
pub fn leader(answers: &[Option<Status>]) -> Option<usize> {
    answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.as_ref().map(|a| (i, a)))
        .filter(|(_, a)| a.leader == a.member_id && a.leader != "0")
        .max_by_key(|(_, a)| a.raft_term)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(member_id: &str, leader: &str, raft_term: u64) -> Option<Status> {
        Some(Status {
            member_id: member_id.into(),
            leader: leader.into(),
            raft_term,
        })
    }

    #[test]
    fn an_etcd_3_4_answer_is_read() {
        let body = r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"1","raft_term":"2"},"version":"3.4.23","dbSize":"20480","leader":"10276657743932975437","raftIndex":"4","raftTerm":"2","raftAppliedIndex":"4","dbSizeInUse":"16384"}"#;
        assert_eq!(
            parse(body),
            status("10276657743932975437", "10276657743932975437", 2)
        );
        assert_eq!(parse("{}"), None);
        assert_eq!(parse("not json"), None);
    }

    #[test]
    fn the_leader_is_the_member_that_leads_itself_in_the_latest_term() {
        let cases: [(&[Option<Status>], Option<usize>); 5] = [
            (
                &[
                    status("a", "b", 2),
                    status("b", "b", 2),
                    status("c", "b", 2),
                ],
                Some(1),
            ),
            (&[None, status("b", "c", 3), status("c", "c", 3)], Some(2)),
            // The old leader, cut off, still thinks it leads term 2.
            (
                &[
                    status("a", "a", 2),
                    status("b", "c", 3),
                    status("c", "c", 3),
                ],
                Some(2),
            ),
            (&[status("a", "0", 3), status("b", "0", 3), None], None),
            (&[None, None, None], None),
        ];
        for (answers, expected) in cases {
            assert_eq!(leader(answers), expected, "{answers:?}");
        }
    }
}
