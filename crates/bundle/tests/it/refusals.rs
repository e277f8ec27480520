//! Hand-crafted malicious or broken streams: each must be refused by verify and by extraction,
//! with an error naming the entry, and extraction must leave nothing behind.

use tar::EntryType;

use crate::helper::{ManifestText, Raw, assert_refused, craft, dir, file, link, special};

const A: &[u8] = b"hello";

fn one_file() -> ManifestText {
    ManifestText::new().file("a", A)
}

#[test]
fn a_well_formed_crafted_stream_is_accepted() {
    // The control for every case below: the same helpers, no attack.
    let m = ManifestText::new()
        .file("a", A)
        .dir("d")
        .file("d/f", b"x")
        .symlink("d/l", "../a");
    let bytes = craft(
        m.text(),
        &[
            file("a", A),
            dir("d/"),
            file("d/f", b"x"),
            link(EntryType::Symlink, "d/l", "../a"),
        ],
    );
    let summary = jarfleet_bundle::Bundle::verify(bytes.as_slice()).expect("valid");
    assert_eq!(summary.entries, 4);
}

#[test]
fn absolute_path() {
    assert_refused(
        &craft(one_file().text(), &[file("/a", A)]),
        &["bundle entry `/a`", "absolute path"],
    );
}

#[test]
fn parent_component() {
    assert_refused(
        &craft(one_file().text(), &[file("../a", A)]),
        &["bundle entry `../a`", "`..`"],
    );
    assert_refused(
        &craft(one_file().text(), &[file("x/../a", A)]),
        &["bundle entry `x/../a`", "`..`"],
    );
}

#[test]
fn symlink_escaping_then_a_file_through_it() {
    // The manifest is honest about a harmless link; the stream swaps in an escaping one.
    let m = ManifestText::new().dir("d").symlink("evil", "d");
    let stream = [
        dir("d"),
        link(EntryType::Symlink, "evil", "../../outside"),
        file("evil/passwd", b"root::0:0"),
    ];
    assert_refused(
        &craft(m.text(), &stream),
        &[
            "bundle entry `evil`",
            "`../../outside`",
            "escapes the bundle root",
        ],
    );
    let stream = [
        dir("d"),
        link(EntryType::Symlink, "evil", "/etc"),
        file("evil/passwd", b"root::0:0"),
    ];
    assert_refused(
        &craft(m.text(), &stream),
        &["bundle entry `evil`", "absolute path"],
    );
    // A link that stays inside, then a file written through it.
    let stream = [
        dir("d"),
        link(EntryType::Symlink, "evil", "d"),
        file("evil/f", b"through the link"),
    ];
    assert_refused(
        &craft(m.text(), &stream),
        &["bundle entry `evil/f`", "not listed"],
    );
    // The manifest itself listing the escaping link, or a file under a link, is refused before
    // any byte is written.
    let m = ManifestText::new().symlink("evil", "../outside");
    assert_refused(
        &craft(m.text(), &[link(EntryType::Symlink, "evil", "../outside")]),
        &["`evil`", "escapes the bundle root"],
    );
    let m = ManifestText::new()
        .dir("d")
        .symlink("l", "d")
        .file("l/f", A);
    assert_refused(
        &craft(
            m.text(),
            &[dir("d"), link(EntryType::Symlink, "l", "d"), file("l/f", A)],
        ),
        &["`l/f`", "parent `l` is a symlink"],
    );
}

#[test]
fn symlink_target_differs_from_manifest() {
    let m = ManifestText::new()
        .file("a", A)
        .file("b", A)
        .symlink("l", "a");
    let stream = [
        file("a", A),
        file("b", A),
        link(EntryType::Symlink, "l", "b"),
    ];
    assert_refused(
        &craft(m.text(), &stream),
        &["bundle entry `l`", "manifest says `a`"],
    );
}

#[test]
fn hard_link() {
    let m = ManifestText::new().file("a", A).file("h", A);
    let stream = [file("a", A), link(EntryType::Link, "h", "a")];
    assert_refused(
        &craft(m.text(), &stream),
        &["bundle entry `h`", "hard link"],
    );
}

