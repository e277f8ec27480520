//! Which build of jarfleet a binary is: its version and the linker's build id (the ELF
//! `NT_GNU_BUILD_ID` note, unique per build), so `status` and `jarfleet upgrade` can tell two
//! builds of the same version apart. Read from the file's program headers: a few KiB, never
//! the whole binary.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::OnceLock;

/// The build id of the ELF executable at `path`, as hex; `None` when it has none (or is not a
/// 64-bit little-endian ELF file).
pub fn build_id(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 64];
    f.read_exact(&mut head).ok()?;
    // ELF64, little-endian.
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let u64_at = |b: &[u8], i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(x)
    };
    let phoff = u64_at(&head, 32);
    let phentsize = usize::from(u16_at(&head, 54));
    let phnum = usize::from(u16_at(&head, 56));
    if phentsize < 56 || phnum == 0 || phnum > 256 {
        return None;
    }
    let mut table = vec![0u8; phentsize * phnum];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut table).ok()?;
    const PT_NOTE: u32 = 4;
    const NT_GNU_BUILD_ID: u32 = 3;
    for ph in table.chunks_exact(phentsize) {
        if u32_at(ph, 0) != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(ph, 8), u64_at(ph, 32));
        if size > 64 * 1024 {
            continue;
        }
        let mut notes = vec![0u8; size as usize];
        f.seek(SeekFrom::Start(offset)).ok()?;
        f.read_exact(&mut notes).ok()?;
        let mut i = 0usize;
        while i + 12 <= notes.len() {
            let namesz = u32_at(&notes, i) as usize;
            let descsz = u32_at(&notes, i + 4) as usize;
            let kind = u32_at(&notes, i + 8);
            let name_at = i + 12;
            let desc_at = name_at + namesz.next_multiple_of(4);
            let end = desc_at.checked_add(descsz.next_multiple_of(4))?;
            if end > notes.len() || desc_at + descsz > notes.len() {
                break;
            }
            if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") {
                let id = &notes[desc_at..desc_at + descsz];
                return Some(id.iter().map(|b| format!("{b:02x}")).collect());
            }
            i = end;
        }
    }
    None
}

/// This program's build: `VERSION` and, when the binary has one, its build id.
pub struct Build {
    pub version: &'static str,
    pub id: Option<String>,
}

impl Build {
    /// `0.1.0 (build f78bcf0a5592)`, or the version alone.
    pub fn describe(&self) -> String {
        match &self.id {
            Some(id) => format!("{} (build {})", self.version, &id[..id.len().min(12)]),
            None => self.version.to_string(),
        }
    }
}

/// The running program's build (read once).
pub fn own() -> &'static Build {
    static OWN: OnceLock<Build> = OnceLock::new();
    OWN.get_or_init(|| Build {
        version: env!("CARGO_PKG_VERSION"),
        id: std::env::current_exe().ok().and_then(|p| build_id(&p)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_has_a_build_id_and_a_text_file_has_none() {
        let exe = std::env::current_exe().expect("exe");
        let id = build_id(&exe).expect("the linker gives every build an id");
        assert!(
            id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        let dir = tempfile::tempdir().expect("tmp");
        let text = dir.path().join("not-elf");
        std::fs::write(&text, "#!/bin/sh\necho hi\n").expect("write");
        assert_eq!(build_id(&text), None);
        // A copy whose id bytes differ is another build.
        let mut bytes = std::fs::read(&exe).expect("read");
        let raw: Vec<u8> = (0..id.len() / 2)
            .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        let at = bytes
            .windows(raw.len())
            .position(|w| w == raw.as_slice())
            .expect("the id is in the file");
        bytes[at] ^= 0xff;
        let other = dir.path().join("other");
        std::fs::write(&other, &bytes).expect("write");
        let changed = build_id(&other).expect("still an id");
        assert_ne!(changed, id);
    }
}
