//! The config of a CASS pre-training run (saved beside every checkpoint) and its checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::objective::CollapseGuard;
use crate::augment::AugmentConfig;
use crate::error::CassError;
use crate::models::conv::ConvStrategy;
use crate::models::{ResNetConfig, VitConfig};
use crate::train::adam::AdamConfig;
use crate::train::run_config::{RunConfig, Unknown, reject_unknown};
use crate::train::schedule::Schedule;

/// Everything that defines a CASS pre-training run. Saved beside every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Batch, length, seed, checkpoints, device, accumulation and the collapse warning.
    #[serde(flatten)]
    pub run: RunConfig,
    pub cnn: ResNetConfig,
    pub vit: VitConfig,
    /// Side of the square network input; images of another size are resized on the device.
    pub image_size: usize,
    pub lr_cnn: f64,
    pub lr_vit: f64,
    #[serde(default)]
    pub adam: AdamConfig,
    pub schedule: Schedule,
    #[serde(default)]
    pub augment: AugmentConfig,
    /// Initial CNN weights (timm-named safetensors), e.g. ImageNet weights, as in the paper.
    #[serde(default)]
    pub cnn_weights: Option<InitWeights>,
    /// Initial ViT weights (timm-named safetensors; `pos_embed` is resampled to `image_size`).
    #[serde(default)]
    pub vit_weights: Option<InitWeights>,
    /// Augmented views per image and step: 1 (the paper: the same view through both networks)
    /// or 2 (the CNN's view 1 is compared with the ViT's view 2 and vice versa).
    #[serde(default = "one_view")]
    pub views: usize,
    /// With two views, whether the CNN's BatchNorm takes its batch statistics over both views
    /// at once (`[x1; x2]`, one forward) or over each view on its own (two forwards).
    #[serde(default)]
    pub view_batch_norm: ViewBatchNorm,
    /// How the CNN's convolutions are computed (on GPUs, one batched matrix product each by
    /// default); the same convolutions either way, summed in another order.
    #[serde(default)]
    pub conv: ConvStrategy,
    /// Variance hinge against collapse, added to the CASS loss; `None` in the paper.
    #[serde(default)]
    pub collapse_guard: Option<CollapseGuard>,
    /// Fields no setting reads, refused by `validate` (see [`Unknown`]).
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// How two views go through the CNN's BatchNorm (see [`PretrainConfig::view_batch_norm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewBatchNorm {
    /// One batch of both views: the statistics of `2B` images.
    #[default]
    Joint,
    /// Each view its own batch of `B`.
    Separate,
}

fn one_view() -> usize {
    1
}

/// A weights file to start from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InitWeights {
    pub path: PathBuf,
    /// Leave the file's classifier out (a head of another width); ours stays freshly initialised.
    #[serde(default)]
    pub ignore_head: bool,
}

impl PretrainConfig {
    /// Checks what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), CassError> {
        reject_unknown(&self.unknown)?;
        self.run.validate()?;
        if self.image_size == 0 {
            return Err(CassError::config("image_size", "must be positive"));
        }
        if self.vit.image_size != self.image_size {
            return Err(CassError::config(
                "vit.image_size",
                format!(
                    "is {} but image_size is {}; the ViT must see the input size",
                    self.vit.image_size, self.image_size
                ),
            ));
        }
        self.vit.validate().map_err(|m| CassError::config("vit", m))?;
        // The device holds one micro-batch's activations at a time, whatever `accumulate` is.
        crate::models::budget::resnet(&self.cnn, self.image_size, self.run.batch_size).check("cnn")?;
        crate::models::budget::vit(&self.vit, self.run.batch_size).check("vit")?;
        if self.cnn.num_classes != self.vit.num_classes {
            return Err(CassError::config(
                "vit.num_classes",
                format!(
                    "CASS compares head outputs of the same width: cnn has {}, vit {}",
                    self.cnn.num_classes, self.vit.num_classes
                ),
            ));
        }
        for (field, lr) in [("lr_cnn", self.lr_cnn), ("lr_vit", self.lr_vit)] {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(CassError::config(field, format!("must be a positive number, got {lr}")));
            }
        }
        if !(1..=2).contains(&self.views) {
            return Err(CassError::config(
                "views",
                format!("must be 1 or 2, got {}", self.views),
            ));
        }
        if let Some(g) = self.collapse_guard {
            if !(g.covariance.is_finite() && g.covariance >= 0.0) {
                return Err(CassError::config(
                    "collapse_guard.covariance",
                    format!("must be a non-negative number, got {}", g.covariance),
                ));
            }
            if !(g.weight.is_finite() && g.weight >= 0.0) {
                return Err(CassError::config(
                    "collapse_guard.weight",
                    format!("must be a non-negative number, got {}", g.weight),
                ));
            }
            if !(g.target.is_finite() && g.target > 0.0) {
                return Err(CassError::config(
                    "collapse_guard.target",
                    format!("must be a positive number, got {}", g.target),
                ));
            }
        }
        Ok(())
    }
}
