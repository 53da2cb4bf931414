//! What a loaded model is, across the door: the engine's `ModelInfo` as a typed object.

use cass_core::Scoring;
use cass_core::augment::ChannelOrder;
use cass_core::checkpoint::CheckpointKind;
use cass_core::models::{Arch, BlockKind};
use napi_derive::napi;

use crate::shapes::{Block, ResNetOptions, VitOptions};

/// What a loaded model is and how it wants its input.
#[napi(object)]
pub struct ModelInfo {
    /// `cnn` or `vit`.
    pub arch: String,
    /// `finetune` (a classifier) or `pretrain` (a backbone: embeddings only).
    pub kind: String,
    /// The method that wrote the checkpoint (e.g. `cass-finetune`, `dino-pretrain`).
    pub method: String,
    /// Pre-training: steps done; fine-tuning: the epoch whose weights were kept.
    pub step: f64,
    /// Side of the square input the network takes.
    pub image_size: u32,
    /// Normalisation of inputs in [0, 1], per channel in `channelOrder`.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// `rgb`, or `bgr` (weights imported from Keras).
    pub channel_order: String,
    /// `softmax` (cross-entropy), `sigmoid` (the one-vs-rest focal losses) or `none` (no classifier).
    pub scoring: String,
    /// Classifier width (0 for a backbone).
    pub num_classes: u32,
    /// Class names in label order (empty when the training data had none).
    pub class_names: Vec<String>,
    /// Width of an embedding.
    pub feature_dim: u32,
    /// The network's shape: `cnn` for a ResNet, `vit` for a ViT.
    pub cnn: Option<ResNetOptions>,
    pub vit: Option<VitOptions>,
}

pub(crate) fn model_info(i: &cass_core::ModelInfo) -> ModelInfo {
    ModelInfo {
        arch: i.arch.name().into(),
        kind: match i.kind {
            CheckpointKind::Pretrain => "pretrain".into(),
            CheckpointKind::Finetune => "finetune".into(),
        },
        method: i.method.clone(),
        step: i.step as f64,
        image_size: i.image_size as u32,
        mean: i.mean.iter().map(|&v| v as f64).collect(),
        std: i.std.iter().map(|&v| v as f64).collect(),
        channel_order: match i.channel_order {
            ChannelOrder::Rgb => "rgb".into(),
            ChannelOrder::Bgr => "bgr".into(),
        },
        scoring: match i.scoring {
            Scoring::Softmax => "softmax".into(),
            Scoring::Sigmoid => "sigmoid".into(),
            Scoring::None => "none".into(),
        },
        num_classes: i.num_classes as u32,
        class_names: i.class_names.clone(),
        feature_dim: i.feature_dim as u32,
        cnn: (i.arch == Arch::Cnn).then(|| ResNetOptions {
            block: match i.cnn.block {
                BlockKind::Basic => Block::Basic,
                BlockKind::Bottleneck => Block::Bottleneck,
            },
            layers: i.cnn.layers.iter().map(|&l| l as u32).collect(),
            base_width: i.cnn.base_width as u32,
            stride_in_1x1: i.cnn.stride_in_1x1,
            bn_eps: i.cnn.bn_eps,
        }),
        vit: (i.arch == Arch::Vit).then_some(VitOptions {
            patch_size: i.vit.patch_size as u32,
            embed_dim: i.vit.embed_dim as u32,
            depth: i.vit.depth as u32,
            num_heads: i.vit.num_heads as u32,
            mlp_ratio: i.vit.mlp_ratio,
        }),
    }
}
