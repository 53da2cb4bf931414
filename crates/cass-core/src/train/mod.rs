//! Optimisation pieces and the downstream (supervised) jobs.

pub mod adam;
pub mod ema;
pub mod finetune;
pub mod finetune_config;
pub mod run;
pub mod schedule;
