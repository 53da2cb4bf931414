//! Self-supervised pre-training.

pub mod cass;
pub mod objective;
