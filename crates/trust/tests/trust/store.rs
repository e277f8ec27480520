//! `TrustStore::verify_artifact` with keys and signatures of both kinds made by the real tools.

use jarfleet_trust::minisign::{self, KeyPair, sign_file};
use jarfleet_trust::{Signer, TrustError, TrustStore};

use crate::helper::{Gpg, Workdir, minisign, run_ok};

/// A store trusting one minisign key and one OpenPGP key accepts both kinds of signature, told
/// apart by content (the file names here are deliberately unhelpful).
#[test]
fn verifies_either_kind_of_signature() -> Result<(), TrustError> {
    let w = Workdir::new();
    let gpg = Gpg::new();
    let file = w.write("app.jar", b"artifact\n");

    let pair = KeyPair::generate(None)?;
    let mpub = w.write("release.pub", pair.public.to_file_string());
    let msig = w.write(
        "sig-1",
        sign_file(&file, &pair.secret, Some("v1"))?.to_string(),
    );

    let fpr = gpg.gen_key("Release <rel@example>", "ed25519", "never", &[]);
    let keyring = w.path("release.asc");
    gpg.export(&keyring, true, &[&fpr]);
    let (bin, asc) = (w.path("sig-2"), w.path("sig-3"));
    gpg.sign(&fpr, &file, &bin, false, &[]);
    gpg.sign(&fpr, &file, &asc, true, &[]);

    let mut store = TrustStore::new();
    store.add_key_file(&mpub)?;
    store.add_key_file(&keyring)?;
    assert_eq!(
        store.key_ids(),
        vec![
            format!("minisign:{}", pair.public.key_id()),
            format!("openpgp:{fpr}")
        ]
    );

    match store.verify_artifact(&file, &msig)? {
        Signer::Minisign(v) => assert_eq!(v.trusted_comment, "v1"),
        other => panic!("expected a minisign signer, got {other:?}"),
    }
    for sig in [&bin, &asc] {
        let signer = store.verify_artifact(&file, sig)?;
        assert_eq!(signer.key_id(), format!("openpgp:{fpr}"));
        assert_eq!(
            signer.to_string(),
            format!("OpenPGP key {fpr} (Release <rel@example>)")
        );
    }
    Ok(())
}

/// A minisign signature by an untrusted key (made by the minisign tool) names its key id, the
/// trusted keys and the file.
#[test]
fn untrusted_minisign_key_is_named_with_the_trusted_ones() -> Result<(), TrustError> {
    let w = Workdir::new();
    let file = w.write("app.jar", b"artifact\n");
    let (public, secret) = (w.path("m.pub"), w.path("m.key"));
    run_ok(
        minisign()
            .arg("-G")
            .arg("-W")
            .arg("-p")
            .arg(&public)
            .arg("-s")
            .arg(&secret),
        "",
    );
    let sig = w.path("app.jar.minisig");
    run_ok(
        minisign()
            .arg("-S")
            .arg("-s")
            .arg(&secret)
            .arg("-m")
            .arg(&file)
            .arg("-x")
            .arg(&sig),
        "",
    );
    let stranger = minisign::PublicKey::from_file(&public)?;
    let trusted = KeyPair::generate(None)?.public;
    let mut store = TrustStore::new();
    store.add_minisign(trusted.clone());

    let err = store.verify_artifact(&file, &sig).err();
    let Some(err @ TrustError::UntrustedKey { .. }) = err else {
        panic!("expected UntrustedKey, got {err:?}");
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("minisign key {}", stranger.key_id())),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("minisign:{}", trusted.key_id())),
        "{msg}"
    );
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    Ok(())
}

/// An OpenPGP signature by a key outside the store names that key and the trusted ones.
#[test]
fn untrusted_openpgp_key_is_named_with_the_trusted_ones() -> Result<(), TrustError> {
    let w = Workdir::new();
    let gpg = Gpg::new();
    let file = w.write("app.jar", b"artifact\n");
    let stranger = gpg.gen_key("Stranger <s@example>", "ed25519", "never", &[]);
    let sig = w.path("app.jar.sig");
    gpg.sign(&stranger, &file, &sig, false, &[]);
    let trusted = KeyPair::generate(None)?.public;
    let mut store = TrustStore::new();
    store.add_minisign(trusted.clone());

    let err = store.verify_artifact(&file, &sig).err();
    let Some(err @ TrustError::UntrustedKey { .. }) = err else {
        panic!("expected UntrustedKey, got {err:?}");
    };
    let msg = err.to_string();
    assert!(msg.contains(&format!("OpenPGP key {stranger}")), "{msg}");
    assert!(
        msg.contains(&format!("minisign:{}", trusted.key_id())),
        "{msg}"
    );
    Ok(())
}

/// Signature checks that fail for a trusted key come through with their precise error.
#[test]
fn failures_with_a_trusted_key_keep_their_precise_error() -> Result<(), TrustError> {
    let w = Workdir::new();
    let file = w.write("app.jar", b"artifact\n");
    let pair = KeyPair::generate(None)?;
    let sig = w.write(
        "app.jar.minisig",
        sign_file(&file, &pair.secret, None)?.to_string(),
    );
    let mut store = TrustStore::new();
    store.add_minisign(pair.public);
    w.write("app.jar", b"artifacT\n");
    let err = store.verify_artifact(&file, &sig).err();
    assert!(
        matches!(
            err,
            Some(TrustError::Minisign(minisign::Error::BadSignature { .. }))
        ),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn unknown_signature_format_is_refused() -> Result<(), TrustError> {
    let w = Workdir::new();
    let file = w.write("app.jar", b"artifact\n");
    let sig = w.write("app.jar.sig", b"sha256:0123456789abcdef\n");
    let mut store = TrustStore::new();
    store.add_minisign(KeyPair::generate(None)?.public);
    let err = store.verify_artifact(&file, &sig).err();
    let Some(err @ TrustError::UnknownSignatureFormat { .. }) = err else {
        panic!("expected UnknownSignatureFormat, got {err:?}");
    };
    assert!(
        err.to_string().contains("neither a minisign signature"),
        "{err}"
    );
    Ok(())
}
