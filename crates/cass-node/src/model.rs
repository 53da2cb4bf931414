//! A loaded model across the door: `loadModel` restores a network on its own engine thread
//! (`model_thread.rs`: batching, computing, answering), which keeps it until `close()` (or until
//! the JavaScript object is collected). Calls queue to that thread and never block the event
//! loop.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use cass_core::models::Arch;
use cass_core::{Ask, CassError, LoadedModel};
use napi::Env;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::explain_options::{ExplainOptions, explain_method};
use crate::model_info::{ModelInfo, model_info};
use crate::model_thread::{Batching, Call, CloseResolver, Message, ModelOutput, Question, Resolver, serve};
use crate::shapes::{Device, Network};
use crate::{invalid, panic_message, spawn_job};

/// Calls waiting beyond this many are refused (`model-busy`) instead of growing the queue
/// without bound under a flood of requests.
const QUEUE_LIMIT: usize = 4096;
/// The most images one batch (and one call) may hold.
const MAX_BATCH_LIMIT: u32 = 1024;

/// How a loaded model batches the calls it gets.
#[napi(object)]
pub struct ModelOptions {
    /// Most images computed together (default 32).
    pub max_batch: Option<u32>,
    /// How long a batch waits for more calls once it has one, in milliseconds (default 0).
    pub batch_wait_ms: Option<f64>,
}

/// A network restored on its engine thread (see the module's doc).
#[napi]
pub struct BindingModel {
    queue: Mutex<Option<SyncSender<Message>>>,
    info: cass_core::ModelInfo,
}

/// Restores a checkpoint's network (`arch` picks one of a pre-training checkpoint) and keeps it
/// on an engine thread. Resolves once it is loaded.
#[napi]
pub fn load_model<'env>(
    env: &'env Env,
    checkpoint: String,
    arch: Option<Network>,
    device: Option<Device>,
    options: Option<ModelOptions>,
) -> Result<PromiseRaw<'env, BindingModel>> {
    let backend = device.unwrap_or(Device::Auto).into();
    let arch: Option<Arch> = arch.map(Into::into);
    let options = options.unwrap_or(ModelOptions {
        max_batch: None,
        batch_wait_ms: None,
    });
    let max_batch = options.max_batch.unwrap_or(32);
    if max_batch == 0 || max_batch > MAX_BATCH_LIMIT {
        return Err(invalid(CassError::config(
            "maxBatch",
            format!("must be an integer from 1 to {MAX_BATCH_LIMIT}, got {max_batch}"),
        )));
    }
    let wait = options.batch_wait_ms.unwrap_or(0.0);
    if !(0.0..=1000.0).contains(&wait) {
        return Err(invalid(CassError::config(
            "batchWaitMs",
            format!("must be from 0 to 1000 milliseconds, got {wait}"),
        )));
    }
    let batching = Batching {
        max_images: max_batch as usize,
        wait: Duration::from_secs_f64(wait / 1000.0),
    };
    spawn_job(env, "load-model", move || {
        let (tx, rx) = sync_channel::<Message>(QUEUE_LIMIT);
        let (loaded_tx, loaded_rx) = sync_channel(1);
        // The network lives and dies on this thread; the loader only waits for its first word.
        std::thread::Builder::new()
            .name("cass-model".into())
            .spawn(move || {
                let loaded = std::panic::catch_unwind(|| LoadedModel::load(&PathBuf::from(checkpoint), arch, backend));
                let model = match loaded {
                    Ok(Ok(m)) => m,
                    Ok(Err(e)) => return drop(loaded_tx.send(Err(e))),
                    Err(p) => return drop(loaded_tx.send(Err(panic_as_error(p)))),
                };
                if loaded_tx.send(Ok(model.info().clone())).is_ok() {
                    serve(model, rx, batching);
                }
            })
            .map_err(|e| CassError::Backend {
                message: format!("could not start the model's thread: {e}"),
            })?;
        let info = loaded_rx.recv().map_err(|_| CassError::Backend {
            message: "the model's thread ended before loading".into(),
        })??;
        Ok(BindingModel {
            queue: Mutex::new(Some(tx)),
            info,
        })
    })
}

fn panic_as_error(p: Box<dyn std::any::Any + Send>) -> CassError {
    let msg = panic_message(&p);
    cass_core::device::device_limit(&msg).unwrap_or(CassError::Backend {
        message: format!("the engine panicked while loading (a bug in cass-ssl, please report it): {msg}"),
    })
}

fn closed() -> Error {
    invalid(CassError::data(
        "model-closed",
        "this model is closed: load it again to use it",
        None,
    ))
}

