//! DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021),
//! the CASS paper's baseline, as a second [`Method`]: a student and a teacher of the same
//! backbone, each with the projection head of [`crate::models::dino_head`]; the teacher is an
//! exponential moving average of the student and sees only the two global crops, the student
//! sees every crop (multi-crop); the loss is [`crate::loss::dino`]. One run trains one backbone
//! (a ResNet or a ViT from the same model code as CASS), and its checkpoint holds the teacher's
//! backbone as `cnn.safetensors` or `vit.safetensors`, so fine-tuning, embedding and export read
//! it as they read a CASS checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::optim::GradientsParams;
use burn::prelude::*;

pub use super::dino_config::DinoConfig;
use super::step::{split_views, view_seed};
use super::{Method, StepAt};
use crate::augment::{self, AugmentConfig};
use crate::checkpoint::{self, read_safetensors, safetensors_bytes, save_weights, to_host, write_atomic};
use crate::error::CassError;
use crate::loss::dino::DinoLoss;
use crate::loss::output_spread;
use crate::models::build::save_network;
use crate::models::dino_head::DinoHead;
use crate::models::{Arch, Network, init_seeded};
use crate::train::adam::Adam;
use crate::train::ema::{ema, own_copy};
use crate::train::grads::add_grads;
use crate::train::run::StepReport;
use crate::train::run_config::RunConfig;
use crate::train::schedule::{Schedule, cosine};

/// The `kind` of DINO pre-training checkpoints (`state.json`).
pub const DINO_KIND: &str = "dino-pretrain";

/// The number of global crops (DINO's two).
pub const GLOBAL_CROPS: usize = 2;

/// Student, teacher, their optimizers and the loss's centre.
pub struct DinoTrainer {
    pub config: DinoConfig,
    pub student: Network,
    pub student_head: DinoHead,
    /// No parameter of the teacher requires a gradient; it changes only by [`ema`].
    pub teacher: Network,
    pub teacher_head: DinoHead,
    pub opt_backbone: Adam,
    pub opt_head: Adam,
    pub loss: DinoLoss,
    /// Largest teacher output spread of the current epoch (the collapse warning).
    spread: f64,
}

fn build(cfg: &DinoConfig, device: &Device) -> (Network, DinoHead) {
    let ad = device.clone().autodiff();
    init_seeded(&ad, cfg.run.seed, |d| {
        let (net, width) = match cfg.arch {
            Arch::Cnn => (Network::Cnn(cfg.cnn.init(d)), cfg.cnn.feature_dim()),
            Arch::Vit => (Network::Vit(cfg.vit.init(d)), cfg.vit.embed_dim),
        };
        (net.with_conv(cfg.conv), cfg.head.init(width, d))
    })
}

impl DinoTrainer {
    /// Fresh student on `device`, and a teacher that starts as its copy.
    pub fn new(cfg: &DinoConfig, device: &Device) -> Self {
        let (student, student_head) = build(cfg, device);
        let mut opt_backbone = Adam::new(cfg.adam);
        let mut opt_head = Adam::new(cfg.adam);
        for opt in [&mut opt_backbone, &mut opt_head] {
            opt.decoupled = true;
            opt.clip = cfg.clip_grad;
        }
        Self {
            config: cfg.clone(),
            teacher: own_copy(&student).no_grad(),
            teacher_head: own_copy(&student_head).no_grad(),
            student,
            student_head,
            opt_backbone,
            opt_head,
            loss: DinoLoss::new(cfg.head.out_dim, cfg.center_momentum, cfg.student_temp, device),
            spread: 0.0,
        }
    }

