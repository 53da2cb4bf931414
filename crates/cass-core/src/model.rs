//! A trained network kept loaded for answers: restored once from a checkpoint, then asked many
//! times for class scores or embeddings of images, until it is dropped (which frees its weights
//! on the device). The binding keeps one on an engine thread and batches callers' images into it.

use std::path::Path;

use burn::prelude::*;

use crate::augment::{self, AugmentConfig, ChannelOrder};
use crate::checkpoint::CheckpointKind;
use crate::device::BackendChoice;
use crate::error::CassError;
use crate::inference::{Restored, restore};
use crate::models::{Arch, Network, ResNetConfig, VitConfig};

/// How a classifier's logits become the scores it answers with: as its training loss read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// Cross-entropy: one distribution over the classes (softmax).
    Softmax,
    /// The focal losses are one-vs-rest: each class its own probability (sigmoid).
    Sigmoid,
    /// A pre-training backbone has no classifier: it embeds only.
    None,
}

/// What a loaded model is and how it wants its input.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub arch: Arch,
    /// `pretrain` (a backbone of a self-supervised run) or `finetune` (a classifier).
    pub kind: CheckpointKind,
    /// The method that wrote the checkpoint (`state.json`'s kind, e.g. `cass-finetune`).
    pub method: String,
    /// Pre-training: steps done; fine-tuning: the epoch whose weights were kept.
    pub step: u64,
    /// Side of the square input the network was trained at.
    pub image_size: usize,
    /// Normalisation of inputs in [0, 1], per channel in `channel_order`.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub channel_order: ChannelOrder,
    pub scoring: Scoring,
    /// Classifier width (0 for a pre-training backbone).
    pub num_classes: usize,
    pub class_names: Vec<String>,
    /// Width of `embed`'s rows.
    pub feature_dim: usize,
    /// The architecture of the restored network (the other one is unused).
    pub cnn: ResNetConfig,
    pub vit: VitConfig,
}

/// One restored network on its device, evaluation mode.
pub struct LoadedModel {
    net: Network,
    device: Device,
    augment: AugmentConfig,
    info: ModelInfo,
}

/// What a call asks of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Class scores `[n, num_classes]` (see [`Scoring`]).
    Scores,
    /// Pooled embeddings `[n, feature_dim]`.
    Embed,
}

/// Images as the model takes them: `count` RGB images of `image_size` squared, row-major,
/// 8 bits per channel (the TypeScript layer decodes and resizes everything to this first, with
/// the pipeline the training data went through).
pub struct Pixels<'a> {
    pub bytes: &'a [u8],
    pub count: usize,
}

impl LoadedModel {
    /// Restores `path` (a fine-tuning output, or one network of a pre-training output: `arch`
    /// picks it) on `backend`.
    pub fn load(path: &Path, arch: Option<Arch>, backend: BackendChoice) -> Result<Self, CassError> {
        let Restored {
            net,
            device,
            image_size,
            augment,
            num_classes,
            softmax_scores,
            cnn,
            vit,
            class_names,
            checkpoint: ck,
        } = restore(path, arch, backend)?;
        let (scoring, num_classes) = match ck.kind {
            CheckpointKind::Finetune if softmax_scores => (Scoring::Softmax, num_classes),
            CheckpointKind::Finetune => (Scoring::Sigmoid, num_classes),
            CheckpointKind::Pretrain => (Scoring::None, 0),
        };
        let arch = net.arch();
        let feature_dim = match arch {
            Arch::Cnn => cnn.feature_dim(),
            Arch::Vit => vit.embed_dim,
        };
        let info = ModelInfo {
            arch,
            kind: ck.kind,
            method: ck.method,
            step: ck.step.or(ck.best_epoch).unwrap_or(0),
            image_size,
            mean: augment.mean,
            std: augment.std,
            channel_order: augment.channel_order,
            scoring,
            num_classes,
            class_names,
            feature_dim,
            cnn,
            vit,
        };
        // Evaluation mode once: no autodiff graph, BatchNorm on its running statistics.
        Ok(Self {
            net: net.valid(),
            device,
            augment,
            info,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Checks that `pixels` are what [`Pixels`] says before anything is allocated.
    pub fn check(&self, pixels: &Pixels) -> Result<(), CassError> {
        let side = self.info.image_size;
        let want = pixels
            .count
            .checked_mul(side * side * 3)
            .ok_or_else(|| CassError::config("images", "too many images"))?;
        crate::models::budget::check_network(self.info.arch, &self.info.cnn, &self.info.vit, side, pixels.count)
            .map_err(|e| CassError::config("images", format!("{} images at once: {e}", pixels.count)))?;
        if pixels.count == 0 || pixels.bytes.len() != want {
            return Err(CassError::config(
                "images",
                format!(
                    "expected {} x {side} x {side} x 3 = {want} bytes, got {}",
                    pixels.count,
                    pixels.bytes.len()
                ),
            ));
        }
        Ok(())
    }

    /// Scores or embeddings of `pixels`, row-major, one row per image, computed as one batch.
    pub fn run(&self, ask: Ask, pixels: &Pixels) -> Result<Vec<f32>, CassError> {
        self.check(pixels)?;
        if ask == Ask::Scores && self.info.scoring == Scoring::None {
            return Err(CassError::data(
                "no-classifier",
                format!(
                    "this is the {} backbone of a {} checkpoint: it has no classifier to predict with; use embed, or fine-tune it first",
                    self.info.arch.name(),
                    self.info.method
                ),
                None,
            ));
        }
        let side = self.info.image_size;
        let plane = side * side;
        // HWC bytes -> CHW floats in [0, 1], as the training data's batches are assembled.
        let mut host = vec![0f32; pixels.bytes.len()];
        for (img, out) in pixels
            .bytes
            .chunks_exact(3 * plane)
            .zip(host.chunks_exact_mut(3 * plane))
        {
            for p in 0..plane {
                for c in 0..3 {
                    out[c * plane + p] = img[p * 3 + c] as f32 * (1.0 / 255.0);
                }
            }
        }
        let x = Tensor::<4>::from_data(TensorData::new(host, [pixels.count, 3, side, side]), &self.device);
        let x = augment::apply(x, None, side, &self.augment);
        let out = match ask {
            Ask::Embed => self.net.forward_features(x),
            Ask::Scores => match self.info.scoring {
                Scoring::Softmax => burn::tensor::activation::softmax(self.net.forward(x), 1),
                _ => burn::tensor::activation::sigmoid(self.net.forward(x)),
            },
        };
        Ok(out
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 outputs"))
    }

    /// Width of one row of [`Self::run`]'s answer.
    pub fn row_width(&self, ask: Ask) -> usize {
        match ask {
            Ask::Scores => self.info.num_classes,
            Ask::Embed => self.info.feature_dim,
        }
    }
}
