//! A trained network kept loaded for answers: restored once from a checkpoint, then asked many
//! times for class scores or embeddings of images, until it is dropped (which frees its weights
//! on the device). The binding keeps one on an engine thread and batches callers' images into it.

use std::path::Path;

use burn::prelude::*;

use crate::augment::{self, AugmentConfig, ChannelOrder};
use crate::checkpoint::CheckpointKind;
use crate::device::BackendChoice;
use crate::error::CassError;
use crate::explain::{self, Method};
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

/// Images explained per forward pass (see [`LoadedModel::explain`]).
const EXPLAIN_CHUNK: usize = 8;

/// Heat maps and what they explain, one entry per image.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// `[n, side, side]`, each map in [0, 1].
    pub maps: Vec<f32>,
    /// The class explained (a class-activation map) or predicted (a rollout); `None` without a
    /// classifier.
    pub classes: Vec<Option<usize>>,
    /// That class's score, as predictions report it.
    pub scores: Vec<Option<f32>>,
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
        let x = self.input(pixels);
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

    /// HWC bytes -> CHW floats in [0, 1], normalised as the training data's batches were.
    fn input(&self, pixels: &Pixels) -> Tensor<4> {
        let side = self.info.image_size;
        let plane = side * side;
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
        augment::apply(x, None, side, &self.augment)
    }

    /// Heat maps of where the network looked (see [`crate::explain`]), one per image at the
    /// input size, for `targets` (a class per image, or `None` for the predicted one).
    ///
    /// A backbone without a classifier has no class to explain: it refuses the class-activation
    /// maps (`no-classifier`, naming what works) and gives a ViT's attention rollout alone.
    pub fn explain(
        &self,
        pixels: &Pixels,
        method: Method,
        targets: &[Option<usize>],
    ) -> Result<Explanation, CassError> {
        self.check(pixels)?;
        let classifier = self.info.scoring != Scoring::None;
        if !classifier && matches!(method, Method::Cam { .. }) {
            let works = match self.info.arch {
                Arch::Vit => "attention-rollout works on it without a class",
                Arch::Cnn => "no explanation works on a CNN backbone without one",
            };
            return Err(CassError::data(
                "no-classifier",
                format!(
                    "{} needs a class to explain, and this {} backbone of a {} checkpoint has no classifier: {works}; fine-tune it first for class maps",
                    method.name(),
                    self.info.arch.name(),
                    self.info.method
                ),
                None,
            ));
        }
        if targets.len() != pixels.count {
            return Err(CassError::config(
                "targets",
                format!("one target per image: {} for {} images", targets.len(), pixels.count),
            ));
        }
        let side = self.info.image_size;
        let plane = side * side;
        let mut out = Explanation {
            maps: Vec::with_capacity(pixels.count * plane),
            classes: Vec::with_capacity(pixels.count),
            scores: Vec::with_capacity(pixels.count),
        };
        // A few images at a time: a rollout holds every block's attention weights at once.
        for (i, chunk) in pixels.bytes.chunks(EXPLAIN_CHUNK * 3 * plane).enumerate() {
            let count = chunk.len() / (3 * plane);
            let x = self.input(&Pixels { bytes: chunk, count });
            let at = i * EXPLAIN_CHUNK;
            let e = explain::explain(&self.net, x, method, &targets[at..at + count], classifier)?;
            out.maps.extend_from_slice(&e.maps);
            let classes = self.info.num_classes;
            for (k, target) in e.targets.iter().enumerate() {
                if !classifier {
                    out.classes.push(None);
                    out.scores.push(None);
                    continue;
                }
                let row = &e.logits[k * classes..(k + 1) * classes];
                let c = target.unwrap_or_else(|| (0..classes).fold(0, |b, c| if row[c] > row[b] { c } else { b }));
                out.classes.push(Some(c));
                out.scores.push(Some(self.score(row, c)));
            }
        }
        Ok(out)
    }

    /// Class `c`'s score from one image's logits, as [`Self::run`] would report it.
    fn score(&self, row: &[f32], c: usize) -> f32 {
        match self.info.scoring {
            Scoring::Softmax => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
                (row[c] - max).exp() / sum
            }
            _ => 1.0 / (1.0 + (-row[c]).exp()),
        }
    }

    /// Width of one row of [`Self::run`]'s answer.
    pub fn row_width(&self, ask: Ask) -> usize {
        match ask {
            Ask::Scores => self.info.num_classes,
            Ask::Embed => self.info.feature_dim,
        }
    }
}
