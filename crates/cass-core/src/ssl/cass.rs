//! CASS pre-training (Singh, Sizikova and Cirrone, arXiv 2206.04170): one augmented view per
//! image goes through BOTH the CNN and the ViT; the loss is `mean(2 - 2 cos(r, t))` between their
//! L2-normalised head outputs; one backward; one Adam per network; gradients are fresh every
//! step (the authors' notebook accumulates them across the whole run, which we do not copy).
//!
//! Two named extensions, off in the `paper` preset, for training from random weights, where the
//! loss's constant-output minimum is reached within an epoch: a collapse guard (the variance
//! hinge of [`crate::loss::variance`]) and two views (each network sees its own augmentation of
//! the image and the loss is symmetrised), see [`super::objective`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread;

use burn::optim::GradientsParams;
use burn::prelude::*;

pub use super::cass_config::{InitWeights, PretrainConfig, ViewBatchNorm};
pub use super::objective::CollapseGuard;
pub use super::objective::StepOutput;
use super::objective::{EpochSpread, Objective};
pub use super::pretrain::PretrainOutcome;
use super::step::{augmented_views, split_views};
use super::{Method, StepAt};
use crate::checkpoint::{self, save_weights};
use crate::data::ImageSet;
use crate::error::CassError;
use crate::events::{CancelToken, Observer};
use crate::models::{ResNet, Vit, init_seeded};
use crate::train::adam::Adam;
use crate::train::grads::add_grads;
pub use crate::train::run::Status;
use crate::train::run::StepReport;
use crate::train::run_config::RunConfig;
use crate::weights::{apply_declared_variant, head_names, load_timm, load_timm_vit};

/// The `kind` of CASS pre-training checkpoints (`state.json`).
pub const PRETRAIN_KIND: &str = "cass-pretrain";

/// `state.json` of a CASS pre-training checkpoint.
pub type PretrainState = super::pretrain::PretrainState<PretrainConfig>;

/// The two networks, their optimizers and the objective.
pub struct CassTrainer {
    /// The run's config (schedule, augmentation and views of a step).
    pub config: PretrainConfig,
    pub cnn: ResNet,
    pub vit: Vit,
    pub opt_cnn: Adam,
    pub opt_vit: Adam,
    pub objective: Objective,
    pub device: Device,
    /// Run the two networks on two threads during a step (see [`CassTrainer::step`]). On by
    /// default on the CPU, where most of a small model's kernels are too small to spread over
    /// the cores by themselves; the result is the same either way.
    pub parallel_towers: bool,
    /// Largest output spreads of the current epoch (the collapse warning).
    collapse: EpochSpread,
}

impl CassTrainer {
    /// Fresh networks on `device` (plain device; autodiff is enabled here), seeded.
    pub fn new(cfg: &PretrainConfig, device: &Device) -> Self {
        let ad = device.clone().autodiff();
        Self {
            config: cfg.clone(),
            cnn: init_seeded(&ad, cfg.run.seed, |d| cfg.cnn.init(d)).with_conv(cfg.conv),
            vit: init_seeded(&ad, cfg.run.seed.wrapping_add(1), |d| cfg.vit.init(d)),
            opt_cnn: Adam::new(cfg.adam),
            opt_vit: Adam::new(cfg.adam),
            objective: Objective {
                views: cfg.views,
                guard: cfg.collapse_guard,
            },
            device: device.clone(),
            parallel_towers: device.clone().inner() == Device::flex(),
            collapse: EpochSpread::default(),
        }
    }

    /// Replaces the fresh weights by the configured initial weights, if any.
    pub fn with_initial_weights(mut self, cfg: &PretrainConfig) -> Result<Self, CassError> {
        let ignore = |w: &InitWeights, head: &str| {
            if w.ignore_head {
                head_names(head)
            } else {
                Default::default()
            }
        };
        if let Some(w) = &cfg.cnn_weights {
            self.cnn = load_timm(self.cnn, &w.path, &ignore(w, "fc"))?;
        }
        if let Some(w) = &cfg.vit_weights {
            self.vit = load_timm_vit(self.vit, &w.path, &ignore(w, "head"))?;
        }
        Ok(self)
    }

