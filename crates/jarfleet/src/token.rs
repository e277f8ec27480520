//! `jarfleet token new FILE`: a random API token for the TCP API, written 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;

use crate::context::CliError;

/// 32 random bytes from the OS-seeded CSPRNG, as 64 hex digits.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn new(file: &Path, force: bool) -> Result<(), CliError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut f = options.open(file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::usage(
                format!("{} already exists", file.display()),
                Some("pass --force to replace it (clients using the old token are then refused)"),
            )
        } else {
            CliError::failed(format!("cannot write {}: {e}", file.display()))
        }
    })?;
    // An existing file keeps its mode on truncation: make it private before the secret goes in.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| CliError::failed(format!("cannot chmod 600 {}: {e}", file.display())))?;
    writeln!(f, "{}", random_token())
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", file.display())))?;
    eprintln!(
        "wrote a new API token to {} (mode 0600); point [daemon] token_file at it",
        file.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
