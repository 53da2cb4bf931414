//! The ResNets' convolution on the CPU backend, with its own backward pass.
//!
//! burn's Flex convolution converts every input to channels-last, unfolds it in tiles and runs
//! the product with 256-bit (AVX2) kernels; its backward pass goes through the transposed
//! convolution. On the 2-core Xeon (Sapphire Rapids) of our measurements that reached 39-48 % of
//! the matrix-product rate, where PyTorch's oneDNN convolution reached 106-111 %. Here the three
//! products of a convolution (output, input gradient, weight gradient) are matrix products per
//! image in NCHW, with no layout copies (`kernel.rs`), registered with burn's autodiff as one
//! operation so that the backward pass calls them directly. Measurements: `models/conv.rs`.
//!
//! It is reached through burn's backend-extension mechanism: the `Flex` implementation computes,
//! the `Autodiff<Flex>` implementation records the operation and its backward step. Only Flex
//! devices call it (`models::conv::conv2d` decides); GPU backends keep their own convolution.

mod batches;
mod kernel;
mod shape;
#[cfg(test)]
mod tests;
mod wide;
mod winograd;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, ExtensionType, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;

use kernel::Epilogue;
pub use shape::Geometry;

use super::batch_norm::BatchNorm;
use super::host_tensor::{Optional, dims4, values};
pub(crate) use kernel::valid as valid_columns;

/// The convolution as a backend operation (no bias: our ResNets' convolutions have none, and a
/// bias is one broadcast add on top).
#[backend_extension(Flex, Autodiff)]
pub trait HostConv: Backend {
    fn host_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: usize, pad: usize) -> FloatTensor<Self>;

    /// `relu?(bn(conv(x, weight) + bias) + residual)` with the BatchNorm's running statistics:
    /// an evaluation-mode convolution and BatchNorm (and a block's end) in one pass.
    fn host_conv2d_fused(
        #[extension_type] p: Fused<Self>,
        eps: f64,
        stride: usize,
        pad: usize,
        relu: bool,
    ) -> FloatTensor<Self>;
}

/// The tensors of [`HostConv::host_conv2d_fused`]: the input, the convolution's weight and bias,
/// the BatchNorm's scale, shift and running statistics (all `[c_out]`), the residual.
#[derive(ExtensionType)]
pub struct Fused<B: Backend> {
    pub x: FloatTensor<B>,
    pub weight: FloatTensor<B>,
    #[extension_type]
    pub bias: Optional<B>,
    pub gamma: FloatTensor<B>,
    pub beta: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub var: FloatTensor<B>,
    #[extension_type]
    pub residual: Optional<B>,
}

/// The shape of `conv(x, weight)` with this stride and padding.
fn geometry(x: &FlexTensor, weight: &FlexTensor, stride: usize, pad: usize) -> Geometry {
    let xs = x.layout().shape();
    let ws = dims4(weight.layout().shape());
    let [batch, c_in, h, w] = dims4(xs);
    assert_eq!(ws[1], c_in, "convolution weight's input channels");
    assert_eq!(ws[2], ws[3], "square convolution kernel");
    Geometry {
        batch,
        c_in,
        h,
        w,
        c_out: ws[0],
        k: ws[2],
        stride,
        pad,
    }
}

fn tensor(data: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    super::host_tensor::tensor(data, &shape)
}

impl HostConv for Flex {
    fn host_conv2d(x: FlexTensor, weight: FlexTensor, stride: usize, pad: usize) -> FlexTensor {
        let g = geometry(&x, &weight, stride, pad);
        let (ho, wo) = g.out().expect("checked by conv2d");
        let y = forward(&g, &values(&x), &values(&weight), Epilogue::default());
        tensor(y, [g.batch, g.c_out, ho, wo])
    }

    fn host_conv2d_fused(p: Fused<Self>, eps: f64, stride: usize, pad: usize, relu: bool) -> FlexTensor {
        let g = geometry(&p.x, &p.weight, stride, pad);
        let (ho, wo) = g.out().expect("checked by conv2d");
        // The per-channel scale and shift on the host: six dispatched tensor operations on 16-512
        // numbers per layer otherwise (`cpu-small`'s forward pass was the same speed either way,
        // within this VM's noise, `forward_profile`, three alternated rounds).
        let (gamma, beta, mean, var) = (values(&p.gamma), values(&p.beta), values(&p.mean), values(&p.var));
        let bias = p.bias.into_option();
        let bias = bias.as_ref().map(values);
        let scale: Vec<f32> = gamma
            .iter()
            .zip(var.iter())
            .map(|(g, v)| g / (v + eps as f32).sqrt())
            .collect();
        let shift: Vec<f32> = (0..g.c_out)
            .map(|c| beta[c] + (bias.as_ref().map_or(0.0, |b| b[c]) - mean[c]) * scale[c])
            .collect();
        let residual = p.residual.into_option();
        let residual = residual.as_ref().map(values);
        let epilogue = Epilogue {
            affine: Some((&scale, &shift)),
            residual: residual.as_deref(),
            relu,
        };
        let y = forward(&g, &values(&p.x), &values(&p.weight), epilogue);
        tensor(y, [g.batch, g.c_out, ho, wo])
    }
}

