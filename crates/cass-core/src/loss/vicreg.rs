//! The VICReg loss (Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance
//! Regularization for Self-Supervised Learning", ICLR 2022, eq. 6; `main_vicreg.py`'s
//! `VICReg.forward`), on the expander outputs `x`, `y` of the two views of a batch:
//!
//! `lambda * mse(x, y) + mu * (V(x) + V(y)) / 2 + nu * (C(x) + C(y))`
//!
//! with `V` the hinge `mean_d relu(1 - sqrt(var(z_d) + 1e-4))` ([`super::variance::std_hinge`])
//! and `C` the off-diagonal covariance `sum_{i != j} C_ij^2 / D` ([`super::covariance`]), both on
//! the raw outputs with the unbiased (`N - 1`) estimates. The paper's weights are 25 / 25 / 1.
//! This differs from CASS's collapse guard, which applies the same two terms to L2-normalised
//! outputs scaled by `sqrt(D)`, with the biased estimates, a target of 0.5 by default and no 1/2.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::covariance::off_diagonal_covariance;
use super::variance::std_hinge;

/// The weights of the three terms: `lambda`, `mu`, `nu` in the paper.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VicregWeights {
    pub invariance: f64,
    pub variance: f64,
    pub covariance: f64,
}

impl Default for VicregWeights {
    /// The paper's 25 / 25 / 1.
    fn default() -> Self {
        Self {
            invariance: 25.0,
            variance: 25.0,
            covariance: 1.0,
        }
    }
}

/// The loss (a tensor carrying the graph) and its three terms, unweighted, as numbers.
pub struct VicregParts {
    pub total: Tensor<1>,
    pub invariance: f64,
    pub variance: f64,
    pub covariance: f64,
}

/// # Shapes
/// `x`, `y`: `[batch, dim]` -> total `[1]`
pub fn vicreg_loss(x: Tensor<2>, y: Tensor<2>, w: VicregWeights) -> VicregParts {
    let invariance = (x.clone() - y.clone()).square().mean();
    let variance = (std_hinge(x.clone(), 1.0, true) + std_hinge(y.clone(), 1.0, true)).mul_scalar(0.5);
    let covariance = off_diagonal_covariance(x, true) + off_diagonal_covariance(y, true);
    let value = |t: &Tensor<1>| t.clone().into_scalar::<f32>() as f64;
    let (inv, var, cov) = (value(&invariance), value(&variance), value(&covariance));
    let total =
        invariance.mul_scalar(w.invariance) + variance.mul_scalar(w.variance) + covariance.mul_scalar(w.covariance);
    VicregParts {
        total,
        invariance: inv,
        variance: var,
        covariance: cov,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{device, rand_tensor, scalar};

    #[test]
    fn each_term_follows_its_definition_on_a_hand_computed_batch() {
        let d = device();
        // x = [[0, 0], [2, 2]]: per dimension mean 1, unbiased variance 2, std sqrt(2 + 1e-4) > 1,
        // so no variance penalty; the two dimensions are equal, covariance 2 off the diagonal.
        let x = Tensor::<2>::from_floats([[0.0, 0.0], [2.0, 2.0]], &d);
        let y = Tensor::<2>::from_floats([[1.0, 0.0], [2.0, 2.0]], &d);
        let p = vicreg_loss(x.clone(), y.clone(), VicregWeights::default());
        assert!((p.invariance - 0.25).abs() < 1e-6, "{}", p.invariance);
        // y: dim 0 has var 0.5 (std ~0.7072): hinge 0.2928 / 2 dims; halved over the views.
        let std0 = (0.5f64 + 1e-4).sqrt();
        assert!((p.variance - (1.0 - std0) / 2.0 / 2.0).abs() < 1e-5, "{}", p.variance);
        // C(x): off-diagonal 2 (twice), 2 * 2^2 / D = 4; C(y): centred rows [-0.5, -1], [0.5, 1],
        // off-diagonal 1, 2 * 1^2 / D = 1.
        assert!((p.covariance - 5.0).abs() < 1e-5, "{}", p.covariance);
        let want = 25.0 * p.invariance + 25.0 * p.variance + p.covariance;
        assert!((scalar(p.total) as f64 - want).abs() < 1e-4);
    }

    #[test]
    fn invariant_to_swapping_the_views_and_zero_invariance_for_equal_ones() {
        let d = device();
        let x = rand_tensor([16, 8], 1, &d);
        let y = rand_tensor([16, 8], 2, &d);
        let a = scalar(vicreg_loss(x.clone(), y.clone(), VicregWeights::default()).total);
        let b = scalar(vicreg_loss(y, x.clone(), VicregWeights::default()).total);
        assert!((a - b).abs() < 1e-4 * a.abs().max(1.0));
        assert_eq!(vicreg_loss(x.clone(), x, VicregWeights::default()).invariance, 0.0);
    }

    #[test]
    fn collapsed_outputs_pay_the_full_variance_hinge() {
        let d = device();
        let same = rand_tensor([1, 8], 3, &d).repeat_dim(0, 16);
        let p = vicreg_loss(same.clone(), same, VicregWeights::default());
        // std = sqrt(1e-4) = 0.01 in every dimension, for both views.
        assert!((p.variance - 0.99).abs() < 1e-4, "{}", p.variance);
        assert!(p.covariance.abs() < 1e-6);
    }
}