#[test]
fn devices_and_fifos() {
    for (kind, what) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "fifo"),
    ] {
        let stream = [file("a", A), special(kind, "dev")];
        let m = one_file().file("dev", b"");
        assert_refused(&craft(m.text(), &stream), &["bundle entry `dev`", what]);
    }
}

#[test]
fn entry_not_in_manifest() {
    let stream = [file("a", A), file("extra", b"smuggled")];
    assert_refused(
        &craft(one_file().text(), &stream),
        &["bundle entry `extra`", "not listed in the manifest"],
    );
}

#[test]
fn manifest_entry_missing_from_stream() {
    let m = one_file().dir("d").file("d/b", b"b");
    assert_refused(
        &craft(m.text(), &[file("a", A)]),
        &["missing 2 entries", "`d`", "`d/b`"],
    );
}

#[test]
fn wrong_digest() {
    let mut flipped = A.to_vec();
    flipped[2] ^= 0x01;
    assert_refused(
        &craft(one_file().text(), &[file("a", &flipped)]),
        &["bundle entry `a`", "sha256 mismatch"],
    );
}

#[test]
fn wrong_size() {
    assert_refused(
        &craft(one_file().text(), &[file("a", b"hello!")]),
        &[
            "bundle entry `a`",
            "manifest says 5 bytes, the bundle has 6",
        ],
    );
}

#[test]
fn duplicate_entry() {
    assert_refused(
        &craft(one_file().text(), &[file("a", A), file("a", A)]),
        &["bundle entry `a`", "more than once"],
    );
}

#[test]
fn out_of_order_and_kind_mismatch() {
    let m = ManifestText::new().dir("d").file("d/f", A);
    assert_refused(
        &craft(m.text(), &[file("d/f", A), dir("d")]),
        &["bundle entry `d/f`", "parent `d`"],
    );
    assert_refused(
        &craft(m.text(), &[file("d", b""), file("d/f", A)]),
        &[
            "bundle entry `d`",
            "is a file in the bundle but a dir in the manifest",
        ],
    );
}

#[test]
fn non_utf8_name() {
    let raw = Raw {
        name: vec![b'a', 0xff],
        kind: EntryType::Regular,
        data: A.to_vec(),
        link: None,
    };
    assert_refused(&craft(one_file().text(), &[raw]), &["not UTF-8"]);
}

#[test]
fn not_a_bundle() {
    assert_refused(b"", &["not a jarfleet bundle"]);
    assert_refused(
        b"plain text, not zstd",
        &["not a jarfleet bundle", "cannot decompress"],
    );
    // A valid stream whose first entry is not the manifest.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    tar.append_data(&mut h, "a", &b"x"[..]).expect("append");
    let bytes = zstd::encode_all(tar.into_inner().expect("tar").as_slice(), 3).expect("zstd");
    assert_refused(
        &bytes,
        &["first entry is `a`, expected jarfleet-bundle.toml"],
    );
}

#[test]
fn oversized_manifest() {
    let mut big = one_file().text().to_string();
    big.push_str(&format!("# {}\n", "x".repeat(1024 * 1024)));
    assert_refused(
        &craft(&big, &[file("a", A)]),
        &[
            "jarfleet-bundle.toml is",
            "more than the 1048576-byte limit",
        ],
    );
}

#[test]
fn corrupt_compressed_stream() {
    // Incompressible content is stored raw by zstd, so a flipped byte in the middle reaches
    // the payload: the sha256 check (or zstd's frame checksum) must catch it.
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut spec = crate::helper::fixture(tmp.path());
    let mut noise = Vec::with_capacity(1 << 20);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while noise.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    crate::helper::write(&spec.jar, &noise, 0o644);
    spec.jre_dir = None;
    let mut bytes = Vec::new();
    jarfleet_bundle::pack_writer(&spec, &mut bytes).expect("pack");
    assert!(jarfleet_bundle::Bundle::verify(bytes.as_slice()).is_ok());
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let err = jarfleet_bundle::Bundle::verify(bytes.as_slice()).expect_err("corrupt");
    let text = err.to_string();
    assert!(
        text.contains("bundle entry `app/orders.jar`: sha256 mismatch")
            || text.contains("reading the bundle stream failed"),
        "{text}"
    );
    assert_refused(&bytes, &["bundle"]);
}
