//! What crosses the door from the engine to JavaScript: progress events, outcomes, metrics and
//! embeddings as typed objects (the generated `index.d.ts` describes each), converted from the
//! engine's types here and nowhere else.

use cass_core::Event;
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

/// A value per network, where the network has one.
#[napi(object)]
#[derive(Clone, Copy)]
pub struct NetworkValues {
    pub cnn: Option<f64>,
    pub vit: Option<f64>,
}

/// A progress event of a running job, `type` names which.
#[napi(discriminant = "type", discriminant_case = "lowercase")]
pub enum BindingEvent {
    /// The backend the job runs on (`cpu`, `cuda`, `wgpu`), before the first step, and why.
    Device { backend: String, reason: String },
    /// One optimisation step finished.
    Step {
        step: f64,
        total_steps: f64,
        epoch: f64,
        loss: f64,
        /// Named parts of the loss and diagnostics, e.g. `["cass", 1.2]`, `["cnn_spread", 0.9]`.
        parts: Vec<(String, f64)>,
        /// Output spread of each network a pre-training trains (none for fine-tuning).
        spread: NetworkValues,
        lr: f64,
        /// Mean images per second since the job (or resume) started.
        images_per_sec: f64,
        /// Wall time of this step, data wait included.
        step_sec: f64,
        eta_sec: f64,
    },
    /// An epoch finished (fine-tuning: with its validation loss, and whether it is the best).
    Epoch {
        epoch: f64,
        mean_loss: f64,
        val_loss: Option<f64>,
        best: bool,
    },
    /// A checkpoint was written.
    Checkpoint { path: String, step: f64 },
    /// Something to act on; the run goes on (e.g. `collapse`).
    Warning { code: String, message: String, step: f64 },
}

impl From<&Event> for BindingEvent {
    fn from(e: &Event) -> Self {
        match e.clone() {
            Event::Device { backend, reason } => Self::Device { backend, reason },
            Event::Step {
                step,
                total_steps,
                epoch,
                loss,
                parts,
                spread,
                lr,
                images_per_sec,
                step_sec,
                eta_sec,
            } => Self::Step {
                step: step as f64,
                total_steps: total_steps as f64,
                epoch: epoch as f64,
                loss,
                parts,
                spread: NetworkValues {
                    cnn: spread.cnn,
                    vit: spread.vit,
                },
                lr,
                images_per_sec,
                step_sec,
                eta_sec,
            },
            Event::Epoch {
                epoch,
                mean_loss,
                val_loss,
                best,
            } => Self::Epoch {
                epoch: epoch as f64,
                mean_loss,
                val_loss,
                best,
            },
            Event::Checkpoint { path, step } => Self::Checkpoint {
                path,
                step: step as f64,
            },
            Event::Warning { code, message, step } => Self::Warning {
                code,
                message,
                step: step as f64,
            },
        }
    }
}

/// The backend a device choice resolves to, and why (`probeDevice`).
#[napi(object)]
pub struct DeviceChoice {
    /// `cpu`, `cuda` or `wgpu`.
    pub backend: String,
    pub reason: String,
}

/// How a pre-training ended.
#[napi(object)]
pub struct PretrainOutcome {
    /// `completed` or `cancelled` (a cancelled run leaves a resumable checkpoint).
    pub status: String,
    pub steps: f64,
    pub total_steps: f64,
    /// The checkpoint folder (`<outDir>/checkpoint`).
    pub checkpoint: String,
    /// Loss of every step of the run (those before a resume included).
    pub losses: Vec<f64>,
    pub epoch_mean_losses: Vec<f64>,
}

impl From<cass_core::PretrainOutcome> for PretrainOutcome {
    fn from(out: cass_core::PretrainOutcome) -> Self {
        Self {
            status: status_name(out.status),
            steps: out.steps as f64,
            total_steps: out.total_steps as f64,
            checkpoint: out.checkpoint.display().to_string(),
            losses: out.losses,
            epoch_mean_losses: out.epoch_mean_losses,
        }
    }
}

pub(crate) fn status_name(s: cass_core::Status) -> String {
    match s {
        cass_core::Status::Completed => "completed".into(),
        cass_core::Status::Cancelled => "cancelled".into(),
    }
}

/// Precision, recall and F1 of one class.
#[napi(object)]
pub struct PerClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u32,
}

/// Every metric the CASS spec lists.
#[napi(object)]
pub struct Metrics {
    pub num_samples: u32,
    pub accuracy: f64,
    /// Mean per-class recall.
    pub balanced_accuracy: f64,
    pub macro_f1: f64,
    /// The authors' metric: micro-F1 over (sample, class) pairs with sigmoid(logit) > 0.5.
    pub micro_f1_sigmoid05: f64,
    /// Absent when no class has both positives and negatives.
    pub macro_auroc: Option<f64>,
    /// `null` for a class without both positives and negatives.
    pub auroc_per_class: Vec<Option<f64>>,
    pub per_class: Vec<PerClassMetrics>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u32>>,
}

impl From<cass_core::metrics::Metrics> for Metrics {
    fn from(m: cass_core::metrics::Metrics) -> Self {
        Self {
            num_samples: m.num_samples as u32,
            accuracy: m.accuracy,
            balanced_accuracy: m.balanced_accuracy,
            macro_f1: m.macro_f1,
            micro_f1_sigmoid05: m.micro_f1_sigmoid05,
            macro_auroc: m.macro_auroc,
            auroc_per_class: m.auroc_per_class,
            per_class: m
                .per_class
                .into_iter()
                .map(|c| PerClassMetrics {
                    precision: c.precision,
                    recall: c.recall,
                    f1: c.f1,
                    support: c.support as u32,
                })
                .collect(),
            confusion: m
                .confusion
                .into_iter()
                .map(|row| row.into_iter().map(|v| v as u32).collect())
                .collect(),
        }
    }
}

/// One epoch of a fine-tuning's history.
#[napi(object)]
pub struct EpochRecord {
    pub epoch: u32,
    pub train_loss: f64,
    pub val_loss: f64,
}

/// How a fine-tuning ended.
#[napi(object)]
pub struct FinetuneOutcome {
    /// `completed` or `cancelled`.
    pub status: String,
    pub best_epoch: u32,
    pub best_val_loss: f64,
    /// Metrics of the best-validation weights on the validation samples.
    pub val_metrics: Metrics,
    pub history: Vec<EpochRecord>,
    /// The best checkpoint's folder (`<outDir>/best`).
    pub checkpoint: String,
}

/// Pooled embeddings of images.
#[napi(object)]
pub struct Embeddings {
    pub dim: u32,
    pub count: u32,
    /// Row-major `[count, dim]`.
    pub features: Float32Array,
}
