//! Files where a confined app could reach them: what root (the daemon, a shim) may open there,
//! and how.
//!
//! The rule (docs/supervision.md, "Confinement"): nothing running as root follows a name an
//! app's user could have planted. Instance logs live in a directory only root can write
//! ([`own_dir`]), and are still opened without following a symbolic link at their last
//! component, and only when they are regular files root owns ([`open_append`], [`open_read`]):
//! a state dir left by an older jarfleet, which handed the log directory to the app's user, may
//! still hold links planted then. The one file root writes into a directory the app's user owns
//! (a thread dump) is created through a descriptor of that directory, new, never through a link
//! ([`create_new_in`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Instance log files: the app's group may read them (when it has a `user`), nobody else.
pub const LOG_FILE_MODE: u32 = 0o640;
/// An instance's log directory: root's, the app's group may read it.
pub const LOG_DIR_MODE: u32 = 0o750;
/// Everything that holds secrets: the store, `daemon.log`, launch files, token files.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

fn refused(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} {what}: refused (jarfleet opens only regular files it owns there; remove it)",
            path.display()
        ),
    )
}

fn is_symlink_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// Opens `path` for reading: never through a symbolic link at its last component, never a FIFO
/// or device (opened non-blocking, then checked), only a regular file.
pub fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if is_symlink_error(&e) {
                refused(path, "is a symbolic link")
            } else {
                e
            }
        })?;
    if !file.metadata()?.is_file() {
        return Err(refused(path, "is not a regular file"));
    }
    Ok(file)
}

/// Whether `e` is [`open_read`]'s refusal of something that is not a plain file.
pub fn is_refusal(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
}

