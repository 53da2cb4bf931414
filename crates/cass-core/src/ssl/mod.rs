//! Self-supervised pre-training.

pub mod cass;