#[napi]
impl BindingModel {
    #[napi(getter)]
    pub fn info(&self) -> ModelInfo {
        model_info(&self.info)
    }

    /// Queues `count` images (`imageSize` squared, RGB, 8 bits) for `scores` or `embed`.
    #[napi]
    pub fn run<'env>(
        &self,
        env: &'env Env,
        ask: String,
        pixels: Uint8Array,
        count: u32,
    ) -> Result<PromiseRaw<'env, ModelOutput>> {
        let ask = match ask.as_str() {
            "scores" => Ask::Scores,
            "embed" => Ask::Embed,
            other => {
                return Err(invalid(CassError::config(
                    "ask",
                    format!("expected scores or embed, got {other:?}"),
                )));
            }
        };
        self.queue_call(env, Question::Run(ask), pixels, count, vec![None; count as usize])
    }

    /// Queues `count` images for heat maps of where the network looked (`imageSize` squared
    /// each, in [0, 1]), with the class explained and its score.
    #[napi]
    pub fn explain<'env>(
        &self,
        env: &'env Env,
        pixels: Uint8Array,
        count: u32,
        options: ExplainOptions,
    ) -> Result<PromiseRaw<'env, ModelOutput>> {
        let method = explain_method(&options).map_err(invalid)?;
        let targets = match &options.targets {
            None => vec![None; count as usize],
            Some(t) if t.len() == count as usize => t
                .iter()
                .enumerate()
                .map(|(i, &c)| match c {
                    -1 => Ok(None),
                    c if c >= 0 => Ok(Some(c as usize)),
                    c => Err(invalid(CassError::config(
                        format!("targets[{i}]"),
                        format!("expected a class index, or -1 for the predicted class, got {c}"),
                    ))),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(t) => {
                return Err(invalid(CassError::config(
                    "targets",
                    format!("one target per image: {} for {count} images", t.len()),
                )));
            }
        };
        self.queue_call(env, Question::Explain(method), pixels, count, targets)
    }

    fn queue_call<'env>(
        &self,
        env: &'env Env,
        question: Question,
        pixels: Uint8Array,
        count: u32,
        targets: Vec<Option<usize>>,
    ) -> Result<PromiseRaw<'env, ModelOutput>> {
        let side = self.info.image_size;
        if count == 0 || count > MAX_BATCH_LIMIT || pixels.len() != count as usize * side * side * 3 {
            return Err(invalid(CassError::config(
                "images",
                format!(
                    "expected 1 to {MAX_BATCH_LIMIT} images of {side} x {side} x 3 bytes ({count} given as {} bytes)",
                    pixels.len()
                ),
            )));
        }
        let guard = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let queue = guard.as_ref().ok_or_else(closed)?;
        let (deferred, promise) = env.create_deferred::<ModelOutput, Resolver>()?;
        let call = Call {
            question,
            targets,
            pixels: pixels.to_vec(),
            count: count as usize,
            deferred,
        };
        match queue.try_send(Message::Call(call)) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Call(c))) => c.deferred.reject(invalid(CassError::data(
                "model-busy",
                format!("{QUEUE_LIMIT} calls are already waiting for this model: retry later"),
                None,
            ))),
            Err(TrySendError::Disconnected(Message::Call(c))) => c.deferred.reject(closed()),
            Err(_) => unreachable!("only calls are sent here"),
        }
        Ok(PromiseRaw::new(env.raw(), promise.raw()))
    }

    /// Frees the network once the calls queued before it are answered; later calls are an
    /// error (`model-closed`). Closing twice is harmless.
    #[napi]
    pub fn close<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let (deferred, promise) = env.create_deferred::<(), CloseResolver>()?;
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        match queue {
            Some(q) => match q.try_send(Message::Close(deferred)) {
                Ok(()) => {}
                // Close must reach the thread even when the queue is full, without blocking the
                // event loop: a helper thread waits for room.
                Err(TrySendError::Full(m)) => {
                    std::thread::spawn(move || {
                        if let Err(e) = q.send(m)
                            && let Message::Close(d) = e.0
                        {
                            d.resolve(Box::new(|_| Ok(())));
                        }
                    });
                }
                Err(TrySendError::Disconnected(Message::Close(d))) => d.resolve(Box::new(|_| Ok(()))),
                Err(TrySendError::Disconnected(_)) => unreachable!("only a close is sent here"),
            },
            None => deferred.resolve(Box::new(|_| Ok(()))),
        }
        Ok(PromiseRaw::new(env.raw(), promise.raw()))
    }

    /// Whether `close()` was called.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }
}
