//! The ViT's multi-head attention on the CPU backend, from the `qkv` projection's output to the
//! heads' outputs, as one operation with its own backward pass (`kernel.rs`).
//!
//! On an autodiff device burn composes attention from differentiable operations: the `qkv`
//! output reshaped and permuted into queries, keys and values (copies), two batched products,
//! the scale and a softmax of several element-wise operations, the heads permuted back; each
//! records a backward step. With short sequences (`cpu-small`'s 17 tokens) those small
//! operations, not the products, were the time. Reached through burn's backend-extension
//! mechanism like the convolution; only Flex devices in f32 call it
//! (`super::vit::Attention::forward` decides).

mod kernel;
#[cfg(test)]
mod tests;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;

use super::host_tensor::{tensor, values};
use kernel::Shape;

/// Attention from the fused `qkv` projection's output as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait HostAttention: Backend {
    /// `[batch, tokens, 3 * dim] -> [batch, tokens, dim]` with `heads` heads.
    fn host_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self>;
}

fn shape_of(qkv: &FlexTensor, heads: usize) -> Shape {
    let dims: &[usize] = qkv.layout().shape().as_ref();
    let [batch, tokens, three_d] = dims.try_into().expect("a [batch, tokens, 3 * dim] tensor");
    assert!(
        heads > 0 && three_d % (3 * heads) == 0,
        "qkv width {three_d} splits into 3 x {heads} heads"
    );
    Shape {
        batch,
        tokens,
        heads,
        head_dim: three_d / 3 / heads,
    }
}

impl HostAttention for Flex {
    fn host_attention(qkv: FlexTensor, heads: usize) -> FlexTensor {
        let s = shape_of(&qkv, heads);
        let f = kernel::forward(s, &values(&qkv));
        tensor(f.out, &[s.batch, s.tokens, s.dim()])
    }
}

/// The backward step: the gradient of `qkv` from the saved input and attention weights.
#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    type State = (FlexTensor, std::sync::Arc<Vec<f32>>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (qkv, probs, heads) = ops.state;
        if let Some(node) = node {
            let s = shape_of(&qkv, heads);
            let dqkv = kernel::backward(s, &values(&qkv), &probs, &values(&dy));
            grads.register::<Flex>(node.id, tensor(dqkv, &[s.batch, s.tokens, 3 * s.dim()]));
        }
    }
}

impl<C: CheckpointStrategy> HostAttention for Autodiff<Flex, C> {
    fn host_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        match AttentionBackward.prepare::<C>([qkv.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let qkv = qkv.into_primitive();
                let s = shape_of(&qkv, heads);
                let f = kernel::forward(s, &values(&qkv));
                let out = tensor(f.out, &[s.batch, s.tokens, s.dim()]);
                prep.finish((qkv, std::sync::Arc::new(f.probs), heads), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::host_attention(qkv.into_primitive(), heads)),
        }
    }
}

/// Multi-head scaled dot-product attention (scale `1 / sqrt(head_dim)`) from a fused `qkv`
/// projection's output, on a Flex device, f32.
///
/// # Shapes
/// `qkv [batch, tokens, 3 * dim]` (queries, keys, values; heads side by side in each)
/// `-> [batch, tokens, dim]` (heads side by side)
pub fn host_attention(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as HostAttention>::host_attention(qkv.into_dispatch(), heads))
}