    /// One CASS step on an already augmented, normalised batch (with two views, view 1 of
    /// every image, then view 2: see [`Objective`]): [`CassTrainer::gradients_of`], then both
    /// optimisers.
    ///
    /// # Shapes
    /// `x`: `[views * batch, 3, size, size]`
    pub fn step(&mut self, x: Tensor<4>, lr_cnn: f64, lr_vit: f64) -> StepOutput {
        let (grads, out) = self.gradients_of(x, 1.0);
        self.update(grads, lr_cnn, lr_vit);
        out
    }

    /// Both optimisers apply `grads`.
    fn update(&mut self, grads: CassGrads, lr_cnn: f64, lr_vit: f64) {
        self.cnn = self.opt_cnn.step_params(lr_cnn, self.cnn.clone(), &grads.cnn);
        self.vit = self.opt_vit.step_params(lr_vit, self.vit.clone(), &grads.vit);
    }

    /// The gradients of `weight` times the objective on `x`, for each network; changes no
    /// weights (BatchNorm's running statistics aside).
    ///
    /// With [`parallel_towers`](Self::parallel_towers), the CNN runs on the calling thread and
    /// the ViT on a second one. The loss is computed on detached copies of the two outputs `r`
    /// and `t`; its gradients `g_r`, `g_t` then seed each network's own backward, through
    /// `sum(r * g_r)` and `sum(t * g_t)`, whose gradient with respect to the output is exactly
    /// `g_r` (resp. `g_t`). So each parameter receives the same gradient, bit for bit, as with
    /// one backward through the whole graph, and the two graphs never share a node, so their
    /// backward passes run concurrently. The CNN, the only network with BatchNorm running
    /// statistics, always runs on the calling thread: burn's `RunningState` keys its pending
    /// update by thread.
    pub fn gradients_of(&mut self, x: Tensor<4>, weight: f64) -> (CassGrads, StepOutput) {
        if self.parallel_towers {
            self.gradients_parallel(x, weight)
        } else {
            self.gradients_serial(x, weight)
        }
    }

    fn gradients_serial(&mut self, x: Tensor<4>, weight: f64) -> (CassGrads, StepOutput) {
        let x = x.autodiff();
        let r = cnn_forward(&self.cnn, x.clone(), self.config.views, self.config.view_batch_norm); // [views * batch, d]
        let t = self.vit.forward(x); // [views * batch, d]
        let parts = self.objective.forward(r, t);
        let value = parts.total.clone().into_scalar::<f32>() as f64;
        let out = StepOutput::from_parts(value, &parts);
        let mut grads = weighted(parts.total, weight).backward();
        let cnn = GradientsParams::from_module(&mut grads, &self.cnn);
        let vit = GradientsParams::from_module(&mut grads, &self.vit);
        (CassGrads { cnn, vit }, out)
    }

