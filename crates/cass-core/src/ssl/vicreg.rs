//! VICReg (Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
//! Self-Supervised Learning", ICLR 2022) as a [`Method`]: one backbone, two augmented views of
//! every image, each through the backbone and the [`crate::models::expander`] on its own (as
//! `main_vicreg.py` does, so each view's BatchNorm statistics are its own), and the loss of
//! [`crate::loss::vicreg`]. It answers what the CASS paper leaves open: whether a gain comes from
//! pairing two architectures, or from the variance and covariance terms CASS's guard borrows.
//! One run trains one backbone; its checkpoint holds it as `cnn.safetensors` or
//! `vit.safetensors`, so fine-tuning, embedding and export read it as a CASS checkpoint.

use std::collections::HashMap;
use std::path::Path;

use burn::optim::GradientsParams;
use burn::prelude::*;

use super::step::{augmented_views, split_views};
pub use super::vicreg_config::VicregConfig;
use super::{Method, StepAt};
use crate::checkpoint::{self, save_weights};
use crate::error::CassError;
use crate::loss::output_spread;
use crate::loss::vicreg::vicreg_loss;
use crate::models::build::{load_into, save_network};
use crate::models::expander::{Expander, expander};
use crate::models::{Arch, Network, init_seeded};
use crate::train::adam::Adam;
use crate::train::grads::add_grads;
use crate::train::run::StepReport;
use crate::train::run_config::RunConfig;
use crate::train::schedule::Schedule;

/// The `kind` of VICReg pre-training checkpoints (`state.json`).
pub const VICREG_KIND: &str = "vicreg-pretrain";

/// The backbone, its expander and their optimizers.
pub struct VicregTrainer {
    pub config: VicregConfig,
    pub backbone: Network,
    pub expander: Expander,
    pub opt_backbone: Adam,
    pub opt_expander: Adam,
    /// Largest output spread of the current epoch (the collapse warning).
    spread: f64,
}

/// The gradients of a step's micro-batches (summed).
pub struct VicregGrads {
    pub backbone: GradientsParams,
    pub expander: GradientsParams,
}

impl VicregTrainer {
    /// A fresh backbone and expander on `device`, seeded.
    pub fn new(cfg: &VicregConfig, device: &Device) -> Self {
        let ad = device.clone().autodiff();
        let (backbone, expander) = init_seeded(&ad, cfg.run.seed, |d| {
            let (net, width) = match cfg.arch {
                Arch::Cnn => (Network::Cnn(cfg.cnn.init(d)), cfg.cnn.feature_dim()),
                Arch::Vit => (Network::Vit(cfg.vit.init(d)), cfg.vit.embed_dim),
            };
            (net.with_conv(cfg.conv), expander(width, &cfg.expander, d))
        });
        let adamw = || {
            let mut opt = Adam::new(cfg.adam);
            opt.decoupled = true;
            opt
        };
        Self {
            config: cfg.clone(),
            backbone,
            expander,
            opt_backbone: adamw(),
            opt_expander: adamw(),
            spread: 0.0,
        }
    }

    /// The learning rate at `at`: a linear warm-up over `warmup_epochs`, then a cosine.
    pub fn lr(&self, at: StepAt) -> f64 {
        Schedule::Cosine {
            warmup: self.config.warmup_epochs * at.per_epoch,
            min_lr: self.config.min_lr,
        }
        .lr(self.config.lr, at.step, at.total)
    }

    /// The expander's output for a batch of images.
    fn embed(&self, x: Tensor<4>) -> Tensor<2> {
        self.expander.forward(self.backbone.forward_features(x))
    }
}

impl Method for VicregTrainer {
    type Config = VicregConfig;
    /// View 1 of a micro-batch's images, then view 2.
    type Views = Tensor<4>;
    type Grads = VicregGrads;
    const KIND: &'static str = VICREG_KIND;
    const LOSS_NAME: &'static str = "VICReg loss";

    fn run(cfg: &VicregConfig) -> &RunConfig {
        &cfg.run
    }

    fn run_mut(cfg: &mut VicregConfig) -> &mut RunConfig {
        &mut cfg.run
    }

    fn prepare(cfg: &mut VicregConfig, _fresh: bool) -> Result<(), CassError> {
        cfg.validate()
    }

    fn init(cfg: &VicregConfig, device: &Device) -> Result<Self, CassError> {
        Ok(Self::new(cfg, device))
    }

    fn load(cfg: &VicregConfig, dir: &Path, device: &Device) -> Result<Self, CassError> {
        let mut t = Self::new(cfg, device);
        let none = Default::default();
        t.backbone = load_into(t.backbone, &dir.join(format!("{}.safetensors", cfg.arch.name())), &none)?;
        t.expander = checkpoint::load_weights(t.expander, &dir.join("expander.safetensors"), &none)?;
        t.opt_backbone.load(&dir.join("backbone.adam.safetensors"), device)?;
        t.opt_expander.load(&dir.join("expander.adam.safetensors"), device)?;
        Ok(t)
    }

