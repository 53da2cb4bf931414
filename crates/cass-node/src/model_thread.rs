//! A loaded model's engine thread: it owns the network, takes the calls queued to it, batches
//! them, computes and answers, until it is closed or every handle is gone.
//!
//! Batching: the thread takes the first queued call, then every call already queued behind it
//! (same question, up to `maxBatch` images in all), waiting up to `batchWaitMs` more for late
//! ones (0 by default: no call is ever held back for company). While one batch computes, new
//! calls queue, so under load the batches fill by themselves and an idle model answers one image
//! as fast as it can. Scores do not depend on the batch (evaluation mode: BatchNorm uses its
//! running statistics), which `cass-core`'s model tests check.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use cass_core::explain::Method;
use cass_core::{Ask, CassError, LoadedModel, Pixels};
use napi::bindgen_prelude::*;
use napi::{Env, JsDeferred};
use napi_derive::napi;

use crate::{error_json, panic_error};

/// One answer: `rows` x `cols` values, row-major.
#[napi(object)]
pub struct ModelOutput {
    pub values: Float32Array,
    pub rows: u32,
    pub cols: u32,
    /// Explanations: per image the class explained or predicted (-1 without a classifier).
    pub classes: Option<Vec<i32>>,
    /// Explanations: that class's score (NaN without a classifier).
    pub scores: Option<Vec<f64>>,
}

pub(crate) type Resolver = Box<dyn FnOnce(Env) -> Result<ModelOutput> + Send>;
pub(crate) type CloseResolver = Box<dyn FnOnce(Env) -> Result<()> + Send>;

/// What a call asks; calls batch together when their questions are equal.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Question {
    Run(Ask),
    Explain(Method),
}

pub(crate) struct Call {
    pub(crate) question: Question,
    /// Explanations: one class (or `None`, the predicted one) per image.
    pub(crate) targets: Vec<Option<usize>>,
    pub(crate) pixels: Vec<u8>,
    pub(crate) count: usize,
    pub(crate) deferred: JsDeferred<ModelOutput, Resolver>,
}

pub(crate) enum Message {
    Call(Call),
    Close(JsDeferred<(), CloseResolver>),
}

#[derive(Clone, Copy)]
pub(crate) struct Batching {
    pub(crate) max_images: usize,
    pub(crate) wait: Duration,
}

/// The engine thread's loop: batch, compute, answer, until closed or forgotten.
pub(crate) fn serve(model: LoadedModel, rx: Receiver<Message>, b: Batching) {
    let mut held: Option<Message> = None;
    loop {
        let first = match held.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return, // every handle dropped: the model goes with this thread
            },
        };
        let call = match first {
            Message::Call(c) => c,
            Message::Close(done) => return close(model, done),
        };
        let question = call.question;
        let mut images = call.count;
        let mut batch = vec![call];
        let deadline = Instant::now() + b.wait;
        while images < b.max_images {
            let next = if b.wait.is_zero() {
                rx.try_recv().ok()
            } else {
                // A timeout or every sender gone: the batch is as full as it gets.
                rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
            };
            match next {
                Some(Message::Call(c)) if c.question == question && images + c.count <= b.max_images => {
                    images += c.count;
                    batch.push(c);
                }
                Some(other) => {
                    held = Some(other);
                    break;
                }
                None => break,
            }
        }
        answer(&model, question, batch, images);
    }
}

/// The class and score of each explained image.
type Explained = (Vec<Option<usize>>, Vec<Option<f32>>);

/// One forward pass's answer: values row-major, `cols` per image, and for explanations the
/// class and score of each image.
struct Answer {
    values: Vec<f32>,
    cols: usize,
    explained: Option<Explained>,
}

fn compute(
    model: &LoadedModel,
    question: Question,
    pixels: &Pixels,
    targets: &[Option<usize>],
) -> std::result::Result<Answer, CassError> {
    Ok(match question {
        Question::Run(ask) => Answer {
            values: model.run(ask, pixels)?,
            cols: model.row_width(ask),
            explained: None,
        },
        Question::Explain(method) => {
            let e = model.explain(pixels, method, targets)?;
            let side = model.info().image_size;
            Answer {
                values: e.maps,
                cols: side * side,
                explained: Some((e.classes, e.scores)),
            }
        }
    })
}

fn answer(model: &LoadedModel, question: Question, batch: Vec<Call>, images: usize) {
    let mut bytes = Vec::with_capacity(batch.iter().map(|c| c.pixels.len()).sum());
    let mut targets = Vec::new();
    for c in &batch {
        bytes.extend_from_slice(&c.pixels);
        targets.extend_from_slice(&c.targets);
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        compute(
            model,
            question,
            &Pixels {
                bytes: &bytes,
                count: images,
            },
            &targets,
        )
    }));
    match result {
        Ok(Ok(Answer {
            values,
            cols,
            explained,
        })) => {
            let mut at = 0;
            for c in batch {
                let rows = values[at * cols..(at + c.count) * cols].to_vec();
                let (classes, scores) = match &explained {
                    Some((classes, scores)) => (
                        Some(
                            classes[at..at + c.count]
                                .iter()
                                .map(|k| k.map_or(-1, |k| k as i32))
                                .collect(),
                        ),
                        Some(
                            scores[at..at + c.count]
                                .iter()
                                .map(|s| s.map_or(f64::NAN, f64::from))
                                .collect(),
                        ),
                    ),
                    None => (None, None),
                };
                at += c.count;
                let count = c.count as u32;
                c.deferred.resolve(Box::new(move |_| {
                    Ok(ModelOutput {
                        values: Float32Array::new(rows),
                        rows: count,
                        cols: cols as u32,
                        classes,
                        scores,
                    })
                }));
            }
        }
        Ok(Err(e)) => {
            for c in batch {
                c.deferred.reject(Error::from_reason(error_json(&e)));
            }
        }
        Err(p) => {
            for c in batch {
                c.deferred.reject(panic_error(&p));
            }
        }
    }
}

fn close(model: LoadedModel, done: JsDeferred<(), CloseResolver>) {
    drop(model); // frees the weights (on the device too) before `close()` resolves
    done.resolve(Box::new(|_| Ok(())));
}
