//! Secrets in what jarfleet prints (events, the daemon's log, status): which values are secret,
//! and how they are replaced. Pure.
//!
//! The rule: the value of an `env` key whose name looks secret — it contains `PASSWORD`,
//! `PASSWD`, `SECRET`, `TOKEN`, `KEY`, `CREDENTIAL` or `PRIVATE`, in any case — and every value
//! from the config center (`etcd_env`) are secret. Wherever one appears in a message it is
//! replaced by `<redacted:KEY>`. Values shorter than [`MIN_SECRET_LEN`] are left alone (a
//! `1` or `on` would otherwise blank out every number and word in the message).

use std::collections::BTreeMap;

/// The words that make an env key's value secret (matched case-insensitively, anywhere).
pub const SECRET_WORDS: [&str; 7] = [
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "PRIVATE",
];

/// Shorter values are not redacted (see the module docs).
pub const MIN_SECRET_LEN: usize = 4;

/// Whether the value of env key `name` is secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// Replaces an app's secret values in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (value, key), longest value first: a secret that contains another is replaced whole.
    secrets: Vec<(String, String)>,
}

impl Redactor {
    /// The secrets of an app: its `env` values with secret-looking keys, and every value from
    /// its config center.
    pub fn for_app(app: &crate::spec::AppSpec) -> Self {
        let mut env = app.env.clone();
        // The values the config templates were rendered with are environment values too.
        for (k, v) in &app.config_values {
            env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Redactor::new(&env, &app.etcd_env)
    }

    /// Secrets from `env` (secret-looking keys only) and `config_center` (all).
    pub fn new(env: &BTreeMap<String, String>, config_center: &BTreeMap<String, String>) -> Self {
        let mut secrets: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| is_secret_name(k))
            .chain(config_center.iter())
            .filter(|(_, v)| v.chars().count() >= MIN_SECRET_LEN)
            .map(|(k, v)| (v.clone(), k.clone()))
            .collect();
        secrets.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.1.cmp(&b.1)));
        secrets.dedup_by(|a, b| a.0 == b.0);
        Redactor { secrets }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret value replaced by `<redacted:KEY>`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (value, key) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("<redacted:{key}>"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secret_names() {
        let table = [
            ("DB_PASSWORD", true),
            ("db_passwd", true),
            ("API_TOKEN", true),
            ("AWS_SECRET_ACCESS_KEY", true),
            ("STRIPE_KEY", true),
            ("GOOGLE_APPLICATION_CREDENTIALS", true),
            ("SSH_PRIVATE", true),
            ("MODE", false),
            ("JAVA_OPTS", false),
            ("PORT", false),
        ];
        for (name, want) in table {
            assert_eq!(is_secret_name(name), want, "{name}");
        }
    }

    #[test]
    fn values_are_replaced_with_their_key() {
        let env = map(&[
            ("DB_PASSWORD", "hunter2-long"),
            ("MODE", "production"),
            ("API_TOKEN", "tok"),
        ]);
        let etcd = map(&[("FEATURE_URL", "https://internal/x"), ("LEVEL", "1")]);
        let r = Redactor::new(&env, &etcd);
        // (input, output)
        let table = [
            (
                "cannot log in with hunter2-long on production",
                "cannot log in with <redacted:DB_PASSWORD> on production",
            ),
            (
                "GET https://internal/x failed; level 1",
                "GET <redacted:FEATURE_URL> failed; level 1",
            ),
            // Too short to redact.
            ("token tok", "token tok"),
            ("nothing here", "nothing here"),
        ];
        for (input, want) in table {
            assert_eq!(r.redact(input), want, "{input}");
        }
        assert!(Redactor::new(&map(&[("MODE", "prod")]), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_secret_inside_another_is_replaced_whole() {
        let env = map(&[("A_KEY", "abcd"), ("B_KEY", "xxabcdxx")]);
        let r = Redactor::new(&env, &BTreeMap::new());
        assert_eq!(r.redact("v=xxabcdxx"), "v=<redacted:B_KEY>");
        assert_eq!(r.redact("v=abcd"), "v=<redacted:A_KEY>");
    }
}
