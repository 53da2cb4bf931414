//! The convolution of our ResNets.
//!
//! A convolution can run as one matrix product over the whole batch: the `k x k` shifted windows
//! of the (padded, channels-last) input are stacked into `[batch * positions, k * k * c_in]`
//! (im2col) and multiplied by the reshaped kernel. It is the same convolution, summed in another
//! order, built from tensor operations, so autodiff differentiates it and every backend runs it.
//!
//! On CUDA it replaces the backend's convolution: burn 0.22's own CUDA convolution ran
//! ResNet-50's forward pass 11 times slower on an H200 (0.548 s against 0.048 s at 384 px,
//! batch 16) and the CASS step 1.6 times slower (`bench/results/2026-11-26-h200-*`). On the CPU
//! it made no step faster than burn's Flex convolution; there the convolution is our own,
//! `super::host_conv` (per-image products in NCHW with its own backward pass), and in evaluation
//! it carries the folded BatchNorm, the residual and the ReLU ([`conv_bn`]). Measured against
//! the build with burn's Flex convolution, max pooling and separate BatchNorm, alternated, three
//! rounds (`bench/results/2026-12-06-vm-cpu-cnn-before-after-final.json`): the evaluation
//! forward pass 3.9-4.3x faster for `cpu-small` at batch 16 and 64, 2.1-2.3x for ResNet-18 at
//! 96 px; the CASS step 1.34-1.52x (`cpu-small`, one view), 1.05-1.23x (two views), 1.43-1.52x
//! (ResNet-18 + ViT-Ti, 96 px).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use burn::tensor::s;

use super::batch_norm::BatchNorm;
use super::host_conv::{host_conv2d, host_conv2d_fused};
use super::host_tensor::on_host;

/// Which convolution runs. A field of the run configs (`conv`), saved with their checkpoints,
/// and held by each [`super::ResNet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvStrategy {
    /// On GPU backends, the batched product for every convolution it can express; on the CPU,
    /// `super::host_conv` (f32, the same shapes), with BatchNorm folded in evaluation and, in
    /// training, `super::host_norm` (BatchNorm with the block's add and ReLU).
    #[default]
    Auto,
    /// Always the backend's convolution (and BatchNorm as its own operation).
    Native,
    /// Every convolution it can express (no groups or dilation, square kernel, symmetric
    /// padding), on every backend.
    Batched,
}

