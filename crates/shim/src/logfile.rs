//! Size-rotated instance log files (DESIGN.md §6 "Logs").
//!
//! The shim feeds each JVM stream (stdout, stderr) into a [`RotatingWriter`]; the CLI and the API
//! read logs back with [`tail_lines`] (last N lines) and [`Follower`] (`tail -F`).
//!
//! # Model
//!
//! A rotated log `path` is one logical byte stream stored as `path.K ‖ … ‖ path.2 ‖ path.1 ‖ path`
//! (oldest first; see [`rotated_path`]). Lines are `\n`-separated in that stream. The writer
//! rotates only between lines, so normally every file holds whole lines and ends with `\n`. The one
//! exception is a line longer than `max_size`: it cannot fit in any file, so it is split across
//! consecutive files (every file still stays `<= max_size`). The readers in this module read the
//! stream rather than single files, so they join such a split line back together.
//!
//! Files are only ever appended to, renamed or deleted: never copy-truncated, so a reader holding
//! an open file never sees its content change under it.
//!
//! Lines handed out by the readers have no trailing `\n`; invalid UTF-8 is converted lossily.

use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Block size used when reading files backwards in [`tail_lines`].
const TAIL_BLOCK: usize = 64 * 1024;

/// The name of the `index`-th rotated file of `path`: `path.1` is the newest rotated file,
/// `path.2` the one before it, and so on. Index 0 is `path` itself.
pub fn rotated_path(path: &Path, index: u32) -> PathBuf {
    if index == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// Appends a byte stream to `path`, rotating by size: when writing would push the file past
/// `max_size`, `path` is renamed to `path.1` (after `path.1`→`path.2` … and the oldest beyond
/// `keep` deleted) and a fresh `path` is created. Never copy-truncates. Rotation happens only at
/// line boundaries: a partial line (no '\n' yet) is held in memory until its newline arrives or
/// until it grows beyond max_size (then it is written as-is, split). Appends to an existing file
/// on open (logs are kept across restarts) and accounts for its current size.
///
/// Guarantees:
/// - every file is at most `max_size` bytes. A line longer than `max_size` (complete, or a held
///   partial line that outgrew `max_size`) starts in a fresh file and is split across as many
///   files as needed, each filled to exactly `max_size`; those files are the only ones that do
///   not end at a line boundary;
/// - a file is rotated only when the next line does not fit, so rotated files are as full as
///   whole lines allow;
/// - at most `keep` rotated files (`path.1` … `path.keep`) exist after a rotation; with `keep == 0`
///   rotation simply deletes `path` (readers holding it open can still drain it);
/// - everything passed to [`write_chunk`](Self::write_chunk) is in the files once it returns,
///   except a held partial line (see [`finish`](Self::finish); dropping the writer also writes it).
///
/// If the existing file ends in the middle of a line (a previous writer wrote a partial line and
/// ended), the first write of this writer first terminates that line with a `\n`, so the new
/// stream starts on a fresh line instead of being glued to the old one.
pub struct RotatingWriter {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    out: BufWriter<File>,
    /// Bytes in the current file, written or buffered in `out`.
    size: u64,
    /// The held partial line (no `\n` yet).
    pending: Vec<u8>,
    /// The stream written so far does not end with `\n` (a split over-long line, or a partial
    /// line written by `finish`).
    mid_line: bool,
    /// The file existed and ended mid-line when opened: terminate that line before writing.
    terminate_dangling: bool,
    /// The group that may read the files (the app's, when it runs as its own user).
    group: Option<u32>,
    /// Lines that could not be written, counted until writing works again.
    dropped: Option<Dropped>,
    /// What the writer has to say in the log itself (a link refused, the file recreated).
    notes: Vec<String>,
}

/// Lines lost to a failing disk, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dropped {
    lines: u64,
    bytes: u64,
    reason: String,
}

/// What a failed write reads like in the log's note. Pure.
fn write_error_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "no space left on device".into(),
        Some(libc::EDQUOT) => "disk quota exceeded".into(),
        Some(libc::EIO) => "input/output error".into(),
        Some(libc::EROFS) => "read-only file system".into(),
        _ => e.to_string(),
    }
}

/// The note written once writing works again. Pure.
fn dropped_note(lines: u64, bytes: u64, reason: &str) -> String {
    let s = if lines == 1 { "" } else { "s" };
    format!("{lines} line{s} ({bytes} bytes) dropped: {reason}")
}

/// Opens the log file (never through a link: `crate::privfs`), making its directory ours.
fn open_for_append(path: &Path, group: Option<u32>) -> io::Result<(File, Vec<String>)> {
    let mut notes = Vec::new();
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        notes.extend(crate::privfs::own_dir(
            parent,
            crate::privfs::LOG_DIR_MODE,
            group,
        )?);
    }
    let (file, note) = crate::privfs::open_append(path, crate::privfs::LOG_FILE_MODE, group)?;
    notes.extend(note);
    Ok((file, notes))
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// `Ok(())` for NotFound, so removing/renaming something already gone is not an error.
fn ignore_not_found(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}

impl RotatingWriter {
    /// Opens (creating it and its parent directories if needed) `path` for appending.
    /// `max_size` must be at least 1.
    pub fn open(path: &Path, max_size: u64, keep: u32) -> io::Result<RotatingWriter> {
        RotatingWriter::open_for_group(path, max_size, keep, None)
    }

