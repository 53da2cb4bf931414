//! Reading files that may be hostile: only regular files, opened without blocking (a FIFO named
//! as weights would otherwise hang the engine, and with it the first SIGTERM), and never more
//! than a stated size (a symlink to `/dev/zero` grew a weights read to 24 GB before the kernel
//! killed the process). The checks use the opened file's own metadata, so a path swapped between
//! a check and the read is still checked.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

use crate::error::CassError;

/// Opens `path` for reading if it is a regular file, and returns it with its length.
pub fn open_regular(path: &Path) -> Result<(File, u64), CassError> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting forever.
        // Linux and the BSDs/macOS use different values; it only matters for special files,
        // which are refused right after.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        options.custom_flags(0o4000);
        #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
        options.custom_flags(0x0004);
    }
    let file = options.open(path).map_err(|e| CassError::io(path, e))?;
    let meta = file.metadata().map_err(|e| CassError::io(path, e))?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a device, FIFO or socket)"
        };
        return Err(CassError::data(
            "not-a-file",
            format!("{what}: refusing to read it"),
            Some(path),
        ));
    }
    Ok((file, meta.len()))
}

/// The whole of a regular file of at most `max_bytes`; `what` names it in errors.
pub fn read_bounded(path: &Path, max_bytes: u64, what: &str) -> Result<Vec<u8>, CassError> {
    let (file, len) = open_regular(path)?;
    if len > max_bytes {
        return Err(CassError::data(
            "too-large",
            format!("{what} is {len} bytes, more than the {max_bytes} allowed"),
            Some(path),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take`: a file that grows while it is read still stops at the bound.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CassError::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(CassError::data(
            "too-large",
            format!("{what} grew past {max_bytes} bytes while it was read"),
            Some(path),
        ));
    }
    Ok(bytes)
}

/// Weights files: ViT-g in f32 is 4 GB; this leaves room and refuses what no network here needs.
pub const MAX_WEIGHTS_BYTES: u64 = 8 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_without_blocking_and_sizes_are_bounded() {
        let dir = std::env::temp_dir().join(format!("cass-read-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO with no writer: opening it used to block forever.
        let fifo = dir.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert_eq!(read_bounded(&fifo, 100, "weights").unwrap_err().code(), "not-a-file");
        // /dev/zero (and a link to it) reports length 0 and never ends: refused as a device.
        let link = dir.join("zero.safetensors");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert_eq!(read_bounded(&link, 100, "weights").unwrap_err().code(), "not-a-file");
        assert_eq!(read_bounded(&dir, 100, "weights").unwrap_err().code(), "not-a-file");
        let file = dir.join("f");
        std::fs::write(&file, vec![7u8; 101]).unwrap();
        assert_eq!(read_bounded(&file, 100, "weights").unwrap_err().code(), "too-large");
        assert_eq!(read_bounded(&file, 101, "weights").unwrap(), vec![7u8; 101]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
