//! The N-API door to `cass-core`: every export parses its arguments, starts the core job on a
//! dedicated thread (never the libuv pool) and settles a Promise when it ends. Outcomes, metrics,
//! progress events and embeddings cross as typed objects (`#[napi(object)]`, a structured enum
//! for events, a `Float32Array` for embeddings), and so do the run configs the other way
//! (`options.rs`, converted with `TryFrom`), so the generated `index.d.ts` describes everything
//! that crosses; progress goes through a weak threadsafe function, cancellation through a shared
//! token. No training logic lives here.

use std::path::PathBuf;
use std::sync::Arc;

use cass_core::data::ImageSet;
use cass_core::{CancelToken, CassError, Event, FinetuneConfig, Labeled};
use napi::bindgen_prelude::ToNapiValue;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

mod dino_options;
mod explain_options;
mod model;
mod model_info;
mod model_thread;
mod options;
mod outcomes;
mod pretrain;
mod queries;
mod run_options;
mod shapes;
mod vicreg_options;
pub use dino_options::*;
pub use model::*;
pub use options::*;
pub use outcomes::*;
pub use pretrain::*;
pub use queries::*;
pub use shapes::*;
pub use vicreg_options::*;

// Progress callbacks are `ThreadsafeFunction<BindingEvent, (), BindingEvent, Status, false, true>`:
// one event per call, callee not handling errors, weak (never keeps Node alive). The type is
// spelled out at each use because the `.d.ts` generator does not follow aliases.

/// Decoded images for the engine: either in memory, or a dataset cache file.
#[napi(object)]
pub struct BindingImages {
    /// `count * height * width * 3` bytes, RGB, row-major (in-memory source).
    pub pixels: Option<Uint8Array>,
    pub count: Option<u32>,
    pub height: Option<u32>,
    pub width: Option<u32>,
    /// Path of a dataset cache file (memory-mapped by the engine).
    pub cache_file: Option<String>,
}

fn open_images(images: BindingImages) -> std::result::Result<Arc<ImageSet>, CassError> {
    if let Some(path) = images.cache_file {
        return ImageSet::open_cache(&PathBuf::from(path)).map(Arc::new);
    }
    let pixels = images
        .pixels
        .ok_or_else(|| CassError::config("data", "give `pixels` (with count, height, width) or `cacheFile`"))?;
    let dims = (images.count, images.height, images.width);
    let (Some(n), Some(h), Some(w)) = dims else {
        return Err(CassError::config(
            "data",
            "in-memory images need `count`, `height` and `width`",
        ));
    };
    ImageSet::from_memory(pixels.to_vec(), n as usize, h as usize, w as usize).map(Arc::new)
}

/// Cancels the job it was passed to at its next step; the job then writes a resumable checkpoint.
#[napi]
pub struct BindingCancelToken {
    token: CancelToken,
}

#[napi]
impl BindingCancelToken {
    #[napi(constructor)]
    pub fn new() -> Self {
        Self {
            token: CancelToken::new(),
        }
    }

    #[napi]
    pub fn cancel(&self) {
        self.token.cancel();
    }

    #[napi(getter)]
    pub fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

impl Default for BindingCancelToken {
    fn default() -> Self {
        Self::new()
    }
}

/// Error as JSON: `{ kind, code, message, field?, path?, step? }`, turned into a typed JS error
/// by the TypeScript layer. Config fields are named in the API's camelCase.
fn error_json(e: &CassError) -> String {
    let e = match e {
        CassError::Config { field, message } => CassError::config(camel_field(field), message.clone()),
        other => other.clone(),
    };
    let mut v = serde_json::to_value(&e).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("code".into(), e.code().into());
        o.insert("message".into(), e.to_string().into());
    }
    v.to_string()
}

fn invalid(e: CassError) -> Error {
    Error::new(Status::InvalidArg, error_json(&e))
}

fn to_usize(v: Option<Vec<u32>>) -> Vec<usize> {
    v.unwrap_or_default().into_iter().map(|i| i as usize).collect()
}

/// Runs `job` on its own thread and returns a Promise of its result. Errors reject with a JSON
/// message; panics are caught and reject too (code `internal`), so the process never crashes.
fn spawn_job<'env, T, F>(env: &'env Env, name: &str, job: F) -> Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: FnOnce() -> std::result::Result<T, CassError> + Send + 'static,
{
    let (deferred, promise) = env.create_deferred::<T, _>()?;
    std::thread::Builder::new()
        .name(format!("cass-{name}"))
        .spawn(
            move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                Ok(Ok(value)) => deferred.resolve(move |_| Ok(value)),
                Ok(Err(e)) => deferred.reject(Error::from_reason(error_json(&e))),
                Err(panic) => deferred.reject(panic_error(&panic)),
            },
        )
        .map_err(|e| Error::from_reason(format!("could not start a thread: {e}")))?;
    Ok(PromiseRaw::new(env.raw(), promise.raw()))
}