/// Opens `path` (in a directory only we can write: [`own_dir`]) for appending, creating it with
/// `mode` and `group`. Whatever else is at that name — a symbolic link, a FIFO, a file someone
/// else owns (a hard link) — is never opened through: it is removed and a fresh file made, and
/// the returned note says so (for the log itself).
pub fn open_append(
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> io::Result<(File, Option<String>)> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    let me = nix::unistd::geteuid().as_raw();
    let mut note = None;
    let file = match open() {
        Ok(file) => {
            let meta = file.metadata()?;
            if meta.is_file() && meta.uid() == me {
                file
            } else {
                drop(file);
                note = Some(format!(
                    "{} was not a regular file of uid {me} (mode {:o}, uid {}): removed, not written to",
                    path.display(),
                    meta.mode(),
                    meta.uid()
                ));
                std::fs::remove_file(path)?;
                open()?
            }
        }
        Err(e) if is_symlink_error(&e) => {
            note = Some(format!(
                "{} was a symbolic link: removed, not followed",
                path.display()
            ));
            std::fs::remove_file(path)?;
            open()?
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != me {
        // Raced by someone who can write the directory: the directory is not ours after all.
        return Err(refused(path, "changed while it was opened"));
    }
    if let Some(gid) = group
        && meta.gid() != gid
    {
        std::os::unix::fs::fchown(&file, None, Some(gid))?;
    }
    if meta.mode() & 0o7777 != mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok((file, note))
}

/// Makes `dir` a directory of ours (the effective user's) with `mode` and `group`, creating it
/// and its missing parents. The last component is never followed. One found owned by someone
/// else (an older jarfleet gave the log directory to the app's user) is taken back, and the note
/// says so.
pub fn own_dir(dir: &Path, mode: u32, group: Option<u32>) -> io::Result<Option<String>> {
    let dir_file = make_dir_nofollow(dir, mode)?;
    let meta = dir_file.metadata()?;
    let me = nix::unistd::geteuid().as_raw();
    let mut note = None;
    if meta.uid() != me {
        note = Some(format!(
            "{} belonged to uid {}: taken back (only root writes here now)",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.uid() != me || group.is_some_and(|g| g != meta.gid()) {
        std::os::unix::fs::fchown(&dir_file, Some(me), group)?;
    }
    if meta.mode() & 0o7777 != mode {
        dir_file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(note)
}

/// Gives `dir` (created with `mode` if missing) to `uid`:`gid`, for the app's JVM to write in
/// (its dumps, its GC log). A link at that name is refused, not followed.
pub fn hand_dir(dir: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    let dir_file = make_dir_nofollow(dir, mode)?;
    std::os::unix::fs::fchown(&dir_file, Some(uid), Some(gid))
}

/// Creates `dir` with `mode` if it is missing (and its missing parents), then opens it without
/// following a link at its last component: a link or a file there is refused.
fn make_dir_nofollow(dir: &Path, mode: u32) -> io::Result<File> {
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|e| {
        if e == nix::errno::Errno::ELOOP || e == nix::errno::Errno::ENOTDIR {
            refused(dir, "is not a directory (a symbolic link?)")
        } else {
            io::Error::from(e)
        }
    })?;
    Ok(File::from(fd))
}

/// Creates the new file `name` in `dir`, a directory the app's user may own and write: through
/// a descriptor of `dir` (opened without following a link, and checked to belong to us or to
/// `owner`), with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a name planted in advance is refused and
/// nothing outside is ever written.
pub fn create_new_in(dir: &Path, name: &str, mode: u32, owner: Option<u32>) -> io::Result<File> {
    if name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    let dir_fd = nix::fcntl::open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let meta = nix::sys::stat::fstat(dir_fd.as_fd()).map_err(io::Error::from)?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.st_uid != me && Some(meta.st_uid) != owner {
        return Err(refused(dir, "belongs to another user"));
    }
    let fd = nix::fcntl::openat(
        dir_fd.as_fd(),
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode as libc::mode_t),
    )
    .map_err(io::Error::from)?;
    Ok(File::from(fd))
}

/// Creates `path` with `mode` if it does not exist, and takes away any permission beyond `mode`
/// from one that does (a store or log made by an older jarfleet). `Some(note)` when it did.
pub fn private_file(path: &Path, mode: u32) -> io::Result<Option<String>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    tighten(&file, path, mode)
}

/// Takes permissions beyond `mode` away from an open file or directory.
pub fn tighten(file: &File, path: &Path, mode: u32) -> io::Result<Option<String>> {
    let old = file.metadata()?.mode() & 0o7777;
    if old & !mode == 0 {
        return Ok(None);
    }
    file.set_permissions(std::fs::Permissions::from_mode(old & mode))?;
    Ok(Some(format!(
        "{} was mode {old:o}: now {:o}",
        path.display(),
        old & mode
    )))
}

/// Takes permissions beyond `mode` away from `path` if it exists (never following a link).
pub fn tighten_path(path: &Path, mode: u32) -> io::Result<Option<String>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => tighten(&file, path, mode),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically: temp file (0600: launch files hold the app's
/// environment), fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_refuse_links_and_fifos() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root only\n")?;
        let link = dir.path().join("stderr.log.1");
        std::os::unix::fs::symlink(&secret, &link)?;
        let e = open_read(&link).expect_err("a link must be refused");
        assert!(is_refusal(&e), "{e}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).map_err(io::Error::from)?;
        let e = open_read(&fifo).expect_err("a FIFO must be refused");
        assert!(is_refusal(&e), "{e}");
        assert!(open_read(&secret).is_ok());
        Ok(())
    }

    #[test]
    fn appends_never_go_through_a_planted_link() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("shadow");
        std::fs::write(&target, "untouched\n")?;
        let log = dir.path().join("stdout.log");
        std::os::unix::fs::symlink(&target, &log)?;
        let (mut file, note) = open_append(&log, LOG_FILE_MODE, None)?;
        file.write_all(b"app output\n")?;
        assert!(note.is_some_and(|n| n.contains("symbolic link")));
        assert_eq!(std::fs::read_to_string(&target)?, "untouched\n");
        assert_eq!(std::fs::read_to_string(&log)?, "app output\n");
        let meta = std::fs::symlink_metadata(&log)?;
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o777, LOG_FILE_MODE);
        // A plain file of ours is appended to, with no note.
        let (_, note) = open_append(&log, LOG_FILE_MODE, None)?;
        assert!(note.is_none());
        Ok(())
    }

    #[test]
    fn new_files_in_a_foreign_dir_refuse_planted_names() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let target = dir.path().join("target");
        std::fs::write(&target, "untouched\n")?;
        std::os::unix::fs::symlink(&target, dir.path().join("dump.txt"))?;
        assert!(create_new_in(dir.path(), "dump.txt", 0o640, None).is_err());
        assert!(create_new_in(dir.path(), "../escape", 0o640, None).is_err());
        let mut f = create_new_in(dir.path(), "fresh.txt", 0o640, None)?;
        f.write_all(b"dump\n")?;
        assert_eq!(std::fs::read_to_string(&target)?, "untouched\n");
        // The directory itself given as a link is not followed.
        let link = dir.path().join("dirlink");
        std::os::unix::fs::symlink(dir.path(), &link)?;
        assert!(create_new_in(&link, "other.txt", 0o640, None).is_err());
        Ok(())
    }

    #[test]
    fn private_files_are_created_private_and_old_ones_tightened() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let fresh = dir.path().join("state.db");
        assert!(private_file(&fresh, PRIVATE_FILE_MODE)?.is_none());
        assert_eq!(std::fs::metadata(&fresh)?.mode() & 0o777, 0o600);
        let old = dir.path().join("daemon.log");
        std::fs::write(&old, "x")?;
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644))?;
        assert!(private_file(&old, PRIVATE_FILE_MODE)?.is_some());
        assert_eq!(std::fs::metadata(&old)?.mode() & 0o777, 0o600);
        assert!(tighten_path(&dir.path().join("missing"), 0o600)?.is_none());
        Ok(())
    }

    #[test]
    fn own_dir_refuses_a_link_and_sets_the_mode() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let logs = dir.path().join("logs/app/0");
        assert!(own_dir(&logs, LOG_DIR_MODE, None)?.is_none());
        assert_eq!(std::fs::metadata(&logs)?.mode() & 0o777, LOG_DIR_MODE);
        let link = dir.path().join("logs/app/1");
        std::os::unix::fs::symlink(dir.path(), &link)?;
        assert!(own_dir(&link, LOG_DIR_MODE, None).is_err());
        Ok(())
    }
}
