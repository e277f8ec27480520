//! Streaming proof: packing and extracting a bundle with a 64 MiB file keeps the Rust heap
//! small (a counting global allocator) and the process's peak RSS far below the file size
//! (which also covers zstd's C allocations, invisible to the Rust allocator).
//!
//! A dedicated test binary because the allocator is global; a single test so that nothing
//! else allocates concurrently.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use jarfleet_bundle::{Bundle, PackSpec, pack};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every method forwards to `System` with the same arguments and only adds bookkeeping
// on atomics; the layouts passed to `dealloc`/`realloc` are the ones the caller allocated with.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const FILE_SIZE: usize = 64 * 1024 * 1024;
const MIB: usize = 1024 * 1024;

/// Resets the heap high-water mark; returns the current heap size.
fn reset_heap_peak() -> usize {
    let now = CURRENT.load(Ordering::SeqCst);
    PEAK.store(now, Ordering::SeqCst);
    now
}

/// Heap growth above `base` since the last reset.
fn heap_growth(base: usize) -> usize {
    PEAK.load(Ordering::SeqCst).saturating_sub(base)
}

/// Resets the kernel's peak-RSS counter (`VmHWM`) and returns the current RSS in bytes.
fn reset_rss_peak() -> usize {
    fs::write("/proc/self/clear_refs", "5").expect("reset peak RSS via /proc/self/clear_refs");
    status_kib("VmRSS:") * 1024
}

fn peak_rss() -> usize {
    status_kib("VmHWM:") * 1024
}

fn status_kib(field: &str) -> usize {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field in /proc/self/status")
}

#[test]
fn a_64_mib_file_streams_through_pack_and_extract() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let jar = tmp.path().join("big.jar");
    {
        // Pseudo-random, so zstd cannot shrink it to nothing and every byte is hashed.
        let mut w = BufWriter::new(fs::File::create(&jar).expect("create jar"));
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut chunk = vec![0u8; MIB];
        for _ in 0..FILE_SIZE / MIB {
            for word in chunk.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word.copy_from_slice(&x.to_le_bytes());
            }
            w.write_all(&chunk).expect("write jar");
        }
        w.flush().expect("flush jar");
    }
    let spec = PackSpec {
        name: "big".into(),
        version: "1".into(),
        jar: jar.clone(),
        ..PackSpec::default()
    };
    let bundle = tmp.path().join("big-1.jfb");

    let heap = reset_heap_peak();
    let rss = reset_rss_peak();
    let report = pack(&spec, &bundle).expect("pack");
    let (pack_heap, pack_rss) = (heap_growth(heap), peak_rss().saturating_sub(rss));
    assert_eq!(report.payload_bytes, FILE_SIZE as u64);

    let dest = tmp.path().join("release");
    let heap = reset_heap_peak();
    let rss = reset_rss_peak();
    let summary = Bundle::open(fs::File::open(&bundle).expect("open bundle"))
        .and_then(|b| b.extract_to(&dest))
        .expect("extract");
    let (extract_heap, extract_rss) = (heap_growth(heap), peak_rss().saturating_sub(rss));
    assert_eq!(summary.bytes, FILE_SIZE as u64);
    assert_eq!(
        fs::metadata(dest.join("app/big.jar"))
            .expect("extracted")
            .len(),
        FILE_SIZE as u64
    );
    eprintln!(
        "peak growth: pack heap {} KiB, rss {} KiB; extract heap {} KiB, rss {} KiB",
        pack_heap / 1024,
        pack_rss / 1024,
        extract_heap / 1024,
        extract_rss / 1024
    );
    // Rust heap: copy buffers and bookkeeping only.
    assert!(pack_heap < MIB, "pack heap grew {pack_heap} bytes");
    assert!(extract_heap < MIB, "extract heap grew {extract_heap} bytes");
    // Whole process, zstd included: far below the 64 MiB file.
    assert!(pack_rss < 16 * MIB, "pack RSS grew {pack_rss} bytes");
    assert!(
        extract_rss < 16 * MIB,
        "extract RSS grew {extract_rss} bytes"
    );
}