/// `conv.forward(x)`, computed as one batched matrix product where `strategy` says so (see the
/// module documentation).
///
/// # Shapes
/// `[batch, c_in, h, w] -> [batch, c_out, h_out, w_out]`
pub fn conv2d(conv: &Conv2d, x: Tensor<4>, strategy: ConvStrategy) -> Tensor<4> {
    let with_bias = |y: Tensor<4>| match &conv.bias {
        Some(b) => y + b.val().reshape([1, -1, 1, 1]),
        None => y,
    };
    if let Some(pad) = host_geometry(conv, &x, strategy) {
        return with_bias(host_conv2d(x, conv.weight.val(), conv.stride[0], pad));
    }
    let batched_here = match strategy {
        ConvStrategy::Native => false,
        ConvStrategy::Batched => true,
        ConvStrategy::Auto => x.device().inner() != Device::flex(),
    };
    match matrix_padding(conv, &x) {
        Some(p) if batched_here => {
            let [_, _, h, w] = x.dims();
            let (k, s) = (conv.kernel_size[0], conv.stride[0]);
            let out = [(h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1];
            with_bias(batched(x, conv.weight.val(), s, p, out))
        }
        _ => conv.forward(x),
    }
}

/// `relu?(bn(conv(x)) + residual)`: a convolution, its BatchNorm and what follows them in a
/// ResNet block. In evaluation on the CPU backend (a plain Flex input, so BatchNorm uses its
/// running statistics) the BatchNorm is folded into the convolution's output as a per-channel
/// scale and shift, `gamma / sqrt(var + eps)` and `beta - mean * scale`, and applied with the
/// residual and the ReLU in the same pass over each image's output ([`host_conv2d_fused`]);
/// elsewhere (training, autodiff inputs, GPU backends) it is the three operations.
///
/// # Shapes
/// `x [batch, c_in, h, w], residual [batch, c_out, h_out, w_out] -> [batch, c_out, h_out, w_out]`
pub fn conv_bn(
    conv: &Conv2d,
    bn: &BatchNorm,
    x: Tensor<4>,
    strategy: ConvStrategy,
    residual: Option<Tensor<4>>,
    relu: bool,
) -> Tensor<4> {
    if let Some(pad) = host_geometry(conv, &x, strategy)
        && !x.device().is_autodiff()
    {
        let bias = conv.bias.as_ref().map(|b| b.val());
        let geometry = (conv.stride[0], pad);
        return host_conv2d_fused(x, (conv.weight.val(), bias), bn, residual, geometry, relu);
    }
    let host = strategy == ConvStrategy::Auto;
    bn.forward_block(conv2d(conv, x, strategy), residual, relu, host)
}

/// The padding of `conv` when the CPU convolution computes it on `x` (see [`ConvStrategy::Auto`]).
fn host_geometry(conv: &Conv2d, x: &Tensor<4>, strategy: ConvStrategy) -> Option<usize> {
    (strategy == ConvStrategy::Auto && on_host(x))
        .then(|| matrix_padding(conv, x))
        .flatten()
}

/// The padding of `conv` when it can run as matrix products (batched or on the CPU): no groups
/// or dilation, a square kernel, one stride and one padding for both axes, and an input that
/// covers the kernel once padded.
fn matrix_padding(conv: &Conv2d, x: &Tensor<4>) -> Option<usize> {
    let [_, _, h, w] = x.dims();
    let pad = symmetric_padding(&conv.padding)?;
    let [kh, kw] = conv.kernel_size;
    let eligible = conv.groups == 1 && conv.dilation == [1, 1] && kh == kw && conv.stride[0] == conv.stride[1];
    (eligible && h + 2 * pad >= kh && w + 2 * pad >= kw).then_some(pad)
}

/// One padding for all four sides, if the padding is that.
pub(super) fn symmetric_padding(padding: &PaddingConfig2d) -> Option<usize> {
    match padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right && top == left => {
            Some(*top)
        }
        PaddingConfig2d::Valid => Some(0),
        _ => None,
    }
}

/// Convolution as one matrix product over the batch (stride `s`, symmetric zero padding `p`).
fn batched(x: Tensor<4>, weight: Tensor<4>, s: usize, p: usize, [ho, wo]: [usize; 2]) -> Tensor<4> {
    let [b, c, _, _] = x.dims();
    let [co, _, k, _] = weight.dims();
    let x = if p > 0 {
        x.pad([(p, p), (p, p)], PadMode::Constant(0.0))
    } else {
        x
    };
    let x = x.permute([0, 2, 3, 1]); // [b, h, w, c]
    let rows = if k == 1 && s == 1 {
        x.reshape([b * ho * wo, c])
    } else {
        let step = s as isize;
        let windows: Vec<Tensor<4>> = (0..k * k)
            .map(|i| {
                let (dy, dx) = (i / k, i % k);
                x.clone().slice(s![
                    ..,
                    dy..dy + s * (ho - 1) + 1;step,
                    dx..dx + s * (wo - 1) + 1;step,
                    ..
                ])
            })
            .collect();
        // [b, ho, wo, k * k, c]: each row is one output position's receptive field.
        Tensor::stack::<5>(windows, 3).reshape([b * ho * wo, k * k * c])
    };
    // The kernel in the same (ky, kx, c) order: [c_out, c, k, k] -> [k * k * c, c_out].
    let w = weight.permute([0, 2, 3, 1]).reshape([co, k * k * c]).transpose();
    rows.matmul(w).reshape([b, ho, wo, co]).permute([0, 3, 1, 2])
}

#[cfg(test)]
mod tests {
    use burn::module::{Param, RunningState};
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    use super::*;

