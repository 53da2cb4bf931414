//! What crosses the door from JavaScript to the engine: the run configs as typed objects
//! (`#[napi(object)]`, string unions, structured enums for the tagged unions), converted into the
//! engine's configs by `TryFrom` here and nowhere else. Their camelCase fields are the fields of
//! the TypeScript schemas (`ts/config.ts`), so a validated config passes through with its presets
//! resolved; every conversion error names the camelCase field.
//!
//! A new option takes three edits: the zod schema, a field here or in `shapes.rs` (and its line
//! in the `TryFrom`), and the engine config.

use std::path::PathBuf;

use cass_core::loss::classification::{ClassWeighting, ClassificationLoss};
use cass_core::ssl::cass_config::{InitWeights, ViewBatchNorm};
use cass_core::ssl::objective::CollapseGuard;
use cass_core::{CassError, FinetuneConfig, Init, PretrainConfig};
use napi_derive::napi;

use crate::run_options::RunOptions;
use crate::shapes::{
    AdamOptions, AugmentOptions, Conv, Device, Network, ResNetOptions, ScheduleOptions, VitOptions, resnet, schedule,
    vit, whole,
};
/// VICReg's variance hinge (and covariance penalty) on each network's outputs.
#[napi(object)]
pub struct CollapseGuardOptions {
    pub weight: f64,
    pub target: f64,
    pub covariance: f64,
}

/// How two views go through the CNN's BatchNorm.
#[napi(string_enum = "lowercase")]
pub enum ViewBatchNormOptions {
    Joint,
    Separate,
}

/// A CASS pre-training run (the fields of the TypeScript `PretrainConfig`, presets resolved).
#[napi(object)]
pub struct PretrainOptions {
    pub cnn: ResNetOptions,
    pub vit: VitOptions,
    /// Width of both heads, whose outputs CASS compares.
    pub head_dim: u32,
    pub image_size: u32,
    pub run: RunOptions,
    pub lr_cnn: f64,
    pub lr_vit: f64,
    pub adam: AdamOptions,
    pub schedule: ScheduleOptions,
    pub augment: AugmentOptions,
    pub conv: Conv,
    /// Initial weights: timm-named safetensors files (references are resolved to files first).
    pub cnn_weights: Option<String>,
    pub vit_weights: Option<String>,
    /// Leave the weight files' classifiers out.
    pub ignore_head: bool,
    /// Augmented views per image: 1 or 2.
    pub views: u32,
    /// With two views: BatchNorm over both at once (`joint`) or over each (`separate`).
    pub view_batch_norm: ViewBatchNormOptions,
    pub collapse_guard: Option<CollapseGuardOptions>,
}

/// The classification loss of fine-tuning, `kind` names which.
#[napi(discriminant = "kind", discriminant_case = "kebab-case")]
pub enum LossOptions {
    /// The authors' sigmoid focal loss: alpha scales both terms.
    Focal {
        alpha: f64,
        gamma: f64,
    },
    /// RetinaNet's alpha-balanced focal loss.
    FocalAlphaBalanced {
        alpha: f64,
        gamma: f64,
    },
    CrossEntropy,
}

/// How per-class loss weights follow the class counts.
#[napi(string_enum = "kebab-case")]
pub enum ClassWeightingOptions {
    MinMaxCounts,
    InverseFrequency,
    None,
}

/// A fine-tuning run of one network (the fields of the TypeScript `FinetuneConfig`).
#[napi(object)]
pub struct FinetuneOptions {
    pub arch: Network,
    /// A pre-training checkpoint (or its output folder) to start from; random weights without.
    pub pretrained: Option<String>,
    /// Or a timm-named weights file of the network (e.g. ImageNet weights).
    pub weights: Option<String>,
    /// Architectures for random initialisation (a checkpoint brings its own).
    pub cnn: ResNetOptions,
    pub vit: VitOptions,
    pub num_classes: u32,
    pub image_size: u32,
    pub batch_size: u32,
    pub max_epochs: f64,
    pub lr: f64,
    pub adam: AdamOptions,
    pub schedule: ScheduleOptions,
    pub loss: LossOptions,
    pub class_weighting: ClassWeightingOptions,
    pub patience: f64,
    pub seed: f64,
    pub augment: AugmentOptions,
    pub device: Device,
    pub conv: Conv,
    /// The classes' names in label order, kept in the checkpoint for predictions (one per
    /// class, or none).
    pub class_names: Option<Vec<String>>,
}
fn weights(path: Option<String>, ignore_head: bool) -> Option<InitWeights> {
    path.map(|p| InitWeights {
        path: PathBuf::from(p),
        ignore_head,
    })
}

