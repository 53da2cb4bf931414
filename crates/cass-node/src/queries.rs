//! The synchronous questions the binding answers without starting a job: what a checkpoint
//! holds, which backend a device choice resolves to and why, which backends this addon has.

use std::path::PathBuf;

use cass_core::CassError;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::invalid;
use crate::outcomes::DeviceChoice;
use crate::shapes::Device;

/// What a checkpoint folder holds.
#[napi(object)]
pub struct CheckpointInfo {
    /// The folder holding `state.json` and the weights (`out/checkpoint`, `out/best` or the
    /// folder given).
    pub dir: String,
    /// `pretrain` (both networks, resumable) or `finetune` (one network and its classifier).
    pub kind: String,
    /// The method that wrote it (`state.json`'s kind, e.g. `cass-pretrain`).
    pub method: String,
    /// Input side the networks were trained at.
    pub image_size: u32,
    /// The networks it holds: `cnn`, `vit`.
    pub networks: Vec<String>,
    /// Pre-training: steps done, and whether the run completed.
    pub step: Option<f64>,
    pub completed: Option<bool>,
    /// Fine-tuning: the epoch whose weights were kept.
    pub best_epoch: Option<u32>,
}

/// Finds the checkpoint in `path` (an output folder of pre-training or fine-tuning, or the
/// checkpoint folder itself) and says what it holds.
#[napi]
pub fn inspect_checkpoint(path: String) -> Result<CheckpointInfo> {
    let c = cass_core::checkpoint::Checkpoint::open(&PathBuf::from(path)).map_err(invalid)?;
    Ok(CheckpointInfo {
        dir: c.dir.display().to_string(),
        kind: match c.kind {
            cass_core::checkpoint::CheckpointKind::Pretrain => "pretrain".into(),
            cass_core::checkpoint::CheckpointKind::Finetune => "finetune".into(),
        },
        method: c.method,
        image_size: c.image_size as u32,
        networks: c.networks.into_iter().map(|(n, _)| n).collect(),
        step: c.step.map(|s| s as f64),
        completed: c.completed,
        best_epoch: c.best_epoch.map(|e| e as u32),
    })
}

/// Which backend a job given `device` would run on, and why, found by running a tiny computation
/// there (for `auto`: trying CUDA, then a wgpu GPU adapter, then the CPU). Errors like a job
/// would (`backend`) when the device named does not work; a panic is caught and becomes one.
#[napi]
pub fn probe_device(device: Device) -> Result<DeviceChoice> {
    let choice = device.into();
    match std::panic::catch_unwind(|| cass_core::resolve_explained(choice)) {
        Ok(Ok((_, chosen))) => Ok(DeviceChoice {
            backend: chosen.backend.into(),
            reason: chosen.reason,
        }),
        Ok(Err(e)) => Err(invalid(e)),
        Err(_) => Err(invalid(CassError::Backend {
            message: format!("probing {choice:?} panicked"),
        })),
    }
}

/// Refuses (`output-in-use`) when a running job holds the output folder `dir`; changes nothing.
#[napi]
pub fn check_output_free(dir: String) -> Result<()> {
    cass_core::checkpoint::OutputLock::check_free(&PathBuf::from(dir)).map_err(invalid)
}

/// Compute backends compiled into this addon (`cpu` always; `cuda`, `wgpu` by cargo feature).
#[napi]
pub fn available_backends() -> Vec<String> {
    cass_core::available_backends().into_iter().map(String::from).collect()
}
