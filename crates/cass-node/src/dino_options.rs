//! The DINO run config as it crosses the door (the fields of the TypeScript `DinoConfig`,
//! presets resolved), converted into the engine's [`DinoConfig`] by `TryFrom`; errors name the
//! camelCase field. The shapes shared with CASS (networks, augmentation, device) are in
//! `shapes.rs`.

use cass_core::models::dino_head::DinoHeadConfig;
use cass_core::train::adam::AdamConfig;
use cass_core::{CassError, DinoConfig};
use napi_derive::napi;

use crate::run_options::RunOptions;
use crate::shapes::{AugmentOptions, Conv, Network, ResNetOptions, VitOptions, fixed, resnet, vit, whole};

/// AdamW's moments; its weight decay follows `weightDecay` -> `weightDecayEnd`.
#[napi(object)]
pub struct DinoAdamOptions {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

/// A DINO pre-training run of one backbone.
#[napi(object)]
pub struct DinoOptions {
    /// The backbone this run trains.
    pub arch: Network,
    pub cnn: ResNetOptions,
    pub vit: VitOptions,
    /// Projection head: outputs `K`, hidden width, bottleneck width.
    pub out_dim: u32,
    pub hidden_dim: u32,
    pub bottleneck_dim: u32,
    pub image_size: u32,
    pub run: RunOptions,
    /// Peak learning rate per 256 images (the run peaks at `baseLr * batchSize * accumulate / 256`).
    pub base_lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub adam: DinoAdamOptions,
    pub weight_decay: f64,
    pub weight_decay_end: f64,
    pub momentum_teacher: f64,
    pub teacher_temp: f64,
    pub warmup_teacher_temp: f64,
    pub warmup_teacher_temp_epochs: f64,
    pub student_temp: f64,
    pub center_momentum: f64,
    pub clip_grad: Option<f64>,
    pub freeze_last_layer_epochs: f64,
    pub global_crop_scale: Vec<f64>,
    pub local_crops: u32,
    pub local_crop_scale: Vec<f64>,
    pub local_crop_size: u32,
    pub augment: AugmentOptions,
    pub conv: Conv,
}

impl TryFrom<DinoOptions> for DinoConfig {
    type Error = CassError;
    fn try_from(o: DinoOptions) -> Result<Self, CassError> {
        let image_size = o.image_size as usize;
        // The backbone's own classifier is unused by DINO (its head is the projection head)
        // and replaced at fine-tuning: one output keeps it small.
        Ok(Self {
            arch: o.arch.into(),
            cnn: resnet(o.cnn, 1, "cnn")?,
            vit: vit(o.vit, image_size, 1),
            head: DinoHeadConfig {
                out_dim: o.out_dim as usize,
                hidden_dim: o.hidden_dim as usize,
                bottleneck_dim: o.bottleneck_dim as usize,
            },
            image_size,
            run: o.run.try_into()?,
            base_lr: o.base_lr,
            min_lr: o.min_lr,
            warmup_epochs: whole(o.warmup_epochs, "warmupEpochs")?,
            adam: AdamConfig {
                beta1: o.adam.beta1,
                beta2: o.adam.beta2,
                eps: o.adam.eps,
                weight_decay: 0.0,
            },
            weight_decay: o.weight_decay,
            weight_decay_end: o.weight_decay_end,
            momentum_teacher: o.momentum_teacher,
            teacher_temp: o.teacher_temp,
            warmup_teacher_temp: o.warmup_teacher_temp,
            warmup_teacher_temp_epochs: whole(o.warmup_teacher_temp_epochs, "warmupTeacherTempEpochs")?,
            student_temp: o.student_temp,
            center_momentum: o.center_momentum,
            clip_grad: o.clip_grad,
            freeze_last_layer_epochs: whole(o.freeze_last_layer_epochs, "freezeLastLayerEpochs")?,
            global_crop_scale: fixed(&o.global_crop_scale, "globalCropScale", |x| x)?,
            local_crops: o.local_crops as usize,
            local_crop_scale: fixed(&o.local_crop_scale, "localCropScale", |x| x)?,
            local_crop_size: o.local_crop_size as usize,
            augment: o.augment.try_into()?,
            conv: o.conv.into(),
            unknown: Default::default(),
        })
    }
}
