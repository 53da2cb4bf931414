use burn::tensor::Distribution;
use burn::tensor::activation;
use burn::tensor::module::batch_norm_train;

use super::*;
use crate::testing::tensor_rel_err as rel_err;

/// The fused operation against burn's training BatchNorm followed by the add and the ReLU:
/// output, statistics, and the gradients of the input, gamma, beta and the residual, with and
/// without each of the residual and the ReLU, over shapes with planes shorter and longer than
/// the 16 summing lanes, one image, one value per channel in the batch, and inputs far from
/// zero (the variance's accuracy).
#[test]
fn matches_burns_operations_in_value_and_gradients() {
    let d = Device::flex().autodiff();
    // (batch, channels, h, w, offset of the input's mean)
    let cases = [
        (4, 3, 5, 5, 0.0),
        (2, 16, 8, 8, 0.0),
        (1, 5, 3, 7, 0.0),
        (3, 7, 1, 1, 0.0),
        (2, 4, 17, 3, 100.0),
        (16, 2, 1, 1, -3.0),
    ];
    for (batch, channels, h, w, offset) in cases {
        for (with_residual, relu) in [(false, false), (false, true), (true, false), (true, true)] {
            let case = format!("b{batch} c{channels} {h}x{w} offset {offset} residual {with_residual} relu {relu}");
            let x = (Tensor::<4>::random([batch, channels, h, w], Distribution::Normal(0.0, 2.0), &d) + offset)
                .require_grad();
            let gamma = Tensor::<1>::random([channels], Distribution::Normal(1.0, 0.5), &d).require_grad();
            let beta = Tensor::<1>::random([channels], Distribution::Normal(0.0, 0.5), &d).require_grad();
            let r = with_residual.then(|| {
                Tensor::<4>::random([batch, channels, h, w], Distribution::Normal(0.0, 1.0), &d).require_grad()
            });
            let ours = host_batch_norm_train(x.clone(), (gamma.clone(), beta.clone()), r.clone(), 1e-5, relu);
            let theirs = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
            let (mean, var) = (theirs.mean.clone(), theirs.variance.clone());
            let mut y = theirs.output;
            if let Some(r) = &r {
                y = y + r.clone();
            }
            if relu {
                y = activation::relu(y);
            }
            let err = rel_err(ours.output.clone().inner(), y.clone().inner());
            assert!(err < 1e-5, "{case}: output differs by {err}");
            let err_mean = rel_err(ours.mean.clone().inner(), mean.inner());
            let err_var = rel_err(ours.variance.clone().inner(), var.inner());
            assert!(
                err_mean < 1e-5 && err_var < 1e-5,
                "{case}: statistics differ by {err_mean}, {err_var}"
            );
            let probe = Tensor::<4>::random([batch, channels, h, w], Distribution::Normal(0.0, 1.0), &d);
            let g_ours = (ours.output * probe.clone()).sum().backward();
            let g_theirs = (y * probe).sum().backward();
            let dx = rel_err(x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap());
            let dgamma = rel_err(gamma.grad(&g_ours).unwrap(), gamma.grad(&g_theirs).unwrap());
            let dbeta = rel_err(beta.grad(&g_ours).unwrap(), beta.grad(&g_theirs).unwrap());
            assert!(
                dx < 1e-4 && dgamma < 1e-4 && dbeta < 1e-4,
                "{case}: gradients differ by {dx} (input), {dgamma} (gamma), {dbeta} (beta)"
            );
            if let Some(r) = &r {
                let dr = rel_err(r.grad(&g_ours).unwrap(), r.grad(&g_theirs).unwrap());
                assert!(dr < 1e-6, "{case}: residual gradient differs by {dr}");
            }
        }
    }
}

/// Only the gradients asked for are registered: an input that does not require one gets none.
#[test]
fn computes_only_the_gradients_asked_for() {
    let d = Device::flex().autodiff();
    let x = Tensor::<4>::random([2, 3, 4, 4], Distribution::Default, &d);
    let gamma = Tensor::<1>::ones([3], &d).require_grad();
    let beta = Tensor::<1>::zeros([3], &d);
    let out = host_batch_norm_train(x.clone(), (gamma.clone(), beta.clone()), None, 1e-5, true);
    let g = out.output.sum().backward();
    assert!(gamma.grad(&g).is_some());
    assert!(x.grad(&g).is_none() && beta.grad(&g).is_none());
}

/// On a plain device the operation computes the same output, untracked.
#[test]
fn runs_on_a_plain_flex_device() {
    let plain = Device::flex();
    let x = Tensor::<4>::random([3, 2, 3, 3], Distribution::Normal(0.0, 1.0), &plain);
    let (gamma, beta) = (Tensor::<1>::ones([2], &plain), Tensor::<1>::zeros([2], &plain));
    let ours = host_batch_norm_train(x.clone(), (gamma.clone(), beta.clone()), None, 1e-5, false);
    let theirs = batch_norm_train(x, gamma, beta, 1e-5);
    assert!(rel_err(ours.output, theirs.output) < 1e-5);
}
