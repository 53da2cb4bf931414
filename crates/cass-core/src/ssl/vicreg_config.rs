//! The config of a VICReg run (saved beside every checkpoint) and its checks.

use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::error::CassError;
use crate::loss::vicreg::VicregWeights;
use crate::models::conv::ConvStrategy;
use crate::models::{Arch, ResNetConfig, VitConfig};
use crate::train::adam::AdamConfig;
use crate::train::run_config::{RunConfig, Unknown, reject_unknown};

/// Everything that defines a VICReg run of one backbone. Saved beside every checkpoint.
///
/// The optimizer is AdamW, not the paper's LARS: LARS's layer-wise trust ratio is there for the
/// paper's batches of 2,048 images, far from the 16-256 this tool runs with, and AdamW is what
/// CASS and DINO use here, so an experiment compares the objectives rather than the optimizers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VicregConfig {
    /// Batch, length, seed, checkpoints, device, accumulation and the collapse warning (on the
    /// expander's output spread).
    #[serde(flatten)]
    pub run: RunConfig,
    /// The backbone this run trains (one per run).
    pub arch: Arch,
    /// The backbones' shapes; only `arch`'s is built. Its own classifier is unused (the expander
    /// takes its features) and replaced at fine-tuning.
    pub cnn: ResNetConfig,
    pub vit: VitConfig,
    /// The expander's layer widths (8192-8192-8192 in the paper).
    pub expander: Vec<usize>,
    /// Side of the network input (the views are cropped and resized to it).
    pub image_size: usize,
    /// Peak learning rate, after `warmup_epochs` of linear warm-up; a cosine to `min_lr` follows.
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: u64,
    /// AdamW's betas and epsilon and its decoupled weight decay (not on biases and norm scales).
    #[serde(default)]
    pub adam: AdamConfig,
    /// `lambda`, `mu`, `nu`: 25 / 25 / 1 in the paper.
    #[serde(default)]
    pub weights: VicregWeights,
    /// The augmentation of each of the two views.
    #[serde(default)]
    pub augment: AugmentConfig,
    #[serde(default)]
    pub conv: ConvStrategy,
    /// Fields no setting reads, refused by `validate` (see [`Unknown`]).
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// The widest expander layer.
const MAX_EXPANDER_WIDTH: usize = 16_384;

/// The most weights the expander may hold in all (the paper's, from ResNet-50's 2,048 features:
/// 151 M): `2^28`, 1 GiB of f32, before its optimizer's moments.
const MAX_EXPANDER_WEIGHTS: u128 = 1 << 28;

impl VicregConfig {
    /// Checks what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), CassError> {
        reject_unknown(&self.unknown)?;
        self.run.validate()?;
        if self.image_size == 0 {
            return Err(CassError::config("image_size", "must be positive"));
        }
        if self.arch == Arch::Vit {
            if self.vit.image_size != self.image_size {
                return Err(CassError::config(
                    "vit.image_size",
                    format!("is {} but image_size is {}", self.vit.image_size, self.image_size),
                ));
            }
            self.vit.validate().map_err(|m| CassError::config("vit", m))?;
        }
        if self.expander.is_empty() || self.expander.len() > 8 {
            return Err(CassError::config("expander", "must list 1 to 8 layer widths"));
        }
        if let Some(w) = self.expander.iter().find(|&&w| w == 0 || w > MAX_EXPANDER_WIDTH) {
            return Err(CassError::config(
                "expander",
                format!("widths must lie in 1..={MAX_EXPANDER_WIDTH}, got {w}"),
            ));
        }
        let features = match self.arch {
            Arch::Cnn => self.cnn.feature_dim(),
            Arch::Vit => self.vit.embed_dim,
        };
        let weights: u128 = std::iter::once(features)
            .chain(self.expander.iter().copied())
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[0] as u128 * w[1] as u128)
            .sum();
        if weights > MAX_EXPANDER_WEIGHTS {
            return Err(CassError::config(
                "expander",
                format!("would hold {weights} weights, more than {MAX_EXPANDER_WEIGHTS}: make it narrower"),
            ));
        }
        crate::models::budget::check_network(self.arch, &self.cnn, &self.vit, self.image_size, self.run.batch_size)?;
        for (field, v) in [("lr", self.lr), ("weights.invariance", self.weights.invariance)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(CassError::config(field, format!("must be a positive number, got {v}")));
            }
        }
        for (field, v) in [
            ("min_lr", self.min_lr),
            ("adam.weight_decay", self.adam.weight_decay),
            ("weights.variance", self.weights.variance),
            ("weights.covariance", self.weights.covariance),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(CassError::config(
                    field,
                    format!("must be a non-negative number, got {v}"),
                ));
            }
        }
        Ok(())
    }
}
