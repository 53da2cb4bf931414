//! The ResNets' training-mode BatchNorm on the CPU backend, with the residual add and the ReLU
//! that follow it in a block, as one operation with its own backward pass (`kernel.rs`).
//!
//! burn's `batch_norm_train` on Flex is its backend-generic default: the statistics from
//! transposed copies of the input, then about a dozen element-wise operations forward and as
//! many backward, before the block's add and ReLU record their own. Reached, like the
//! convolution, through burn's backend-extension mechanism; only Flex devices in f32 call it
//! (`super::batch_norm::BatchNorm::forward_block` decides).

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
use burn::backend::{AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;

use super::host_tensor::{Optional, tensor, values};
use kernel::{Planes, Wanted};

/// Training-mode BatchNorm over axis 1, then a residual add and a ReLU, as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait HostNorm: Backend {
    /// `(relu?(bn(x) + residual), mean, variance)`: the output with the batch's statistics,
    /// and those statistics per channel (the variance biased), for the running estimates.
    fn host_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        #[extension_type] residual: Optional<Self>,
        eps: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The layout of a `[batch, channels, ...]` tensor.
fn planes(x: &FlexTensor) -> Planes {
    let dims: &[usize] = x.layout().shape().as_ref();
    assert!(dims.len() >= 2, "BatchNorm's input has a channel axis");
    Planes {
        batch: dims[0],
        channels: dims[1],
        plane: dims[2..].iter().product(),
    }
}

impl HostNorm for Flex {
    fn host_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        residual: Optional<Self>,
        eps: f64,
        relu: bool,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let p = planes(&x);
        let residual = residual.into_option();
        let out = kernel::forward(
            p,
            &values(&x),
            (&values(&gamma), &values(&beta)),
            residual.as_ref().map(values).as_deref(),
            eps as f32,
            relu,
        );
        let shape: &[usize] = x.layout().shape().as_ref();
        (
            tensor(out.y, shape),
            tensor(out.mean, &[p.channels]),
            tensor(out.var, &[p.channels]),
        )
    }
}

/// What the backward step keeps: the input, the scale, the batch's statistics, the output when a
/// ReLU needs its sign, epsilon.
#[derive(Debug, Clone)]
struct State {
    x: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    var: FlexTensor,
    y: Option<FlexTensor>,
    eps: f64,
}

/// The backward step with `N` parents: the input, gamma, beta, and the residual when there is one.
#[derive(Debug)]
struct NormBackward<const N: usize>;

fn backward_step(parents: [Option<NodeId>; 4], state: State, dy: FlexTensor, grads: &mut Gradients) {
    let [x_id, gamma_id, beta_id, residual_id] = parents;
    let p = planes(&state.x);
    let want = Wanted {
        x: x_id.is_some(),
        gamma: gamma_id.is_some(),
        beta: beta_id.is_some(),
        residual: residual_id.is_some(),
    };
    let y = state.y.as_ref().map(values);
    let g = kernel::backward(
        p,
        (&values(&state.x), y.as_deref(), &values(&dy)),
        &values(&state.gamma),
        (&values(&state.mean), &values(&state.var)),
        state.eps as f32,
        want,
    );
    let shape: &[usize] = state.x.layout().shape().as_ref();
    let channel = [p.channels];
    for (id, grad, shape) in [
        (x_id, g.x, shape),
        (gamma_id, g.gamma, &channel[..]),
        (beta_id, g.beta, &channel[..]),
        (residual_id, g.residual, shape),
    ] {
        if let (Some(id), Some(grad)) = (id, grad) {
            grads.register::<Flex>(id, tensor(grad, shape));
        }
    }
}

impl Backward<Flex, 3> for NormBackward<3> {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [x, gamma, beta] = ops.parents.map(|p| p.map(|n| n.id));
        backward_step([x, gamma, beta, None], ops.state, dy, grads);
    }
}

impl Backward<Flex, 4> for NormBackward<4> {
    type State = State;

    fn backward(self, ops: Ops<State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        backward_step(ops.parents.map(|p| p.map(|n| n.id)), ops.state, dy, grads);
    }
}

type AutodiffFlex<C> = Autodiff<Flex, C>;

/// The operation's output on the autodiff device: the tracked output, the untracked mean and
/// variance.
type Recorded<C> = (
    FloatTensor<AutodiffFlex<C>>,
    FloatTensor<AutodiffFlex<C>>,
    FloatTensor<AutodiffFlex<C>>,
);

/// Records the operation with these parents (the residual last, if any) and computes it.
fn record<C: CheckpointStrategy, const N: usize>(
    nodes: [NodeGuard; N],
    (x, gamma, beta, residual): (FlexTensor, FlexTensor, FlexTensor, Option<FlexTensor>),
    eps: f64,
    relu: bool,
) -> Recorded<C>
where
    NormBackward<N>: Backward<Flex, N, State = State>,
{
    let residual = residual.map_or(Optional::Nothing, Optional::Some);
    let constant = <AutodiffFlex<C> as AutodiffBackend>::from_inner;
    match NormBackward::<N>.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (y, mean, var) = Flex::host_batch_norm_train(x.clone(), gamma.clone(), beta, residual, eps, relu);
            let state = State {
                x,
                gamma,
                mean: mean.clone(),
                var: var.clone(),
                y: relu.then(|| y.clone()),
                eps,
            };
            (prep.finish(state, y), constant(mean), constant(var))
        }
        OpsKind::UnTracked(prep) => {
            let (y, mean, var) = Flex::host_batch_norm_train(x, gamma, beta, residual, eps, relu);
            (prep.finish(y), constant(mean), constant(var))
        }
    }
}

impl<C: CheckpointStrategy> HostNorm for Autodiff<Flex, C> {
    fn host_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        residual: Optional<Self>,
        eps: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (x_node, gamma_node, beta_node) = (x.node(), gamma.node(), beta.node());
        let (x, gamma, beta) = (x.into_primitive(), gamma.into_primitive(), beta.into_primitive());
        match residual.into_option() {
            None => record::<C, 3>([x_node, gamma_node, beta_node], (x, gamma, beta, None), eps, relu),
            Some(r) => {
                let nodes = [x_node, gamma_node, beta_node, r.node()];
                record::<C, 4>(nodes, (x, gamma, beta, Some(r.into_primitive())), eps, relu)
            }
        }
    }
}

/// The batch's statistics from [`host_batch_norm_train`].
pub struct TrainOutput {
    pub output: Tensor<4>,
    /// `[channels]`, not tracked.
    pub mean: Tensor<1>,
    /// `[channels]`, biased, not tracked.
    pub variance: Tensor<1>,
}

/// `relu?(bn(x) + residual)` with the batch's statistics, on a Flex device (plain or
/// autodiff), f32.
///
/// # Shapes
/// `x, residual [batch, channels, h, w], gamma and beta [channels] -> [batch, channels, h, w]`
pub fn host_batch_norm_train(
    x: Tensor<4>,
    (gamma, beta): (Tensor<1>, Tensor<1>),
    residual: Option<Tensor<4>>,
    eps: f64,
    relu: bool,
) -> TrainOutput {
    let (y, mean, var) = <Dispatch as HostNorm>::host_batch_norm_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        Optional::of(residual),
        eps,
        relu,
    );
    TrainOutput {
        output: Tensor::from_dispatch(y),
        mean: Tensor::from_dispatch(mean),
        variance: Tensor::from_dispatch(var),
    }
}
