//! Weights and training state on disk.
//!
//! Weights are safetensors files whose tensor names and layouts are timm's (`layer1.0.bn1.weight`,
//! linear weights as `[out, in]`), so files move to and from PyTorch unchanged. Optimizer moments
//! sit beside them in a second safetensors file, and a JSON sidecar holds the run config and the
//! position in the run. Every file is written under a temporary name, synced and renamed, and a
//! checkpoint directory only becomes visible (by rename) once all its files are complete, so a
//! crash never leaves a torn checkpoint.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::CassError;

#[cfg(test)]
mod compat_tests;
mod inspect;
mod read;
mod tensors;
mod version;

pub(crate) use inspect::read_json;
pub use inspect::{Checkpoint, CheckpointKind};
pub use read::{MAX_WEIGHTS_BYTES, open_regular, read_bounded};
pub use tensors::*;
pub use version::{STATE_VERSION, check_state_version, unversioned_state};

/// Writes `bytes` to `path` atomically: temporary file in the same directory, fsync, rename.
/// Temporary files of writers that were killed (`.NAME.tmp-PID` of a process that is gone) are
/// removed first; a failed write removes its own.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CassError> {
    check_replaceable(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| CassError::io(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    for stale in orphans(path, &format!(".{name}.tmp-")) {
        let _ = fs::remove_file(&stale);
    }
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = fs::File::create(&tmp).map_err(|e| CassError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| CassError::io(&tmp, e))?;
        f.sync_all().map_err(|e| CassError::io(&tmp, e))?;
        drop(f);
        fs::rename(&tmp, path).map_err(|e| CassError::io(path, e))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// A rename replaces whatever is at the path: a device node, a FIFO or a symlink would silently
/// become a regular file (as root, an export to `/dev/null` broke the machine). Only a missing
/// path or a regular file may be replaced; a symlink is refused rather than followed.
pub fn check_replaceable(path: &Path) -> Result<(), CassError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CassError::io(path, e)),
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => {
            let what = if m.file_type().is_symlink() {
                "a symbolic link (name the file it points to, or another path)"
            } else if m.is_dir() {
                "a folder"
            } else {
                "a device, FIFO or socket"
            };
            Err(CassError::data(
                "not-a-file",
                format!("the output path is {what}: refusing to replace it"),
                Some(path),
            ))
        }
    }
}

/// Publishes a fully written staging directory as `final_dir`, replacing an older one. The
/// rename is the commit point.
pub fn publish_dir(staging: &Path, final_dir: &Path) -> Result<(), CassError> {
    if final_dir.exists() {
        let old = final_dir.with_extension(format!("old-{}", std::process::id()));
        fs::rename(final_dir, &old).map_err(|e| CassError::io(final_dir, e))?;
        fs::rename(staging, final_dir).map_err(|e| CassError::io(final_dir, e))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(staging, final_dir).map_err(|e| CassError::io(final_dir, e))?;
    }
    Ok(())
}

/// Whether process `pid` still runs. Only Linux can tell cheaply (`/proc`); elsewhere every
/// process counts as running, so nothing of another process is ever removed.
fn process_alive(pid: u32) -> bool {
    !cfg!(target_os = "linux") || pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// An output folder held by one job: the job holds an OS lock (`flock`) on `DIR/.lock` for its
/// whole life, and the file names its process id for the message a second job gets. The kernel
/// releases the lock when the process ends however it ends, so a killed job's folder is always
/// recoverable, and a process id reused by another program (or by this one after a container
/// restart) holds nothing: ownership is the lock, never the number in the file.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    /// Open for the job's life: closing it releases the lock.
    _file: fs::File,
}

/// `output-in-use` for `dir`, naming the holder's process id from its lock file (for the
/// message only: ownership is the OS lock).
fn in_use(dir: &Path, lock: &Path) -> CassError {
    let holder = fs::read_to_string(lock).ok().and_then(|s| s.trim().parse::<u32>().ok());
    let who = holder.map_or("another job".to_string(), |pid| format!("another job (process {pid})"));
    CassError::data(
        "output-in-use",
        format!("{who} is writing to this folder; wait for it or choose another"),
        Some(dir),
    )
}

