//! Pre-training of any method: one export, [`start_pretraining_of`], whose tagged request is the
//! binding's list of methods (a new method is a variant and its arm here).

use std::path::PathBuf;
use std::sync::Arc;

use cass_core::data::ImageSet;
use cass_core::ssl::vicreg::VicregConfig;
use cass_core::{CancelToken, CassError, DinoConfig, PretrainConfig};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunction;
use napi_derive::napi;

use crate::{
    BindingCancelToken, BindingEvent, BindingImages, DinoOptions, PretrainOptions, PretrainOutcome, VicregOptions,
};
use crate::{forward, invalid, open_images, spawn_job, to_usize};

/// The engine's pre-training job of one method.
type PretrainJob<C> = fn(
    &C,
    Arc<ImageSet>,
    Vec<usize>,
    &std::path::Path,
    bool,
    &mut dyn cass_core::Observer,
    &CancelToken,
) -> std::result::Result<cass_core::PretrainOutcome, CassError>;

#[allow(clippy::too_many_arguments)]
fn start_pretraining<'env, C: Send + 'static>(
    env: &'env Env,
    name: &str,
    job: PretrainJob<C>,
    cfg: C,
    images: BindingImages,
    indices: Option<Vec<u32>>,
    out_dir: String,
    resume: bool,
    cancel: &BindingCancelToken,
    on_event: Option<ThreadsafeFunction<BindingEvent, (), BindingEvent, Status, false, true>>,
) -> Result<PromiseRaw<'env, PretrainOutcome>> {
    let token = cancel.token.clone();
    let indices = to_usize(indices);
    spawn_job(env, name, move || {
        let set = open_images(images)?;
        let mut obs = forward(on_event);
        let out = job(&cfg, set, indices, &PathBuf::from(out_dir), resume, &mut obs, &token)?;
        Ok(PretrainOutcome::from(out))
    })
}

/// A pre-training run of one method: the methods' registry at the door. A new method is one
/// variant here and its arm in [`start_pretraining_of`].
#[napi(discriminant = "method", discriminant_case = "lowercase")]
pub enum PretrainRequest {
    /// CASS (see the TypeScript `toNativePretrainConfig`).
    Cass { config: PretrainOptions },
    /// DINO of one backbone (`toNativeDinoConfig`).
    Dino { config: DinoOptions },
    /// VICReg of one backbone (`toNativeVicregConfig`).
    Vicreg { config: VicregOptions },
}

/// Starts pre-training with the method `request` names.
#[napi]
pub fn start_pretraining_of<'env>(
    env: &'env Env,
    request: PretrainRequest,
    images: BindingImages,
    indices: Option<Vec<u32>>,
    out_dir: String,
    resume: bool,
    cancel: &BindingCancelToken,
    on_event: Option<ThreadsafeFunction<BindingEvent, (), BindingEvent, Status, false, true>>,
) -> Result<PromiseRaw<'env, PretrainOutcome>> {
    let rest = (images, indices, out_dir, resume, cancel, on_event);
    match request {
        PretrainRequest::Cass { config } => {
            let job: PretrainJob<PretrainConfig> = cass_core::pretrain;
            start_with(
                env,
                "pretrain",
                job,
                PretrainConfig::try_from(config).map_err(invalid)?,
                rest,
            )
        }
        PretrainRequest::Dino { config } => {
            let job: PretrainJob<DinoConfig> = cass_core::pretrain_dino;
            start_with(env, "dino", job, DinoConfig::try_from(config).map_err(invalid)?, rest)
        }
        PretrainRequest::Vicreg { config } => {
            let job: PretrainJob<VicregConfig> = cass_core::ssl::vicreg::pretrain_vicreg;
            start_with(
                env,
                "vicreg",
                job,
                VicregConfig::try_from(config).map_err(invalid)?,
                rest,
            )
        }
    }
}

type JobArgs<'a> = (
    BindingImages,
    Option<Vec<u32>>,
    String,
    bool,
    &'a BindingCancelToken,
    Option<ThreadsafeFunction<BindingEvent, (), BindingEvent, Status, false, true>>,
);

fn start_with<'env, C: Send + 'static>(
    env: &'env Env,
    name: &str,
    job: PretrainJob<C>,
    cfg: C,
    (images, indices, out_dir, resume, cancel, on_event): JobArgs,
) -> Result<PromiseRaw<'env, PretrainOutcome>> {
    start_pretraining(env, name, job, cfg, images, indices, out_dir, resume, cancel, on_event)
}