    /// The crops of step `step`: the two global crops of every image (`[2 * batch, 3, S, S]`,
    /// crop 1 of every image then crop 2) and the local crops (`[locals * batch, 3, s, s]`, or
    /// `None` without local crops). Each crop's augmentation is drawn from its own seed.
    pub fn crops(cfg: &DinoConfig, raw: Tensor<4>, step: u64) -> (Tensor<4>, Option<Tensor<4>>) {
        let batch = raw.dims()[0];
        let aspect = raw.dims()[3] as f64 / raw.dims()[2] as f64;
        let crop = |v: usize, scale: [f64; 2], size: usize| {
            let aug = AugmentConfig {
                crop_scale: scale,
                ..cfg.augment
            };
            let seed = view_seed(cfg.run.seed, v, step);
            let params = aug.sample(batch, seed, aspect);
            augment::apply(raw.clone(), Some(&params), size, &aug)
        };
        let globals = (0..GLOBAL_CROPS)
            .map(|v| crop(v, cfg.global_crop_scale, cfg.image_size))
            .collect();
        let locals: Vec<_> = (0..cfg.local_crops)
            .map(|v| crop(GLOBAL_CROPS + v, cfg.local_crop_scale, cfg.local_crop_size))
            .collect();
        (
            Tensor::cat(globals, 0),
            (!locals.is_empty()).then(|| Tensor::cat(locals, 0)),
        )
    }

    /// One DINO step on prepared crops (see [`DinoTrainer::crops`]).
    pub fn step(&mut self, globals: Tensor<4>, locals: Option<Tensor<4>>, at: StepAt) -> StepReport {
        let (grads, report) = self.gradients_of((globals, locals), 1.0, at);
        self.apply_grads(grads, at);
        report
    }

    /// The learning rate at `at` (a linear warm-up, then a cosine).
    fn lr(&self, at: StepAt) -> f64 {
        let cfg = &self.config;
        Schedule::Cosine {
            warmup: cfg.warmup_epochs * at.per_epoch,
            min_lr: cfg.min_lr,
        }
        .lr(cfg.peak_lr(), at.step, at.total)
    }

    /// The student's gradients of `weight` times the loss on one micro-batch's crops, with the
    /// teacher's outputs (the centre's update needs them); changes no weights.
    fn gradients_of(&mut self, (globals, locals): DinoViews, weight: f64, at: StepAt) -> (DinoGrads, StepReport) {
        let cfg = &self.config;
        let momentum = cosine(cfg.momentum_teacher, 1.0, at.step, at.total);
        let teacher_temp = cfg.teacher_temp_at(at.epoch);
        let globals = globals.autodiff();
        // The teacher runs on the training device (BatchNorm with batch statistics, as DINO's
        // teacher in train mode) but none of its parameters is tracked.
        let t_out = self
            .teacher_head
            .forward(self.teacher.forward_features(globals.clone()))
            .detach(); // [2B, K]
        let mut s_out = vec![self.student_head.forward(self.student.forward_features(globals))];
        if let Some(l) = locals {
            s_out.push(self.student_head.forward(self.student.forward_features(l.autodiff())));
        }
        let s_out = Tensor::cat(s_out, 0); // [(2 + locals) B, K]
        let loss = self.loss.forward(s_out, t_out.clone(), GLOBAL_CROPS, teacher_temp);
        let value = loss.clone().into_scalar::<f32>() as f64;
        let loss = if weight == 1.0 { loss } else { loss.mul_scalar(weight) };
        let mut grads = loss.backward();
        if at.epoch < cfg.freeze_last_layer_epochs {
            // DINO's `cancel_gradients_last_layer`: the last layer keeps its initial directions
            // while the rest settles, which its authors found stabilises the start.
            self.student_head.last_layer.val().grad_remove(&mut grads);
        }
        let backbone = GradientsParams::from_module(&mut grads, &self.student);
        let head = GradientsParams::from_module(&mut grads, &self.student_head);
        let spread = output_spread(t_out.clone()).into_scalar::<f32>() as f64;
        self.spread = self.spread.max(spread);
        let report = StepReport {
            loss: value,
            parts: vec![
                ("dino".into(), value),
                (format!("{}_spread", cfg.arch.name()), spread),
                ("teacher_momentum".into(), momentum),
                ("teacher_temp".into(), teacher_temp),
            ],
            spread: crate::events::NetworkSpread::of(cfg.arch, spread),
            lr: self.lr(at),
        };
        let grads = DinoGrads {
            backbone,
            head,
            teacher_out: vec![t_out],
        };
        (grads, report)
    }