    /// [`open`](Self::open), with files (and their directory) readable by `group`. The
    /// directory is made root's own (`crate::privfs::own_dir`) and the file is never opened
    /// through a link.
    pub fn open_for_group(
        path: &Path,
        max_size: u64,
        keep: u32,
        group: Option<u32>,
    ) -> io::Result<RotatingWriter> {
        if max_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "log max_size must be at least 1 byte",
            ));
        }
        let (file, notes) = open_for_append(path, group)?;
        let (size, dangling) = end_of(&file)?;
        Ok(RotatingWriter {
            path: path.to_path_buf(),
            max_size,
            keep,
            out: BufWriter::new(file),
            size,
            pending: Vec::new(),
            mid_line: dangling,
            terminate_dangling: dangling,
            group,
            dropped: None,
            notes,
        })
    }

    /// Lines dropped since writing last failed (lines, bytes), if any.
    pub fn dropped(&self) -> Option<(u64, u64)> {
        self.dropped.as_ref().map(|d| (d.lines, d.bytes))
    }

    /// Whether `path` still names the file we write (someone may have deleted it, or the whole
    /// log directory, while the instance runs).
    fn file_still_named(&self) -> bool {
        match (
            fs::symlink_metadata(&self.path),
            self.out.get_ref().metadata(),
        ) {
            (Ok(named), Ok(ours)) => file_id(&named) == file_id(&ours),
            _ => false,
        }
    }

    /// Opens `path` afresh (its directory made again if it is gone), with a note saying so.
    fn reopen(&mut self, why: String) -> io::Result<()> {
        let (file, notes) = open_for_append(&self.path, self.group)?;
        let (size, dangling) = end_of(&file)?;
        self.discard_buffer(file);
        self.size = size;
        self.mid_line = dangling;
        self.terminate_dangling = dangling;
        self.notes.push(why);
        self.notes.extend(notes);
        Ok(())
    }

    /// Replaces the output with `file`, throwing away what was buffered for the old one (a
    /// failed write must not be retried behind the lines that follow it).
    fn discard_buffer(&mut self, file: File) {
        let old = std::mem::replace(&mut self.out, BufWriter::new(file));
        let _ = old.into_parts();
    }

    /// Writes what the writer has to say (notes, and the count of dropped lines) as lines of
    /// the log, starting on a fresh line.
    fn write_notes(&mut self) -> io::Result<()> {
        let mut text = Vec::new();
        if let Some(d) = &self.dropped {
            text.push(dropped_note(d.lines, d.bytes, &d.reason));
        }
        text.extend(self.notes.iter().cloned());
        if text.is_empty() {
            return Ok(());
        }
        if self.mid_line || self.terminate_dangling {
            self.terminate_dangling = false;
            self.emit(b"\n")?;
        }
        for note in &text {
            self.emit(format!("[jarfleet] {note}\n").as_bytes())?;
        }
        self.out.flush()?;
        self.dropped = None;
        self.notes.clear();
        Ok(())
    }

    /// A write failed: what was being written is counted as dropped, the buffer thrown away,
    /// and the file's end read again at the next attempt.
    fn record_failure(&mut self, e: &io::Error, data: &[u8]) {
        let lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
        let d = self.dropped.get_or_insert_with(|| Dropped {
            lines: 0,
            bytes: 0,
            reason: write_error_reason(e),
        });
        d.lines += lines.max(1);
        d.bytes += data.len() as u64;
        self.pending.clear();
        if let Ok(file) = self.out.get_ref().try_clone() {
            self.discard_buffer(file);
        }
        if let Ok((size, dangling)) = end_of(self.out.get_ref()) {
            self.size = size;
            self.mid_line = dangling;
        }
    }

    /// The log's path (the current, newest file).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data` (any slice of the stream, lines may span calls). Complete lines are written
    /// and flushed before returning; a trailing partial line is held (see the type docs).
    ///
    /// A log file deleted (or its whole directory) is made again, with a note in it. A write
    /// that fails (disk full, I/O error) loses `data`, which is counted: once writing works
    /// again the log says how many lines were dropped and why. The error is returned; the
    /// writer stays usable.
    pub fn write_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let result = self.write_chunk_inner(data);
        if let Err(e) = &result {
            self.record_failure(e, data);
        }
        result
    }

    fn write_chunk_inner(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.file_still_named() {
            self.reopen(format!(
                "{} was deleted while the instance ran: created again",
                self.path.display()
            ))?;
        }
        self.write_notes()?;
        if self.terminate_dangling {
            self.terminate_dangling = false;
            self.emit(b"\n")?;
        }
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(i + 1);
            if self.pending.is_empty() {
                self.emit(line)?;
            } else {
                self.pending.extend_from_slice(line);
                self.emit_pending()?;
            }
            rest = tail;
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() as u64 > self.max_size {
            self.emit_pending()?;
        }
        self.out.flush()
    }

    /// Writes any held partial line (e.g. when the stream ends) and flushes.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.emit_pending()?;
        }
        self.out.flush()
    }

    fn emit_pending(&mut self) -> io::Result<()> {
        let mut pending = std::mem::take(&mut self.pending);
        let result = self.emit(&pending);
        pending.clear();
        self.pending = pending;
        result
    }

    /// Writes `bytes` (a complete line, or a piece of one if `mid_line` or over-long), rotating
    /// as needed.
    fn emit(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let Some(&last) = bytes.last() else {
            return Ok(());
        };
        // At a line boundary, a line that does not fit goes to a fresh file.
        if !self.mid_line && self.size > 0 && self.size + bytes.len() as u64 > self.max_size {
            self.rotate()?;
        }
        // Otherwise (continuing a line, or a line longer than max_size): fill up and split.
        loop {
            let room = self.max_size.saturating_sub(self.size);
            if bytes.len() as u64 <= room {
                self.out.write_all(bytes)?;
                self.size += bytes.len() as u64;
                break;
            }
            // room < bytes.len(), so it fits in usize.
            let (now, later) = bytes.split_at(room as usize);
            self.out.write_all(now)?;
            self.size += room;
            bytes = later;
            self.rotate()?;
        }
        self.mid_line = last != b'\n';
        Ok(())
    }

    /// `path` → `path.1` (shifting older ones, deleting beyond `keep`), then a fresh `path`.
    fn rotate(&mut self) -> io::Result<()> {
        // Everything for the old file reaches it before it is renamed: a Follower that sees the
        // new inode can drain the old file completely.
        self.out.flush()?;
        // Rotated files present: path.1 ..= path.n (stop at the first gap).
        let mut n = 0u32;
        while fs::symlink_metadata(rotated_path(&self.path, n + 1)).is_ok() {
            n += 1;
        }
        // Those that would be shifted beyond `keep` are deleted (oldest first).
        for i in (self.keep.max(1)..=n).rev() {
            ignore_not_found(fs::remove_file(rotated_path(&self.path, i)))?;
        }
        if self.keep == 0 {
            ignore_not_found(fs::remove_file(&self.path))?;
        } else {
            for i in (1..=n.min(self.keep - 1)).rev() {
                ignore_not_found(fs::rename(
                    rotated_path(&self.path, i),
                    rotated_path(&self.path, i + 1),
                ))?;
            }
            ignore_not_found(fs::rename(&self.path, rotated_path(&self.path, 1)))?;
        }
        let (file, notes) = open_for_append(&self.path, self.group)?;
        self.notes.extend(notes);
        self.size = file.metadata()?.len();
        self.out = BufWriter::new(file);
        Ok(())
    }
}