impl TryFrom<PretrainOptions> for PretrainConfig {
    type Error = CassError;
    fn try_from(o: PretrainOptions) -> Result<Self, CassError> {
        let (image_size, head) = (o.image_size as usize, o.head_dim as usize);
        Ok(Self {
            cnn: resnet(o.cnn, head, "cnn")?,
            vit: vit(o.vit, image_size, head),
            image_size,
            run: o.run.try_into()?,
            lr_cnn: o.lr_cnn,
            lr_vit: o.lr_vit,
            adam: o.adam.into(),
            schedule: schedule(o.schedule)?,
            augment: o.augment.try_into()?,
            cnn_weights: weights(o.cnn_weights, o.ignore_head),
            vit_weights: weights(o.vit_weights, o.ignore_head),
            views: o.views as usize,
            view_batch_norm: match o.view_batch_norm {
                ViewBatchNormOptions::Joint => ViewBatchNorm::Joint,
                ViewBatchNormOptions::Separate => ViewBatchNorm::Separate,
            },
            conv: o.conv.into(),
            collapse_guard: o.collapse_guard.map(|g| CollapseGuard {
                weight: g.weight,
                target: g.target,
                covariance: g.covariance,
            }),
            unknown: Default::default(),
        })
    }
}

impl TryFrom<FinetuneOptions> for FinetuneConfig {
    type Error = CassError;
    fn try_from(o: FinetuneOptions) -> Result<Self, CassError> {
        let (image_size, classes) = (o.image_size as usize, o.num_classes as usize);
        Ok(Self {
            arch: o.arch.into(),
            init: match (o.pretrained, o.weights) {
                (None, None) => Init::Random,
                (Some(dir), None) => Init::Pretrained(PathBuf::from(dir)),
                (None, Some(file)) => Init::Weights(PathBuf::from(file)),
                (Some(_), Some(_)) => {
                    return Err(CassError::config(
                        "weights",
                        "start from a pre-training checkpoint or from a weights file, not both",
                    ));
                }
            },
            cnn: resnet(o.cnn, classes, "cnn")?,
            vit: vit(o.vit, image_size, classes),
            num_classes: classes,
            image_size,
            batch_size: o.batch_size as usize,
            max_epochs: whole(o.max_epochs, "maxEpochs")?,
            lr: o.lr,
            adam: o.adam.into(),
            schedule: schedule(o.schedule)?,
            loss: match o.loss {
                LossOptions::Focal { alpha, gamma } => ClassificationLoss::Focal { alpha, gamma },
                LossOptions::FocalAlphaBalanced { alpha, gamma } => {
                    ClassificationLoss::FocalAlphaBalanced { alpha, gamma }
                }
                LossOptions::CrossEntropy => ClassificationLoss::CrossEntropy,
            },
            class_weighting: match o.class_weighting {
                ClassWeightingOptions::MinMaxCounts => ClassWeighting::MinMaxCounts,
                ClassWeightingOptions::InverseFrequency => ClassWeighting::InverseFrequency,
                ClassWeightingOptions::None => ClassWeighting::None,
            },
            patience: whole(o.patience, "patience")?,
            seed: whole(o.seed, "seed")?,
            augment: o.augment.try_into()?,
            backend: o.device.into(),
            conv: o.conv.into(),
            class_names: o.class_names.unwrap_or_default(),
        })
    }
}

/// The engine names config fields in snake_case (`collapse_guard.weight`); the door speaks the
/// API's camelCase (`collapseGuard.weight`). The crate cannot link a test harness (see its
/// Cargo.toml): these conversions are covered by `__test__/engine.spec.ts` ("the typed door").
pub fn camel_field(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}
