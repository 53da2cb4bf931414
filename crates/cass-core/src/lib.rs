//! `cass-core`: the CASS (Cross Architectural Self-Supervision) engine on burn.
//!
//! A ResNet and a ViT learn, without labels, to agree on the same augmented image; then either
//! is fine-tuned on a few labels. Models, losses, the training loops, augmentation on tensors,
//! metrics and checkpoints live here; the Node binding only forwards calls.

pub mod augment;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod events;
pub mod explain;
pub mod flops;
pub mod inference;
pub mod loss;
pub mod metrics;
pub mod model;
#[cfg(test)]
mod model_tests;
pub mod models;
pub mod params;
pub mod ssl;
pub mod train;
pub mod weights;

#[cfg(test)]
mod fuzz_tests;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(all(test, feature = "wgpu"))]
mod wgpu_tests;

/// The engine's own allocations go to mimalloc, which keeps freed memory for reuse: with the
/// system allocator, a training step's many short-lived tensors were returned to the operating
/// system and faulted back in page by page (`perf`: 12 % of `cpu-small`'s ViT forward pass in
/// the kernel's page-fault handler). Only Rust allocations of this library (and the addon and
/// binaries built on it) are affected; a host process such as Node keeps its own allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use device::{BackendChoice, Chosen, available_backends, resolve_explained};
pub use error::CassError;
pub use events::{CancelToken, Event, NetworkSpread, Observer, Silent};
pub use inference::{embed, evaluate, export};
pub use model::{Ask, Explanation, LoadedModel, ModelInfo, Pixels, Scoring};
pub use ssl::cass::{PretrainConfig, PretrainOutcome, Status, pretrain};
pub use ssl::dino::{DinoConfig, pretrain_dino};
pub use train::finetune::{FinetuneConfig, FinetuneOutcome, Init, Labeled, finetune};
