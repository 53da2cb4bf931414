//! Errors. A broken contract (bad config, misuse) is [`CassError::Config`]; a problem with the
//! user's data or with training (unreadable file, empty class, non-finite loss) carries a stable
//! `code` and the offending path or step, so callers can handle it programmatically.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum CassError {
    /// An invalid configuration or argument; `field` names the offending path.
    Config { field: String, message: String },
    /// A domain problem with data, weights or the run.
    Data {
        code: String,
        message: String,
        path: Option<PathBuf>,
        step: Option<u64>,
    },
    /// A file could not be read or written.
    Io { path: PathBuf, message: String },
    /// The requested compute backend is missing from this build or has no device.
    Backend { message: String },
    /// The device cannot hold something the run needs, whatever memory is free (a single
    /// buffer over the device's limit: wgpu on lavapipe allows 128 MiB).
    DeviceLimit { message: String },
}

impl CassError {
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        CassError::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn data(code: &str, message: impl Into<String>, path: Option<&Path>) -> Self {
        CassError::Data {
            code: code.to_string(),
            message: message.into(),
            path: path.map(Path::to_path_buf),
            step: None,
        }
    }

    pub fn at_step(code: &str, message: impl Into<String>, step: u64) -> Self {
        CassError::Data {
            code: code.to_string(),
            message: message.into(),
            path: None,
            step: Some(step),
        }
    }

    pub fn io(path: &Path, err: std::io::Error) -> Self {
        CassError::Io {
            path: path.to_path_buf(),
            message: err.to_string(),
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &str {
        match self {
            CassError::Config { .. } => "invalid-config",
            CassError::Data { code, .. } => code,
            CassError::Io { .. } => "io",
            CassError::Backend { .. } => "backend-unavailable",
            CassError::DeviceLimit { .. } => "device-limit",
        }
    }
}

impl fmt::Display for CassError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CassError::Config { field, message } => write!(f, "invalid config at `{field}`: {message}"),
            CassError::Data {
                message, path, step, ..
            } => {
                write!(f, "{message}")?;
                if let Some(p) = path {
                    write!(f, " ({})", p.display())?;
                }
                if let Some(s) = step {
                    write!(f, " (step {s})")?;
                }
                Ok(())
            }
            CassError::Io { path, message } => write!(f, "{}: {message}", path.display()),
            CassError::Backend { message } | CassError::DeviceLimit { message } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for CassError {}