/// A file's size, and whether it ends in the middle of a line.
fn end_of(file: &File) -> io::Result<(u64, bool)> {
    let size = file.metadata()?.len();
    let dangling = if size > 0 {
        let mut last = [0u8];
        file.read_exact_at(&mut last, size - 1)?;
        last[0] != b'\n'
    } else {
        false
    };
    Ok((size, dangling))
}

impl Drop for RotatingWriter {
    /// Best effort: writes a held partial line and flushes (errors cannot be reported here; call
    /// [`finish`](RotatingWriter::finish) to see them).
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn lossy(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

/// The last `n` lines of a rotated log (reading `path`, then `path.1`, `path.2` … as needed,
/// oldest first in the result), without reading whole large files (seek from the end in blocks).
///
/// A missing log (no `path`, no rotated files) has no lines. A trailing line without `\n` counts
/// as a line. A file renamed by a concurrent rotation is not read twice (files are recognised by
/// inode).
pub fn tail_lines(path: &Path, n: usize) -> io::Result<Vec<String>> {
    tail_lines_with_block(path, n, TAIL_BLOCK)
}

fn tail_lines_with_block(path: &Path, n: usize, block: usize) -> io::Result<Vec<String>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let block = block.max(1) as u64;
    // Blocks of the stream's suffix, newest first.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    // Whether the stream's very last byte is '\n' (that one terminates the last line and does
    // not separate it from a following one). Known once the first byte is read.
    let mut ends_with_newline: Option<bool> = None;
    let mut seen: Vec<(u64, u64)> = Vec::new();
    'files: for index in 0u32.. {
        let name = rotated_path(path, index);
        let file = match crate::privfs::open_read(&name) {
            Ok(f) => f,
            // `path` may be missing mid-rotation; a missing rotated file ends the set. So does
            // anything that is not a plain file (a planted link is never read).
            Err(e) if (is_not_found(&e) || crate::privfs::is_refusal(&e)) && index == 0 => {
                continue;
            }
            Err(e) if is_not_found(&e) || crate::privfs::is_refusal(&e) => break,
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let id = file_id(&meta);
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let mut end = meta.len();
        while end > 0 {
            let start = end.saturating_sub(block);
            // end - start <= block, which came from a usize.
            let mut buf = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut buf, start)?;
            if ends_with_newline.is_none() {
                ends_with_newline = Some(buf.last() == Some(&b'\n'));
            }
            newlines += buf.iter().filter(|&&b| b == b'\n').count();
            blocks.push(buf);
            end = start;
            // Separators seen: once there are n of them, the last n lines are complete.
            let separators = newlines - usize::from(ends_with_newline == Some(true));
            if separators >= n {
                break 'files;
            }
        }
    }
    let mut data = Vec::with_capacity(blocks.iter().map(Vec::len).sum());
    for b in blocks.iter().rev() {
        data.extend_from_slice(b);
    }
    if data.is_empty() {
        return Ok(Vec::new());
    }
    if data.last() == Some(&b'\n') {
        data.pop();
    }
    // If reading stopped early, the first piece is a partial line and is skipped here, because
    // there are at least n + 1 pieces.
    let pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let skip = pieces.len().saturating_sub(n);
    Ok(pieces[skip..].iter().map(|l| lossy(l)).collect())
}

