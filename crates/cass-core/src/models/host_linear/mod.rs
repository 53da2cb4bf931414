//! The ViT's linear layers on the CPU backend as one operation with its own backward pass
//! (`kernel.rs`): one `gemm` product over the flattened leading dimensions.
//!
//! burn's `linear` on Flex broadcasts the weight into a batched product, and every product's
//! output is created zero-filled and then copied once more to align it (`FlexTensor::empty`:
//! `perf` of `cpu-small`'s two-view step put 5-7 % of its samples in that `memset` and `memcpy`).
//! Reached through burn's backend-extension mechanism like the convolution; only Flex devices
//! in f32 call it ([`linear`] decides).

mod kernel;
#[cfg(test)]
mod tests;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::Linear;
use burn::prelude::*;

use super::host_tensor::{Optional, on_host, tensor, values};
use kernel::Dims;

/// `x W + b` over the last axis as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait HostLinear: Backend {
    /// `x [..., d_in], weight [d_in, d_out], bias [d_out] -> [..., d_out]`
    fn host_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        #[extension_type] bias: Optional<Self>,
    ) -> FloatTensor<Self>;
}

/// The sizes of `x W` and the output's shape.
fn dims(x: &FlexTensor, weight: &FlexTensor) -> (Dims, Vec<usize>) {
    let xs: &[usize] = x.layout().shape().as_ref();
    let ws: &[usize] = weight.layout().shape().as_ref();
    let (&d_in, lead) = xs.split_last().expect("a linear layer's input has a feature axis");
    let [w_in, d_out] = ws.try_into().expect("a [d_in, d_out] weight");
    assert_eq!(w_in, d_in, "linear weight's input features");
    let mut out = lead.to_vec();
    out.push(d_out);
    let rows = lead.iter().product();
    (Dims { rows, d_in, d_out }, out)
}

impl HostLinear for Flex {
    fn host_linear(x: FlexTensor, weight: FlexTensor, bias: Optional<Self>) -> FlexTensor {
        let (d, shape) = dims(&x, &weight);
        let bias = bias.into_option();
        let y = kernel::forward(d, &values(&x), &values(&weight), bias.as_ref().map(values).as_deref());
        tensor(y, &shape)
    }
}

#[derive(Debug)]
struct LinearBackward<const N: usize>;

fn backward_step(
    parents: [Option<NodeId>; 3],
    (x, weight): (FlexTensor, FlexTensor),
    dy: FlexTensor,
    grads: &mut Gradients,
) {
    let [x_id, w_id, b_id] = parents;
    let (d, _) = dims(&x, &weight);
    let (dx, dw, db) = kernel::backward(
        d,
        (&values(&x), &values(&weight), &values(&dy)),
        (x_id.is_some(), w_id.is_some(), b_id.is_some()),
    );
    let x_shape: Vec<usize> = x.layout().shape().as_ref().to_vec();
    for (id, grad, shape) in [
        (x_id, dx, x_shape),
        (w_id, dw, vec![d.d_in, d.d_out]),
        (b_id, db, vec![d.d_out]),
    ] {
        if let (Some(id), Some(grad)) = (id, grad) {
            grads.register::<Flex>(id, tensor(grad, &shape));
        }
    }
}

impl Backward<Flex, 2> for LinearBackward<2> {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [x, w] = ops.parents.map(|p| p.map(|n| n.id));
        backward_step([x, w, None], ops.state, dy, grads);
    }
}

impl Backward<Flex, 3> for LinearBackward<3> {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        backward_step(ops.parents.map(|p| p.map(|n| n.id)), ops.state, dy, grads);
    }
}

fn record<C: CheckpointStrategy, const N: usize>(
    nodes: [NodeGuard; N],
    (x, weight, bias): (FlexTensor, FlexTensor, Optional<Flex>),
) -> FloatTensor<Autodiff<Flex, C>>
where
    LinearBackward<N>: Backward<Flex, N, State = (FlexTensor, FlexTensor)>,
{
    match LinearBackward::<N>.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = Flex::host_linear(x.clone(), weight.clone(), bias);
            prep.finish((x, weight), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(Flex::host_linear(x, weight, bias)),
    }
}

impl<C: CheckpointStrategy> HostLinear for Autodiff<Flex, C> {
    fn host_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: Optional<Self>) -> FloatTensor<Self> {
        let (x_node, w_node) = (x.node(), weight.node());
        let (x, weight) = (x.into_primitive(), weight.into_primitive());
        match bias.into_option() {
            None => record::<C, 2>([x_node, w_node], (x, weight, Optional::Nothing)),
            Some(b) => {
                let nodes = [x_node, w_node, b.node()];
                record::<C, 3>(nodes, (x, weight, Optional::Some(b.into_primitive())))
            }
        }
    }
}

/// `layer.forward(x)`, on a Flex device in f32 as one host operation ([`HostLinear`]), elsewhere
/// burn's.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    if !on_host(&x) {
        return layer.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as HostLinear>::host_linear(
        x.into_dispatch(),
        layer.weight.val().into_dispatch(),
        Optional::of(layer.bias.as_ref().map(|b| b.val())),
    ))
}
