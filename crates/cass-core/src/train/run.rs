//! The one training loop. Pre-training and fine-tuning both run through [`run`]: it owns the data
//! order of each epoch, the prefetch thread, cancellation, progress events (throughput, ETA), the
//! non-finite-loss check, the epoch means and when checkpoints are written; a [`Learner`] owns what
//! one step computes, what an epoch's end decides and what a checkpoint holds.
//!
//! Exact resume: the order of epoch `e` derives from `(seed, e)` alone ([`epoch_order`]) and a
//! learner derives a step's randomness from `(seed, step)` ([`step_seed`]), so a run restarted at
//! step `s` with the losses of steps `0..s` continues exactly as if it had not stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::{HostBatch, ImageSet, Prefetcher, batch_positions};
use crate::error::CassError;
use crate::events::{CancelToken, Event, Observer};

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Completed,
    Cancelled,
}

/// Seeded order of the training samples in `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(epoch + 1));
    order.shuffle(&mut rng);
    order
}

/// Seed of the augmentation of global step `step`.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ step.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// What the loop iterates over and for how long.
pub struct Plan {
    pub set: Arc<ImageSet>,
    /// `samples[k]` is an image index into `set`; `labels[k]` its class, for supervised learners.
    pub samples: Arc<Vec<usize>>,
    pub labels: Option<Arc<Vec<i64>>>,
    pub batch_size: usize,
    /// Drop a final short batch of each epoch.
    pub drop_last: bool,
    /// Seed of the epoch orders.
    pub seed: u64,
    /// Steps of the whole run (all epochs, capped by any step limit).
    pub total_steps: u64,
    /// Also write a checkpoint every this many steps (besides each epoch's end).
    pub checkpoint_every: Option<u64>,
}

impl Plan {
    /// Batches (lists of positions into `samples`) of one epoch.
    fn epoch_batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let order = epoch_order(self.samples.len(), self.seed, epoch);
        batch_positions(order.len(), self.batch_size, self.drop_last)
            .into_iter()
            .map(|b| b.into_iter().map(|p| order[p]).collect())
            .collect()
    }

    /// Steps in one epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        batch_positions(self.samples.len(), self.batch_size, self.drop_last).len() as u64
    }
}

/// What one step reports.
pub struct StepReport {
    /// The optimised loss.
    pub loss: f64,
    /// Its named parts and diagnostics, for progress events.
    pub parts: Vec<(String, f64)>,
    /// Each trained network's output spread (pre-training methods; default for others).
    pub spread: crate::events::NetworkSpread,
    /// Learning rate used (the first network's, where there are several).
    pub lr: f64,
}

/// Where a run stands, for a learner's epoch end and checkpoints.
pub struct Progress<'a> {
    /// Steps done; also the index of the next step.
    pub step: u64,
    pub total_steps: u64,
    pub batches_per_epoch: u64,
    /// Loss of every step so far (those before a resume included).
    pub losses: &'a [f64],
}

/// What a learner decided at an epoch's end. The loop reports it as events, in this order:
/// `Epoch`, each warning, then `Checkpoint` for `saved`.
#[derive(Default)]
pub struct EpochEnd {
    pub val_loss: Option<f64>,
    /// This epoch's weights are the best so far (by validation loss).
    pub best: bool,
    /// `(code, message)` pairs, e.g. `collapse`.
    pub warnings: Vec<(String, String)>,
    /// A checkpoint the learner wrote (e.g. the best weights).
    pub saved: Option<PathBuf>,
    /// Stop the run after this epoch (e.g. early stopping).
    pub stop: bool,
}

/// The part of a training job that differs between methods.
pub trait Learner {
    /// The loss's name in error messages, e.g. "CASS loss".
    fn loss_name(&self) -> &str;

    /// One optimisation step on `batch`, the `step`-th of `total_steps` (schedule position and
    /// seed of its randomness).
    fn step(&mut self, batch: &HostBatch, step: u64, total_steps: u64) -> StepReport;

    /// Called once at the end of every epoch. `full` is false for an epoch that a resume entered
    /// part-way (this process saw only some of its steps).
    fn end_epoch(&mut self, epoch: u64, mean_loss: f64, full: bool, at: &Progress) -> Result<EpochEnd, CassError>;

