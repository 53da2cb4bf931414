//! The shapes every run config shares as they cross from JavaScript (networks, optimizer,
//! schedule, augmentation, device) and their conversions into the engine's types; errors name
//! the camelCase field. The run configs themselves are in `options.rs` and `dino_options.rs`.

use cass_core::augment::AugmentConfig;
use cass_core::models::conv::ConvStrategy;
use cass_core::models::{Arch, BlockKind, ResNetConfig, VitConfig};
use cass_core::train::adam::AdamConfig;
use cass_core::train::schedule::Schedule;
use cass_core::{BackendChoice, CassError};
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

pub(crate) fn schedule(o: ScheduleOptions) -> Result<Schedule, CassError> {
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
