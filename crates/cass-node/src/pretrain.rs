//! Pre-training of any method: one export, [`start_pretraining_of`], whose tagged request is the
//! binding's list of methods (a new method is a variant and its arm here).

use std::path::PathBuf;
use std::sync::Arc;

use cass_core::data::ImageSet;
use cass_core::ssl::vicreg::{VicregConfig, pretrain_vicreg};
use cass_core::{CassError, DinoConfig, Observer, PretrainConfig, PretrainOutcome as EngineOutcome};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunction;
use napi_derive::napi;

use crate::{
    BindingCancelToken, BindingEvent, BindingImages, DinoOptions, PretrainOptions, PretrainOutcome, VicregOptions,
};
use crate::{forward, invalid, open_images, spawn_job, to_usize};

/// A method's pre-training job, its config and call arguments bound: it takes the opened images
/// and the progress observer.
type Job = Box<dyn FnOnce(Arc<ImageSet>, &mut dyn Observer) -> std::result::Result<EngineOutcome, CassError> + Send>;

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
    let (token, indices, out) = (cancel.token.clone(), to_usize(indices), PathBuf::from(out_dir));
    let (name, job): (&str, Job) = match request {
        PretrainRequest::Cass { config } => {
            let cfg = PretrainConfig::try_from(config).map_err(invalid)?;
            (
                "pretrain",
                Box::new(move |set, obs| cass_core::pretrain(&cfg, set, indices, &out, resume, obs, &token)),
            )
        }
        PretrainRequest::Dino { config } => {
            let cfg = DinoConfig::try_from(config).map_err(invalid)?;
            (
                "dino",
                Box::new(move |set, obs| cass_core::pretrain_dino(&cfg, set, indices, &out, resume, obs, &token)),
            )
        }
        PretrainRequest::Vicreg { config } => {
            let cfg = VicregConfig::try_from(config).map_err(invalid)?;
            (
                "vicreg",
                Box::new(move |set, obs| pretrain_vicreg(&cfg, set, indices, &out, resume, obs, &token)),
            )
        }
    };
    spawn_job(env, name, move || {
        let set = open_images(images)?;
        let mut obs = forward(on_event);
        Ok(PretrainOutcome::from(job(set, &mut obs)?))
    })
}
