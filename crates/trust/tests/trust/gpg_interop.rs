//! OpenPGP verification against keys and signatures made by the real `gpg`.

use std::time::{Duration, UNIX_EPOCH};

use jarfleet_trust::openpgp::{Error, Keyring, verify_detached, verify_detached_at};

use crate::helper::{Gpg, Workdir, run_ok};

fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every combination of key type, signature encoding and keyring encoding verifies, and the
/// signer is reported with gpg's fingerprint and the user id.
#[test]
fn gpg_signatures_verify_with_exported_keyrings() -> Result<(), Error> {
    let gpg = Gpg::new();
    let w = Workdir::new();
    let file = w.write("app.jar", vec![7u8; 150_000]);
    for (uid, algo) in [
        ("Ed Test <ed@example>", "ed25519"),
        ("Rsa Test <rsa@example>", "rsa3072"),
    ] {
        let fpr = gpg.gen_key(uid, algo, "never", &[]);
        for armor_sig in [false, true] {
            let sig = w.path(if armor_sig {
                "app.jar.asc"
            } else {
                "app.jar.sig"
            });
            gpg.sign(&fpr, &file, &sig, armor_sig, &[]);
            for armor_key in [false, true] {
                let keyring_path = w.path("key.pub");
                gpg.export(&keyring_path, armor_key, &[&fpr]);
                let keyring = Keyring::from_file(&keyring_path)?;
                assert_eq!(keyring.fingerprints(), vec![fpr.clone()]);
                let signer = verify_detached(&file, &read(&sig), &keyring)?;
                assert_eq!(
                    signer.fingerprint, fpr,
                    "{algo} sig armored={armor_sig} key armored={armor_key}"
                );
                assert_eq!(signer.key_id, fpr[24..], "a primary key signed");
                assert_eq!(signer.user_id.as_deref(), Some(uid));
                assert!(signer.signed_at.is_some());
            }
        }
    }
    Ok(())
}

/// One keyring with several certificates (as `gpg --export` of several keys, and as two armored
/// exports concatenated) finds the right signer.
#[test]
fn keyrings_with_several_keys_find_the_signer() -> Result<(), Error> {
    let gpg = Gpg::new();
    let w = Workdir::new();
    let a = gpg.gen_key("A <a@example>", "ed25519", "never", &[]);
    let b = gpg.gen_key("B <b@example>", "ed25519", "never", &[]);
    let file = w.write("app.jar", b"payload\n");
    let sig = w.path("app.jar.sig");
    gpg.sign(&b, &file, &sig, false, &[]);

    let both = w.path("both.gpg");
    gpg.export(&both, false, &[&a, &b]);
    let signer = verify_detached(&file, &read(&sig), &Keyring::from_file(&both)?)?;
    assert_eq!(signer.fingerprint, b);

    let (pa, pb) = (w.path("a.asc"), w.path("b.asc"));
    gpg.export(&pa, true, &[&a]);
    gpg.export(&pb, true, &[&b]);
    let concatenated = [read(&pa), read(&pb)].concat();
    let keyring = Keyring::from_bytes(&concatenated)?;
    assert_eq!(keyring.fingerprints(), vec![a, b.clone()]);
    assert_eq!(
        verify_detached(&file, &read(&sig), &keyring)?.fingerprint,
        b
    );
    Ok(())
}

/// A signing subkey (the usual gpg setup for a long-lived primary key) is found and named.
#[test]
fn signatures_by_a_signing_subkey_verify() -> Result<(), Error> {
    let gpg = Gpg::new();
    let w = Workdir::new();
    let fpr = gpg.gen_key("Sub <sub@example>", "ed25519", "never", &[]);
    run_ok(
        gpg.cmd()
            .args(["--quick-add-key", &fpr, "ed25519", "sign", "never"]),
        "",
    );
    let file = w.write("app.jar", b"payload\n");
    let sig = w.path("app.jar.asc");
    // Without "!", gpg picks the newest signing subkey.
    gpg.sign(&fpr, &file, &sig, true, &[]);
    let keyring_path = w.path("key.asc");
    gpg.export(&keyring_path, true, &[&fpr]);

    let signer = verify_detached(&file, &read(&sig), &Keyring::from_file(&keyring_path)?)?;
    assert_eq!(signer.fingerprint, fpr);
    assert_ne!(
        signer.key_id,
        fpr[24..],
        "the subkey signed, not the primary"
    );
    Ok(())
}

#[test]
fn tampered_file_is_refused() -> Result<(), Error> {
    let gpg = Gpg::new();
    let w = Workdir::new();
    let fpr = gpg.gen_key("T <t@example>", "ed25519", "never", &[]);
    let file = w.write("app.jar", b"original\n");
    let sig = w.path("app.jar.sig");
    gpg.sign(&fpr, &file, &sig, false, &[]);
    let keyring_path = w.path("key.gpg");
    gpg.export(&keyring_path, false, &[&fpr]);
    w.write("app.jar", b"0riginal\n");

    let err = verify_detached(&file, &read(&sig), &Keyring::from_file(&keyring_path)?).err();
    let Some(err @ Error::BadSignature { .. }) = err else {
        panic!("expected BadSignature, got {err:?}");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("app.jar does not match its OpenPGP signature"),
        "{msg}"
    );
    assert!(msg.contains(&fpr[24..]), "{msg} should name the key id");
    Ok(())
}

