//! Test helpers: fake JDK homes and hand-made jars.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Builder for a fake JDK home: `release` file plus executable `bin/java` (and `javac`/`jcmd`
/// unless it is a JRE).
pub struct FakeJdk {
    version: Option<String>,
    vendor: Option<String>,
    runtime: Option<String>,
    image_type: Option<String>,
    jre: bool,
}

impl FakeJdk {
    pub fn new(version: &str) -> FakeJdk {
        FakeJdk {
            version: Some(version.to_string()),
            vendor: None,
            runtime: None,
            image_type: None,
            jre: false,
        }
    }
    pub fn without_release() -> FakeJdk {
        FakeJdk {
            version: None,
            ..FakeJdk::new("")
        }
    }
    pub fn vendor(mut self, v: &str) -> FakeJdk {
        self.vendor = Some(v.to_string());
        self
    }
    pub fn runtime(mut self, v: &str) -> FakeJdk {
        self.runtime = Some(v.to_string());
        self
    }
    pub fn image_type(mut self, v: &str) -> FakeJdk {
        self.image_type = Some(v.to_string());
        self
    }
    pub fn jre(mut self) -> FakeJdk {
        self.jre = true;
        self
    }

    /// Creates the home at `home` and returns it.
    pub fn create(self, home: &Path) -> PathBuf {
        let bin = home.join("bin");
        fs::create_dir_all(&bin).expect("create bin");
        let mut tools = vec!["java"];
        if !self.jre {
            tools.extend(["javac", "jcmd"]);
        }
        for tool in tools {
            write_executable(&bin.join(tool), "#!/bin/sh\nexit 1\n");
        }
        if let Some(version) = &self.version {
            let mut text = format!("JAVA_VERSION=\"{version}\"\nOS_ARCH=\"x86_64\"\n");
            if let Some(v) = &self.vendor {
                text.push_str(&format!("IMPLEMENTOR=\"{v}\"\n"));
            }
            if let Some(v) = &self.runtime {
                text.push_str(&format!("JAVA_RUNTIME_VERSION=\"{v}\"\n"));
            }
            if let Some(v) = &self.image_type {
                text.push_str(&format!("IMAGE_TYPE=\"{v}\"\n"));
            }
            fs::write(home.join("release"), text).expect("write release");
        }
        home.to_path_buf()
    }
}

pub fn write_executable(path: &Path, content: &str) {
    fs::write(path, content).expect("write executable");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

pub fn symlink(target: &Path, link: &Path) {
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, link).expect("symlink");
    #[cfg(not(unix))]
    panic!(
        "symlinks in tests need unix: {} -> {}",
        link.display(),
        target.display()
    );
}

/// The first 8 bytes of a class file with the given major version, plus some filler.
pub fn class_bytes(major: u16) -> Vec<u8> {
    let mut b = vec![0xCA, 0xFE, 0xBA, 0xBE, 0, 0];
    b.extend_from_slice(&major.to_be_bytes());
    b.extend_from_slice(&[0u8; 64]);
    b
}

/// Writes a zip at `path` with the given entries (name, content), deflated.
pub fn write_zip(path: &Path, entries: &[(&str, Vec<u8>)]) {
    let file = fs::File::create(path).expect("create zip");
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in entries {
        if name.ends_with('/') {
            zip.add_directory(*name, opts).expect("add dir");
        } else {
            zip.start_file(*name, opts).expect("start file");
            zip.write_all(content).expect("write entry");
        }
    }
    zip.finish().expect("finish zip");
}
