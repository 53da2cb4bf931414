//! Self-supervised pre-training. A method (CASS, and DINO and VICReg as baselines) implements [`Method`]: its networks, one
//! step, what its checkpoint holds. [`pretrain::run`] runs any method: resume, `state.json`, the
//! schedule position and the one training loop of [`crate::train::run`].

use std::path::Path;

use burn::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CassError;
use crate::train::run::StepReport;
use crate::train::run_config::RunConfig;

pub mod cass;
pub mod cass_config;
pub mod dino;
pub mod dino_config;
pub mod objective;
pub mod pretrain;
pub mod step;
pub mod vicreg;
pub mod vicreg_config;

/// Where a step sits in its run: its index (the schedule position), the run's length in steps,
/// the epoch it belongs to and the epoch's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepAt {
    pub step: u64,
    pub total: u64,
    pub epoch: u64,
    /// Steps in one epoch.
    pub per_epoch: u64,
}

/// A self-supervised method: its config, its networks and optimizers, and one step in two
/// parts, [`Method::gradients`] then [`Method::apply`] (driven by [`step::step`], which sums the
/// gradients of a step's micro-batches between the two).
pub trait Method: Sized {
    /// Everything that defines a run; saved in `state.json` beside every checkpoint.
    type Config: Clone + Serialize + DeserializeOwned;

    /// One micro-batch's input as the method prepares it (its augmented views or crops).
    type Views;

    /// The gradients of one micro-batch, or of several summed ([`Method::add`]): what the
    /// optimisers apply, plus whatever else the update needs (DINO: the teacher's outputs).
    type Grads;

    /// The `kind` written to `state.json`.
    const KIND: &'static str;

    /// The loss's name in error messages.
    const LOSS_NAME: &'static str;

    /// The settings every method shares, in `cfg`.
    fn run(cfg: &Self::Config) -> &RunConfig;
    fn run_mut(cfg: &mut Self::Config) -> &mut RunConfig;

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

    /// The inputs of step `at` from its raw images (`[images, 3, h, w]` in [0, 1]), in `parts`
    /// micro-batches of `images / parts` images each. The augmentation is drawn once for all of
    /// the step's images from `(seed, at.step)`, so an image's views do not depend on `parts`
    /// ([`step::split_views`] splits them).
    fn views(&self, raw: Tensor<4>, at: StepAt, parts: usize) -> Vec<Self::Views>;

    /// Part one of a step: the loss on one micro-batch, multiplied by `weight` (1 / micro-batches
    /// of the step, so that the summed gradients are those of the step's mean loss) before the
    /// backward pass, and what the step reports (the loss unweighted). Changes no weights.
    fn gradients(&mut self, views: Self::Views, weight: f64, at: StepAt) -> (Self::Grads, StepReport);

    /// The sum of two micro-batches' gradients.
    fn add(&self, sum: Self::Grads, more: Self::Grads) -> Self::Grads;

    /// Part two: the optimisers apply `grads` (and the method's other updates: DINO's centre
    /// and teacher) at schedule position `at`.
    fn apply(&mut self, grads: Self::Grads, at: StepAt);

    /// Warnings `(code, message)` at the end of `epoch`; `full`: this process saw all of it.
    fn end_epoch(&mut self, epoch: u64, full: bool) -> Vec<(String, String)>;

    /// What downstream jobs (fine-tuning, embedding, export) read from a checkpoint of a run
    /// with `cfg`: the networks it holds and how their input was prepared.
    fn pretrained(cfg: &Self::Config) -> Pretrained;

    /// One whole optimisation step on the step's raw images, in `accumulate` micro-batches.
    fn train_step(&mut self, raw: Tensor<4>, at: StepAt, accumulate: usize) -> StepReport {
        step::step(self, raw, at, accumulate)
    }
}

/// Every method's checkpoint kind and how to read it: a new method is one line here (and its
/// [`Method`] implementation).
/// Reads what downstream jobs need from a checkpoint folder of one kind.
type ReadPretrained = fn(&Path) -> Result<Pretrained, CassError>;

const KINDS: &[(&str, ReadPretrained)] = &[
    (cass::PRETRAIN_KIND, read_as::<cass::CassTrainer>),
    (dino::DINO_KIND, read_as::<dino::DinoTrainer>),
    (vicreg::VICREG_KIND, read_as::<vicreg::VicregTrainer>),
];

fn read_as<M: Method>(dir: &Path) -> Result<Pretrained, CassError> {
    Ok(M::pretrained(&pretrain::read_state::<M::Config>(dir, M::KIND)?.config))
}

/// What fine-tuning, embedding and export need from a pre-training checkpoint of any method.
#[derive(Debug, Clone)]
pub struct Pretrained {
    /// The shapes of the networks it holds (CASS: both; DINO: the one it trained).
    pub cnn: Option<crate::models::ResNetConfig>,
    pub vit: Option<crate::models::VitConfig>,
    pub image_size: usize,
    /// The input preparation the networks were trained with (normalisation, channel order).
    pub augment: crate::augment::AugmentConfig,
    pub conv: crate::models::conv::ConvStrategy,
}

impl Pretrained {
    /// A checkpoint of a method that trains one backbone, `arch`, of the shapes given.
    pub fn one_backbone(
        arch: crate::models::Arch,
        cnn: &crate::models::ResNetConfig,
        vit: &crate::models::VitConfig,
        image_size: usize,
        augment: crate::augment::AugmentConfig,
        conv: crate::models::conv::ConvStrategy,
    ) -> Self {
        Self {
            cnn: (arch == crate::models::Arch::Cnn).then(|| cnn.clone()),
            vit: (arch == crate::models::Arch::Vit).then(|| vit.clone()),
            image_size,
            augment,
            conv,
        }
    }

    /// Reads the `state.json` in `dir` (a checkpoint folder), whichever method wrote it.
    pub fn read(dir: &Path) -> Result<Self, CassError> {
        let kind = crate::checkpoint::Checkpoint::open(dir)?.method;
        match KINDS.iter().find(|(k, _)| *k == kind) {
            Some((_, read)) => read(dir),
            None => Err(CassError::data(
                "bad-checkpoint",
                format!("not a pre-training checkpoint (kind {kind:?})"),
                Some(&dir.join("state.json")),
            )),
        }
    }

    /// The networks it holds, by name.
    pub fn networks(&self) -> Vec<crate::models::Arch> {
        let mut v = Vec::new();
        if self.cnn.is_some() {
            v.push(crate::models::Arch::Cnn);
        }
        if self.vit.is_some() {
            v.push(crate::models::Arch::Vit);
        }
        v
    }

    /// The shapes to build `arch` with, or an error naming what the checkpoint holds.
    pub fn shapes(
        &self,
        arch: crate::models::Arch,
        dir: &Path,
    ) -> Result<(crate::models::ResNetConfig, crate::models::VitConfig), CassError> {
        match (&self.cnn, &self.vit) {
            (Some(c), Some(v)) => Ok((c.clone(), v.clone())),
            (Some(c), None) if arch == crate::models::Arch::Cnn => {
                Ok((c.clone(), crate::models::VitConfig::tiny(self.image_size, 1)))
            }
            (None, Some(v)) if arch == crate::models::Arch::Vit => {
                Ok((crate::models::ResNetConfig::resnet18(1), v.clone()))
            }
            _ => Err(CassError::config(
                "arch",
                format!(
                    "the checkpoint in {} holds no {} (it holds: {})",
                    dir.display(),
                    arch.name(),
                    self.networks().iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
}
