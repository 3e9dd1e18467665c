//! Where the access log's bytes go, and how a file target survives rotation and write errors.
//!
//! A file is reopened when the path no longer names the file being written: logrotate's default
//! (rename, then `create`) and a plain `mv` both work, as does `copytruncate` (appends follow
//! the truncation). The check is a `stat` at most every `ROTATION_CHECK` and runs on the
//! writer thread, never on a shard. A failed write loses that batch, which is counted with the
//! queue's drops, and the writer carries on: a full disk is not a reason to stop logging for
//! good once space is back.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the writer checks whether its file was renamed or removed.
pub const ROTATION_CHECK: Duration = Duration::from_secs(1);

pub enum Sink {
    /// stdout or stderr: written as they are.
    Stream(Box<dyn Write + Send>),
    File(FileSink),
}

pub struct FileSink {
    path: PathBuf,
    file: File,
    /// (device, inode) of `file`, to tell whether `path` still names it.
    id: (u64, u64),
    check_every: Duration,
    next_check: Instant,
    /// A warning about the current run of write failures was logged (once, not per batch).
    write_warned: bool,
    /// The same for failures to reopen the path; kept apart, so that a write to the old file
    /// that works does not re-arm the reopen warning every second.
    reopen_warned: bool,
}

impl Sink {
    /// Opens a file target for appending, creating it if missing.
    pub fn file(path: &Path, check_every: Duration) -> io::Result<Sink> {
        let (file, id) = open(path)?;
        Ok(Sink::File(FileSink {
            path: path.to_path_buf(),
            file,
            id,
            check_every,
            next_check: Instant::now() + check_every,
            write_warned: false,
            reopen_warned: false,
        }))
    }

    /// Writes one batch of whole lines. An error means the batch is lost; the sink stays
    /// usable and retries with the next batch.
    pub fn write_batch(&mut self, bytes: &[u8], now: Instant) -> io::Result<()> {
        match self {
            Sink::Stream(out) => out.write_all(bytes).and_then(|()| out.flush()),
            Sink::File(f) => f.write_batch(bytes, now),
        }
    }
}

impl FileSink {
    fn write_batch(&mut self, bytes: &[u8], now: Instant) -> io::Result<()> {
        if now >= self.next_check {
            self.next_check = now + self.check_every;
            self.follow_rotation();
        }
        // Where this batch starts, to cut off a half-written line if the write fails midway.
        let start = self.file.metadata().map(|m| m.len());
        let written = self.file.write_all(bytes);
        match &written {
            Ok(()) if self.write_warned => {
                log::info!("access log {}: writing again", self.path.display());
                self.write_warned = false;
            }
            Err(e) => {
                if let Ok(len) = start {
                    let _ = self.file.set_len(len);
                }
                if !self.write_warned {
                    log::warn!(
                        "access log {}: write failed, lines are dropped until it works: {e}",
                        self.path.display()
                    );
                    self.write_warned = true;
                }
            }
            _ => {}
        }
        written
    }

    /// Reopens the path when it names another file than the one open, or nothing. If the new
    /// file cannot be opened, the old one stays in use and the next check tries again.
    fn follow_rotation(&mut self) {
        let current = std::fs::metadata(&self.path).map(|m| (m.dev(), m.ino()));
        if current.as_ref().is_ok_and(|id| *id == self.id) {
            return;
        }
        match open(&self.path) {
            Ok((file, id)) => {
                self.file = file;
                self.id = id;
                self.reopen_warned = false;
                log::info!("access log {}: reopened (rotated)", self.path.display());
            }
            Err(e) if !self.reopen_warned => {
                log::warn!(
                    "access log {}: cannot reopen, still writing the old file: {e}",
                    self.path.display()
                );
                self.reopen_warned = true;
            }
            Err(_) => {}
        }
    }
}

fn open(path: &Path) -> io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let m = file.metadata()?;
    Ok((file, (m.dev(), m.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("berry-sink-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn a_renamed_file_is_followed_by_a_new_one_at_the_path() {
        let dir = TempDir::new("renamed");
        let path = dir.path().join("access.log");
        let rotated = dir.path().join("access.log.1");
        let t0 = Instant::now();
        let mut sink = Sink::file(&path, Duration::from_secs(1)).unwrap();
        sink.write_batch(b"one\n", t0).unwrap();
        std::fs::rename(&path, &rotated).unwrap();
        // Before the next check the old file still gets the lines (what logrotate's
        // `delaycompress` relies on).
        sink.write_batch(b"two\n", t0 + Duration::from_millis(500))
            .unwrap();
        sink.write_batch(b"three\n", t0 + Duration::from_secs(2))
            .unwrap();
        assert_eq!(read(&rotated), "one\ntwo\n");
        assert_eq!(read(&path), "three\n");
    }

    #[test]
    fn a_removed_file_is_created_again_and_a_truncated_one_appended_to() {
        let dir = TempDir::new("removed");
        let path = dir.path().join("access.log");
        let t0 = Instant::now();
        let mut sink = Sink::file(&path, Duration::from_secs(1)).unwrap();
        sink.write_batch(b"one\n", t0).unwrap();
        std::fs::remove_file(&path).unwrap();
        sink.write_batch(b"two\n", t0 + Duration::from_secs(2))
            .unwrap();
        assert_eq!(read(&path), "two\n");
        // copytruncate: same inode, emptied; appends land at the new end, no hole.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        sink.write_batch(b"three\n", t0 + Duration::from_secs(4))
            .unwrap();
        assert_eq!(read(&path), "three\n");
    }

    #[test]
    fn when_the_path_cannot_be_reopened_the_old_file_keeps_the_lines() {
        let dir = TempDir::new("unreachable");
        let sub = dir.path().join("logs");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("access.log");
        let t0 = Instant::now();
        let mut sink = Sink::file(&path, Duration::from_secs(1)).unwrap();
        sink.write_batch(b"one\n", t0).unwrap();
        // The directory moves away: the path cannot be created again.
        let moved = dir.path().join("old-logs");
        std::fs::rename(&sub, &moved).unwrap();
        sink.write_batch(b"two\n", t0 + Duration::from_secs(2))
            .unwrap();
        assert_eq!(read(&moved.join("access.log")), "one\ntwo\n");
        // Warned once, and the working write to the old file does not re-arm it.
        let Sink::File(f) = &sink else { unreachable!() };
        assert!(f.reopen_warned && !f.write_warned);
        // Once the path works again, the next check opens it.
        std::fs::create_dir(&sub).unwrap();
        sink.write_batch(b"three\n", t0 + Duration::from_secs(4))
            .unwrap();
        assert_eq!(read(&path), "three\n");
    }
}