    fn gradients_parallel(&mut self, x: Tensor<4>, weight: f64) -> (CassGrads, StepOutput) {
        let Self {
            cnn,
            vit,
            objective,
            config,
            ..
        } = self;
        let (views, norm) = (config.views, config.view_batch_norm);
        let (send_t, recv_t) = mpsc::channel::<Tensor<2>>();
        let (send_g, recv_g) = mpsc::channel::<Tensor<2>>();
        let vit_model = &*vit;
        let x_vit = x.clone();
        thread::scope(|scope| {
            let tower = scope.spawn(move || {
                let t = vit_model.forward(x_vit.autodiff()); // [batch, d]
                // The receiving side hangs up only when it is unwinding; nothing left to do.
                send_t.send(t.clone().detach()).ok()?;
                let g = recv_g.recv().ok()?;
                let grads = t.mul(g).sum().backward();
                Some(GradientsParams::from_grads(grads, vit_model))
            });
            let r = cnn_forward(cnn, x.autodiff(), views, norm); // [views * batch, d]
            let Ok(t) = recv_t.recv() else {
                // The ViT thread ended without an output: it panicked. Re-raise its panic here.
                std::panic::resume_unwind(tower.join().expect_err("the ViT thread sent no output"));
            };
            let r_leaf = r.clone().detach().require_grad();
            let t_leaf = t.require_grad();
            let parts = objective.forward(r_leaf.clone(), t_leaf.clone());
            let value = parts.total.clone().into_scalar::<f32>() as f64;
            let out = StepOutput::from_parts(value, &parts);
            let g = weighted(parts.total, weight).backward();
            let g_r = r_leaf.grad(&g).expect("the loss depends on the CNN output");
            let g_t = t_leaf.grad(&g).expect("the loss depends on the ViT output");
            // If the ViT thread has died, its join below reports why.
            let _ = send_g.send(Tensor::from_inner(g_t));
            let grads = r.mul(Tensor::from_inner(g_r)).sum().backward();
            let cnn_grads = GradientsParams::from_grads(grads, &*cnn);
            let vit_grads = match tower.join() {
                Ok(v) => v.expect("the ViT thread received its gradient"),
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (
                CassGrads {
                    cnn: cnn_grads,
                    vit: vit_grads,
                },
                out,
            )
        })
    }
}

/// The CNN's outputs for `x` (`views` blocks of the same images): one forward over all of them
/// (BatchNorm's batch statistics over every view), or, [`ViewBatchNorm::Separate`], one per
/// view (each view normalised by its own statistics, as VICReg's and BYOL's code run them).
fn cnn_forward(cnn: &ResNet, x: Tensor<4>, views: usize, norm: ViewBatchNorm) -> Tensor<2> {
    if views < 2 || norm == ViewBatchNorm::Joint {
        return cnn.forward(x);
    }
    Tensor::cat(x.chunk(views, 0).into_iter().map(|v| cnn.forward(v)).collect(), 0)
}

/// The gradients of one CASS step (or several micro-batches' summed), for each network.
pub struct CassGrads {
    pub cnn: GradientsParams,
    pub vit: GradientsParams,
}

/// `weight * loss`, where a weight of 1 leaves the graph (and so every gradient) as it was.
fn weighted(loss: Tensor<1>, weight: f64) -> Tensor<1> {
    if weight == 1.0 { loss } else { loss.mul_scalar(weight) }
}

impl Method for CassTrainer {
    type Config = PretrainConfig;
    type Views = Tensor<4>;
    type Grads = CassGrads;
    const KIND: &'static str = PRETRAIN_KIND;
    const LOSS_NAME: &'static str = "CASS loss";

    /// Both networks.
    fn pretrained(c: &PretrainConfig) -> super::Pretrained {
        super::Pretrained {
            cnn: Some(c.cnn.clone()),
            vit: Some(c.vit.clone()),
            image_size: c.image_size,
            augment: c.augment,
            conv: c.conv,
        }
    }

    fn run(cfg: &PretrainConfig) -> &RunConfig {
        &cfg.run
    }

    fn run_mut(cfg: &mut PretrainConfig) -> &mut RunConfig {
        &mut cfg.run
    }

    fn prepare(cfg: &mut PretrainConfig, fresh: bool) -> Result<(), CassError> {
        if fresh && let Some(w) = &cfg.cnn_weights {
            // Weights that declare their own ResNet variant and preprocessing (the imported
            // Keras ResNet-50) get both; the run config saved with the checkpoint records them.
            let path = w.path.clone();
            apply_declared_variant(&path, &mut cfg.cnn, &mut cfg.augment)?;
        }
        cfg.validate()
    }

    fn init(cfg: &PretrainConfig, device: &Device) -> Result<Self, CassError> {
        Self::new(cfg, device).with_initial_weights(cfg)
    }

