//! Losses: the CASS agreement loss for pre-training and the classification losses for
//! fine-tuning.

pub mod cass;
pub mod classification;

pub use cass::{cass_loss, output_spread};
pub use classification::{ClassWeighting, ClassificationLoss, class_weights};
