//! `${VAR}` interpolation of spec string values. Pure: the environment is a lookup function.
//!
//! Syntax, applied to string *values* after the TOML is parsed (so errors keep positions):
//!
//! | written            | result                                                               |
//! |--------------------|----------------------------------------------------------------------|
//! | `${VAR}`           | value of `VAR`; error if unset                                       |
//! | `${VAR:default}`   | value of `VAR`, or `default` when unset or empty                     |
//! | `${VAR:?message}`  | value of `VAR`; error with `message` when unset or empty             |
//! | `$$`               | a literal `$`                                                        |
//! | `$` before anything else | a literal `$`                                                  |
//!
//! A default is literal text up to the first `}` (`$$` in it is a `$`; it cannot contain `}` or a
//! nested `${`). Variable names are `[A-Za-z_][A-Za-z0-9_]*`.
//!
//! The instance variables [`INSTANCE_VARS`] (`${PORT}`, `${JARFLEET_SLOT}`,
//! `${JARFLEET_INSTANCE}`, `${JARFLEET_CONFIG_DIR}`) are never taken from the environment. In [`Mode::Template`] they are
//! kept and the result is a *template*: every literal `$` is written `$$`, so that
//! [`resolve_instance`] at instance start can tell placeholders from text. In [`Mode::Plain`]
//! they are an error (e.g. in `artifact`: there is no instance yet) and the result is plain text.

use std::collections::BTreeMap;

pub use crate::spec::INSTANCE_VARS;

/// What to do with instance variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Instance variables are an error; the result is the final text.
    Plain,
    /// Instance variables are kept; the result is a template for [`resolve_instance`].
    Template,
}

/// One problem in one string. `offset` is the byte offset of the offending `$` in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpError {
    pub offset: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// True for `PORT`, `JARFLEET_SLOT`, `JARFLEET_INSTANCE`, `JARFLEET_CONFIG_DIR`.
pub fn is_instance_var(name: &str) -> bool {
    INSTANCE_VARS.contains(&name)
}

