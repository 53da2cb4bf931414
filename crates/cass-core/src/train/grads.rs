//! Gradients gathered by parameter, between a step's two parts ([`crate::ssl::step`]).

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};

/// The parameter-wise sum of two gradients of `module`'s parameters.
pub fn add_grads<M: Module>(module: &M, a: GradientsParams, b: GradientsParams) -> GradientsParams {
    let mut sum = GradientsAccumulator::<M>::new();
    sum.accumulate(module, a);
    sum.accumulate(module, b);
    sum.grads()
}
