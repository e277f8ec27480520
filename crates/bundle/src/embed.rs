//! Bundles embedded at the end of another file: the self-contained installer is the jarfleet
//! binary, then a `.jfb` bundle, then a 16-byte trailer:
//!
//! ```text
//! [binary ...][bundle: len bytes][len: u64 little-endian][b"JFBUNDL1"]
//! ```

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;

/// The trailer's last 8 bytes.
pub const TRAILER_MAGIC: [u8; 8] = *b"JFBUNDL1";
/// Trailer length: 8-byte length + 8-byte magic.
pub const TRAILER_LEN: u64 = 16;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Writes `out` = `binary` (without any bundle it already carries) + `bundle` + trailer, mode
/// 0755, atomically (temp file in the same directory, fsync, rename).
pub fn append_to_binary(binary: &Path, bundle: &Path, out: &Path) -> Result<()> {
    let binary_len = match find_embedded(binary)? {
        Some((offset, _)) => offset,
        None => fs::metadata(binary)
            .map_err(Error::io("inspect", binary))?
            .len(),
    };
    let mut bundle_file = fs::File::open(bundle).map_err(Error::io("open", bundle))?;
    let bundle_len = bundle_file
        .metadata()
        .map_err(Error::io("inspect", bundle))?
        .len();
    let mut magic = [0u8; 4];
    if bundle_file.read_exact(&mut magic).is_err() || magic != ZSTD_MAGIC {
        return Err(Error::Embedded {
            path: bundle.into(),
            problem: "not a .jfb bundle (no zstd magic at its start)".into(),
        });
    }
    bundle_file
        .seek(SeekFrom::Start(0))
        .map_err(Error::io("read", bundle))?;

    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".installer-")
        .tempfile_in(dir)
        .map_err(Error::io("create a temp file in", dir))?;
    {
        let mut w = io::BufWriter::new(tmp.as_file());
        let mut bin = fs::File::open(binary)
            .map_err(Error::io("open", binary))?
            .take(binary_len);
        copy_exact(&mut bin, &mut w, binary_len, binary)?;
        copy_exact(&mut bundle_file, &mut w, bundle_len, bundle)?;
        w.write_all(&bundle_len.to_le_bytes())
            .and_then(|()| w.write_all(&TRAILER_MAGIC))
            .and_then(|()| w.flush())
            .map_err(Error::io("write", tmp.path()))?;
    }
    let file = tmp.as_file();
    file.set_permissions(fs::Permissions::from_mode(0o755))
        .and_then(|()| file.sync_all())
        .map_err(Error::io("write", tmp.path()))?;
    tmp.persist(out)
        .map_err(|e| Error::io("rename a temp file to", out)(e.error))?;
    fsutil::sync_dir(dir)
}

/// `Some((offset, len))` of the bundle embedded in `file`, `None` when it has no trailer.
pub fn find_embedded(file: &Path) -> Result<Option<(u64, u64)>> {
    let mut f = fs::File::open(file).map_err(Error::io("open", file))?;
    locate(&mut f, file)
}

/// A reader over the bundle embedded in `file` (for [`crate::Bundle::open`]), or `None`.
pub fn open_embedded(file: &Path) -> Result<Option<io::Take<fs::File>>> {
    let mut f = fs::File::open(file).map_err(Error::io("open", file))?;
    let Some((offset, len)) = locate(&mut f, file)? else {
        return Ok(None);
    };
    f.seek(SeekFrom::Start(offset))
        .map_err(Error::io("read", file))?;
    Ok(Some(f.take(len)))
}

fn locate(f: &mut fs::File, path: &Path) -> Result<Option<(u64, u64)>> {
    let file_len = f.metadata().map_err(Error::io("inspect", path))?.len();
    if file_len < TRAILER_LEN {
        return Ok(None);
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    f.seek(SeekFrom::Start(file_len - TRAILER_LEN))
        .and_then(|_| f.read_exact(&mut trailer))
        .map_err(Error::io("read", path))?;
    let (len_bytes, magic) = trailer.split_at(8);
    if magic != TRAILER_MAGIC {
        return Ok(None);
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(len_bytes);
    let len = u64::from_le_bytes(len);
    let room = file_len - TRAILER_LEN;
    if len == 0 || len > room {
        return Err(Error::Embedded {
            path: path.into(),
            problem: format!(
                "trailer says the bundle is {len} bytes but only {room} bytes precede it"
            ),
        });
    }
    Ok(Some((room - len, len)))
}

fn copy_exact(from: &mut impl Read, to: &mut impl Write, len: u64, src: &Path) -> Result<()> {
    let copied = io::copy(from, to).map_err(Error::io("copy", src))?;
    if copied != len {
        return Err(Error::Embedded {
            path: src.into(),
            problem: format!("changed while copying ({copied} bytes instead of {len})"),
        });
    }
    Ok(())
}