/// A valid environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Interpolates `input` from `env`. Returns every error found in the string, not just the first.
pub fn interpolate(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
    mode: Mode,
) -> Result<String, Vec<InterpError>> {
    let mut out = String::with_capacity(input.len());
    let mut errors = Vec::new();
    let push_literal = |out: &mut String, text: &str| {
        for c in text.chars() {
            if c == '$' && mode == Mode::Template {
                out.push_str("$$");
            } else {
                out.push(c);
            }
        }
    };
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        if rest.starts_with("$$") {
            push_literal(&mut out, "$");
            i += 2;
            continue;
        }
        if !rest.starts_with("${") {
            let c_len = rest.chars().next().map_or(1, char::len_utf8);
            push_literal(&mut out, &rest[..c_len]);
            i += c_len;
            continue;
        }
        let Some(close) = rest.find('}') else {
            errors.push(InterpError {
                offset: i,
                message: "unterminated `${`: missing `}`".to_string(),
                hint: Some(
                    "write ${VAR}, ${VAR:default} or ${VAR:?message}; write $$ for a literal $"
                        .into(),
                ),
            });
            break;
        };
        let inner = &rest[2..close];
        let offset = i;
        i += close + 1;
        let (name, tail) = match inner.split_once(':') {
            Some((name, tail)) => (name, Some(tail)),
            None => (inner, None),
        };
        if inner.contains("${") {
            errors.push(InterpError {
                offset,
                message: "nested `${` is not supported".to_string(),
                hint: Some("a default is plain text, e.g. ${VAR:fallback}".into()),
            });
            continue;
        }
        if !is_var_name(name) {
            let hint = if name.contains('.') && !name.contains(char::is_whitespace) {
                // `${catalina.base}`, `${user.home}`: a property the app (or the JVM) resolves.
                format!("to pass ${{{inner}}} to the app as written, escape it: $${{{inner}}}")
            } else {
                "names are letters, digits and _, not starting with a digit; write $${ for a literal ${".to_string()
            };
            errors.push(InterpError {
                offset,
                message: if name.is_empty() {
                    "empty variable name in `${}`".to_string()
                } else {
                    format!("`{name}` is not a valid environment variable name")
                },
                hint: Some(hint),
            });
            continue;
        }
        if is_instance_var(name) {
            match (mode, tail) {
                (Mode::Template, None) => out.push_str(&format!("${{{name}}}")),
                (Mode::Template, Some(_)) => errors.push(InterpError {
                    offset,
                    message: format!("{name} is always set by jarfleet for each instance; write ${{{name}}}"),
                    hint: None,
                }),
                (Mode::Plain, _) => errors.push(InterpError {
                    offset,
                    message: format!(
                        "${{{name}}} is only known when an instance starts, it cannot be used here"
                    ),
                    hint: Some(
                        "${PORT}, ${JARFLEET_SLOT}, ${JARFLEET_INSTANCE} and ${JARFLEET_CONFIG_DIR} can be used in args, env, java.opts and health.exec"
                            .into(),
                    ),
                }),
            }
            continue;
        }
        let value = env(name);
        match tail {
            None => match value {
                Some(v) => push_literal(&mut out, &v),
                None => errors.push(InterpError {
                    offset,
                    message: format!(
                        "environment variable {name} is not set; set it or write ${{{name}:default}}"
                    ),
                    hint: None,
                }),
            },
                        Some(tail) => {
                let state = if value.is_some() { "empty" } else { "not set" };
                match (value.filter(|v| !v.is_empty()), tail.strip_prefix('?')) {
                    (Some(v), _) => push_literal(&mut out, &v),
                    (None, Some(message)) => errors.push(InterpError {
                        offset,
                        message: if message.trim().is_empty() {
                            format!("environment variable {name} is required but {state}")
                        } else {
                            format!("environment variable {name} is {state}: {}", message.trim())
                        },
                        hint: None,
                    }),
                    (None, None) => push_literal(&mut out, &tail.replace("$$", "$")),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Resolves a template produced by [`interpolate`] in [`Mode::Template`] (the `args`, `env`
/// values, `java.opts` and `health.exec` of an [`crate::spec::AppSpec`]) for one instance.
///
/// `vars` maps instance variable names to values, e.g. `{"PORT": "9100", "JARFLEET_SLOT": "0",
/// "JARFLEET_INSTANCE": "orders/0"}`. `$$` becomes `$`; `${NAME}` with `NAME` in `vars` becomes
/// its value; anything else is copied unchanged. Never fails.
pub fn resolve_instance(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
            continue;
        }
        let placeholder = rest
            .strip_prefix("${")
            .and_then(|r| r.find('}').map(|end| (&r[..end], end + 3)))
            .and_then(|(name, len)| vars.get(name).map(|v| (v, len)));
        match placeholder {
            Some((value, len)) => {
                out.push_str(value);
                rest = &rest[len..];
            }
            None => {
                out.push('$');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/me".into()),
            "EMPTY" => Some(String::new()),
            "DOLLAR" => Some("a$b".into()),
            "PORT" => Some("1".into()), // must never be used
            _ => None,
        }
    }

    #[test]
    fn interpolates() {
        use Mode::*;
        let cases: &[(&str, Mode, &str)] = &[
            ("plain", Plain, "plain"),
            ("${HOME}/x", Plain, "/home/me/x"),
            ("${UNSET:dflt}", Plain, "dflt"),
            ("${EMPTY:dflt}", Plain, "dflt"),
            ("${EMPTY}", Plain, ""),
            ("${HOME:dflt}", Plain, "/home/me"),
            ("${UNSET:}", Plain, ""),
            ("${UNSET:a:b}", Plain, "a:b"),
            ("${UNSET:-x}", Plain, "-x"),
            ("$${HOME}", Plain, "${HOME}"),
            ("a$b $", Plain, "a$b $"),
            ("cost $$5", Plain, "cost $5"),
            ("${UNSET:p$$q}", Plain, "p$q"),
            ("${HOME:?need it}", Plain, "/home/me"),
            ("ünï${HOME}ç", Plain, "ünï/home/meç"),
            ("--port=${PORT}", Template, "--port=${PORT}"),
            (
                "${JARFLEET_SLOT}-${JARFLEET_INSTANCE}",
                Template,
                "${JARFLEET_SLOT}-${JARFLEET_INSTANCE}",
            ),
            ("$$x", Template, "$$x"),
            ("a$b", Template, "a$$b"),
            ("${DOLLAR}", Template, "a$$b"),
            ("${DOLLAR}", Plain, "a$b"),
            ("$${PORT}", Template, "$${PORT}"),
            (
                "--config=${JARFLEET_CONFIG_DIR}/app.yml",
                Template,
                "--config=${JARFLEET_CONFIG_DIR}/app.yml",
            ),
        ];
        for (input, mode, want) in cases {
            assert_eq!(
                interpolate(input, &env, *mode).as_deref(),
                Ok(*want),
                "{input}"
            );
        }
    }

    #[test]
    fn reports_every_error_with_offset() {
        type Case<'a> = (&'a str, Mode, &'a [(usize, &'a str)]);
        let cases: &[Case] = &[
            (
                "${NOPE}",
                Mode::Plain,
                &[(
                    0,
                    "environment variable NOPE is not set; set it or write ${NOPE:default}",
                )],
            ),
            (
                "ab${X:?give X}",
                Mode::Plain,
                &[(2, "environment variable X is not set: give X")],
            ),
            (
                "${EMPTY:?}",
                Mode::Plain,
                &[(0, "environment variable EMPTY is required but empty")],
            ),
            (
                "${UNSET:?}",
                Mode::Plain,
                &[(0, "environment variable UNSET is required but not set")],
            ),
            (
                "${EMPTY:?no}",
                Mode::Plain,
                &[(0, "environment variable EMPTY is empty: no")],
            ),
            (
                "x ${HOME",
                Mode::Plain,
                &[(2, "unterminated `${`: missing `}`")],
            ),
            ("${}", Mode::Plain, &[(0, "empty variable name in `${}`")]),
            (
                "${1A}",
                Mode::Plain,
                &[(0, "`1A` is not a valid environment variable name")],
            ),
            (
                "${A:${B}}",
                Mode::Plain,
                &[(0, "nested `${` is not supported")],
            ),
            (
                "${PORT}",
                Mode::Plain,
                &[(
                    0,
                    "${PORT} is only known when an instance starts, it cannot be used here",
                )],
            ),
            (
                "${PORT:80}",
                Mode::Template,
                &[(
                    0,
                    "PORT is always set by jarfleet for each instance; write ${PORT}",
                )],
            ),
            (
                "${A} ${B}",
                Mode::Plain,
                &[
                    (
                        0,
                        "environment variable A is not set; set it or write ${A:default}",
                    ),
                    (
                        5,
                        "environment variable B is not set; set it or write ${B:default}",
                    ),
                ],
            ),
        ];
        for (input, mode, want) in cases {
            let got: Vec<(usize, String)> = match interpolate(input, &env, *mode) {
                Ok(v) => panic!("{input}: expected errors, got {v:?}"),
                Err(errs) => errs.into_iter().map(|e| (e.offset, e.message)).collect(),
            };
            let want: Vec<(usize, String)> =
                want.iter().map(|(o, m)| (*o, m.to_string())).collect();
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn resolves_instance_templates() {
        let vars: BTreeMap<&str, String> = [
            ("PORT", "9101".to_string()),
            ("JARFLEET_SLOT", "1".to_string()),
            ("JARFLEET_INSTANCE", "orders/1".to_string()),
            (
                "JARFLEET_CONFIG_DIR",
                "/var/lib/jf/instances/orders/1/etc".to_string(),
            ),
        ]
        .into_iter()
        .collect();
        let cases: &[(&str, &str)] = &[
            ("--server.port=${PORT}", "--server.port=9101"),
            ("${JARFLEET_INSTANCE}@${JARFLEET_SLOT}", "orders/1@1"),
            (
                "-Dlogging.config=${JARFLEET_CONFIG_DIR}/logback.xml",
                "-Dlogging.config=/var/lib/jf/instances/orders/1/etc/logback.xml",
            ),
            ("$${PORT}", "${PORT}"),
            ("a$$b", "a$b"),
            ("${OTHER}", "${OTHER}"),
            ("${PORT", "${PORT"),
            ("tail$", "tail$"),
            ("no vars", "no vars"),
        ];
        for (template, want) in cases {
            assert_eq!(resolve_instance(template, &vars), *want, "{template}");
        }
    }

    #[test]
    fn template_then_resolve_keeps_literal_dollars() {
        let vars: BTreeMap<&str, String> = [("PORT", "80".to_string())].into_iter().collect();
        let t = interpolate("-Dx=$${PORT} ${DOLLAR} ${PORT}", &env, Mode::Template);
        assert_eq!(t.as_deref(), Ok("-Dx=$${PORT} a$$b ${PORT}"));
        let t = t.unwrap_or_default();
        assert_eq!(resolve_instance(&t, &vars), "-Dx=${PORT} a$b 80");
    }
}
