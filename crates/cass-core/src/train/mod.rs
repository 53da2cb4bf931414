//! Optimisation pieces and the downstream (supervised) jobs.

pub mod adam;
pub mod finetune;
pub mod run;
pub mod schedule;
