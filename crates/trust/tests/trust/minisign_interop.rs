//! Our minisign implementation against the real `minisign` binary, in both directions.

use std::path::Path;

use jarfleet_trust::minisign::{
    self, Error, KdfLimits, KeyPair, PublicKey, SecretKey, SignatureAlgorithm, SignatureFile,
    sign_file, verify_file,
};

use crate::helper::{Workdir, minisign, run, run_ok, stderr, stdout};

const PASSWORD: &str = "correct horse battery staple";

/// Writes our key pair's two files into the work dir; returns (public, secret) paths.
fn write_pair(w: &Workdir, pair: &KeyPair) -> (std::path::PathBuf, std::path::PathBuf) {
    let public = w.write("ours.pub", pair.public.to_file_string());
    let secret = w.write("ours.key", pair.secret.to_file_string().as_bytes());
    (public, secret)
}

/// minisign -V must accept `sig` for `file` with `public`, and print the trusted comment.
fn minisign_accepts(file: &Path, public: &Path, sig: &Path, trusted_comment: &str) {
    let out = run_ok(
        minisign()
            .arg("-V")
            .arg("-m")
            .arg(file)
            .arg("-p")
            .arg(public)
            .arg("-x")
            .arg(sig),
        "",
    );
    let printed = stdout(&out);
    assert!(
        printed.contains(&format!("Trusted comment: {trusted_comment}")),
        "{printed}"
    );
}

/// Signs `file` with minisign and the secret key at `secret` (password fed on stdin).
fn minisign_sign(file: &Path, secret: &Path, sig: &Path, password: &str, extra: &[&str]) {
    run_ok(
        minisign()
            .arg("-S")
            .args(extra)
            .arg("-s")
            .arg(secret)
            .arg("-m")
            .arg(file)
            .arg("-x")
            .arg(sig),
        &format!("{password}\n"),
    );
}

/// Our unencrypted key and signature are accepted by minisign, and minisign signs with our key.
#[test]
fn our_unencrypted_key_and_signature_work_with_minisign() -> Result<(), Error> {
    let w = Workdir::new();
    let pair = KeyPair::generate(None)?;
    let (public, secret) = write_pair(&w, &pair);
    // More than one 64 KiB chunk, not a multiple of it.
    let data: Vec<u8> = (0..200_001u32).map(|i| (i * 7 % 256) as u8).collect();
    let file = w.write("app.jar", &data);

    let sig = sign_file(&file, &pair.secret, None)?;
    let sig_path = w.write("app.jar.minisig", sig.to_string());
    assert!(sig.trusted_comment().ends_with("\tfile:app.jar\thashed"));
    minisign_accepts(&file, &public, &sig_path, sig.trusted_comment());

    // minisign reads our unencrypted secret key (no password asked) and signs with it.
    let theirs = w.path("theirs.minisig");
    minisign_sign(&file, &secret, &theirs, "", &["-t", "made by minisign"]);
    let verified = verify_file(&file, &pair.public, &SignatureFile::from_file(&theirs)?)?;
    assert_eq!(verified.trusted_comment, "made by minisign");
    Ok(())
}

