//! What crosses the door from JavaScript to the engine: the run configs as typed objects
//! (`#[napi(object)]`, string unions, structured enums for the tagged unions), converted into the
//! engine's configs by `TryFrom` here and nowhere else. Their camelCase fields are the fields of
//! the TypeScript schemas (`ts/config.ts`), so a validated config passes through with its presets
//! resolved; every conversion error names the camelCase field.
//!
//! A new option takes three edits: the zod schema, a field here (and its line in the `TryFrom`),
//! and the engine config.

use std::path::PathBuf;

use cass_core::augment::AugmentConfig;
use cass_core::loss::classification::{ClassWeighting, ClassificationLoss};
use cass_core::models::conv::ConvStrategy;
use cass_core::models::{Arch, BlockKind, ResNetConfig, VitConfig};
use cass_core::ssl::cass_config::InitWeights;
use cass_core::ssl::objective::CollapseGuard;
use cass_core::train::adam::AdamConfig;
use cass_core::train::schedule::Schedule;
use cass_core::{BackendChoice, CassError, FinetuneConfig, Init, PretrainConfig};
use napi_derive::napi;

/// Residual block of a ResNet.
#[napi(string_enum = "lowercase")]
pub enum Block {
    /// Two 3x3 convolutions (ResNet-18/34).
    Basic,
    /// 1x1 -> 3x3 -> 1x1 with expansion 4 (ResNet-50).
    Bottleneck,
}

/// A ResNet's shape (its head width and input size come from the run config).
#[napi(object)]
pub struct ResNetOptions {
    pub block: Block,
    /// Blocks in each of the four stages.
    pub layers: Vec<u32>,
    /// Width of the stem and first stage.
    pub base_width: u32,
    /// Original ResNet v1: the stride on the first 1x1 of a downsampling bottleneck.
    #[napi(js_name = "strideIn1x1")]
    pub stride_in_1x1: bool,
    pub bn_eps: f64,
}

/// A ViT's shape (its input size and head width come from the run config).
#[napi(object)]
pub struct VitOptions {
    pub patch_size: u32,
    pub embed_dim: u32,
    pub depth: u32,
    pub num_heads: u32,
    pub mlp_ratio: f64,
}

#[napi(object)]
pub struct AdamOptions {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 is Adam.
    pub weight_decay: f64,
}

/// A learning-rate schedule, `kind` names which.
#[napi(discriminant = "kind", discriminant_case = "kebab-case")]
pub enum ScheduleOptions {
    /// The authors' per-iteration cosine wave (`tMax` iterations down, `tMax` up).
    CosineWave {
        t_max: f64,
        min_lr: f64,
    },
    /// Linear warm-up over `warmup` iterations, then one cosine decay over the run.
    Cosine {
        warmup: f64,
        min_lr: f64,
    },
    Constant,
}

/// Random augmentation on the device (probabilities in [0, 1]).
#[napi(object)]
pub struct AugmentOptions {
    pub enabled: bool,
    pub p_jitter_perspective: f64,
    pub p_perspective: f64,
    pub perspective_distortion: f64,
    pub p_jitter_rotate: f64,
    pub rotate_degrees: f64,
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub p_vflip: f64,
    pub p_hflip: f64,
    /// Probability of turning an image grey.
    pub p_grayscale: f64,
    /// Random resized crop's area fraction `[min, max]`; `[1, 1]` is off.
    pub crop_scale: Vec<f64>,
    /// Per-channel normalisation of inputs in [0, 1].
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// Which backend a job runs on.
#[napi(string_enum = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
    Wgpu,
    /// The first GPU backend built and working, else the CPU.
    Auto,
}

/// How the CNN's convolutions are computed (saved with the checkpoint).
#[napi(string_enum = "lowercase")]
pub enum Conv {
    Auto,
    Native,
    Batched,
}

/// Which of the two networks.
#[napi(string_enum = "lowercase")]
pub enum Network {
    Cnn,
    Vit,
}

/// VICReg's variance hinge (and covariance penalty) on each network's outputs.
#[napi(object)]
pub struct CollapseGuardOptions {
    pub weight: f64,
    pub target: f64,
    pub covariance: f64,
}

/// A CASS pre-training run (the fields of the TypeScript `PretrainConfig`, presets resolved).
#[napi(object)]
pub struct PretrainOptions {
    pub cnn: ResNetOptions,
    pub vit: VitOptions,
    /// Width of both heads, whose outputs CASS compares.
    pub head_dim: u32,
    pub image_size: u32,
    pub batch_size: u32,
    pub epochs: f64,
    pub max_steps: Option<f64>,
    pub lr_cnn: f64,
    pub lr_vit: f64,
    pub adam: AdamOptions,
    pub schedule: ScheduleOptions,
    pub augment: AugmentOptions,
    pub seed: f64,
    pub checkpoint_every: Option<f64>,
    pub device: Device,
    pub conv: Conv,
    /// Initial weights: timm-named safetensors files (references are resolved to files first).
    pub cnn_weights: Option<String>,
    pub vit_weights: Option<String>,
    /// Leave the weight files' classifiers out.
    pub ignore_head: bool,
    /// Augmented views per image: 1 or 2.
    pub views: u32,
    pub collapse_guard: Option<CollapseGuardOptions>,
    pub collapse_warning_spread: f64,
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
}

