//! `jarfleet keygen | sign | verify`: minisign-compatible keys and signatures, and checking
//! any artifact against trusted keys (minisign public keys and OpenPGP keyrings).

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use jarfleet_trust::TrustStore;
use jarfleet_trust::minisign::{self, KeyPair, SecretKey};

use crate::context::CliError;

/// A password from `--password-file`, else typed at the terminal (twice when `confirm`), else
/// one line of stdin (as minisign reads it).
fn read_password(file: Option<&Path>, prompt: &str, confirm: bool) -> Result<String, CliError> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| CliError::failed(format!("reading {}: {e}", f.display())))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt)
            .map_err(|e| CliError::failed(format!("reading the password: {e}")))?;
        if confirm {
            let again = rpassword::prompt_password("Password (again): ")
                .map_err(|e| CliError::failed(format!("reading the password: {e}")))?;
            if again != first {
                return Err(CliError::usage("the passwords differ", None));
            }
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::failed(format!("reading the password from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Writes a new file (never over an existing one unless `force`) with `mode`.
fn write_new(path: &Path, text: &str, mode: u32, force: bool) -> Result<(), CliError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(mode);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::usage(
                format!("{} exists already", path.display()),
                Some("pass --force to overwrite it, or choose another name with -o"),
            )
        } else {
            CliError::failed(format!("writing {}: {e}", path.display()))
        }
    })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::failed(format!("writing {}: {e}", path.display())))
}

pub fn keygen(
    out: &Path,
    no_password: bool,
    password_file: Option<&Path>,
    force: bool,
) -> Result<(), CliError> {
    let password = if no_password {
        None
    } else {
        Some(read_password(
            password_file,
            "Password for the new key: ",
            true,
        )?)
    };
    let pair = KeyPair::generate(password.as_deref().filter(|p| !p.is_empty()))
        .map_err(|e| CliError::failed(e.to_string()))?;
    let secret_path = out.with_extension("key");
    let public_path = out.with_extension("pub");
    write_new(&secret_path, &pair.secret.to_file_string(), 0o600, force)?;
    write_new(&public_path, &pair.public.to_file_string(), 0o644, force)?;
    println!("key id {}", pair.public.key_id());
    println!("secret key: {} (keep it private)", secret_path.display());
    println!(
        "public key: {} (list it under [trust] keys)",
        public_path.display()
    );
    Ok(())
}

pub fn sign(
    file: &Path,
    key: &Path,
    password_file: Option<&Path>,
    comment: Option<&str>,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(key)
        .map_err(|e| CliError::failed(format!("reading the secret key {}: {e}", key.display())))?;
    let secret = match SecretKey::from_file_string(&text, None) {
        Ok(k) => k,
        Err(minisign::Error::PasswordRequired { .. }) => {
            let pw = read_password(password_file, "Password: ", false)?;
            SecretKey::from_file_string(&text, Some(&pw))
                .map_err(|e| CliError::failed(format!("{}: {e}", key.display())))?
        }
        Err(e) => return Err(CliError::failed(format!("{}: {e}", key.display()))),
    };
    let sig = minisign::sign_file(file, &secret, comment)
        .map_err(|e| CliError::failed(format!("signing {}: {e}", file.display())))?;
    let mut out = file.as_os_str().to_owned();
    out.push(".minisig");
    let out = PathBuf::from(out);
    write_new(&out, &sig.to_string(), 0o644, true)?;
    println!("{} signed with key {}", out.display(), secret.key_id());
    Ok(())
}

/// The trusted keys given on the command line (minisign `.pub` files or OpenPGP keyrings).
pub fn trust_store(keys: &[PathBuf]) -> Result<TrustStore, CliError> {
    let mut store = TrustStore::new();
    for k in keys {
        store
            .add_key_file(k)
            .map_err(|e| CliError::usage(format!("{}: {e}", k.display()), None))?;
    }
    Ok(store)
}

/// Checks `file` against its signature (beside it, or `sig`) with the trusted `keys`.
pub fn verify(file: &Path, sig: Option<&Path>, keys: &[PathBuf]) -> Result<(), CliError> {
    if keys.is_empty() {
        return Err(CliError::usage(
            "no trusted key given",
            Some("pass --key KEY (a minisign .pub file or an OpenPGP keyring), once per key"),
        ));
    }
    let store = trust_store(keys)?;
    let sig = match sig {
        Some(s) => s.to_path_buf(),
        None => jarfleet_trust::signature_beside(file).ok_or_else(|| {
            CliError::failed(format!(
                "{} is not signed: no {0}.minisig, .sig or .asc beside it",
                file.display()
            ))
        })?,
    };
    let signer = store
        .verify_artifact(file, &sig)
        .map_err(|e| CliError::failed(e.to_string()))?;
    println!("{}: good signature by {signer}", file.display());
    Ok(())
}
