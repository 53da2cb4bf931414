//! The pre-training job for any [`Method`]: starts or resumes a run in `out_dir/checkpoint`,
//! drives the one training loop ([`crate::train::run`]) and writes checkpoints (weights,
//! optimizer moments and `state.json`, published atomically together).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Method, StepAt};
use crate::checkpoint;
use crate::data::{HostBatch, ImageSet, upload};
use crate::device::{resolve_explained, within_device_limits};
use crate::error::CassError;
use crate::events::{CancelToken, Event, Observer};
use crate::train::run::{self, EpochEnd, Learner, Plan, Progress, Status, StepReport};

/// Settings that may differ on resume without being ignored: the run's length and the device
/// (both taken from the call), and where the starting weights were
/// (already in the checkpoint).
const RESUMABLE_CHANGES: [&str; 5] = ["epochs", "max_steps", "cnn_weights", "vit_weights", "backend"];

/// Top-level fields of `given` whose values differ from the checkpoint's `kept` config, apart
/// from [`RESUMABLE_CHANGES`]. A run started from declared weights (the Keras ResNet) had its
/// CNN shape and input normalisation set from them, which the given config does not repeat.
fn differing_settings<C: Serialize>(kept: &C, given: &C) -> Vec<String> {
    let (Ok(serde_json::Value::Object(kept)), Ok(serde_json::Value::Object(given))) =
        (serde_json::to_value(kept), serde_json::to_value(given))
    else {
        return Vec::new();
    };
    let from_declared_weights = kept.get("cnn_weights").is_some_and(|w| !w.is_null());
    given
        .iter()
        .filter(|(k, v)| {
            !RESUMABLE_CHANGES.contains(&k.as_str())
                && !(from_declared_weights && (k.as_str() == "cnn" || k.as_str() == "augment"))
                && kept.get(k.as_str()) != Some(v)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Position of a run, saved in `state.json` beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainState<C> {
    /// The file format's version ([`crate::checkpoint::STATE_VERSION`]; 1 when absent).
    #[serde(default = "crate::checkpoint::unversioned_state")]
    pub version: u32,
    pub kind: String,
    pub config: C,
    /// Optimisation steps done: the next step's index, which is also the schedule position.
    /// The data order of an epoch and the augmentation of a step derive from `(seed, epoch)`
    /// and `(seed, step)`, so this is the whole random-number state of the run.
    pub step: u64,
    /// Epoch of the next step (`step / batches_per_epoch`).
    #[serde(default)]
    pub epoch: u64,
    pub batches_per_epoch: u64,
    pub completed: bool,
    /// Loss of every step so far.
    pub losses: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PretrainOutcome {
    pub status: Status,
    pub steps: u64,
    pub total_steps: u64,
    pub checkpoint: PathBuf,
    pub losses: Vec<f64>,
    pub epoch_mean_losses: Vec<f64>,
}

/// Reads `state.json` of a checkpoint of `kind`.
pub fn read_state<C: DeserializeOwned>(dir: &Path, kind: &str) -> Result<PretrainState<C>, CassError> {
    let path = dir.join("state.json");
    let bytes = crate::checkpoint::read_bounded(&path, 256 << 20, "state.json")?;
    let head: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| CassError::data("bad-checkpoint", format!("unreadable state: {e}"), Some(&path)))?;
    crate::checkpoint::check_state_version(&head, &path)?;
    let found = head.get("kind").and_then(|k| k.as_str()).unwrap_or("none");
    if found != kind {
        return Err(CassError::data(
            "bad-checkpoint",
            format!("not a pre-training checkpoint of kind {kind} (kind {found})"),
            Some(&path),
        ));
    }
    serde_json::from_value(head)
        .map_err(|e| CassError::data("bad-checkpoint", format!("unreadable state: {e}"), Some(&path)))
}

/// A method inside the training loop: uploads each batch, keeps `state.json` and checkpoints.
struct PretrainLearner<'a, M: Method> {
    method: M,
    state: PretrainState<M::Config>,
    set: &'a ImageSet,
    device: burn::prelude::Device,
    dir: PathBuf,
    /// Micro-batches per step.
    accumulate: usize,
}

impl<M: Method> PretrainLearner<'_, M> {
    fn write(&mut self, step: u64, losses: &[f64], completed: bool) -> Result<PathBuf, CassError> {
        self.state.step = step;
        self.state.epoch = step / self.state.batches_per_epoch;
        self.state.completed = completed;
        self.state.losses = losses.to_vec();
        let staging = checkpoint::staging_dir(&self.dir)?;
        self.method.save(&staging, step)?;
        let json = serde_json::to_vec_pretty(&self.state).expect("state json");
        checkpoint::write_atomic(&staging.join("state.json"), &json)?;
        checkpoint::publish_dir(&staging, &self.dir)?;
        Ok(self.dir.clone())
    }
}

impl<M: Method> Learner for PretrainLearner<'_, M> {
    fn loss_name(&self) -> &str {
        M::LOSS_NAME
    }

    fn step(&mut self, batch: &HostBatch, step: u64, total: u64) -> StepReport {
        let raw = upload(batch, self.set, &self.device);
        let per_epoch = self.state.batches_per_epoch;
        let at = StepAt {
            step,
            total,
            epoch: step / per_epoch,
            per_epoch,
        };
        self.method.train_step(raw, at, self.accumulate)
    }

    fn end_epoch(&mut self, epoch: u64, _mean: f64, full: bool, _at: &Progress) -> Result<EpochEnd, CassError> {
        Ok(EpochEnd {
            warnings: self.method.end_epoch(epoch, full),
            ..Default::default()
        })
    }

    fn save(&mut self, at: &Progress) -> Result<Option<PathBuf>, CassError> {
        self.write(at.step, at.losses, false).map(Some)
    }
}