    /// The student's update, then the centre's (from the teacher's outputs of every
    /// micro-batch) and the teacher's.
    fn apply_grads(&mut self, grads: DinoGrads, at: StepAt) {
        let cfg = &self.config;
        let lr = self.lr(at);
        let wd = cosine(cfg.weight_decay, cfg.weight_decay_end, at.step, at.total);
        let momentum = cosine(cfg.momentum_teacher, 1.0, at.step, at.total);
        for opt in [&mut self.opt_backbone, &mut self.opt_head] {
            opt.config.weight_decay = wd;
        }
        self.student = self.opt_backbone.step_params(lr, self.student.clone(), &grads.backbone);
        self.student_head = self.opt_head.step_params(lr, self.student_head.clone(), &grads.head);
        self.loss.update_center(Tensor::cat(grads.teacher_out, 0));
        self.teacher = ema(self.teacher.clone(), &self.student, momentum);
        self.teacher_head = ema(self.teacher_head.clone(), &self.student_head, momentum);
    }
}

/// One micro-batch's crops: the two global crops of every image, then the local crops, if any.
pub type DinoViews = (Tensor<4>, Option<Tensor<4>>);

/// The student's gradients of a step's micro-batches (summed) and the teacher's outputs on them.
pub struct DinoGrads {
    pub backbone: GradientsParams,
    pub head: GradientsParams,
    /// `[2 b, K]` per micro-batch.
    pub teacher_out: Vec<Tensor<2>>,
}

fn load_network(net: Network, path: &Path) -> Result<Network, CassError> {
    crate::models::build::load_into(net, path, &Default::default())
}

impl Method for DinoTrainer {
    type Config = DinoConfig;
    type Views = DinoViews;
    type Grads = DinoGrads;
    const KIND: &'static str = DINO_KIND;
    const LOSS_NAME: &'static str = "DINO loss";

    /// The one backbone it trained (the teacher's weights).
    fn pretrained(c: &DinoConfig) -> super::Pretrained {
        super::Pretrained::one_backbone(c.arch, &c.cnn, &c.vit, c.image_size, c.augment, c.conv)
    }

    fn run(cfg: &DinoConfig) -> &RunConfig {
        &cfg.run
    }

    fn run_mut(cfg: &mut DinoConfig) -> &mut RunConfig {
        &mut cfg.run
    }

    fn prepare(cfg: &mut DinoConfig, _fresh: bool) -> Result<(), CassError> {
        cfg.validate()
    }

    fn init(cfg: &DinoConfig, device: &Device) -> Result<Self, CassError> {
        Ok(Self::new(cfg, device))
    }

    fn load(cfg: &DinoConfig, dir: &Path, device: &Device) -> Result<Self, CassError> {
        let mut t = Self::new(cfg, device);
        let arch = cfg.arch.name();
        let none = Default::default();
        t.teacher = load_network(t.teacher, &dir.join(format!("{arch}.safetensors")))?.no_grad();
        t.teacher_head =
            checkpoint::load_weights(t.teacher_head, &dir.join("teacher_head.safetensors"), &none)?.no_grad();
        t.student = load_network(t.student, &dir.join("student.safetensors"))?;
        t.student_head = checkpoint::load_weights(t.student_head, &dir.join("student_head.safetensors"), &none)?;
        t.opt_backbone.load(&dir.join("student.adam.safetensors"), device)?;
        t.opt_head.load(&dir.join("student_head.adam.safetensors"), device)?;
        let center_path = dir.join("center.safetensors");
        let center = read_safetensors(&center_path)?
            .remove("center")
            .filter(|c| c.shape == [cfg.head.out_dim])
            .ok_or_else(|| {
                CassError::data(
                    "bad-checkpoint",
                    "no DINO centre of the head's width",
                    Some(&center_path),
                )
            })?;
        t.loss.center = Tensor::<1>::from_floats(center.data.as_slice(), &device.clone().inner());
        Ok(t)
    }

