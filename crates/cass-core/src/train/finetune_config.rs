//! The config of a fine-tuning run, its labelled samples, and what it records and returns
//! (`state.json` beside the best weights, the outcome).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::data::ImageSet;
use crate::device::BackendChoice;
use crate::error::CassError;
use crate::loss::{ClassWeighting, ClassificationLoss};
use crate::metrics::Metrics;
use crate::models::conv::ConvStrategy;
use crate::models::{Arch, ResNetConfig, VitConfig};
use crate::train::adam::AdamConfig;
use crate::train::run::Status;
use crate::train::schedule::Schedule;

/// Where the fine-tuned network starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Random initialisation (the baseline).
    Random,
    /// The pre-trained weights in a pre-training checkpoint directory (CASS or DINO).
    Pretrained(PathBuf),
    /// A timm-named weights file of the network (e.g. ImageNet weights, the paper's start); its
    /// classifier is left out, and weights that declare their own ResNet variant and input
    /// preparation (the imported Keras ResNet-50) get both.
    Weights(PathBuf),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    pub arch: Arch,
    pub init: Init,
    /// Architectures for `Init::Random` (a pre-trained checkpoint brings its own).
    pub cnn: ResNetConfig,
    pub vit: VitConfig,
    pub num_classes: usize,
    pub image_size: usize,
    pub batch_size: usize,
    pub max_epochs: u64,
    pub lr: f64,
    #[serde(default)]
    pub adam: AdamConfig,
    pub schedule: Schedule,
    pub loss: ClassificationLoss,
    pub class_weighting: ClassWeighting,
    /// Epochs without a better validation loss before stopping.
    pub patience: u64,
    pub seed: u64,
    #[serde(default)]
    pub augment: AugmentConfig,
    #[serde(default)]
    pub backend: BackendChoice,
    /// How the CNN's convolutions are computed (see [`ConvStrategy`]).
    #[serde(default)]
    pub conv: ConvStrategy,
    /// The classes' names in label order, kept in the checkpoint so that a loaded model answers
    /// with names (empty: unnamed, answers carry indices only).
    #[serde(default)]
    pub class_names: Vec<String>,
}

/// Labelled samples: `indices[k]` into the image set has class `labels[k]`.
#[derive(Debug, Clone)]
pub struct Labeled {
    pub set: Arc<ImageSet>,
    pub indices: Vec<usize>,
    pub labels: Vec<i64>,
}

impl Labeled {
    pub(crate) fn check(&self, field: &str, num_classes: usize) -> Result<(), CassError> {
        if self.indices.len() != self.labels.len() {
            return Err(CassError::config(
                format!("{field}.labels"),
                format!("has {} entries for {} images", self.labels.len(), self.indices.len()),
            ));
        }
        if self.indices.is_empty() {
            return Err(CassError::config(format!("{field}.indices"), "no images given"));
        }
        self.set.check_indices(&self.indices, &format!("{field}.indices"))?;
        if let Some((k, l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l < 0 || **l as usize >= num_classes)
        {
            return Err(CassError::data(
                "unknown-label",
                format!("{field}.labels[{k}] = {l} is not a class in 0..{num_classes}"),
                self.set.source.as_deref(),
            ));
        }
        Ok(())
    }
}

/// One epoch of the fine-tuning history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochRecord {
    pub epoch: u64,
    pub train_loss: f64,
    pub val_loss: f64,
}

/// `state.json` of a fine-tuned checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneState {
    /// The file format's version ([`crate::checkpoint::STATE_VERSION`]; 1 when absent).
    #[serde(default = "crate::checkpoint::unversioned_state")]
    pub version: u32,
    pub kind: String,
    pub config: FinetuneConfig,
    /// The architecture actually trained (from the pre-training checkpoint when there was one).
    pub cnn: ResNetConfig,
    pub vit: VitConfig,
    pub best_epoch: u64,
    pub best_val_loss: f64,
    pub history: Vec<EpochRecord>,
}

pub const FINETUNE_KIND: &str = "cass-finetune";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinetuneOutcome {
    pub status: Status,
    pub best_epoch: u64,
    pub best_val_loss: f64,
    pub val_metrics: Metrics,
    pub history: Vec<EpochRecord>,
    pub checkpoint: PathBuf,
}