/// Runs (or resumes) pre-training with method `M` over `indices` of `set` (all images when
/// empty), writing checkpoints under `out_dir/checkpoint`. With `resume`, continues from the
/// checkpoint there if any, keeping its config but taking the run length from `config`.
pub fn run<M: Method>(
    config: &M::Config,
    set: Arc<ImageSet>,
    indices: Vec<usize>,
    out_dir: &Path,
    resume: bool,
    observer: &mut dyn Observer,
    cancel: &CancelToken,
) -> Result<PretrainOutcome, CassError> {
    let ckpt_dir = out_dir.join("checkpoint");
    // A run killed while publishing a checkpoint left it beside its place: put it back first.
    checkpoint::recover(&ckpt_dir)?;
    let resumed = if resume && ckpt_dir.join("state.json").exists() {
        Some(read_state::<M::Config>(&ckpt_dir, M::KIND)?)
    } else {
        None
    };
    let mut cfg = match &resumed {
        Some(s) => s.config.clone(),
        None => config.clone(),
    };
    let wanted = *M::run(config);
    if let Some(s) = &resumed {
        // A resumed run is the checkpoint's run: only its length can change. Every other
        // setting given that differs is named, so that a flag is never ignored in silence.
        let ignored = differing_settings(&s.config, config);
        if !ignored.is_empty() {
            observer.event(&Event::Warning {
                code: "resume-keeps-config".into(),
                message: format!(
                    "resuming keeps the checkpoint's config; these settings given differ and are not used: {}",
                    ignored.join(", ")
                ),
                step: s.step,
            });
        }
    }
    {
        let run = M::run_mut(&mut cfg);
        run.epochs = wanted.epochs;
        run.max_steps = wanted.max_steps;
        run.backend = wanted.backend;
    }
    M::prepare(&mut cfg, resumed.is_none())?;
    let settings = *M::run(&cfg);
    // Images per optimisation step: all of its micro-batches.
    let step_images = settings.step_images();
    let indices: Vec<usize> = if indices.is_empty() {
        (0..set.len).collect()
    } else {
        indices
    };
    set.check_indices(&indices, "indices")?;
    if indices.len() < step_images {
        return Err(CassError::config(
            "batch_size",
            format!(
                "is {} (times accumulate {}) but only {} images were given; every step needs a full batch",
                settings.batch_size,
                settings.accumulate,
                indices.len()
            ),
        ));
    }
    let (device, chosen) = resolve_explained(settings.backend)?;
    observer.event(&Event::Device {
        backend: chosen.backend.into(),
        reason: chosen.reason,
    });
    // One job per output folder (also creates it).
    let _lock = checkpoint::OutputLock::acquire(out_dir)?;

    let batches_per_epoch = (indices.len() / step_images) as u64;
    let mut total = settings.epochs * batches_per_epoch;
    if let Some(m) = settings.max_steps {
        total = total.min(m);
    }
    let (method, state) = match resumed {
        Some(s) => {
            // state.json is read without a schema's help: its position must be one this run
            // can have reached (a step past the run used to be taken as a completed run).
            if s.losses.len() as u64 != s.step || s.step > total {
                return Err(CassError::data(
                    "bad-checkpoint",
                    format!(
                        "state.json is at step {} with {} recorded losses, but this run has {total} steps (raise epochs or max_steps to continue a longer run)",
                        s.step,
                        s.losses.len()
                    ),
                    Some(&ckpt_dir.join("state.json")),
                ));
            }
            if s.batches_per_epoch != batches_per_epoch {
                return Err(CassError::config(
                    "indices",
                    format!(
                        "the checkpoint was trained with {} batches per epoch, this data gives {batches_per_epoch}",
                        s.batches_per_epoch
                    ),
                ));
            }
            (
                M::load(&cfg, &ckpt_dir, &device)?,
                PretrainState {
                    // A resumed run writes its checkpoints in this build's format.
                    version: checkpoint::STATE_VERSION,
                    config: cfg.clone(),
                    ..s
                },
            )
        }
        None => (
            M::init(&cfg, &device)?,
            PretrainState {
                version: checkpoint::STATE_VERSION,
                kind: M::KIND.into(),
                config: cfg.clone(),
                step: 0,
                epoch: 0,
                batches_per_epoch,
                completed: false,
                losses: Vec::new(),
            },
        ),
    };
    let plan = Plan {
        set: set.clone(),
        samples: Arc::new(indices),
        labels: None,
        batch_size: step_images,
        drop_last: true,
        seed: settings.seed,
        total_steps: total,
        checkpoint_every: settings.checkpoint_every,
    };
    let (start, losses) = (state.step, state.losses.clone());
    let mut learner = PretrainLearner {
        method,
        state,
        set: &set,
        device,
        dir: ckpt_dir.clone(),
        accumulate: settings.accumulate,
    };
    let end = within_device_limits(|| run::run(&plan, &mut learner, start, losses, observer, cancel))?;
    learner.write(end.step, &end.losses, end.status == Status::Completed)?;
    observer.event(&Event::Checkpoint {
        path: ckpt_dir.display().to_string(),
        step: end.step,
    });
    let epoch_mean_losses = end
        .losses
        .chunks(batches_per_epoch as usize)
        .filter(|c| c.len() == batches_per_epoch as usize)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    Ok(PretrainOutcome {
        status: end.status,
        steps: end.step,
        total_steps: total,
        checkpoint: ckpt_dir,
        losses: end.losses,
        epoch_mean_losses,
    })
}
