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

mod inspect;
mod tensors;

pub(crate) use inspect::read_json;
pub use inspect::{Checkpoint, CheckpointKind};
pub use tensors::*;

/// Writes `bytes` to `path` atomically: temporary file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CassError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| CassError::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = fs::File::create(&tmp).map_err(|e| CassError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| CassError::io(&tmp, e))?;
    f.sync_all().map_err(|e| CassError::io(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| CassError::io(path, e))
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

/// A fresh staging directory next to `final_dir`.
pub fn staging_dir(final_dir: &Path) -> Result<PathBuf, CassError> {
    let name = final_dir.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    let staging = final_dir.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| CassError::io(&staging, e))?;
    }
    fs::create_dir_all(&staging).map_err(|e| CassError::io(&staging, e))?;
    Ok(staging)
}
