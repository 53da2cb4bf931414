//! Optimisation pieces and the downstream (supervised) jobs.

pub mod adam;
mod adam_host;
pub mod ema;
pub mod finetune;
pub mod finetune_config;
pub mod grads;
pub mod run;
pub mod run_config;
pub mod schedule;
