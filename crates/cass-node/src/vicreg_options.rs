//! The VICReg run config as it crosses the door (the fields of the TypeScript `VicregConfig`,
//! presets resolved), converted into the engine's [`VicregConfig`]; errors name the camelCase
//! field. The shapes shared with the other methods are in `shapes.rs` and `run_options.rs`.

use cass_core::CassError;
use cass_core::loss::vicreg::VicregWeights;
use cass_core::ssl::vicreg::VicregConfig;
use cass_core::train::adam::AdamConfig;
use napi_derive::napi;

use crate::run_options::RunOptions;
use crate::shapes::{AugmentOptions, Conv, Network, ResNetOptions, VitOptions, resnet, vit, whole};

/// `lambda`, `mu`, `nu`: the weights of the invariance, variance and covariance terms.
#[napi(object)]
pub struct VicregWeightsOptions {
    pub invariance: f64,
    pub variance: f64,
    pub covariance: f64,
}

/// AdamW's moments and its decoupled weight decay.
#[napi(object)]
pub struct AdamWOptions {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// A VICReg pre-training run of one backbone.
#[napi(object)]
pub struct VicregOptions {
    pub arch: Network,
    pub cnn: ResNetOptions,
    pub vit: VitOptions,
    /// The expander's layer widths.
    pub expander: Vec<u32>,
    pub image_size: u32,
    pub run: RunOptions,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub adam: AdamWOptions,
    pub weights: VicregWeightsOptions,
    pub augment: AugmentOptions,
    pub conv: Conv,
}

impl TryFrom<VicregOptions> for VicregConfig {
    type Error = CassError;
    fn try_from(o: VicregOptions) -> Result<Self, CassError> {
        let image_size = o.image_size as usize;
        Ok(Self {
            run: o.run.try_into()?,
            arch: o.arch.into(),
            // The backbone's own classifier is unused (the expander takes its features).
            cnn: resnet(o.cnn, 1, "cnn")?,
            vit: vit(o.vit, image_size, 1),
            expander: o.expander.iter().map(|&w| w as usize).collect(),
            image_size,
            lr: o.lr,
            min_lr: o.min_lr,
            warmup_epochs: whole(o.warmup_epochs, "warmupEpochs")?,
            adam: AdamConfig {
                beta1: o.adam.beta1,
                beta2: o.adam.beta2,
                eps: o.adam.eps,
                weight_decay: o.adam.weight_decay,
            },
            weights: VicregWeights {
                invariance: o.weights.invariance,
                variance: o.weights.variance,
                covariance: o.weights.covariance,
            },
            augment: o.augment.try_into()?,
            conv: o.conv.into(),
            unknown: Default::default(),
        })
    }
}
