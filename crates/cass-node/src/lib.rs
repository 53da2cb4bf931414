//! The N-API door to `cass-core`: every export parses its arguments, starts the core job on a
//! dedicated thread (never the libuv pool) and settles a Promise when it ends. Progress events
//! cross as JSON strings through a weak threadsafe function; cancellation through a shared token.
//! No training logic lives here.

use std::path::PathBuf;
use std::sync::Arc;

use cass_core::data::ImageSet;
use cass_core::models::Arch;
use cass_core::{BackendChoice, CancelToken, CassError, Event, FinetuneConfig, Labeled, PretrainConfig};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

// Progress callbacks are `ThreadsafeFunction<String, (), String, Status, false, true>`: one
// JSON-encoded event per call, callee not handling errors, weak (never keeps Node alive). The
// type is spelled out at each use because the `.d.ts` generator does not follow aliases.

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
/// by the TypeScript layer.
fn error_json(e: &CassError) -> String {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("code".into(), e.code().into());
        o.insert("message".into(), e.to_string().into());
    }
    v.to_string()
}

fn parse<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T> {
    serde_json::from_str(json)
        .map_err(|e| Error::new(Status::InvalidArg, error_json(&CassError::config(what, format!("{e}")))))
}

fn to_usize(v: Option<Vec<u32>>) -> Vec<usize> {
    v.unwrap_or_default().into_iter().map(|i| i as usize).collect()
}

/// Runs `job` on its own thread and returns a Promise of its JSON result. Errors reject with a
/// JSON message; panics are caught and reject too, so the process never crashes.
fn spawn_job<'env, F>(env: &'env Env, name: &str, job: F) -> Result<PromiseRaw<'env, String>>
where
    F: FnOnce() -> std::result::Result<String, CassError> + Send + 'static,
{
    let (deferred, promise) = env.create_deferred::<String, _>()?;
    std::thread::Builder::new()
        .name(format!("cass-{name}"))
        .spawn(
            move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                Ok(Ok(json)) => deferred.resolve(move |_| Ok(json)),
                Ok(Err(e)) => deferred.reject(Error::from_reason(error_json(&e))),
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    let e = CassError::data("internal", format!("the engine panicked: {msg}"), None);
                    deferred.reject(Error::from_reason(error_json(&e)))
                }
            },
        )
        .map_err(|e| Error::from_reason(format!("could not start a thread: {e}")))?;
    Ok(PromiseRaw::new(env.raw(), promise.raw()))
}

fn forward(events: Option<ThreadsafeFunction<String, (), String, Status, false, true>>) -> impl FnMut(&Event) + Send {
    move |e: &Event| {
        if let Some(f) = &events
            && let Ok(json) = serde_json::to_string(e)
        {
            f.call(json, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }
}

/// Starts CASS pre-training. `config` is the engine's JSON config (see the TypeScript
/// `toNativePretrainConfig`). Resolves to the JSON outcome.
#[napi]
pub fn start_pretrain<'env>(
    env: &'env Env,
    config: String,
    images: BindingImages,
    indices: Option<Vec<u32>>,
    out_dir: String,
    resume: bool,
    cancel: &BindingCancelToken,
    on_event: Option<ThreadsafeFunction<String, (), String, Status, false, true>>,
) -> Result<PromiseRaw<'env, String>> {
    let cfg: PretrainConfig = parse(&config, "config")?;
    let token = cancel.token.clone();
    let indices = to_usize(indices);
    spawn_job(env, "pretrain", move || {
        let set = open_images(images)?;
        let mut obs = forward(on_event);
        let out = cass_core::pretrain(&cfg, set, indices, &PathBuf::from(out_dir), resume, &mut obs, &token)?;
        Ok(serde_json::to_string(&out).expect("outcome json"))
    })
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

/// Starts fine-tuning of one network. Resolves to the JSON outcome (best epoch, validation
/// metrics, history, checkpoint path).
#[napi]
pub fn start_finetune<'env>(
    env: &'env Env,
    config: String,
    images: BindingImages,
    train: BindingLabeled,
    val: BindingLabeled,
    out_dir: String,
    cancel: &BindingCancelToken,
    on_event: Option<ThreadsafeFunction<String, (), String, Status, false, true>>,
) -> Result<PromiseRaw<'env, String>> {
    let cfg: FinetuneConfig = parse(&config, "config")?;
    let token = cancel.token.clone();
    spawn_job(env, "finetune", move || {
        let set = open_images(images)?;
        let (train, val) = (labeled(&set, train), labeled(&set, val));
        let mut obs = forward(on_event);
        let out = cass_core::finetune(&cfg, &train, &val, &PathBuf::from(out_dir), &mut obs, &token)?;
        Ok(serde_json::to_string(&out).expect("outcome json"))
    })
}

