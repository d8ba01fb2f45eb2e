//! Captured output with a per-attempt cap that keeps the *tail*.
//!
//! The output goes to `N.log`; when writing would take it past the cap, `N.log` becomes
//! `N.log.1` (replacing the previous one) and a fresh `N.log` starts. The last `limit` bytes of
//! `N.log.1` + `N.log` are therefore always on disk, disk use stays under twice the cap however
//! much a job prints, memory stays at one read buffer, and both files can be read while the job
//! is still writing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The rotated half of a log.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// A log file being written with a cap.
pub struct CappedLog {
    path: PathBuf,
    limit: u64,
    /// Opened on the first byte: an attempt that prints nothing leaves no file.
    file: Option<File>,
    current: u64,
    /// Bytes written in all, before capping.
    pub total: u64,
}

impl CappedLog {
    pub fn new(path: PathBuf, limit: u64) -> CappedLog {
        CappedLog {
            path,
            limit: limit.max(1),
            file: None,
            current: 0,
            total: 0,
        }
    }

    pub fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        self.total += buf.len() as u64;
        if buf.len() as u64 >= self.limit {
            // This chunk alone fills the window: nothing before it survives.
            buf = &buf[buf.len() - self.limit as usize..];
            let _ = fs::remove_file(rotated_path(&self.path));
            self.file = Some(private(OpenOptions::new().truncate(true)).open(&self.path)?);
            self.current = 0;
        } else if self.current + buf.len() as u64 > self.limit {
            self.file = None;
            fs::rename(&self.path, rotated_path(&self.path))?;
            self.current = 0;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = private(OpenOptions::new().append(true)).open(&self.path)?;
                self.file.insert(f)
            }
        };
        file.write_all(buf)?;
        self.current += buf.len() as u64;
        Ok(())
    }
}

/// Created `0600` when missing: output can hold secrets.
fn private(o: &mut OpenOptions) -> &mut OpenOptions {
    o.write(true).create(true).mode(crate::datadir::FILE_MODE)
}

/// The last `limit` bytes of a captured log (both halves), or `None` when nothing was captured.
pub fn read_tail(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let current = read_opt(path, limit)?;
    let cur_len = current.as_ref().map_or(0, |c| c.len() as u64);
    let older = if cur_len < limit {
        read_opt(&rotated_path(path), limit - cur_len)?
    } else {
        None
    };
    Ok(match (older, current) {
        (None, None) => None,
        (Some(mut a), Some(b)) => {
            a.extend_from_slice(&b);
            Some(a)
        }
        (a, b) => a.or(b),
    })
}

/// Reads at most the last `max` bytes of a file; `None` if it does not exist.
fn read_opt(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len > max {
        f.seek(SeekFrom::Start(len - max))?;
    }
    let mut buf = Vec::with_capacity(len.min(max) as usize);
    f.take(max).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// The last `n` lines of a log, as text (invalid UTF-8 replaced), for alerts.
pub fn last_lines(path: &Path, n: usize) -> String {
    let Ok(Some(bytes)) = read_tail(path, 64 * 1024) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.trim_end_matches('\n').lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Removes both halves of a log.
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(rotated_path(path));
}

/// Follows one attempt's captured log as it grows, across the rotations of its cap (the full
/// `N.log` becomes `N.log.1` and a new `N.log` starts): each [`Tail::pump`] copies what was
/// written since the last.
pub struct Tail {
    path: PathBuf,
    file: Option<File>,
    /// The inode of `file`, to notice a rotation.
    ino: u64,
    /// Whether a file was opened yet (the first open also copies the rotated half).
    opened: bool,
    buf: Vec<u8>,
}

impl Tail {
    pub fn new(path: PathBuf) -> Tail {
        Tail {
            path,
            file: None,
            ino: 0,
            opened: false,
            buf: vec![0; 64 * 1024],
        }
    }

    /// Copies whatever was written since the last call to `out`; returns whether output was
    /// lost meanwhile (one write larger than the cap truncated the file).
    pub fn pump(&mut self, out: &mut impl Write) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let mut dropped = false;
        loop {
            if self.file.is_none() {
                let f = match File::open(&self.path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(dropped),
                    Err(e) => return Err(e),
                };
                self.ino = f.metadata()?.ino();
                if !self.opened {
                    // What was written before the last rotation comes first.
                    if let Some(older) = read_tail(&rotated_path(&self.path), u64::MAX)? {
                        out.write_all(&older)?;
                    }
                    self.opened = true;
                }
                self.file = Some(f);
            }
            let Some(file) = self.file.as_mut() else {
                return Ok(dropped);
            };
            loop {
                let n = file.read(&mut self.buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&self.buf[..n])?;
            }
            out.flush()?;
            // Rotated (a new file at the path) or truncated (one write larger than the cap)?
            let pos = file.stream_position()?;
            match fs::metadata(&self.path) {
                Ok(m) if m.ino() != self.ino => {
                    // Ours is complete: the writer renamed it before starting the new one.
                    self.file = None;
                }
                Ok(m) if m.len() < pos => {
                    file.seek(SeekFrom::Start(0))?;
                    dropped = true;
                }
                _ => return Ok(dropped),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_within_twice_the_cap() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("1.1.log");
        let mut log = CappedLog::new(p.clone(), 100);
        let mut all = Vec::new();
        for i in 0..1000u32 {
            let line = format!("line {i}\n");
            log.write(line.as_bytes()).unwrap();
            all.extend_from_slice(line.as_bytes());
            let on_disk = fs::metadata(&p).map(|m| m.len()).unwrap_or(0)
                + fs::metadata(rotated_path(&p)).map(|m| m.len()).unwrap_or(0);
            assert!(on_disk <= 200);
        }
        assert_eq!(log.total, all.len() as u64);
        let tail = read_tail(&p, 100).unwrap().unwrap();
        assert_eq!(tail, all[all.len() - 100..]);
        assert_eq!(last_lines(&p, 2), "line 998\nline 999");
    }

    #[test]
    fn a_huge_chunk_keeps_its_own_tail() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.log");
        let mut log = CappedLog::new(p.clone(), 10);
        log.write(b"0123").unwrap();
        log.write(b"abcdefghijklmnopqrstuvwxyz").unwrap();
        assert_eq!(read_tail(&p, 10).unwrap().unwrap(), b"qrstuvwxyz");
        log.write(b"!").unwrap();
        assert_eq!(read_tail(&p, 10).unwrap().unwrap(), b"rstuvwxyz!");
    }

    #[test]
    fn nothing_written_means_no_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("none.log");
        let _log = CappedLog::new(p.clone(), 10);
        assert!(read_tail(&p, 10).unwrap().is_none());
        assert_eq!(last_lines(&p, 20), "");
    }
}