    fn save(&self, dir: &Path, step: u64) -> Result<(), CassError> {
        let arch = self.config.arch.name();
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "cass-ssl".to_string());
        meta.insert("step".to_string(), step.to_string());
        meta.insert("arch".to_string(), arch.to_string());
        meta.insert("method".to_string(), "vicreg".to_string());
        save_network(&self.backbone, &dir.join(format!("{arch}.safetensors")), meta.clone())?;
        save_weights(&self.expander, &dir.join("expander.safetensors"), meta)?;
        self.opt_backbone.save(&dir.join("backbone.adam.safetensors"))?;
        self.opt_expander.save(&dir.join("expander.adam.safetensors"))
    }

    fn views(&self, raw: Tensor<4>, at: StepAt, parts: usize) -> Vec<Tensor<4>> {
        let c = &self.config;
        let x = augmented_views(&c.augment, raw, 2, c.run.seed, at.step, c.image_size);
        split_views(x, 2, parts)
    }

    fn gradients(&mut self, views: Tensor<4>, weight: f64, at: StepAt) -> (VicregGrads, StepReport) {
        let [v1, v2]: [Tensor<4>; 2] = views.autodiff().chunk(2, 0).try_into().expect("two views");
        let (x, y) = (self.embed(v1), self.embed(v2)); // [batch, D] each
        let spread = output_spread(x.clone().detach()).into_scalar::<f32>() as f64;
        self.spread = self.spread.max(spread);
        let parts = vicreg_loss(x, y, self.config.weights);
        let value = parts.total.clone().into_scalar::<f32>() as f64;
        let total = if weight == 1.0 {
            parts.total
        } else {
            parts.total.mul_scalar(weight)
        };
        let mut grads = total.backward();
        let backbone = GradientsParams::from_module(&mut grads, &self.backbone);
        let expander = GradientsParams::from_module(&mut grads, &self.expander);
        let arch = self.config.arch;
        let report = StepReport {
            loss: value,
            parts: vec![
                ("vicreg".into(), value),
                ("invariance".into(), parts.invariance),
                ("variance".into(), parts.variance),
                ("covariance".into(), parts.covariance),
                (format!("{}_spread", arch.name()), spread),
            ],
            spread: crate::events::NetworkSpread::of(arch, spread),
            lr: self.lr(at),
        };
        (VicregGrads { backbone, expander }, report)
    }

    fn add(&self, sum: VicregGrads, more: VicregGrads) -> VicregGrads {
        VicregGrads {
            backbone: add_grads(&self.backbone, sum.backbone, more.backbone),
            expander: add_grads(&self.expander, sum.expander, more.expander),
        }
    }

    fn apply(&mut self, grads: VicregGrads, at: StepAt) {
        let lr = self.lr(at);
        self.backbone = self
            .opt_backbone
            .step_params(lr, self.backbone.clone(), &grads.backbone);
        self.expander = self
            .opt_expander
            .step_params(lr, self.expander.clone(), &grads.expander);
    }

    fn end_epoch(&mut self, epoch: u64, full: bool) -> Vec<(String, String)> {
        let spread = std::mem::take(&mut self.spread);
        let threshold = self.config.run.collapse_warning_spread;
        if full && spread < threshold {
            vec![(
                "collapse".into(),
                format!(
                    "the expander's output spread stayed below {threshold} for all of epoch {epoch} (largest: {spread:.3}): \
                     VICReg is collapsing to a constant output. Raise the variance weight (weights.variance) or lower the learning rate"
                ),
            )]
        } else {
            Vec::new()
        }
    }

    /// The one backbone it trained.
    fn pretrained(c: &VicregConfig) -> super::Pretrained {
        super::Pretrained::one_backbone(c.arch, &c.cnn, &c.vit, c.image_size, c.augment, c.conv)
    }
}

/// Runs (or resumes) VICReg pre-training of one backbone over `indices` of `set`, writing
/// checkpoints under `out_dir/checkpoint` (see [`super::pretrain::run`]).
pub fn pretrain_vicreg(
    config: &VicregConfig,
    set: std::sync::Arc<crate::data::ImageSet>,
    indices: Vec<usize>,
    out_dir: &Path,
    resume: bool,
    observer: &mut dyn crate::events::Observer,
    cancel: &crate::events::CancelToken,
) -> Result<super::pretrain::PretrainOutcome, CassError> {
    super::pretrain::run::<VicregTrainer>(config, set, indices, out_dir, resume, observer, cancel)
}

#[cfg(test)]
#[path = "vicreg_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "vicreg_parity_tests.rs"]
mod parity_tests;