    fn save(&self, dir: &Path, step: u64) -> Result<(), CassError> {
        let arch = self.config.arch.name();
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "cass-ssl".to_string());
        meta.insert("step".to_string(), step.to_string());
        meta.insert("arch".to_string(), arch.to_string());
        meta.insert("method".to_string(), "dino-teacher".to_string());
        // The teacher's backbone is what DINO evaluates and what fine-tuning starts from.
        save_network(&self.teacher, &dir.join(format!("{arch}.safetensors")), meta.clone())?;
        meta.insert("method".to_string(), "dino-student".to_string());
        save_network(&self.student, &dir.join("student.safetensors"), meta.clone())?;
        save_weights(&self.student_head, &dir.join("student_head.safetensors"), meta.clone())?;
        meta.insert("method".to_string(), "dino-teacher".to_string());
        save_weights(&self.teacher_head, &dir.join("teacher_head.safetensors"), meta)?;
        self.opt_backbone.save(&dir.join("student.adam.safetensors"))?;
        self.opt_head.save(&dir.join("student_head.adam.safetensors"))?;
        let mut center = BTreeMap::new();
        center.insert("center".to_string(), to_host(self.loss.center.clone(), false));
        write_atomic(&dir.join("center.safetensors"), &safetensors_bytes(&center, &[], None))
    }

    fn views(&self, raw: Tensor<4>, at: StepAt, parts: usize) -> Vec<DinoViews> {
        let (globals, locals) = Self::crops(&self.config, raw, at.step);
        let globals = split_views(globals, GLOBAL_CROPS, parts);
        let mut locals = match locals {
            Some(l) => split_views(l, self.config.local_crops, parts)
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![None; parts],
        };
        globals.into_iter().zip(locals.drain(..)).collect()
    }

    fn gradients(&mut self, views: DinoViews, weight: f64, at: StepAt) -> (DinoGrads, StepReport) {
        self.gradients_of(views, weight, at)
    }

    fn add(&self, sum: DinoGrads, more: DinoGrads) -> DinoGrads {
        let mut teacher_out = sum.teacher_out;
        teacher_out.extend(more.teacher_out);
        DinoGrads {
            backbone: add_grads(&self.student, sum.backbone, more.backbone),
            head: add_grads(&self.student_head, sum.head, more.head),
            teacher_out,
        }
    }

    fn apply(&mut self, grads: DinoGrads, at: StepAt) {
        self.apply_grads(grads, at)
    }

    fn end_epoch(&mut self, epoch: u64, full: bool) -> Vec<(String, String)> {
        let spread = std::mem::take(&mut self.spread);
        let threshold = self.config.run.collapse_warning_spread;
        if full && spread < threshold {
            vec![(
                "collapse".into(),
                format!(
                    "the teacher's output spread stayed below {threshold} for all of epoch {epoch} (largest: {spread:.3}): \
                     DINO is collapsing to a constant output. Try a higher teacher temperature warm-up or centre momentum"
                ),
            )]
        } else {
            Vec::new()
        }
    }
}

/// Runs (or resumes) DINO pre-training of one backbone over `indices` of `set`, writing
/// checkpoints under `out_dir/checkpoint` (see [`super::pretrain::run`]).
pub fn pretrain_dino(
    config: &DinoConfig,
    set: std::sync::Arc<crate::data::ImageSet>,
    indices: Vec<usize>,
    out_dir: &Path,
    resume: bool,
    observer: &mut dyn crate::events::Observer,
    cancel: &crate::events::CancelToken,
) -> Result<super::pretrain::PretrainOutcome, CassError> {
    super::pretrain::run::<DinoTrainer>(config, set, indices, out_dir, resume, observer, cancel)
}

#[cfg(test)]
#[path = "dino_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "dino_parity_tests.rs"]
mod parity_tests;