fn parse_arch(arch: Option<String>) -> Result<Option<Arch>> {
    match arch.as_deref() {
        None => Ok(None),
        Some("cnn") => Ok(Some(Arch::Cnn)),
        Some("vit") => Ok(Some(Arch::Vit)),
        Some(other) => Err(Error::new(
            Status::InvalidArg,
            error_json(&CassError::config(
                "arch",
                format!("must be `cnn` or `vit`, got `{other}`"),
            )),
        )),
    }
}

fn backend(name: Option<String>) -> Result<BackendChoice> {
    parse(&format!("\"{}\"", name.as_deref().unwrap_or("cpu")), "device")
}

/// Evaluates a fine-tuned checkpoint directory on labelled data. Resolves to the JSON metrics.
#[napi]
pub fn start_evaluate<'env>(
    env: &'env Env,
    checkpoint: String,
    images: BindingImages,
    data: BindingLabeled,
    batch_size: u32,
    device: Option<String>,
) -> Result<PromiseRaw<'env, String>> {
    let backend = backend(device)?;
    spawn_job(env, "evaluate", move || {
        let set = open_images(images)?;
        let m = cass_core::evaluate(
            &PathBuf::from(checkpoint),
            &labeled(&set, data),
            batch_size as usize,
            backend,
        )?;
        Ok(serde_json::to_string(&m).expect("metrics json"))
    })
}

/// Embeds images with a checkpoint's network (`arch` picks the network of a pre-training
/// checkpoint). Resolves to JSON `{ dim, count, features }` (row-major).
#[napi]
pub fn start_embed<'env>(
    env: &'env Env,
    checkpoint: String,
    arch: Option<String>,
    images: BindingImages,
    indices: Option<Vec<u32>>,
    batch_size: u32,
    device: Option<String>,
) -> Result<PromiseRaw<'env, String>> {
    let backend = backend(device)?;
    let arch: Option<Arch> = match arch.as_deref() {
        None => None,
        Some("cnn") => Some(Arch::Cnn),
        Some("vit") => Some(Arch::Vit),
        Some(other) => {
            return Err(Error::new(
                Status::InvalidArg,
                error_json(&CassError::config(
                    "arch",
                    format!("must be `cnn` or `vit`, got `{other}`"),
                )),
            ));
        }
    };
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
        Ok(serde_json::json!({ "dim": dim, "count": count, "features": features }).to_string())
    })
}

/// Exports one network of a checkpoint as timm-compatible safetensors (`arch` picks the
/// network of a pre-training checkpoint). Resolves to the output path.
#[napi]
pub fn start_export<'env>(
    env: &'env Env,
    checkpoint: String,
    arch: Option<String>,
    out: String,
) -> Result<PromiseRaw<'env, String>> {
    let arch = parse_arch(arch)?;
    spawn_job(env, "export", move || {
        cass_core::export(&PathBuf::from(checkpoint), arch, &PathBuf::from(&out))?;
        Ok(out)
    })
}

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
    let c = cass_core::checkpoint::Checkpoint::open(&PathBuf::from(path))
        .map_err(|e| Error::new(Status::InvalidArg, error_json(&e)))?;
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

/// Compute backends compiled into this addon (`cpu` always; `cuda`, `wgpu` by cargo feature).
#[napi]
pub fn available_backends() -> Vec<String> {
    cass_core::available_backends().into_iter().map(String::from).collect()
}
