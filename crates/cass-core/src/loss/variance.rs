//! The variance hinge, a collapse guard for CASS from random weights (the variance term of
//! VICReg: Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
//! Self-Supervised Learning", ICLR 2022), applied to the L2-normalised head outputs:
//! `H(v) = mean_d relu(gamma - s_d)` with `s_d = sqrt(var_b(z_d) + eps)`, `z = sqrt(D) F(v)`.
//!
//! The CASS loss has a constant output as a global minimum (no negatives, predictor or
//! stop-gradient). The hinge costs nothing while each output dimension keeps a standard
//! deviation of at least `gamma` across the batch, and pushes the dimensions apart when they
//! shrink below it. Scaling by `sqrt(D)` makes `s_d` about 1 for outputs spread like random
//! directions whatever the width `D`, so one `gamma` fits every head width; the eps (1e-4, as
//! VICReg's) keeps the gradient of the square root finite at a full collapse. The variance is
//! the biased batch variance, the same statistic [`super::output_spread`] reports.

use burn::prelude::*;
use burn::tensor::activation::relu;

use super::cass::l2_normalize;

const VAR_EPS: f64 = 1e-4;

/// `mean_d relu(gamma - sqrt(var_b(sqrt(D) F(v))_d + eps))`; lies in `[0, gamma]` for
/// `gamma >= 0`.
///
/// # Shapes
/// `v`: `[batch, dim]` -> `[1]`
pub fn variance_hinge(v: Tensor<2>, gamma: f64) -> Tensor<1> {
    let [_, d] = v.dims();
    let z = l2_normalize(v).mul_scalar((d as f64).sqrt()); // [batch, dim]
    std_hinge(z, gamma, false)
}

/// `mean_d relu(gamma - sqrt(var_b(z_d) + eps))` of `z` as given, the variance term of VICReg
/// itself ([`super::vicreg`]: raw expander outputs, `gamma` 1, the unbiased variance as its
/// `torch.var`); `unbiased` divides by `batch - 1`, else by `batch` (the guard's form above).
///
/// # Shapes
/// `z`: `[batch, dim]` -> `[1]`
pub fn std_hinge(z: Tensor<2>, gamma: f64, unbiased: bool) -> Tensor<1> {
    let [n, _] = z.dims();
    let centred = z.clone() - z.mean_dim(0); // [batch, dim]
    let var = if unbiased {
        centred.square().sum_dim(0).div_scalar((n as f64 - 1.0).max(1.0))
    } else {
        centred.square().mean_dim(0)
    }; // [1, dim]
    let std = var.add_scalar(VAR_EPS).sqrt(); // [1, dim]
    relu(std.neg().add_scalar(gamma)).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{device, rand_tensor, scalar};

    #[test]
    fn full_penalty_for_collapsed_outputs_and_none_for_spread_ones() {
        let d = device();
        let same = rand_tensor([1, 64], 4, &d).repeat_dim(0, 16);
        let collapsed = scalar(variance_hinge(same, 0.5));
        // s_d = sqrt(eps) = 0.01 for every dimension.
        assert!((collapsed - 0.49).abs() < 1e-4, "{collapsed}");
        let random = rand_tensor([256, 64], 5, &d);
        assert!(scalar(variance_hinge(random, 0.5)) < 1e-6);
    }

    #[test]
    fn bounded_finite_and_scale_invariant_for_batch_sizes_1_to_8() {
        let d = device();
        for batch in 1..=8 {
            let v = rand_tensor([batch, 16], batch as u64, &d);
            let h = scalar(variance_hinge(v.clone(), 1.0));
            assert!(h.is_finite() && (0.0..=1.0).contains(&h), "batch {batch}: {h}");
            let scaled = scalar(variance_hinge(v.mul_scalar(50.0), 1.0));
            assert!((h - scaled).abs() < 1e-5, "batch {batch}: {h} vs {scaled}");
        }
    }

    #[test]
    fn gradient_pushes_collapsed_outputs_apart() {
        let d = device();
        // Nearly identical rows: one small step down the hinge's gradient must spread them.
        let v0 = rand_tensor([1, 8], 1, &d).repeat_dim(0, 6) + rand_tensor([6, 8], 2, &d).mul_scalar(1e-2);
        let v = v0.clone().autodiff().require_grad();
        let before = scalar(variance_hinge(v0.clone(), 1.0));
        let grads = variance_hinge(v.clone(), 1.0).backward();
        let g = v.grad(&grads).expect("the hinge depends on every output");
        let after = scalar(variance_hinge(v0 - g.mul_scalar(0.05), 1.0));
        assert!(after < before, "{before} -> {after}");
    }
}