/// Our password-protected key: minisign decrypts it with the password, and verifies what we
/// sign with it. (Cheaper scrypt limits than the default keep this fast in debug builds; the
/// default limits are exercised by `minisign_password_protected_key_works_here`.)
#[test]
fn our_encrypted_key_and_signature_work_with_minisign() -> Result<(), Error> {
    let w = Workdir::new();
    let pair = KeyPair::generate_with_limits(Some(PASSWORD), KdfLimits::INTERACTIVE)?;
    let (public, secret) = write_pair(&w, &pair);
    let file = w.write("app.jar", b"signed by a password-protected key\n");

    let loaded = SecretKey::from_file(&secret, Some(PASSWORD))?;
    let sig = sign_file(&file, &loaded, Some("release 1.2.3"))?;
    let sig_path = w.write("app.jar.minisig", sig.to_string());
    minisign_accepts(&file, &public, &sig_path, "release 1.2.3");

    let theirs = w.path("theirs.minisig");
    minisign_sign(&file, &secret, &theirs, PASSWORD, &[]);
    verify_file(&file, &pair.public, &SignatureFile::from_file(&theirs)?)?;

    // minisign refuses a wrong password for our key, as we do.
    let out = run(
        minisign()
            .arg("-S")
            .arg("-s")
            .arg(&secret)
            .arg("-m")
            .arg(&file)
            .arg("-x")
            .arg(w.path("never.minisig")),
        "wrong\n",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Wrong password"), "{}", stderr(&out));
    let ours = SecretKey::from_file(&secret, Some("wrong")).err();
    assert!(
        matches!(ours, Some(Error::WrongPassword { .. })),
        "{ours:?}"
    );
    Ok(())
}

/// `minisign -G -W` keys: we verify minisign's signatures, and load and sign with its secret key.
#[test]
fn minisign_unencrypted_key_works_here() -> Result<(), Error> {
    let w = Workdir::new();
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
    let file = w.write("app.jar", b"hello from minisign\n");
    let sig_path = w.path("app.jar.minisig");
    minisign_sign(&file, &secret, &sig_path, "", &[]);

    let pk = PublicKey::from_file(&public)?;
    let sig = SignatureFile::from_file(&sig_path)?;
    let verified = verify_file(&file, &pk, &sig)?;
    assert_eq!(verified.algorithm, SignatureAlgorithm::Prehashed);
    assert_eq!(verified.key_id, pk.key_id());
    assert!(
        verified.trusted_comment.ends_with("\tfile:app.jar\thashed"),
        "{}",
        verified.trusted_comment
    );
    // The key id we show is the one minisign shows (it may drop leading zeros).
    let comment_line = w.read_string("m.pub");
    assert!(
        comment_line.contains(pk.key_id().to_string().trim_start_matches('0')),
        "{comment_line}"
    );

    let sk = SecretKey::from_file(&secret, None)?;
    assert!(!sk.is_encrypted());
    assert_eq!(sk.public_key(), pk);
    let ours = sign_file(&file, &sk, Some("signed by jarfleet"))?;
    let ours_path = w.write("ours.minisig", ours.to_string());
    minisign_accepts(&file, &public, &ours_path, "signed by jarfleet");
    Ok(())
}

/// `minisign -G` with a password (read from stdin when it is not a terminal), with minisign's
/// default scrypt cost (1 GiB). Slow in an unoptimised build of the `scrypt` crate.
#[test]
fn minisign_password_protected_key_works_here() -> Result<(), Error> {
    let w = Workdir::new();
    let (public, secret) = (w.path("m.pub"), w.path("m.key"));
    run_ok(
        minisign()
            .arg("-G")
            .arg("-p")
            .arg(&public)
            .arg("-s")
            .arg(&secret),
        &format!("{PASSWORD}\n{PASSWORD}\n"),
    );
    let file = w.write("app.jar", b"hello from a protected minisign key\n");
    let sig_path = w.path("app.jar.minisig");
    minisign_sign(&file, &secret, &sig_path, PASSWORD, &["-t", "v2"]);

    let pk = PublicKey::from_file(&public)?;
    let verified = verify_file(&file, &pk, &SignatureFile::from_file(&sig_path)?)?;
    assert_eq!(verified.trusted_comment, "v2");

    let sk = SecretKey::from_file(&secret, Some(PASSWORD))?;
    assert!(sk.is_encrypted());
    assert_eq!(sk.public_key(), pk);
    // Written back unchanged: same salt, limits and encryption.
    assert_eq!(sk.to_file_string().as_str(), w.read_string("m.key"));
    let ours = sign_file(&file, &sk, None)?;
    let ours_path = w.write("ours.minisig", ours.to_string());
    minisign_accepts(&file, &public, &ours_path, ours.trusted_comment());
    Ok(())
}

/// Legacy (`Ed`, non-prehashed) signatures from `minisign -S -l` verify here.
#[test]
fn minisign_legacy_signature_verifies_here() -> Result<(), Error> {
    let w = Workdir::new();
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
    let file = w.write("app.jar", vec![b'x'; 300_000]);
    let sig_path = w.path("app.jar.minisig");
    minisign_sign(&file, &secret, &sig_path, "", &["-l"]);
    let sig = SignatureFile::from_file(&sig_path)?;
    assert_eq!(sig.algorithm(), SignatureAlgorithm::Legacy);
    let verified = verify_file(&file, &PublicKey::from_file(&public)?, &sig)?;
    assert_eq!(verified.algorithm, SignatureAlgorithm::Legacy);

    w.write("app.jar", vec![b'y'; 300_000]);
    let err = verify_file(&file, &PublicKey::from_file(&public)?, &sig).err();
    assert!(matches!(err, Some(Error::BadSignature { .. })), "{err:?}");
    Ok(())
}

/// A file changed after minisign signed it: refused by both, with our error naming the file.
#[test]
fn tampered_file_is_refused() -> Result<(), Error> {
    let w = Workdir::new();
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
    let file = w.write("app.jar", b"original\n");
    let sig_path = w.path("app.jar.minisig");
    minisign_sign(&file, &secret, &sig_path, "", &[]);
    w.write("app.jar", b"0riginal\n");

    let theirs = run(
        minisign()
            .arg("-V")
            .arg("-m")
            .arg(&file)
            .arg("-p")
            .arg(&public)
            .arg("-x")
            .arg(&sig_path),
        "",
    );
    assert!(
        !theirs.status.success(),
        "minisign accepted a tampered file"
    );

    let err = verify_file(
        &file,
        &PublicKey::from_file(&public)?,
        &SignatureFile::from_file(&sig_path)?,
    )
    .err();
    let Some(err @ Error::BadSignature { .. }) = err else {
        panic!("expected BadSignature, got {err:?}");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("app.jar does not match its signature"),
        "{msg}"
    );
    assert!(msg.contains("modified or corrupted after signing"), "{msg}");
    Ok(())
}

/// A trusted comment edited in minisign's signature file: refused by both.
#[test]
fn tampered_trusted_comment_is_refused() -> Result<(), Error> {
    let w = Workdir::new();
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
    let file = w.write("app.jar", b"payload\n");
    let sig_path = w.path("app.jar.minisig");
    minisign_sign(&file, &secret, &sig_path, "", &["-t", "version:1.0.0"]);
    let edited = w
        .read_string("app.jar.minisig")
        .replace("version:1.0.0", "version:9.9.9");
    w.write("app.jar.minisig", &edited);

    let theirs = run(
        minisign()
            .arg("-V")
            .arg("-m")
            .arg(&file)
            .arg("-p")
            .arg(&public)
            .arg("-x")
            .arg(&sig_path),
        "",
    );
    assert!(
        stderr(&theirs).contains("Comment signature verification failed"),
        "{}",
        stderr(&theirs)
    );

    let sig = SignatureFile::from_file(&sig_path)?;
    assert_eq!(sig.trusted_comment(), "version:9.9.9");
    let err = verify_file(&file, &PublicKey::from_file(&public)?, &sig).err();
    let Some(err @ Error::BadTrustedComment { .. }) = err else {
        panic!("expected BadTrustedComment, got {err:?}");
    };
    assert!(err.to_string().contains("trusted comment"), "{err}");
    Ok(())
}

/// A signature checked against another key: both name the two key ids, the same ones.
#[test]
fn wrong_key_names_both_key_ids_like_minisign() -> Result<(), Error> {
    let w = Workdir::new();
    let (public, secret, other) = (w.path("m.pub"), w.path("m.key"), w.path("other.pub"));
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
    run_ok(
        minisign()
            .arg("-G")
            .arg("-W")
            .arg("-p")
            .arg(&other)
            .arg("-s")
            .arg(w.path("other.key")),
        "",
    );
    let file = w.write("app.jar", b"payload\n");
    let sig_path = w.path("app.jar.minisig");
    minisign_sign(&file, &secret, &sig_path, "", &[]);

    let theirs = run(
        minisign()
            .arg("-V")
            .arg("-m")
            .arg(&file)
            .arg("-p")
            .arg(&other)
            .arg("-x")
            .arg(&sig_path),
        "",
    );
    let theirs = stderr(&theirs);

    let signer = PublicKey::from_file(&public)?;
    let wrong = PublicKey::from_file(&other)?;
    let err = verify_file(&file, &wrong, &SignatureFile::from_file(&sig_path)?).err();
    let Some(err @ Error::WrongKey { .. }) = err else {
        panic!("expected WrongKey, got {err:?}");
    };
    let msg = err.to_string();
    for id in [signer.key_id().to_string(), wrong.key_id().to_string()] {
        assert!(msg.contains(&id), "{msg} should name {id}");
        assert!(
            theirs.contains(id.trim_start_matches('0')),
            "minisign said: {theirs}"
        );
    }
    assert!(
        msg.contains(&format!("verify with the public key {}", signer.key_id())),
        "{msg}"
    );
    Ok(())
}

/// Our error types are what the CLI will print: check one whole message.
#[test]
fn malformed_signature_file_error_names_file_and_line() {
    let w = Workdir::new();
    let path = w.write("bad.minisig", "untrusted comment: x\nnot-base64!\n");
    let err = SignatureFile::from_file(&path).err().map(|e| e.to_string());
    assert_eq!(
        err,
        Some(format!(
            "{} is not a valid minisign signature: line 2: signature is not valid base64 \
             (Invalid symbol 45, offset 3.): \"not-base64!\"",
            path.display()
        ))
    );
}

/// A missing key file is a read error naming the path.
#[test]
fn missing_files_are_read_errors_naming_the_path() {
    let err = PublicKey::from_file(Path::new("/nonexistent/key.pub")).err();
    assert!(
        matches!(&err, Some(minisign::Error::Read { path, .. }) if path == Path::new("/nonexistent/key.pub")),
        "{err:?}"
    );
}