    fn load(cfg: &PretrainConfig, dir: &Path, device: &Device) -> Result<Self, CassError> {
        let mut t = Self::new(cfg, device);
        let none = Default::default();
        t.cnn = checkpoint::load_weights(t.cnn, &dir.join("cnn.safetensors"), &none)?;
        t.vit = checkpoint::load_weights(t.vit, &dir.join("vit.safetensors"), &none)?;
        t.opt_cnn.load(&dir.join("cnn.adam.safetensors"), device)?;
        t.opt_vit.load(&dir.join("vit.adam.safetensors"), device)?;
        Ok(t)
    }

    fn save(&self, dir: &Path, step: u64) -> Result<(), CassError> {
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "cass-ssl".to_string());
        meta.insert("step".to_string(), step.to_string());
        meta.insert("arch".to_string(), "cnn".to_string());
        save_weights(&self.cnn, &dir.join("cnn.safetensors"), meta.clone())?;
        meta.insert("arch".to_string(), "vit".to_string());
        save_weights(&self.vit, &dir.join("vit.safetensors"), meta)?;
        self.opt_cnn.save(&dir.join("cnn.adam.safetensors"))?;
        self.opt_vit.save(&dir.join("vit.adam.safetensors"))
    }

    fn views(&self, raw: Tensor<4>, at: StepAt, parts: usize) -> Vec<Tensor<4>> {
        let c = &self.config;
        let x = augmented_views(&c.augment, raw, c.views, c.run.seed, at.step, c.image_size);
        split_views(x, c.views, parts)
    }

    fn gradients(&mut self, x: Tensor<4>, weight: f64, at: StepAt) -> (CassGrads, StepReport) {
        let (grads, out) = self.gradients_of(x, weight);
        self.collapse.record(&out);
        let report = StepReport {
            loss: out.loss,
            parts: out.parts(),
            spread: crate::events::NetworkSpread {
                cnn: Some(out.cnn_spread),
                vit: Some(out.vit_spread),
            },
            lr: self.config.schedule.lr(self.config.lr_cnn, at.step, at.total),
        };
        (grads, report)
    }

    fn add(&self, sum: CassGrads, more: CassGrads) -> CassGrads {
        CassGrads {
            cnn: add_grads(&self.cnn, sum.cnn, more.cnn),
            vit: add_grads(&self.vit, sum.vit, more.vit),
        }
    }

    fn apply(&mut self, grads: CassGrads, at: StepAt) {
        let cfg = &self.config;
        let lr_cnn = cfg.schedule.lr(cfg.lr_cnn, at.step, at.total);
        let lr_vit = cfg.schedule.lr(cfg.lr_vit, at.step, at.total);
        self.update(grads, lr_cnn, lr_vit);
    }

    fn end_epoch(&mut self, epoch: u64, full: bool) -> Vec<(String, String)> {
        let spread = std::mem::take(&mut self.collapse);
        // An epoch resumed part-way has seen only some of its steps; judge full ones.
        match spread.epoch_warning(epoch, self.config.run.collapse_warning_spread) {
            Some(message) if full => vec![("collapse".into(), message)],
            _ => Vec::new(),
        }
    }
}

/// Reads `state.json` of a CASS pre-training checkpoint.
pub fn read_state(dir: &Path) -> Result<PretrainState, CassError> {
    super::pretrain::read_state(dir, PRETRAIN_KIND)
}

/// Runs (or resumes) CASS pre-training over `indices` of `set`, writing checkpoints under
/// `out_dir/checkpoint`. With `resume`, continues from the checkpoint there if any, keeping its
/// config but taking `epochs` and `max_steps` from `config`.
pub fn pretrain(
    config: &PretrainConfig,
    set: Arc<ImageSet>,
    indices: Vec<usize>,
    out_dir: &Path,
    resume: bool,
    observer: &mut dyn Observer,
    cancel: &CancelToken,
) -> Result<PretrainOutcome, CassError> {
    super::pretrain::run::<CassTrainer>(config, set, indices, out_dir, resume, observer, cancel)
}

#[cfg(test)]
#[path = "cass_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "cass_checkpoint_tests.rs"]
mod checkpoint_tests;