/// Whether `file` is still the file at `path` (a holder that finished removed it, and a lock on
/// a removed file would guard nothing).
fn still_at(file: &fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

impl OutputLock {
    pub fn acquire(dir: &Path) -> Result<Self, CassError> {
        fs::create_dir_all(dir).map_err(|e| CassError::io(dir, e))?;
        let path = dir.join(".lock");
        for _ in 0..8 {
            let mut file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| CassError::io(&path, e))?;
            match file.try_lock() {
                Ok(()) if still_at(&file, &path) => {
                    file.set_len(0).map_err(|e| CassError::io(&path, e))?;
                    file.write_all(std::process::id().to_string().as_bytes())
                        .map_err(|e| CassError::io(&path, e))?;
                    return Ok(Self { path, _file: file });
                }
                Ok(()) => continue, // locked a file its holder had just removed: open again
                Err(fs::TryLockError::WouldBlock) => return Err(in_use(dir, &path)),
                Err(fs::TryLockError::Error(e)) => return Err(CassError::io(&path, e)),
            }
        }
        Err(CassError::data(
            "output-in-use",
            "could not take the folder's lock",
            Some(dir),
        ))
    }
}

impl OutputLock {
    /// Refuses (`output-in-use`) when a running job holds `dir`'s lock, touching nothing: what a
    /// caller checks before it changes anything in the folder (a refused second run used to
    /// truncate the live run's step log before the engine's own check).
    pub fn check_free(dir: &Path) -> Result<(), CassError> {
        let path = dir.join(".lock");
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CassError::io(&path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(()),
            Err(fs::TryLockError::WouldBlock) => Err(in_use(dir, &path)),
            Err(fs::TryLockError::Error(e)) => Err(CassError::io(&path, e)),
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked; the lock goes when the file closes, just after.
        let _ = fs::remove_file(&self.path);
    }
}

/// Siblings of `final_dir` named `{prefix}{pid}` whose process is gone.
fn orphans(final_dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Some(parent) = final_dir.parent() else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid: u32 = name.strip_prefix(prefix)?.parse().ok()?;
            (!process_alive(pid)).then(|| e.path())
        })
        .collect()
}

/// Tidies what a process killed while writing `final_dir` left beside it: a staging folder
/// (`.NAME.partial-PID`) is removed; a previous checkpoint moved aside for the swap
/// (`NAME.old-PID`) is put back when `final_dir` itself is missing (the kill fell between the
/// two renames of [`publish_dir`]), else removed. Folders of running processes are left alone.
pub fn recover(final_dir: &Path) -> Result<(), CassError> {
    let name = final_dir.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    for staging in orphans(final_dir, &format!(".{name}.partial-")) {
        fs::remove_dir_all(&staging).map_err(|e| CassError::io(&staging, e))?;
    }
    // A checkpoint counts when its state.json reads; a corrupt one must not cost the good copy
    // that a killed swap left beside it.
    let readable = |dir: &Path| read_json(&dir.join("state.json")).is_ok();
    for old in orphans(final_dir, &format!("{name}.old-")) {
        if !readable(final_dir) && readable(&old) {
            if final_dir.exists() {
                // Kept, not deleted: what is unreadable to us may still matter to its owner.
                let aside = final_dir.with_extension(format!("corrupt-{}", std::process::id()));
                fs::rename(final_dir, &aside).map_err(|e| CassError::io(final_dir, e))?;
            }
            fs::rename(&old, final_dir).map_err(|e| CassError::io(final_dir, e))?;
        } else {
            fs::remove_dir_all(&old).map_err(|e| CassError::io(&old, e))?;
        }
    }
    Ok(())
}

/// A fresh staging directory next to `final_dir` (after [`recover`] has tidied up after killed
/// writers).
pub fn staging_dir(final_dir: &Path) -> Result<PathBuf, CassError> {
    recover(final_dir)?;
    let name = final_dir.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    let staging = final_dir.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| CassError::io(&staging, e))?;
    }
    fs::create_dir_all(&staging).map_err(|e| CassError::io(&staging, e))?;
    Ok(staging)
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