/// The output's product: Winograd's transforms for the stride-1 3x3 convolutions with enough
/// channels (`winograd/`), the unfolded patches otherwise.
fn forward(g: &Geometry, x: &[f32], weight: &[f32], epilogue: Epilogue) -> Vec<f32> {
    if winograd::applies(g) {
        winograd::forward(g, x, weight, epilogue)
    } else {
        kernel::forward(g, x, weight, epilogue)
    }
}

/// The gradients' products, chosen as for the output.
fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want: (bool, bool),
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    if winograd::applies(g) {
        winograd::backward(g, x, weight, dy, want.0, want.1)
    } else {
        kernel::backward(g, x, weight, dy, want.0, want.1)
    }
}

/// The backward step: the input and weight gradients from the saved input and weight.
#[derive(Debug)]
struct HostConvBackward;

impl Backward<Flex, 2> for HostConvBackward {
    type State = (FlexTensor, FlexTensor, usize, usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight, stride, pad) = ops.state;
        let g = geometry(&x, &weight, stride, pad);
        let (dx, dw) = backward(
            &g,
            &values(&x),
            &values(&weight),
            &values(&dy),
            (node_x.is_some(), node_w.is_some()),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, tensor(dx, [g.batch, g.c_in, g.h, g.w]));
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, tensor(dw, [g.c_out, g.c_in, g.k, g.k]));
        }
    }
}

impl<C: CheckpointStrategy> HostConv for Autodiff<Flex, C> {
    fn host_conv2d(x: FloatTensor<Self>, weight: FloatTensor<Self>, stride: usize, pad: usize) -> FloatTensor<Self> {
        match HostConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (x.into_primitive(), weight.into_primitive());
                let y = Flex::host_conv2d(x.clone(), weight.clone(), stride, pad);
                prep.finish((x, weight, stride, pad), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::host_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                stride,
                pad,
            )),
        }
    }

    /// Composed from differentiable operations (the evaluation path calls it on plain devices
    /// only; this keeps it correct anywhere).
    fn host_conv2d_fused(p: Fused<Self>, eps: f64, stride: usize, pad: usize, relu: bool) -> FloatTensor<Self> {
        let per_channel = |t: FloatTensor<Self>| {
            let c = t.shape().num_elements();
            Self::float_reshape(t, Shape::new([1, c, 1, 1]))
        };
        let mut y = Self::host_conv2d(p.x, p.weight, stride, pad);
        if let Some(b) = p.bias.into_option() {
            y = Self::float_add(y, per_channel(b));
        }
        let scale = Self::float_div(p.gamma, Self::float_sqrt(Self::float_add_scalar(p.var, eps.into())));
        let y = Self::float_mul(Self::float_sub(y, per_channel(p.mean)), per_channel(scale));
        let mut y = Self::float_add(y, per_channel(p.beta));
        if let Some(r) = p.residual.into_option() {
            y = Self::float_add(y, r);
        }
        if relu { Self::relu(y) } else { y }
    }
}

/// `conv(x, weight)` with this stride and symmetric zero padding, on a Flex device (plain or
/// autodiff); f32 only.
///
/// # Shapes
/// `x [batch, c_in, h, w], weight [c_out, c_in, k, k] -> [batch, c_out, h_out, w_out]`
pub fn host_conv2d(x: Tensor<4>, weight: Tensor<4>, stride: usize, pad: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as HostConv>::host_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        stride,
        pad,
    ))
}

/// `relu?(bn(conv(x, weight) + bias) + residual)` on a Flex device, f32, with `bn` in
/// evaluation mode (its running statistics) applied as each image's output leaves the product.
///
/// # Shapes
/// `x [batch, c_in, h, w], weight [c_out, c_in, k, k], bias and the BatchNorm's tensors [c_out],
/// residual [batch, c_out, h_out, w_out] -> [batch, c_out, h_out, w_out]`
pub fn host_conv2d_fused(
    x: Tensor<4>,
    (weight, bias): (Tensor<4>, Option<Tensor<1>>),
    bn: &BatchNorm,
    residual: Option<Tensor<4>>,
    (stride, pad): (usize, usize),
    relu: bool,
) -> Tensor<4> {
    let device = x.device();
    let fused = Fused {
        x: x.into_dispatch(),
        weight: weight.into_dispatch(),
        bias: Optional::of(bias),
        gamma: bn.gamma.val().into_dispatch(),
        beta: bn.beta.val().into_dispatch(),
        mean: bn.running_mean.value().to_device(&device).into_dispatch(),
        var: bn.running_var.value().to_device(&device).into_dispatch(),
        residual: Optional::of(residual),
    };
    Tensor::from_dispatch(<Dispatch as HostConv>::host_conv2d_fused(
        fused, bn.epsilon, stride, pad, relu,
    ))
}
