use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::Distribution;

use super::*;
use crate::testing::tensor_rel_err as rel_err;

/// Our convolution against burn's, values and both gradients, over shapes that exercise every
/// branch: stride 2 with and without padding, 1x1 at stride 1 and 2, the 7x7 stem, batch 1 (the
/// product split across threads) and batches that do not divide among the threads, channel counts
/// that are not a multiple of any vector width, inputs barely larger than the kernel, batches of
/// small images that are multiplied several at a time.
#[test]
fn matches_burns_convolution_in_value_and_gradients() {
    // (batch, c_in, c_out, k, stride, pad, h, w)
    let cases = [
        (2, 8, 16, 3, 1, 1, 6, 6),
        (3, 5, 7, 3, 2, 1, 7, 9),
        (1, 13, 11, 3, 1, 1, 5, 4),
        (4, 8, 16, 1, 1, 0, 5, 5),
        (3, 6, 9, 1, 2, 0, 8, 7),
        (2, 3, 8, 7, 2, 3, 9, 11),
        (5, 4, 3, 3, 1, 0, 3, 3),
        (1, 2, 3, 3, 2, 1, 1, 2),
        (3, 17, 5, 3, 2, 0, 6, 5),
        // Small images, multiplied several at a time (groups of 5 and 4 on two threads).
        (9, 5, 7, 3, 1, 1, 5, 5),
        (8, 6, 4, 1, 1, 0, 3, 3),
        (7, 4, 6, 3, 2, 1, 6, 6),
        // Groups smaller than a thread's run, the last one short (224 wide columns: groups of
        // 2 in runs of 5); a 1x1 convolution on images too large to group.
        (10, 3, 4, 3, 1, 1, 14, 14),
        (2, 3, 5, 1, 1, 0, 20, 20),
        // Enough output channels for the exact grid (see `wide.rs`): stride 1 and 2, the 7x7
        // stem, padding on every side, an image narrower than the kernel's reach.
        (3, 4, 40, 3, 1, 1, 3, 3),
        (2, 5, 70, 3, 2, 1, 6, 5),
        (2, 3, 70, 7, 2, 3, 9, 11),
        (5, 2, 33, 3, 1, 1, 1, 2),
        // Rows of 32 or more stride-1 outputs, unfolded as runs.
        (2, 3, 4, 3, 1, 1, 3, 40),
        (1, 2, 3, 5, 1, 0, 6, 37),
    ];
    for case in cases {
        assert!(!winograd::applies(&geometry_of(case)), "{case:?} is for the unfolding");
        check_against_burn(case);
    }
}

/// The stride-1 3x3 convolutions that go through Winograd's transforms, against burn's: odd
/// output rows and columns (the last tile row or column half outside), padding 0, 1 and 2,
/// batch 1 (the products split across threads), channel counts that are not a multiple of any
/// vector width, images grouped several to a product with a short last group.
#[test]
fn winograd_matches_burns_convolution_in_value_and_gradients() {
    // (batch, c_in, c_out, k, stride, pad, h, w)
    let cases = [
        (2, 33, 35, 3, 1, 1, 8, 8),
        (1, 37, 32, 3, 1, 1, 9, 8),
        (3, 32, 40, 3, 1, 0, 11, 10),
        (2, 34, 33, 3, 1, 2, 6, 7),
        (9, 32, 36, 3, 1, 1, 8, 8),
        (17, 32, 33, 3, 1, 1, 8, 9),
        (2, 64, 48, 3, 1, 1, 13, 11),
    ];
    for case in cases {
        assert!(winograd::applies(&geometry_of(case)), "{case:?} is for the transforms");
        check_against_burn(case);
    }
}

type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

fn geometry_of((batch, c_in, c_out, k, stride, pad, h, w): Case) -> Geometry {
    Geometry {
        batch,
        c_in,
        h,
        w,
        c_out,
        k,
        stride,
        pad,
    }
}