/// The text a panic was raised with.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// A caught panic as the error a Promise rejects with. One panic is the user's to fix (a buffer
/// over the device's limit); any other is a bug, not a problem with the user's data: it crosses
/// with kind `internal` and surfaces as a plain Error.
fn panic_error(panic: &Box<dyn std::any::Any + Send>) -> Error {
    let msg = panic_message(panic);
    if let Some(e) = cass_core::device::device_limit(&msg) {
        return Error::from_reason(error_json(&e));
    }
    let json = serde_json::json!({
        "kind": "internal",
        "code": "internal",
        "message": format!("the engine panicked (a bug in cass-ssl, please report it): {msg}"),
    });
    Error::from_reason(json.to_string())
}

fn forward(
    events: Option<ThreadsafeFunction<BindingEvent, (), BindingEvent, Status, false, true>>,
) -> impl FnMut(&Event) + Send {
    move |e: &Event| {
        if let Some(f) = &events {
            f.call(BindingEvent::from(e), ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

/// Labelled samples of an image set.
#[napi(object)]
pub struct BindingLabeled {
    pub indices: Vec<u32>,
    pub labels: Vec<i32>,
}

fn labeled(set: &Arc<ImageSet>, l: BindingLabeled) -> Labeled {
    Labeled {
        set: set.clone(),
        indices: l.indices.into_iter().map(|i| i as usize).collect(),
        labels: l.labels.into_iter().map(i64::from).collect(),
    }
}

/// Starts fine-tuning of one network (`config`: see the TypeScript `toNativeFinetuneConfig`).
#[napi]
pub fn start_finetune<'env>(
    env: &'env Env,
    config: FinetuneOptions,
    images: BindingImages,
    train: BindingLabeled,
    val: BindingLabeled,
    out_dir: String,
    cancel: &BindingCancelToken,
    on_event: Option<ThreadsafeFunction<BindingEvent, (), BindingEvent, Status, false, true>>,
) -> Result<PromiseRaw<'env, FinetuneOutcome>> {
    let cfg = FinetuneConfig::try_from(config).map_err(invalid)?;
    let token = cancel.token.clone();
    spawn_job(env, "finetune", move || {
        let set = open_images(images)?;
        let (train, val) = (labeled(&set, train), labeled(&set, val));
        let mut obs = forward(on_event);
        let out = cass_core::finetune(&cfg, &train, &val, &PathBuf::from(out_dir), &mut obs, &token)?;
        Ok(FinetuneOutcome {
            status: status_name(out.status),
            best_epoch: out.best_epoch as u32,
            best_val_loss: out.best_val_loss,
            val_metrics: out.val_metrics.into(),
            history: out
                .history
                .into_iter()
                .map(|r| EpochRecord {
                    epoch: r.epoch as u32,
                    train_loss: r.train_loss,
                    val_loss: r.val_loss,
                })
                .collect(),
            checkpoint: out.checkpoint.display().to_string(),
        })
    })
}

/// Evaluates a fine-tuned checkpoint on labelled data.
#[napi]
pub fn start_evaluate<'env>(
    env: &'env Env,
    checkpoint: String,
    images: BindingImages,
    data: BindingLabeled,
    batch_size: u32,
    device: Option<Device>,
) -> Result<PromiseRaw<'env, Metrics>> {
    let backend = device.unwrap_or(Device::Auto).into();
    spawn_job(env, "evaluate", move || {
        let set = open_images(images)?;
        let m = cass_core::evaluate(
            &PathBuf::from(checkpoint),
            &labeled(&set, data),
            batch_size as usize,
            backend,
        )?;
        Ok(Metrics::from(m))
    })
}

/// Embeds images with a checkpoint's network (`arch` picks the network of a pre-training
/// checkpoint).
#[napi]
pub fn start_embed<'env>(
    env: &'env Env,
    checkpoint: String,
    arch: Option<Network>,
    images: BindingImages,
    indices: Option<Vec<u32>>,
    batch_size: u32,
    device: Option<Device>,
) -> Result<PromiseRaw<'env, Embeddings>> {
    let backend = device.unwrap_or(Device::Auto).into();
    let arch = arch.map(Into::into);
    let indices = to_usize(indices);
    spawn_job(env, "embed", move || {
        let set = open_images(images)?;
        let (features, dim) = cass_core::embed(
            &PathBuf::from(checkpoint),
            arch,
            set,
            indices,
            batch_size as usize,
            backend,
        )?;
        let count = features.len().checked_div(dim).unwrap_or(0);
        Ok(Embeddings {
            dim: dim as u32,
            count: count as u32,
            features: Float32Array::new(features),
        })
    })
}

/// Exports one network of a checkpoint as timm-compatible safetensors (`arch` picks the
/// network of a pre-training checkpoint). Resolves to the output path.
#[napi]
pub fn start_export<'env>(
    env: &'env Env,
    checkpoint: String,
    arch: Option<Network>,
    out: String,
) -> Result<PromiseRaw<'env, String>> {
    let arch = arch.map(Into::into);
    spawn_job(env, "export", move || {
        cass_core::export(&PathBuf::from(checkpoint), arch, &PathBuf::from(&out))?;
        Ok(out)
    })
}
