//! The config of a DINO pre-training run (saved beside every checkpoint) and its checks. The
//! defaults are the DINO paper's (Caron et al. 2021; `main_dino.py`'s arguments) where they do
//! not depend on the image size or the data.

use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::error::CassError;
use crate::models::conv::ConvStrategy;
use crate::models::dino_head::DinoHeadConfig;
use crate::models::{Arch, ResNetConfig, VitConfig};
use crate::train::adam::AdamConfig;
use crate::train::run_config::{RunConfig, Unknown, reject_unknown};

/// Everything that defines a DINO run of one backbone. Saved beside every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DinoConfig {
    /// Batch, length, seed, checkpoints, device, accumulation and the collapse warning (on the
    /// teacher's output spread).
    #[serde(flatten)]
    pub run: RunConfig,
    /// The backbone this run trains (DINO trains one per run).
    pub arch: Arch,
    /// The backbones' shapes; only `arch`'s is built. Their own classifier is unused (DINO's
    /// head replaces it) and replaced at fine-tuning.
    pub cnn: ResNetConfig,
    pub vit: VitConfig,
    pub head: DinoHeadConfig,
    /// Side of the global crops (the network input at fine-tuning).
    pub image_size: usize,
    /// Peak learning rate per 256 images: the run uses `base_lr * batch_size * accumulate / 256`.
    pub base_lr: f64,
    pub min_lr: f64,
    /// Epochs of linear learning-rate warm-up from 0; a cosine decay to `min_lr` follows.
    pub warmup_epochs: u64,
    /// AdamW's betas and epsilon; its weight decay follows `weight_decay` -> `weight_decay_end`.
    #[serde(default)]
    pub adam: AdamConfig,
    /// Weight decay at the first step and at the last (cosine in between), on every parameter
    /// but biases and norm scales.
    pub weight_decay: f64,
    pub weight_decay_end: f64,
    /// Teacher EMA momentum at the first step; it rises to 1 by a cosine over the run.
    pub momentum_teacher: f64,
    /// Teacher temperature after `warmup_teacher_temp_epochs` (linear from
    /// `warmup_teacher_temp` before).
    pub teacher_temp: f64,
    pub warmup_teacher_temp: f64,
    pub warmup_teacher_temp_epochs: u64,
    pub student_temp: f64,
    pub center_momentum: f64,
    /// Per-parameter gradient-norm clipping (`None`: off).
    #[serde(default)]
    pub clip_grad: Option<f64>,
    /// Epochs during which the head's last layer is not updated.
    pub freeze_last_layer_epochs: u64,
    /// Random-resized-crop area range of the two global crops (at `image_size`).
    pub global_crop_scale: [f64; 2],
    /// Number of local crops, their area range and side.
    pub local_crops: usize,
    pub local_crop_scale: [f64; 2],
    pub local_crop_size: usize,
    /// The other augmentations of every crop (its `crop_scale` is replaced per crop kind).
    #[serde(default)]
    pub augment: AugmentConfig,
    #[serde(default)]
    pub conv: ConvStrategy,
    /// Fields no setting reads, refused by `validate` (see [`Unknown`]).
    #[serde(flatten)]
    pub unknown: Unknown,
}

fn check_range(field: &str, [lo, hi]: [f64; 2]) -> Result<(), CassError> {
    if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
        return Err(CassError::config(
            field,
            format!("must be an area range 0 < min <= max <= 1, got [{lo}, {hi}]"),
        ));
    }
    Ok(())
}

fn check_positive(field: &str, v: f64) -> Result<(), CassError> {
    if !(v.is_finite() && v > 0.0) {
        return Err(CassError::config(field, format!("must be a positive number, got {v}")));
    }
    Ok(())
}

fn check_unit(field: &str, v: f64) -> Result<(), CassError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(CassError::config(field, format!("must lie in [0, 1], got {v}")));
    }
    Ok(())
}

impl DinoConfig {
    /// The learning rate the run peaks at: DINO's linear scaling by the images of one update
    /// (all micro-batches of an accumulated step).
    pub fn peak_lr(&self) -> f64 {
        self.base_lr * self.run.step_images() as f64 / 256.0
    }

    /// Checks what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), CassError> {
        reject_unknown(&self.unknown)?;
        self.run.validate()?;
        if self.image_size == 0 || self.local_crop_size == 0 {
            return Err(CassError::config("image_size", "crop sides must be positive"));
        }
        if self.arch == Arch::Vit {
            if self.vit.image_size != self.image_size {
                return Err(CassError::config(
                    "vit.image_size",
                    format!("is {} but image_size is {}", self.vit.image_size, self.image_size),
                ));
            }
            self.vit.validate().map_err(|m| CassError::config("vit", m))?;
            if self.local_crops > 0 && !self.local_crop_size.is_multiple_of(self.vit.patch_size) {
                return Err(CassError::config(
                    "local_crop_size",
                    format!(
                        "is {} but the ViT's patches are {} wide: a local crop must be a whole number of patches",
                        self.local_crop_size, self.vit.patch_size
                    ),
                ));
            }
        }
        if self.head.out_dim == 0 || self.head.hidden_dim == 0 || self.head.bottleneck_dim == 0 {
            return Err(CassError::config("head", "widths must be positive"));
        }
        crate::models::budget::check_network(self.arch, &self.cnn, &self.vit, self.image_size, self.run.batch_size)?;
        let widest = [self.head.hidden_dim, self.head.bottleneck_dim, self.head.out_dim]
            .iter()
            .map(|&w| w as u128)
            .max()
            .unwrap_or(0);
        let head = widest
            * widest
                .max(self.cnn.feature_dim() as u128)
                .max(self.vit.embed_dim as u128);
        if head > crate::models::budget::MAX_TENSOR_ELEMENTS {
            return Err(CassError::config(
                "head",
                format!(
                    "implies a weight of {head} elements, more than the {} one tensor may hold: make the head narrower",
                    crate::models::budget::MAX_TENSOR_ELEMENTS
                ),
            ));
        }
        check_positive("base_lr", self.base_lr)?;
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0) {
            return Err(CassError::config(
                "min_lr",
                format!("must be a non-negative number, got {}", self.min_lr),
            ));
        }
        for (field, v) in [
            ("weight_decay", self.weight_decay),
            ("weight_decay_end", self.weight_decay_end),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(CassError::config(
                    field,
                    format!("must be a non-negative number, got {v}"),
                ));
            }
        }
        check_unit("momentum_teacher", self.momentum_teacher)?;
        check_unit("center_momentum", self.center_momentum)?;
        for (field, v) in [
            ("teacher_temp", self.teacher_temp),
            ("warmup_teacher_temp", self.warmup_teacher_temp),
            ("student_temp", self.student_temp),
        ] {
            check_positive(field, v)?;
        }
        if let Some(c) = self.clip_grad {
            check_positive("clip_grad", c)?;
        }
        check_range("global_crop_scale", self.global_crop_scale)?;
        if self.local_crops > 0 {
            check_range("local_crop_scale", self.local_crop_scale)?;
        }
        Ok(())
    }

    /// Teacher temperature during `epoch` (DINO's linear warm-up per epoch, then constant).
    pub fn teacher_temp_at(&self, epoch: u64) -> f64 {
        let n = self.warmup_teacher_temp_epochs;
        if epoch >= n {
            return self.teacher_temp;
        }
        // np.linspace(warmup, final, n)[epoch]
        let frac = if n > 1 { epoch as f64 / (n - 1) as f64 } else { 1.0 };
        self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * frac
    }
}
