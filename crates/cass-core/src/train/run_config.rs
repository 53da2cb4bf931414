//! What every pre-training method's config shares: the run's length, batch, seed, checkpoints,
//! device, gradient accumulation and the collapse warning. A method's config holds it as
//! `#[serde(flatten)] run: RunConfig`, so `state.json` keeps these fields at its top level, where
//! checkpoints written before this type existed have them ([`super::super::checkpoint`]'s
//! compatibility tests read such a checkpoint). [`RunConfig::validate`] is the one check of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::device::BackendChoice;
use crate::error::CassError;

/// The settings of a pre-training run that do not depend on the method.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Images per micro-batch (per update without accumulation).
    pub batch_size: usize,
    pub epochs: u64,
    /// Stop after this many optimisation steps in total (e.g. for smoke runs), if set.
    #[serde(default)]
    pub max_steps: Option<u64>,
    pub seed: u64,
    /// Write a checkpoint every N steps (and always at the end of each epoch).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    #[serde(default)]
    pub backend: BackendChoice,
    /// Micro-batches of `batch_size` images whose gradients are summed into one update: a step
    /// sees `batch_size * accumulate` images (see [`crate::ssl::step`]).
    #[serde(default = "one")]
    pub accumulate: usize,
    /// A `collapse` warning is raised when a network's output spread stays below this for a whole
    /// epoch (spread: about 1 for spread-out outputs, 0 for a constant output).
    #[serde(default = "default_collapse_warning")]
    pub collapse_warning_spread: f64,
}

fn one() -> usize {
    1
}

fn default_collapse_warning() -> f64 {
    0.1
}

/// The largest `accumulate`.
pub const MAX_ACCUMULATE: usize = 1024;

/// The most images one step may gather (`batch_size * accumulate`, the TypeScript schemas'
/// largest batch): the loader holds a whole step's images in host memory, two steps ahead, and
/// the device budget checks only one micro-batch.
pub const MAX_STEP_IMAGES: usize = 4096;

impl RunConfig {
    /// A run of `epochs` epochs at `batch_size`, seeded, on the CPU, with the defaults elsewhere.
    pub fn new(batch_size: usize, epochs: u64, seed: u64) -> Self {
        Self {
            batch_size,
            epochs,
            max_steps: None,
            seed,
            checkpoint_every: None,
            backend: BackendChoice::Cpu,
            accumulate: 1,
            collapse_warning_spread: default_collapse_warning(),
        }
    }

    /// Images per optimisation step.
    pub fn step_images(&self) -> usize {
        self.batch_size * self.accumulate
    }

    /// Checks what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), CassError> {
        if self.batch_size < 2 {
            return Err(CassError::config(
                "batch_size",
                "must be at least 2 (BatchNorm uses batch statistics)",
            ));
        }
        if self.epochs == 0 {
            return Err(CassError::config("epochs", "must be at least 1"));
        }
        if self.max_steps == Some(0) {
            return Err(CassError::config("max_steps", "must be at least 1 when set"));
        }
        if !(1..=MAX_ACCUMULATE).contains(&self.accumulate) {
            return Err(CassError::config(
                "accumulate",
                format!(
                    "must be a whole number from 1 to {MAX_ACCUMULATE}, got {}",
                    self.accumulate
                ),
            ));
        }
        if self.batch_size.saturating_mul(self.accumulate) > MAX_STEP_IMAGES {
            return Err(CassError::config(
                "accumulate",
                format!(
                    "batch_size {} times accumulate {} is more than the {MAX_STEP_IMAGES} images one step may hold",
                    self.batch_size, self.accumulate
                ),
            ));
        }
        if !self.collapse_warning_spread.is_finite() || self.collapse_warning_spread < 0.0 {
            return Err(CassError::config(
                "collapse_warning_spread",
                format!("must be a non-negative number, got {}", self.collapse_warning_spread),
            ));
        }
        Ok(())
    }
}

/// The fields of a method's config that nothing read: a config holding [`RunConfig`] flattened
/// cannot use serde's `deny_unknown_fields`, so it collects the rest here
/// (`#[serde(flatten)] unknown: Unknown`, after `run`) and [`reject_unknown`] refuses them, as
/// `deny_unknown_fields` would.
pub type Unknown = BTreeMap<String, serde_json::Value>;

/// An error naming the first field no one reads, if any.
pub fn reject_unknown(unknown: &Unknown) -> Result<(), CassError> {
    match unknown.keys().next() {
        Some(k) => Err(CassError::config(k.clone(), "is not a setting of this method")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: CassError) -> String {
        match e {
            CassError::Config { field, .. } => field,
            other => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn every_field_is_checked_by_name() {
        let ok = RunConfig::new(8, 1, 0);
        ok.validate().unwrap();
        let cases: [(&str, RunConfig); 5] = [
            ("batch_size", RunConfig { batch_size: 1, ..ok }),
            ("epochs", RunConfig { epochs: 0, ..ok }),
            (
                "max_steps",
                RunConfig {
                    max_steps: Some(0),
                    ..ok
                },
            ),
            ("accumulate", RunConfig { accumulate: 0, ..ok }),
            (
                "collapse_warning_spread",
                RunConfig {
                    collapse_warning_spread: f64::NAN,
                    ..ok
                },
            ),
        ];
        for (field, cfg) in cases {
            assert_eq!(self::field(cfg.validate().unwrap_err()), field);
        }
        assert!(
            RunConfig {
                accumulate: MAX_ACCUMULATE + 1,
                ..ok
            }
            .validate()
            .is_err()
        );
        let big = RunConfig {
            batch_size: 64,
            accumulate: 65,
            ..ok
        };
        assert_eq!(field(big.validate().unwrap_err()), "accumulate");
        assert!(RunConfig { accumulate: 64, ..big }.validate().is_ok());
        assert_eq!(RunConfig { accumulate: 4, ..ok }.step_images(), 32);
    }

    #[test]
    fn an_unknown_field_is_named() {
        let mut u = Unknown::new();
        assert!(reject_unknown(&u).is_ok());
        u.insert("bach_size".into(), serde_json::json!(8));
        assert_eq!(field(reject_unknown(&u).unwrap_err()), "bach_size");
    }
}
