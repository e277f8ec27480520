use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use jarfleet_bundle::Bundle;
use jarfleet_bundle::embed::{TRAILER_MAGIC, append_to_binary, find_embedded, open_embedded};

use crate::helper::{self, JAR};

#[test]
fn installer_trailer_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = helper::fixture(&tmp.path().join("src"));
    let bundle = tmp.path().join("orders-1.4.2.jfb");
    let report = jarfleet_bundle::pack(&spec, &bundle).expect("pack");

    // A real binary: this test executable.
    let exe = std::env::current_exe().expect("current exe");
    let exe_len = fs::metadata(&exe).expect("exe").len();
    assert_eq!(find_embedded(&exe).expect("scan exe"), None);

    let installer = tmp.path().join("orders-installer");
    append_to_binary(&exe, &bundle, &installer).expect("append");
    let meta = fs::metadata(&installer).expect("installer");
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    let bundle_len = fs::metadata(&bundle).expect("bundle").len();
    assert_eq!(meta.len(), exe_len + bundle_len + 16);
    assert_eq!(
        find_embedded(&installer).expect("scan installer"),
        Some((exe_len, bundle_len))
    );
    // The binary part is untouched.
    let all = fs::read(&installer).expect("read installer");
    assert_eq!(
        &all[..exe_len as usize],
        fs::read(&exe).expect("exe").as_slice()
    );

    let reader = open_embedded(&installer)
        .expect("open")
        .expect("has a bundle");
    let b = Bundle::open(reader).expect("bundle");
    assert_eq!(b.digest(), report.digest);
    let dest = tmp.path().join("release");
    b.extract_to(&dest).expect("extract");
    assert_eq!(fs::read(dest.join("app/orders.jar")).expect("jar"), JAR);

    // Making an installer from an installer replaces the bundle instead of stacking it.
    let again = tmp.path().join("again");
    append_to_binary(&installer, &bundle, &again).expect("append again");
    assert_eq!(fs::read(&again).expect("again"), all);
}

#[test]
fn trailer_problems() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("bin");
    let mut f = fs::File::create(&path).expect("create");
    f.write_all(b"tiny").expect("write");
    f.write_all(&1000u64.to_le_bytes()).expect("write");
    f.write_all(&TRAILER_MAGIC).expect("write");
    drop(f);
    let err = find_embedded(&path).expect_err("length beyond the file");
    assert!(err.to_string().contains("only 4 bytes precede it"), "{err}");

    // Nor can it serve as the binary of a new installer.
    let bundle = tmp.path().join("x.jfb");
    fs::write(&bundle, zstd::encode_all(&b"x"[..], 3).expect("zstd")).expect("write");
    let err = append_to_binary(&path, &bundle, &tmp.path().join("out")).expect_err("corrupt");
    assert!(err.to_string().contains("trailer says"), "{err}");

    fs::write(&path, b"short").expect("write");
    assert_eq!(find_embedded(&path).expect("short file"), None);
    let not_bundle = tmp.path().join("y.jfb");
    fs::write(&not_bundle, b"hello").expect("write");
    let err =
        append_to_binary(&path, &not_bundle, &tmp.path().join("out")).expect_err("not a bundle");
    assert!(err.to_string().contains("no zstd magic"), "{err}");
    assert!(!tmp.path().join("out").exists());
    assert_eq!(helper::tree(tmp.path()), vec!["bin", "x.jfb", "y.jfb"]);
}
