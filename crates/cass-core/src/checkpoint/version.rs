//! The format version of `state.json`, so that a checkpoint written by another build is read as
//! what it is or refused by name, never misread.

use std::path::Path;

use crate::error::CassError;

/// The version of `state.json` this build writes. 1: the files written before the field
/// existed (they have none and still load); 2: the field written. A newer file than this build
/// knows is refused rather than misread.
pub const STATE_VERSION: u32 = 2;

/// What `state.json` files without a `version` are (serde's default for the field).
pub fn unversioned_state() -> u32 {
    1
}

/// Refuses a `state.json` written by a newer cass-ssl (a `version` above [`STATE_VERSION`]).
pub fn check_state_version(state: &serde_json::Value, path: &Path) -> Result<(), CassError> {
    match state.get("version") {
        None => Ok(()),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= STATE_VERSION as u64 => Ok(()),
            Some(n) => Err(CassError::data(
                "bad-checkpoint",
                format!(
                    "state.json is version {n}; this cass-ssl reads versions 1 to {STATE_VERSION} (a newer checkpoint needs a newer cass-ssl)"
                ),
                Some(path),
            )),
            None => Err(CassError::data(
                "bad-checkpoint",
                format!("state.json's version is {v}, not a positive integer"),
                Some(path),
            )),
        },
    }
}