/// A signature by a key that is not in the keyring names that key.
#[test]
fn unknown_key_is_named() -> Result<(), Error> {
    let gpg = Gpg::new();
    let w = Workdir::new();
    let trusted = gpg.gen_key("Trusted <t@example>", "ed25519", "never", &[]);
    let stranger = gpg.gen_key("Stranger <s@example>", "rsa3072", "never", &[]);
    let file = w.write("app.jar", b"payload\n");
    let sig = w.path("app.jar.asc");
    gpg.sign(&stranger, &file, &sig, true, &[]);
    let keyring_path = w.path("key.asc");
    gpg.export(&keyring_path, true, &[&trusted]);

    let err = verify_detached(&file, &read(&sig), &Keyring::from_file(&keyring_path)?).err();
    let Some(err @ Error::UnknownKey { .. }) = err else {
        panic!("expected UnknownKey, got {err:?}");
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&stranger[24..]),
        "{msg} should name the stranger's key id"
    );
    assert!(msg.contains(&trusted), "{msg} should list the keyring");
    assert!(msg.contains("app.jar"), "{msg}");
    Ok(())
}

/// A key revoked with the revocation certificate gpg made at generation is refused.
#[test]
fn revoked_key_is_refused() -> Result<(), Error> {
    let gpg = Gpg::new();
    let w = Workdir::new();
    let fpr = gpg.gen_key("Revoked <r@example>", "ed25519", "never", &[]);
    let file = w.write("app.jar", b"payload\n");
    let sig = w.path("app.jar.sig");
    gpg.sign(&fpr, &file, &sig, false, &[]);

    // gpg stores a revocation certificate with its armor line "defused" by a leading colon.
    let rev_path = gpg
        .home
        .path()
        .join("openpgp-revocs.d")
        .join(format!("{fpr}.rev"));
    let rev = String::from_utf8_lossy(&read(&rev_path)).replace(":-----BEGIN", "-----BEGIN");
    let armed = w.write("rev.asc", rev);
    run_ok(gpg.cmd().arg("--import").arg(&armed), "");
    let keyring_path = w.path("key.asc");
    gpg.export(&keyring_path, true, &[&fpr]);

    let err = verify_detached(&file, &read(&sig), &Keyring::from_file(&keyring_path)?).err();
    let Some(err @ Error::Revoked { .. }) = err else {
        panic!("expected Revoked, got {err:?}");
    };
    assert!(err.to_string().contains("has been revoked"), "{err}");
    Ok(())
}

/// A key that expired after signing: valid while it lived, refused once expired.
#[test]
fn expired_key_is_refused() -> Result<(), Error> {
    let gpg = Gpg::new();
    let w = Workdir::new();
    // Made and used on 2020-01-01, expiring a day later.
    let past = ["--faked-system-time", "20200101T000000!"];
    let fpr = gpg.gen_key("Old <old@example>", "ed25519", "1d", &past);
    let file = w.write("app.jar", b"payload\n");
    let sig = w.path("app.jar.sig");
    gpg.sign(&fpr, &file, &sig, false, &past);
    let keyring_path = w.path("key.gpg");
    gpg.export(&keyring_path, false, &[&fpr]);
    let keyring = Keyring::from_file(&keyring_path)?;

    let noon = UNIX_EPOCH + Duration::from_secs(1_577_880_000); // 2020-01-01 12:00 UTC
    let signer = verify_detached_at(&file, &read(&sig), &keyring, noon)?;
    assert_eq!(signer.fingerprint, fpr);

    let err = verify_detached(&file, &read(&sig), &keyring).err();
    let Some(err @ Error::Expired { .. }) = err else {
        panic!("expected Expired, got {err:?}");
    };
    assert!(
        err.to_string()
            .contains("expired on 2020-01-02 00:00:00 UTC"),
        "{err}"
    );
    Ok(())
}

/// Exported secret keys are not a keyring; the error says what to export instead.
#[test]
fn secret_key_export_is_refused_with_advice() {
    let gpg = Gpg::new();
    let w = Workdir::new();
    let fpr = gpg.gen_key("S <s@example>", "ed25519", "never", &[]);
    for armor in [true, false] {
        let path = w.path("secret");
        let mut cmd = gpg.cmd();
        if armor {
            cmd.arg("--armor");
        }
        run_ok(
            cmd.arg("--output")
                .arg(&path)
                .args(["--export-secret-keys", &fpr]),
            "",
        );
        let err = Keyring::from_file(&path).err();
        assert!(
            matches!(err, Some(Error::SecretKeyring { .. })),
            "armor={armor}: {err:?}"
        );
        assert!(
            err.map(|e| e.to_string())
                .unwrap_or_default()
                .contains("gpg --export --armor"),
            "armor={armor}"
        );
    }
}