    /// In evaluation on the CPU, the folded BatchNorm with its residual and ReLU in the
    /// convolution's pass equals burn's convolution, BatchNorm, add and ReLU one after another,
    /// with non-trivial running statistics, a bias, stride 2 and a batch of 1.
    #[test]
    fn folded_batch_norm_matches_the_separate_operations() {
        let d = Device::flex();
        let normal = |n: usize, mean: f64, std: f64| Tensor::<1>::random([n], Distribution::Normal(mean, std), &d);
        for (batch, cin, cout, k, stride, pad, bias, residual, relu) in [
            (3, 5, 7, 3, 1, 1, false, true, true),
            (1, 6, 4, 3, 2, 1, true, false, true),
            (2, 4, 9, 1, 2, 0, false, false, false),
            (4, 3, 6, 7, 2, 3, true, true, false),
            (9, 5, 6, 3, 1, 1, false, true, true),
        ] {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(bias)
                .init(&d);
            let mut bn = BatchNorm::new(cout, 1e-5, &d);
            bn.gamma = Param::from_tensor(normal(cout, 1.0, 0.5));
            bn.beta = Param::from_tensor(normal(cout, 0.0, 0.5));
            bn.running_mean = RunningState::new(normal(cout, 0.0, 0.3));
            bn.running_var = RunningState::new(normal(cout, 0.0, 1.0).abs() + 0.1);
            let side = if batch > 4 { 4 } else { 9 }; // small images are multiplied in groups
            let x = Tensor::<4>::random([batch, cin, side, side - 1], Distribution::Normal(0.0, 1.0), &d);
            let out = conv.forward(x.clone()).dims();
            let r = residual.then(|| Tensor::<4>::random(out, Distribution::Normal(0.0, 1.0), &d));
            let folded = conv_bn(&conv, &bn, x.clone(), ConvStrategy::Auto, r.clone(), relu);
            let separate = conv_bn(&conv, &bn, x, ConvStrategy::Native, r, relu);
            let scale = separate.clone().abs().max().into_scalar::<f32>().max(1.0);
            let err = (folded - separate).abs().max().into_scalar::<f32>() / scale;
            assert!(
                err < 1e-5,
                "k{k} s{stride} bias {bias} residual {residual} relu {relu}: differs by {err}"
            );
        }
    }

    /// The batched path against burn's convolution, values and gradients, for the shapes our
    /// ResNets use (3x3 stride 1 and 2, 1x1 stride 1 and 2, 7x7 stride 2).
    #[test]
    fn batched_convolution_matches_burn() {
        let d = Device::flex().autodiff();
        for (cin, cout, k, stride, pad, size) in [
            (8, 16, 3, 1, 1, 6),
            (8, 16, 3, 2, 1, 7),
            (8, 16, 1, 1, 0, 5),
            (8, 16, 1, 2, 0, 8),
            (3, 8, 7, 2, 3, 9),
        ] {
            let conv = Conv2dConfig::new([cin, cout], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(true)
                .init(&d);
            let x = Tensor::<4>::random([3, cin, size, size], Distribution::Normal(0.0, 1.0), &d).require_grad();
            let probe = Tensor::<4>::random(conv.forward(x.clone()).dims(), Distribution::Default, &d);
            let ours = conv2d(&conv, x.clone(), ConvStrategy::Batched);
            let theirs = conv.forward(x.clone());
            assert_eq!(ours.dims(), theirs.dims());
            let tol = 1e-4;
            ours.clone().inner().into_data().assert_approx_eq::<f32>(
                &theirs.clone().inner().into_data(),
                burn::tensor::Tolerance::absolute(tol),
            );
            let g_ours = (ours * probe.clone()).sum().backward();
            let g_theirs = (theirs * probe).sum().backward();
            for (what, a, b) in [
                ("input", x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap()),
                (
                    "weight",
                    conv.weight.val().grad(&g_ours).unwrap(),
                    conv.weight.val().grad(&g_theirs).unwrap(),
                ),
            ] {
                let err = (a.clone() - b.clone()).abs().max().into_scalar::<f32>();
                let scale = b.abs().max().into_scalar::<f32>();
                assert!(
                    err <= tol * scale.max(1.0),
                    "k{k} s{stride}: {what} gradient differs by {err} (scale {scale})"
                );
            }
        }
    }
}
