//! Losses: the CASS agreement loss and its collapse guard for pre-training, and the
//! classification losses for fine-tuning.

pub mod cass;
pub mod classification;
pub mod covariance;
pub mod dino;
pub mod variance;
pub mod vicreg;

pub use cass::{cass_loss, output_spread};
pub use classification::{ClassWeighting, ClassificationLoss, class_weights};
pub use covariance::covariance_penalty;
pub use dino::DinoLoss;
pub use variance::variance_hinge;