/// Our convolution's output and both gradients against burn's on one random case.
fn check_against_burn((batch, cin, cout, k, stride, pad, h, w): Case) {
    let d = Device::flex().autodiff();
    let conv = Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(&d);
    let x = Tensor::<4>::random([batch, cin, h, w], Distribution::Normal(0.0, 1.0), &d).require_grad();
    let ours = host_conv2d(x.clone(), conv.weight.val(), stride, pad);
    let theirs = conv.forward(x.clone());
    let case = format!("b{batch} {cin}->{cout} k{k} s{stride} p{pad} {h}x{w}");
    assert_eq!(ours.dims(), theirs.dims(), "{case}: shape");
    let err = rel_err(ours.clone().inner(), theirs.clone().inner());
    assert!(err < 1e-5, "{case}: output differs by {err}");
    let probe = Tensor::<4>::random(theirs.dims(), Distribution::Normal(0.0, 1.0), &d);
    let g_ours = (ours * probe.clone()).sum().backward();
    let g_theirs = (theirs * probe).sum().backward();
    let dx = rel_err(x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap());
    let weight = conv.weight.val();
    let dw = rel_err(weight.grad(&g_ours).unwrap(), weight.grad(&g_theirs).unwrap());
    assert!(
        dx < 1e-5 && dw < 1e-5,
        "{case}: gradients differ (input {dx}, weight {dw})"
    );
}

/// An input that needs no gradient (the network's first layer) gets none, and the weight's is
/// still right: the backward pass skips the input product there.
#[test]
fn computes_only_the_gradients_asked_for() {
    let d = Device::flex().autodiff();
    let conv = Conv2dConfig::new([3, 4], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&d);
    let x = Tensor::<4>::random([2, 3, 5, 5], Distribution::Normal(0.0, 1.0), &d);
    let ours = host_conv2d(x.clone(), conv.weight.val(), 1, 1).sum().backward();
    let theirs = conv.forward(x.clone()).sum().backward();
    assert!(x.grad(&ours).is_none());
    let weight = conv.weight.val();
    let err = rel_err(weight.grad(&ours).unwrap(), weight.grad(&theirs).unwrap());
    assert!(err < 1e-5, "weight gradient differs by {err}");
}

/// Without autodiff (evaluation, prediction) it is the same function.
#[test]
fn runs_on_a_plain_flex_device() {
    let d = Device::flex();
    let conv = Conv2dConfig::new([6, 5], [3, 3])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(&d);
    let x = Tensor::<4>::random([3, 6, 9, 8], Distribution::Normal(0.0, 1.0), &d);
    let err = rel_err(host_conv2d(x.clone(), conv.weight.val(), 2, 1), conv.forward(x));
    assert!(err < 1e-5, "output differs by {err}");
}

/// The fused evaluation operation gives the same values on an autodiff device (where it is
/// composed from differentiable operations) as on a plain one (one pass on the host), through
/// the unfolding and through Winograd's transforms.
#[test]
fn fused_operation_is_the_same_function_on_both_devices() {
    for (c_in, c_out, stride) in [(4, 6, 2), (33, 34, 1)] {
        check_fused(c_in, c_out, stride);
    }
}

fn check_fused(c_in: usize, c_out: usize, stride: usize) {
    use burn::module::{Param, RunningState};

    let plain = Device::flex();
    let normal = |n: usize, std: f64| Tensor::<1>::random([n], Distribution::Normal(0.0, std), &plain);
    let mut bn = BatchNorm::new(c_out, 1e-5, &plain);
    bn.gamma = Param::from_tensor(normal(c_out, 1.0));
    bn.beta = Param::from_tensor(normal(c_out, 1.0));
    bn.running_mean = RunningState::new(normal(c_out, 0.5));
    bn.running_var = RunningState::new(normal(c_out, 1.0).abs() + 0.1);
    let x = Tensor::<4>::random([3, c_in, 9, 8], Distribution::Normal(0.0, 1.0), &plain);
    let w = Tensor::<4>::random([c_out, c_in, 3, 3], Distribution::Normal(0.0, 0.3), &plain);
    let bias = normal(c_out, 1.0);
    let (ho, wo) = ((9 + 2 - 3) / stride + 1, (8 + 2 - 3) / stride + 1);
    let r = Tensor::<4>::random([3, c_out, ho, wo], Distribution::Normal(0.0, 1.0), &plain);
    let host = host_conv2d_fused(
        x.clone(),
        (w.clone(), Some(bias.clone())),
        &bn,
        Some(r.clone()),
        (stride, 1),
        true,
    );
    let composed = host_conv2d_fused(
        x.autodiff().require_grad(),
        (w.autodiff(), Some(bias.autodiff())),
        &bn,
        Some(r.autodiff()),
        (stride, 1),
        true,
    );
    let err = rel_err(host, composed.inner());
    assert!(err < 1e-5, "{c_in}->{c_out} stride {stride}: differs by {err}");
}