/// (device, inode): what a file *is*, independent of its current name.
type FileId = (u64, u64);

fn file_id(meta: &Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

/// Follows a log across rotations (like `tail -F`): remembers the open file and its inode; on
/// each poll reads new complete lines; when `path` now names a different inode (rotated), it
/// drains the old file to EOF first, then switches to the new file from its start. A missing
/// file is not an error (returns no lines until it appears).
///
/// If several rotations happened between two polls, the follower walks the rotated files in
/// order (it finds its old file among `path.1`, `path.2` … and continues with the next newer
/// one), so no line is lost as long as its old file has not been deleted. If it was deleted
/// (the follower fell more than `keep` rotations behind), it continues with the oldest
/// surviving file. A line split across files (see [`RotatingWriter`]) is returned joined. A file
/// that shrinks (truncated by someone else) is re-read from its start.
///
/// If `path` does not exist when the follower is created, everything written to the log
/// afterwards is new: when it appears, reading starts with the oldest rotated file created since
/// (the log may already have rotated before the first poll), else at the start of `path`.
pub struct Follower {
    path: PathBuf,
    file: Option<(File, FileId)>,
    /// While `file` is None: the rotated files that already existed when the follower was
    /// created (old content, not to be followed).
    preexisting: Vec<FileId>,
    /// Read offset in `file`.
    pos: u64,
    /// Bytes after the last '\n' read so far.
    partial: Vec<u8>,
}

impl Follower {
    /// `from_end`: start at the current end of the file (only new lines), else from its start.
    /// If the file does not exist yet, it is read from its start once it appears.
    pub fn new(path: &Path, from_end: bool) -> Follower {
        let mut follower = Follower {
            path: path.to_path_buf(),
            file: None,
            preexisting: Vec::new(),
            pos: 0,
            partial: Vec::new(),
        };
        if let Ok(file) = crate::privfs::open_read(path)
            && let Ok(meta) = file.metadata()
        {
            follower.pos = if from_end { meta.len() } else { 0 };
            follower.file = Some((file, file_id(&meta)));
        } else {
            follower.preexisting = (1..=follower.count_rotated())
                .filter_map(|k| fs::metadata(rotated_path(path, k)).ok())
                .map(|meta| file_id(&meta))
                .collect();
        }
        follower
    }

    /// The complete lines that appeared since the last poll, in order.
    pub fn poll_lines(&mut self) -> io::Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let id = match &self.file {
                Some((_, id)) => *id,
                None => match self.open_first()? {
                    Some((file, id)) => {
                        self.file = Some((file, id));
                        self.preexisting = Vec::new();
                        self.pos = 0;
                        id
                    }
                    None => return Ok(lines),
                },
            };
            // Look at `path` *before* reading: if it already names another file, the writer
            // flushed everything into ours before that rename, so the read below drains ours
            // completely before we switch.
            let current = match fs::metadata(&self.path) {
                Ok(meta) => Some(file_id(&meta)),
                // Mid-rotation (renamed, new one not created yet) or deleted: keep our file.
                Err(e) if is_not_found(&e) => None,
                Err(e) => return Err(e),
            };
            self.read_available(&mut lines)?;
            if current.is_none_or(|current| current == id) {
                return Ok(lines);
            }
            match self.successor(id)? {
                Some(next) => {
                    self.file = Some(next);
                    self.pos = 0;
                }
                // Not there yet (mid-rotation): stay on the drained file, retry next poll.
                None => return Ok(lines),
            }
        }
    }

    /// The first file to read when `path` did not exist at creation: the oldest rotated file
    /// created since, else `path` (`None` while it is missing).
    fn open_first(&self) -> io::Result<Option<(File, FileId)>> {
        if fs::symlink_metadata(&self.path).is_err() {
            return Ok(None);
        }
        for k in (1..=self.count_rotated()).rev() {
            if let Some((file, id)) = open_with_id(&rotated_path(&self.path, k))?
                && !self.preexisting.contains(&id)
            {
                return Ok(Some((file, id)));
            }
        }
        open_with_id(&self.path)
    }

    /// Reads our file from `pos` to EOF, appending complete lines to `lines`.
    fn read_available(&mut self, lines: &mut Vec<String>) -> io::Result<()> {
        let Some((file, _)) = &self.file else {
            return Ok(());
        };
        let len = file.metadata()?.len();
        if len < self.pos {
            self.pos = 0;
        }
        if len == self.pos {
            return Ok(());
        }
        let mut reader = file;
        reader.seek(SeekFrom::Start(self.pos))?;
        let start = self.partial.len();
        let read = reader.read_to_end(&mut self.partial)?;
        self.pos += read as u64;
        if let Some(i) = self.partial[start..].iter().rposition(|&b| b == b'\n') {
            let rest = self.partial.split_off(start + i + 1);
            let complete = std::mem::replace(&mut self.partial, rest);
            let complete = &complete[..complete.len() - 1];
            lines.extend(complete.split(|&b| b == b'\n').map(lossy));
        }
        Ok(())
    }

    /// Opens the file that follows `id` in the stream. `None` if it cannot be determined right
    /// now (mid-rotation).
    fn successor(&self, id: FileId) -> io::Result<Option<(File, FileId)>> {
        for _attempt in 0..4 {
            let Some(k) = self.find_rotated(id)? else {
                let still_linked = match &self.file {
                    Some((file, _)) => file.metadata()?.nlink() > 0,
                    None => true,
                };
                // Deleted (fell behind by more than `keep`): continue with the oldest survivor.
                // Renamed elsewhere by someone: continue with `path`.
                let name = if still_linked {
                    self.path.clone()
                } else {
                    rotated_path(&self.path, self.count_rotated())
                };
                return open_with_id(&name);
            };
            let name = rotated_path(&self.path, k - 1);
            let Some((file, next)) = open_with_id(&name)? else {
                return Ok(None);
            };
            // Consistency check against a concurrent rotation: our file must still be right
            // after the one we opened.
            let still_k = match fs::metadata(rotated_path(&self.path, k)) {
                Ok(meta) => file_id(&meta) == id,
                Err(e) if is_not_found(&e) => false,
                Err(e) => return Err(e),
            };
            if next != id && still_k {
                return Ok(Some((file, next)));
            }
        }
        Ok(None)
    }

    /// The index `k >= 1` such that `path.k` is the file `id` (tolerating one missing name,
    /// which a rotation in progress leaves behind).
    fn find_rotated(&self, id: FileId) -> io::Result<Option<u32>> {
        let mut misses = 0;
        for k in 1u32.. {
            match fs::metadata(rotated_path(&self.path, k)) {
                Ok(meta) if file_id(&meta) == id => return Ok(Some(k)),
                Ok(_) => misses = 0,
                Err(e) if is_not_found(&e) => {
                    misses += 1;
                    if misses == 2 {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// How many rotated files exist (`path.1` ..= `path.n`, up to the first gap).
    fn count_rotated(&self) -> u32 {
        let mut n = 0u32;
        while fs::symlink_metadata(rotated_path(&self.path, n + 1)).is_ok() {
            n += 1;
        }
        n
    }
}

fn open_with_id(name: &Path) -> io::Result<Option<(File, FileId)>> {
    match crate::privfs::open_read(name) {
        Ok(file) => {
            let id = file_id(&file.metadata()?);
            Ok(Some((file, id)))
        }
        // A planted link or FIFO is never read: as if it were not there.
        Err(e) if is_not_found(&e) || crate::privfs::is_refusal(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    /// splitmix64: small deterministic PRNG for test data.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform-ish in `lo..=hi`.
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo + 1) as u64) as usize
        }
    }

    fn numbered_line(i: usize, rng: &mut Rng) -> String {
        format!("{i:07} {}", "x".repeat(rng.range(0, 70)))
    }

    /// The files of a rotated log, oldest first (path.K … path.1, path).
    fn log_files(path: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut k = 1;
        while rotated_path(path, k).exists() {
            files.push(rotated_path(path, k));
            k += 1;
        }
        files.reverse();
        if path.exists() {
            files.push(path.to_path_buf());
        }
        files
    }

    fn read_stream(path: &Path) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        for f in log_files(path) {
            all.extend(fs::read(f)?);
        }
        Ok(all)
    }

    fn stream_lines(path: &Path) -> io::Result<Vec<String>> {
        let data = read_stream(path)?;
        let text = String::from_utf8_lossy(&data);
        Ok(text.lines().map(str::to_owned).collect())
    }

    /// Writes `data` in random-sized chunks.
    fn write_random_chunks(w: &mut RotatingWriter, data: &[u8], rng: &mut Rng) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let max = match rng.next() % 4 {
                0 => 16,
                1 | 2 => 4096,
                _ => 200_000,
            };
            let n = rng.range(1, max).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            w.write_chunk(chunk)?;
            rest = tail;
        }
        Ok(())
    }

    fn assert_same_lines(got: &[String], want: &[String]) {
        if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
            panic!("line {i} differs: got {:?}, want {:?}", got[i], want[i]);
        }
        assert_eq!(got.len(), want.len(), "line count differs");
    }

    #[test]
    fn rotation_keeps_every_line_once_in_order_within_size() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("stdout.log");
        let max = 64 * 1024;
        let mut rng = Rng(42);
        let lines: Vec<String> = (0..200_000).map(|i| numbered_line(i, &mut rng)).collect();
        let mut input = Vec::new();
        for l in &lines {
            input.extend_from_slice(l.as_bytes());
            input.push(b'\n');
        }

        let mut w = RotatingWriter::open(&path, max, 10_000)?;
        write_random_chunks(&mut w, &input, &mut rng)?;
        w.finish()?;
        drop(w);

        let files = log_files(&path);
        assert!(
            files.len() > 100,
            "expected many rotations, got {}",
            files.len()
        );
        let contents: Vec<Vec<u8>> = files.iter().map(fs::read).collect::<io::Result<_>>()?;
        for (name, c) in files.iter().zip(&contents) {
            assert!(
                c.len() as u64 <= max,
                "{} has {} bytes",
                name.display(),
                c.len()
            );
            assert_eq!(
                c.last(),
                Some(&b'\n'),
                "{} does not end at a line",
                name.display()
            );
        }
        // Rotation is never premature: the next file's first line did not fit.
        for pair in contents.windows(2) {
            let first_line = pair[1]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            assert!(
                (pair[0].len() + first_line) as u64 > max,
                "rotated at {} bytes although a {first_line}-byte line fit",
                pair[0].len()
            );
        }
        assert_same_lines(&stream_lines(&path)?, &lines);
        assert!(read_stream(&path)? == input, "stream differs from input");
        Ok(())
    }

    #[test]
    fn small_keep_deletes_oldest_and_keeps_newest_lines() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        let max = 1024;
        let mut w = RotatingWriter::open(&path, max, 3)?;
        for i in 0..2000 {
            w.write_chunk(format!("line {i:05}\n").as_bytes())?;
        }
        w.finish()?;

        for k in 1..=3 {
            assert!(rotated_path(&path, k).exists(), "{k} missing");
        }
        assert!(
            !rotated_path(&path, 4).exists(),
            "more than keep=3 rotated files"
        );
        for f in log_files(&path) {
            assert!(fs::metadata(&f)?.len() <= max);
        }
        let survivors = stream_lines(&path)?;
        // 3 full rotated files of 1020 bytes (85 lines of 12) plus the current one.
        assert!(
            survivors.len() > 3 * 85,
            "only {} lines survive",
            survivors.len()
        );
        let first = 2000 - survivors.len();
        let want: Vec<String> = (first..2000).map(|i| format!("line {i:05}")).collect();
        assert_same_lines(&survivors, &want);
        Ok(())
    }

    #[test]
    fn keep_zero_only_keeps_current_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        let mut w = RotatingWriter::open(&path, 100, 0)?;
        for i in 0..100 {
            w.write_chunk(format!("line {i:05}\n").as_bytes())?;
        }
        assert_eq!(log_files(&path), vec![path.clone()]);
        assert!(fs::read_to_string(&path)?.ends_with("line 00099\n"));
        Ok(())
    }

    #[test]
    fn reopening_appends_and_respects_existing_size() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("logs/app/1/stdout.log");
        let line = |c: char| format!("{}\n", c.to_string().repeat(9)); // 10 bytes
        {
            let mut w = RotatingWriter::open(&path, 100, 5)?;
            for c in ['a', 'b', 'c', 'd', 'e', 'f'] {
                w.write_chunk(line(c).as_bytes())?;
            }
        }
        assert_eq!(fs::metadata(&path)?.len(), 60);

        let mut w = RotatingWriter::open(&path, 100, 5)?;
        for c in ['g', 'h', 'i', 'j', 'k'] {
            w.write_chunk(line(c).as_bytes())?;
        }
        w.finish()?;
        let old: String = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j']
            .into_iter()
            .map(line)
            .collect();
        assert_eq!(fs::read_to_string(rotated_path(&path, 1))?, old);
        assert_eq!(fs::read_to_string(&path)?, line('k'));
        assert!(!rotated_path(&path, 2).exists());
        Ok(())
    }

    #[test]
    fn lowering_keep_deletes_surplus_old_files() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        {
            let mut w = RotatingWriter::open(&path, 10, 10)?;
            for i in 0..8 {
                w.write_chunk(format!("line {i:03}\n").as_bytes())?;
            }
        }
        assert!(rotated_path(&path, 7).exists());
        let mut w = RotatingWriter::open(&path, 10, 2)?;
        w.write_chunk(b"line 008\n")?;
        assert_eq!(log_files(&path).len(), 3);
        assert_eq!(stream_lines(&path)?, ["line 006", "line 007", "line 008"]);
        assert!(!rotated_path(&path, 3).exists() && !rotated_path(&path, 7).exists());
        Ok(())
    }

    #[test]
    fn reopening_terminates_a_dangling_partial_line() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        {
            let mut w = RotatingWriter::open(&path, 100, 5)?;
            w.write_chunk(b"one\ntw")?;
            w.finish()?;
        }
        assert_eq!(fs::read_to_string(&path)?, "one\ntw");
        let mut w = RotatingWriter::open(&path, 100, 5)?;
        w.write_chunk(b"three\n")?;
        assert_eq!(fs::read_to_string(&path)?, "one\ntw\nthree\n");
        Ok(())
    }

    #[test]
    fn partial_line_is_held_and_rotation_waits_for_line_end() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        let mut w = RotatingWriter::open(&path, 10, 5)?;
        w.write_chunk(b"12345\n678")?;
        assert_eq!(fs::read_to_string(&path)?, "12345\n");
        w.write_chunk(b"9\n")?;
        // "6789\n" does not fit next to "12345\n" (11 > 10): it went whole to a new file.
        assert_eq!(fs::read_to_string(rotated_path(&path, 1))?, "12345\n");
        assert_eq!(fs::read_to_string(&path)?, "6789\n");
        w.write_chunk(b"ab")?;
        w.finish()?;
        assert_eq!(fs::read_to_string(&path)?, "6789\nab");
        Ok(())
    }

    #[test]
    fn over_long_lines_are_split_and_joined_by_readers() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        let long_a = "A".repeat(40);
        let long_b = "B".repeat(35);
        let mut follower = Follower::new(&path, false);
        let mut w = RotatingWriter::open(&path, 16, 100)?;
        w.write_chunk(b"short\n")?;
        // Held partial line outgrowing max_size: written split.
        for piece in long_a.as_bytes().chunks(3) {
            w.write_chunk(piece)?;
        }
        assert!(
            read_stream(&path)?.len() > 6,
            "over-long partial line was not written"
        );
        w.write_chunk(b"\n")?;
        // A complete over-long line in one chunk.
        w.write_chunk(format!("{long_b}\nend\n").as_bytes())?;
        w.finish()?;

        for f in log_files(&path) {
            assert!(fs::metadata(&f)?.len() <= 16, "{} too big", f.display());
        }
        let want = vec!["short".to_owned(), long_a, long_b, "end".to_owned()];
        assert_eq!(stream_lines(&path)?, want);
        assert_eq!(tail_lines(&path, 10)?, want);
        assert_eq!(tail_lines_with_block(&path, 2, 5)?, want[2..]);
        assert_eq!(follower.poll_lines()?, want);
        Ok(())
    }

    #[test]
    fn a_deleted_log_dir_is_made_again_with_a_note() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("logs/app/0/stdout.log");
        let mut w = RotatingWriter::open(&path, 1000, 5)?;
        w.write_chunk(b"before\n")?;
        fs::remove_dir_all(dir.path().join("logs"))?;
        w.write_chunk(b"after\n")?;
        let text = fs::read_to_string(&path)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("[jarfleet] ") && lines[0].contains("was deleted"));
        assert_eq!(lines[1], "after");
        assert!(tail_lines(&path, 10)?.contains(&"after".to_string()));
        Ok(())
    }

    #[test]
    fn dropped_lines_are_told_in_plain_words() {
        let table = [
            (libc::ENOSPC, "no space left on device"),
            (libc::EIO, "input/output error"),
            (libc::EDQUOT, "disk quota exceeded"),
        ];
        for (errno, want) in table {
            assert_eq!(
                write_error_reason(&io::Error::from_raw_os_error(errno)),
                want
            );
        }
        assert_eq!(
            dropped_note(312, 62_400, "no space left on device"),
            "312 lines (62400 bytes) dropped: no space left on device"
        );
        assert_eq!(
            dropped_note(1, 10, "input/output error"),
            "1 line (10 bytes) dropped: input/output error"
        );
    }

    #[test]
    fn zero_max_size_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = RotatingWriter::open(&dir.path().join("x.log"), 0, 1);
        assert!(r.is_err());
    }

    #[test]
    fn tail_lines_across_rotated_files() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        assert!(tail_lines(&path, 5)?.is_empty(), "missing log has no lines");

        let mut rng = Rng(7);
        let lines: Vec<String> = (0..500).map(|i| numbered_line(i, &mut rng)).collect();
        let mut w = RotatingWriter::open(&path, 300, 1000)?;
        for l in &lines {
            w.write_chunk(format!("{l}\n").as_bytes())?;
        }
        w.finish()?;
        assert!(log_files(&path).len() > 20);

        for block in [1, 7, 64, TAIL_BLOCK] {
            for n in [0, 1, 2, 5, 37, 499, 500, 501, 10_000] {
                let got = tail_lines_with_block(&path, n, block)?;
                let want = &lines[lines.len().saturating_sub(n)..];
                assert_eq!(got, want, "n={n} block={block}");
            }
        }
        Ok(())
    }

    #[test]
    fn tail_lines_edge_cases() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        fs::write(&path, "")?;
        assert!(tail_lines(&path, 3)?.is_empty());
        fs::write(&path, "\n")?;
        assert_eq!(tail_lines(&path, 3)?, vec![String::new()]);
        fs::write(&path, "a\n\nb\nlast-no-newline")?;
        fs::write(rotated_path(&path, 1), "older\n")?;
        assert_eq!(tail_lines(&path, 2)?, vec!["b", "last-no-newline"]);
        assert_eq!(
            tail_lines_with_block(&path, 9, 2)?,
            vec!["older", "a", "", "b", "last-no-newline"]
        );
        // Missing current file (mid-rotation): rotated files still count.
        fs::remove_file(&path)?;
        assert_eq!(tail_lines(&path, 9)?, vec!["older"]);
        // Invalid UTF-8 is converted lossily.
        fs::write(&path, b"ok\n\xff\xfebad\n")?;
        assert_eq!(tail_lines(&path, 1)?, vec!["\u{fffd}\u{fffd}bad"]);
        Ok(())
    }

    #[test]
    fn follower_sees_every_line_across_rotations() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        let mut rng = Rng(99);
        let mut follower = Follower::new(&path, false);
        assert!(follower.poll_lines()?.is_empty());

        let mut w = RotatingWriter::open(&path, 256, 1000)?;
        let mut written = Vec::new();
        let mut seen = Vec::new();
        for round in 0..400 {
            // Mostly a few lines per poll; sometimes many rotations' worth between polls.
            let count = if round % 10 == 0 {
                rng.range(0, 120)
            } else {
                rng.range(0, 8)
            };
            let mut data = Vec::new();
            for _ in 0..count {
                let l = numbered_line(written.len(), &mut rng);
                data.extend_from_slice(l.as_bytes());
                data.push(b'\n');
                written.push(l);
            }
            write_random_chunks(&mut w, &data, &mut rng)?;
            seen.extend(follower.poll_lines()?);
            // Everything completely written so far has been seen (the held partial line is not
            // in the files yet).
            assert!(seen.len() <= written.len());
        }
        w.finish()?;
        seen.extend(follower.poll_lines()?);
        assert!(log_files(&path).len() > 50, "expected many rotations");
        assert_same_lines(&seen, &written);
        assert!(follower.poll_lines()?.is_empty());
        Ok(())
    }

    #[test]
    fn follower_keep_zero_drains_deleted_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        let mut w = RotatingWriter::open(&path, 50, 0)?;
        let mut follower = Follower::new(&path, false);
        let mut seen = Vec::new();
        let mut written = Vec::new();
        for i in 0..100 {
            let l = format!("line {i:05}");
            w.write_chunk(format!("{l}\n").as_bytes())?;
            written.push(l);
            if i % 3 == 0 {
                seen.extend(follower.poll_lines()?);
            }
        }
        seen.extend(follower.poll_lines()?);
        assert_same_lines(&seen, &written);
        Ok(())
    }

    #[test]
    fn follower_that_fell_behind_continues_with_oldest_survivor() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        let mut w = RotatingWriter::open(&path, 100, 2)?;
        let mut follower = Follower::new(&path, false);
        w.write_chunk(b"line 00000\n")?;
        let mut seen = follower.poll_lines()?;
        assert_eq!(seen, vec!["line 00000"]);
        for i in 1..200 {
            w.write_chunk(format!("line {i:05}\n").as_bytes())?;
        }
        seen.extend(follower.poll_lines()?);
        let survivors = stream_lines(&path)?;
        // What was seen: the follower's old file (deleted, but drained through the open
        // handle: 9 lines of 11 bytes), then exactly the surviving files' lines.
        let old: Vec<String> = (0..9).map(|i| format!("line {i:05}")).collect();
        assert!(survivors.len() < 190, "nothing was deleted");
        assert_same_lines(&seen[..9], &old);
        assert_same_lines(&seen[9..], &survivors);
        assert_eq!(survivors.last().map(String::as_str), Some("line 00199"));
        Ok(())
    }

    #[test]
    fn follower_from_end_skips_old_content() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        let mut w = RotatingWriter::open(&path, 1000, 5)?;
        w.write_chunk(b"old 1\nold 2\n")?;
        let mut tail = Follower::new(&path, true);
        let mut all = Follower::new(&path, false);
        assert!(tail.poll_lines()?.is_empty());
        w.write_chunk(b"new 1\nnew 2\npart")?;
        assert_eq!(tail.poll_lines()?, vec!["new 1", "new 2"]);
        assert!(tail.poll_lines()?.is_empty());
        w.write_chunk(b"ial\n")?;
        assert_eq!(tail.poll_lines()?, vec!["partial"]);
        assert_eq!(
            all.poll_lines()?,
            vec!["old 1", "old 2", "new 1", "new 2", "partial"]
        );
        Ok(())
    }

    #[test]
    fn follower_missing_file_then_created() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("later/app.log");
        let mut follower = Follower::new(&path, true);
        assert!(follower.poll_lines()?.is_empty());
        assert!(follower.poll_lines()?.is_empty());
        let mut w = RotatingWriter::open(&path, 1000, 5)?;
        w.write_chunk(b"first\nsecond\n")?;
        assert_eq!(follower.poll_lines()?, vec!["first", "second"]);
        w.write_chunk(b"third\n")?;
        assert_eq!(follower.poll_lines()?, vec!["third"]);
        Ok(())
    }

    #[test]
    fn follower_rereads_a_truncated_file() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        fs::write(&path, "one\ntwo\n")?;
        let mut follower = Follower::new(&path, false);
        assert_eq!(follower.poll_lines()?, vec!["one", "two"]);
        // Someone else copy-truncates the file in place (same inode).
        OpenOptions::new().write(true).open(&path)?.set_len(0)?;
        OpenOptions::new()
            .append(true)
            .open(&path)?
            .write_all(b"x\n")?;
        assert_eq!(follower.poll_lines()?, vec!["x"]);
        Ok(())
    }

    #[test]
    fn follower_waits_while_path_is_missing_mid_rotation() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("app.log");
        fs::write(&path, "a\n")?;
        let mut follower = Follower::new(&path, false);
        assert_eq!(follower.poll_lines()?, vec!["a"]);
        // Simulate a rotation caught half-way: renamed, new file not created yet.
        let mut f = OpenOptions::new().append(true).open(&path)?;
        f.write_all(b"b\n")?;
        fs::rename(&path, rotated_path(&path, 1))?;
        assert_eq!(follower.poll_lines()?, vec!["b"]);
        fs::write(&path, "c\n")?;
        assert_eq!(follower.poll_lines()?, vec!["c"]);
        Ok(())
    }
}