/// A non-negative integer that a JavaScript number holds exactly (below 2^53).
pub(crate) fn whole(v: f64, field: &str) -> Result<u64, CassError> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0 {
        Ok(v as u64)
    } else {
        Err(CassError::config(
            field,
            format!("must be a non-negative integer, got {v}"),
        ))
    }
}

/// A fixed-length array (JavaScript tuples cross as arrays).
pub(crate) fn fixed<const N: usize, T: Copy + Default, S: Copy>(
    v: &[S],
    field: &str,
    cast: fn(S) -> T,
) -> Result<[T; N], CassError> {
    if v.len() != N {
        return Err(CassError::config(
            field,
            format!("must have {N} entries, got {}", v.len()),
        ));
    }
    let mut out = [T::default(); N];
    for (o, x) in out.iter_mut().zip(v) {
        *o = cast(*x);
    }
    Ok(out)
}

pub(crate) fn resnet(o: ResNetOptions, num_classes: usize, field: &str) -> Result<ResNetConfig, CassError> {
    let layers = fixed::<4, usize, u32>(&o.layers, &format!("{field}.layers"), |l| l as usize)?;
    Ok(ResNetConfig {
        block: match o.block {
            Block::Basic => BlockKind::Basic,
            Block::Bottleneck => BlockKind::Bottleneck,
        },
        layers,
        base_width: o.base_width as usize,
        num_classes,
        in_channels: 3,
        stride_in_1x1: o.stride_in_1x1,
        bn_eps: o.bn_eps,
    })
}

pub(crate) fn vit(o: VitOptions, image_size: usize, num_classes: usize) -> VitConfig {
    VitConfig {
        image_size,
        patch_size: o.patch_size as usize,
        embed_dim: o.embed_dim as usize,
        depth: o.depth as usize,
        num_heads: o.num_heads as usize,
        mlp_ratio: o.mlp_ratio,
        num_classes,
        in_channels: 3,
    }
}

impl From<AdamOptions> for AdamConfig {
    fn from(o: AdamOptions) -> Self {
        Self {
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
        }
    }
}

fn schedule(o: ScheduleOptions) -> Result<Schedule, CassError> {
    Ok(match o {
        ScheduleOptions::CosineWave { t_max, min_lr } => Schedule::CosineWave {
            t_max: whole(t_max, "schedule.tMax")?,
            min_lr,
        },
        ScheduleOptions::Cosine { warmup, min_lr } => Schedule::Cosine {
            warmup: whole(warmup, "schedule.warmup")?,
            min_lr,
        },
        ScheduleOptions::Constant => Schedule::Constant,
    })
}

impl TryFrom<AugmentOptions> for AugmentConfig {
    type Error = CassError;
    fn try_from(o: AugmentOptions) -> Result<Self, CassError> {
        Ok(Self {
            enabled: o.enabled,
            p_jitter_perspective: o.p_jitter_perspective,
            p_perspective: o.p_perspective,
            perspective_distortion: o.perspective_distortion,
            p_jitter_rotate: o.p_jitter_rotate,
            rotate_degrees: o.rotate_degrees,
            brightness: o.brightness,
            contrast: o.contrast,
            saturation: o.saturation,
            p_vflip: o.p_vflip,
            p_hflip: o.p_hflip,
            p_grayscale: o.p_grayscale,
            crop_scale: fixed(&o.crop_scale, "augment.cropScale", |x| x)?,
            mean: fixed(&o.mean, "augment.mean", |x| x as f32)?,
            std: fixed(&o.std, "augment.std", |x| x as f32)?,
            // RGB unless a weights file says otherwise (Keras ResNets are BGR); set by the engine.
            ..AugmentConfig::default()
        })
    }
}

impl From<Device> for BackendChoice {
    fn from(d: Device) -> Self {
        match d {
            Device::Cpu => BackendChoice::Cpu,
            Device::Cuda => BackendChoice::Cuda,
            Device::Wgpu => BackendChoice::Wgpu,
            Device::Auto => BackendChoice::Auto,
        }
    }
}

impl From<Conv> for ConvStrategy {
    fn from(c: Conv) -> Self {
        match c {
            Conv::Auto => ConvStrategy::Auto,
            Conv::Native => ConvStrategy::Native,
            Conv::Batched => ConvStrategy::Batched,
        }
    }
}

impl From<Network> for Arch {
    fn from(n: Network) -> Self {
        match n {
            Network::Cnn => Arch::Cnn,
            Network::Vit => Arch::Vit,
        }
    }
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
            batch_size: o.batch_size as usize,
            epochs: whole(o.epochs, "epochs")?,
            max_steps: o.max_steps.map(|s| whole(s, "maxSteps")).transpose()?,
            lr_cnn: o.lr_cnn,
            lr_vit: o.lr_vit,
            adam: o.adam.into(),
            schedule: schedule(o.schedule)?,
            augment: o.augment.try_into()?,
            seed: whole(o.seed, "seed")?,
            checkpoint_every: o.checkpoint_every.map(|s| whole(s, "checkpointEvery")).transpose()?,
            backend: o.device.into(),
            cnn_weights: weights(o.cnn_weights, o.ignore_head),
            vit_weights: weights(o.vit_weights, o.ignore_head),
            views: o.views as usize,
            conv: o.conv.into(),
            collapse_guard: o.collapse_guard.map(|g| CollapseGuard {
                weight: g.weight,
                target: g.target,
                covariance: g.covariance,
            }),
            collapse_warning_spread: o.collapse_warning_spread,
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
