//! What a running job tells its caller (progress) and what the caller can tell it (cancel).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// A value per network, where a network has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct NetworkSpread {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnn: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vit: Option<f64>,
}

impl NetworkSpread {
    /// `value` for `arch` alone (a method that trains one backbone).
    pub fn of(arch: crate::models::Arch, value: f64) -> Self {
        match arch {
            crate::models::Arch::Cnn => Self {
                cnn: Some(value),
                vit: None,
            },
            crate::models::Arch::Vit => Self {
                cnn: None,
                vit: Some(value),
            },
        }
    }
}

/// A progress event. Serialised as JSON with a `type` tag for the binding.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// The backend the job runs on, once, before the first step; for `auto`, why it was chosen.
    #[serde(rename_all = "camelCase")]
    Device { backend: String, reason: String },
    /// One optimisation step finished.
    #[serde(rename_all = "camelCase")]
    Step {
        step: u64,
        total_steps: u64,
        epoch: u64,
        loss: f64,
        /// Named parts of the loss (e.g. `cass`), for logging.
        parts: Vec<(String, f64)>,
        /// Output spread of each network a pre-training trains (`crate::loss::output_spread`:
        /// about 1 spread out, 0 collapsed); none for fine-tuning.
        spread: NetworkSpread,
        lr: f64,
        /// Mean images per second since the job (or resume) started.
        images_per_sec: f64,
        /// Wall time of this step, data wait included.
        step_sec: f64,
        eta_sec: f64,
    },
    /// An epoch finished.
    #[serde(rename_all = "camelCase")]
    Epoch {
        epoch: u64,
        mean_loss: f64,
        val_loss: Option<f64>,
        best: bool,
    },
    /// A checkpoint was written.
    #[serde(rename_all = "camelCase")]
    Checkpoint { path: String, step: u64 },
    /// Something the user should act on, the run continues (e.g. `collapse`: the output spread
    /// stayed under `collapse_warning_spread` for a whole epoch).
    #[serde(rename_all = "camelCase")]
    Warning { code: String, message: String, step: u64 },
}

/// Receives progress events; called on the training thread, so keep it cheap.
pub trait Observer: Send {
    fn event(&mut self, event: &Event);
}

/// Discards events.
pub struct Silent;

impl Observer for Silent {
    fn event(&mut self, _event: &Event) {}
}

impl<F: FnMut(&Event) + Send> Observer for F {
    fn event(&mut self, event: &Event) {
        self(event)
    }
}

/// Cooperative cancellation: the job checks it before every step.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
