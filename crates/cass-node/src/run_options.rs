//! The settings every pre-training method shares ([`RunConfig`]) as they cross the door: one
//! `run` object inside each method's options, built by the TypeScript `toNativeRun` from the
//! fields of the shared run schema (`ts/run-config.ts`); errors name the camelCase field.

use cass_core::CassError;
use cass_core::train::run_config::RunConfig;
use napi_derive::napi;

use crate::shapes::{Device, whole};

/// Batch, length, seed, checkpoints, device, gradient accumulation and the collapse warning.
#[napi(object)]
pub struct RunOptions {
    pub batch_size: u32,
    pub epochs: f64,
    pub max_steps: Option<f64>,
    pub seed: f64,
    pub checkpoint_every: Option<f64>,
    pub device: Device,
    /// Micro-batches of `batchSize` images summed into one update.
    pub accumulate: u32,
    pub collapse_warning_spread: f64,
}

impl TryFrom<RunOptions> for RunConfig {
    type Error = CassError;
    fn try_from(o: RunOptions) -> Result<Self, CassError> {
        Ok(Self {
            batch_size: o.batch_size as usize,
            epochs: whole(o.epochs, "epochs")?,
            max_steps: o.max_steps.map(|s| whole(s, "maxSteps")).transpose()?,
            seed: whole(o.seed, "seed")?,
            checkpoint_every: o.checkpoint_every.map(|s| whole(s, "checkpointEvery")).transpose()?,
            backend: o.device.into(),
            accumulate: o.accumulate as usize,
            collapse_warning_spread: o.collapse_warning_spread,
        })
    }
}