    /// Writes a resumable checkpoint of the run at `at` and returns where; `None` for a learner
    /// that keeps no resumable checkpoint (fine-tuning keeps only its best weights).
    fn save(&mut self, at: &Progress) -> Result<Option<PathBuf>, CassError>;
}

/// How [`run`] ended: the status, the steps done and the loss of every step.
pub struct RunEnd {
    pub status: Status,
    pub step: u64,
    pub losses: Vec<f64>,
}

/// Runs `learner` from step `start` (with the losses of the steps before it) until
/// `plan.total_steps`, cancellation or the learner's stop. Checkpoints at the end of each epoch
/// and every `checkpoint_every` steps, except after the last step: the caller writes the final one
/// (it knows whether the run completed).
pub fn run(
    plan: &Plan,
    learner: &mut dyn Learner,
    start: u64,
    mut losses: Vec<f64>,
    observer: &mut dyn Observer,
    cancel: &CancelToken,
) -> Result<RunEnd, CassError> {
    let per_epoch = plan.batches_per_epoch();
    if per_epoch == 0 {
        return Err(CassError::config("batch_size", "leaves no full batch in an epoch"));
    }
    let total = plan.total_steps;
    let mut step = start;
    let mut status = Status::Completed;
    let started = Instant::now();
    'epochs: while step < total {
        let epoch = step / per_epoch;
        let mut batches = plan.epoch_batches(epoch);
        batches.drain(..(step % per_epoch) as usize);
        let mut prefetch = Prefetcher::spawn(plan.set.clone(), plan.samples.clone(), plan.labels.clone(), batches, 2);
        loop {
            let step_started = Instant::now();
            let Some(batch) = prefetch.next() else { break };
            if cancel.is_cancelled() {
                status = Status::Cancelled;
                break 'epochs;
            }
            let s = step;
            let out = learner.step(&batch, s, total);
            if !out.loss.is_finite() {
                return Err(CassError::at_step(
                    "non-finite-loss",
                    format!("{} became {}", learner.loss_name(), out.loss),
                    s,
                ));
            }
            losses.push(out.loss);
            step += 1;
            let done = step - start;
            let elapsed = started.elapsed().as_secs_f64();
            observer.event(&Event::Step {
                step,
                total_steps: total,
                epoch: s / per_epoch,
                loss: out.loss,
                parts: out.parts,
                spread: out.spread,
                lr: out.lr,
                images_per_sec: (done * plan.batch_size as u64) as f64 / elapsed.max(1e-9),
                step_sec: step_started.elapsed().as_secs_f64(),
                eta_sec: elapsed / done as f64 * (total - step) as f64,
            });
            let epoch_end = step.is_multiple_of(per_epoch);
            let mut stop = false;
            if epoch_end {
                let last = &losses[(step - per_epoch) as usize..];
                let mean = last.iter().sum::<f64>() / per_epoch as f64;
                let full = s + 1 - start >= per_epoch;
                let at = Progress {
                    step,
                    total_steps: total,
                    batches_per_epoch: per_epoch,
                    losses: &losses,
                };
                let end = learner.end_epoch(s / per_epoch, mean, full, &at)?;
                observer.event(&Event::Epoch {
                    epoch: s / per_epoch,
                    mean_loss: mean,
                    val_loss: end.val_loss,
                    best: end.best,
                });
                for (code, message) in end.warnings {
                    observer.event(&Event::Warning { code, message, step });
                }
                if let Some(path) = end.saved {
                    observer.event(&Event::Checkpoint {
                        path: path.display().to_string(),
                        step,
                    });
                }
                stop = end.stop;
            }
            let periodic = plan.checkpoint_every.is_some_and(|n| n > 0 && step.is_multiple_of(n));
            if (epoch_end || periodic) && step < total && !stop {
                let at = Progress {
                    step,
                    total_steps: total,
                    batches_per_epoch: per_epoch,
                    losses: &losses,
                };
                if let Some(path) = learner.save(&at)? {
                    observer.event(&Event::Checkpoint {
                        path: path.display().to_string(),
                        step,
                    });
                }
            }
            if stop || step >= total {
                break 'epochs;
            }
        }
    }
    Ok(RunEnd { status, step, losses })
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
