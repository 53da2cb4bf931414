//! Self-supervised pre-training. A method (CASS today) implements [`Method`]: its networks, one
//! step, what its checkpoint holds. [`pretrain::run`] runs any method: resume, `state.json`, the
//! schedule position and the one training loop of [`crate::train::run`].

use std::path::Path;

use burn::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::device::BackendChoice;
use crate::error::CassError;
use crate::train::run::StepReport;

pub mod cass;
pub mod cass_config;
pub mod objective;
pub mod pretrain;

/// What the pre-training job reads from any method's config.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    pub batch_size: usize,
    pub epochs: u64,
    pub max_steps: Option<u64>,
    pub seed: u64,
    pub checkpoint_every: Option<u64>,
    pub backend: BackendChoice,
}

/// A self-supervised method: its config, its networks and optimizers, and one step.
pub trait Method: Sized {
    /// Everything that defines a run; saved in `state.json` beside every checkpoint.
    type Config: Clone + Serialize + DeserializeOwned;

    /// The `kind` written to `state.json`.
    const KIND: &'static str;

    /// The loss's name in error messages.
    const LOSS_NAME: &'static str;

    /// The settings the job needs from `cfg`.
    fn settings(cfg: &Self::Config) -> RunSettings;

    /// Replaces the run length (a resumed run keeps its config but takes the new length).
    fn set_length(cfg: &mut Self::Config, epochs: u64, max_steps: Option<u64>);

    /// Completes (a fresh run: e.g. what its initial weights declare) and checks `cfg`; errors
    /// name the field.
    fn prepare(cfg: &mut Self::Config, fresh: bool) -> Result<(), CassError>;

    /// Fresh networks and optimizers on `device` (plain; the method enables autodiff), with the
    /// config's initial weights.
    fn init(cfg: &Self::Config, device: &Device) -> Result<Self, CassError>;

    /// Networks and optimizers from a checkpoint folder written by [`Method::save`].
    fn load(cfg: &Self::Config, dir: &Path, device: &Device) -> Result<Self, CassError>;

    /// Writes networks and optimizer moments into `dir` (a staging folder: the job publishes it
    /// atomically with `state.json`).
    fn save(&self, dir: &Path, step: u64) -> Result<(), CassError>;

    /// One optimisation step on a raw batch (`[batch, 3, h, w]` in [0, 1]): the method draws
    /// its augmented views from `(seed, step)`, `step` of `total` is the schedule position.
    fn train_step(&mut self, raw: Tensor<4>, step: u64, total: u64) -> StepReport;

    /// Warnings `(code, message)` at the end of `epoch`; `full`: this process saw all of it.
    fn end_epoch(&mut self, epoch: u64, full: bool) -> Vec<(String, String)>;
}
