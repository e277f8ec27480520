use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use jarfleet_bundle::template::{VarForm, dir_variables, render_dir};
use jarfleet_bundle::{Bundle, Error, pack_writer};

use crate::helper::{self, KEYSTORE};

/// Renders the config tree of a real extracted bundle.
#[test]
fn renders_an_extracted_config_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = helper::fixture(&tmp.path().join("src"));
    let mut bytes = Vec::new();
    pack_writer(&spec, &mut bytes).expect("pack");
    let release = tmp.path().join("release");
    Bundle::open(bytes.as_slice())
        .and_then(|b| b.extract_to(&release))
        .expect("extract");
    let config = release.join("config");

    let uses = dir_variables(&config).expect("variables");
    let summary: Vec<(PathBuf, String, bool)> = uses
        .iter()
        .map(|(f, u)| (f.clone(), u.name.clone(), u.form.is_required()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (PathBuf::from("application.properties"), "PORT".into(), true),
            (
                PathBuf::from("application.properties"),
                "DB_URL".into(),
                false
            ),
            (PathBuf::from("sub/logback.xml"), "LOG_LEVEL".into(), true),
        ]
    );
    assert_eq!(uses[2].1.form, VarForm::Required("set LOG_LEVEL".into()));

    let values: HashMap<&str, &str> = [("PORT", "9101"), ("LOG_LEVEL", "INFO")].into();
    let lookup = |name: &str| values.get(name).map(|v| v.to_string());
    let out = tmp.path().join("rendered");
    let report = render_dir(&config, &out, &lookup).expect("render");
    assert_eq!(report.copied, vec![PathBuf::from("keystore.p12")]);
    assert_eq!(report.rendered.len(), 2);
    assert_eq!(
        fs::read_to_string(out.join("application.properties")).expect("props"),
        "server.port=9101\ndb.url=jdbc:h2:mem:orders\nliteral=${NOT_A_VAR}\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("sub/logback.xml")).expect("logback"),
        "<configuration><root level=\"INFO\"/></configuration>\n"
    );
    assert_eq!(
        fs::read(out.join("keystore.p12")).expect("keystore"),
        KEYSTORE
    );
    let mode = |p: &str| {
        fs::metadata(out.join(p))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("application.properties"), 0o644);
    assert_eq!(mode("sub"), 0o755);
}

#[test]
fn collects_every_error_of_every_file_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    helper::write(
        &src.join("a.conf"),
        b"x=${MISSING}\ny=${OK}\nz=${NEED:?give NEED}\n",
        0o644,
    );
    helper::write(&src.join("b/c.conf"), b"ok\n  w=${broken\n", 0o600);
    let lookup = |name: &str| (name == "OK").then(|| "1".to_string());
    let out = tmp.path().join("out");
    let err = render_dir(&src, &out, &lookup).expect_err("errors");
    let Error::Templates(errors) = &err else {
        panic!("wrong error: {err}");
    };
    let got: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            "a.conf:1:3: ${MISSING}: MISSING has no value (set it, or write ${MISSING:default})",
            "a.conf:3:3: ${NEED}: give NEED",
            "b/c.conf:2:5: unterminated `${`: no `}` on this line (write $${ for a literal ${)",
        ]
    );
    assert_eq!(errors.0[0].variable.as_deref(), Some("MISSING"));
    assert!(err.to_string().starts_with("3 template errors:"), "{err}");
    assert!(
        !out.exists(),
        "nothing may be written when any template fails"
    );
}

#[test]
fn refuses_a_non_empty_target_and_symlinks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    helper::write(&src.join("a"), b"a", 0o644);
    let out = tmp.path().join("out");
    helper::write(&out.join("old"), b"old", 0o644);
    let err = render_dir(&src, &out, &|_| None).expect_err("not empty");
    assert!(
        err.to_string().contains("must be an empty directory"),
        "{err}"
    );
    std::os::unix::fs::symlink("a", src.join("l")).expect("symlink");
    let err = render_dir(&src, &tmp.path().join("out2"), &|_| None).expect_err("symlink");
    assert!(
        err.to_string()
            .contains("only regular files and directories"),
        "{err}"
    );
}
