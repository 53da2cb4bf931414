//! DINO's projection head (Caron et al. 2021, section 3.1 and appendix): a 3-layer MLP (GELU
//! between layers) to a bottleneck, L2 normalisation, then a weight-normalised linear layer
//! without bias to `out_dim` outputs whose norm scale `g` is fixed at 1 (`norm_last_layer`), so
//! each output is the cosine between the bottleneck and that output's direction `v_k / ||v_k||`.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

use super::gelu::gelu;
use crate::loss::cass::l2_normalize;

/// Shape of the projection head.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DinoHeadConfig {
    /// Outputs `K` (65536 in the paper).
    pub out_dim: usize,
    pub hidden_dim: usize,
    pub bottleneck_dim: usize,
}

/// The head: `mlp` then the normalised last layer.
#[derive(Module, Debug)]
pub struct DinoHead {
    pub mlp: Vec<Linear>,
    /// The direction `v` of the last layer, `[bottleneck, out_dim]` (burn's layout); its columns
    /// are normalised in the forward pass.
    pub last_layer: Param<Tensor<2>>,
}

impl DinoHeadConfig {
    /// A head on features of width `in_dim`: the MLP's weights from a (truncated in the paper)
    /// normal of std 0.02 and zero biases, the last layer as PyTorch's default `Linear`.
    pub fn init(&self, in_dim: usize, device: &Device) -> DinoHead {
        super::with_init_lock(|| {
            let normal = Initializer::Normal { mean: 0.0, std: 0.02 };
            let linear = |i: usize, o: usize| LinearConfig::new(i, o).with_initializer(normal.clone()).init(device);
            let bound = 1.0 / (self.bottleneck_dim as f64).sqrt();
            let head = DinoHead {
                mlp: vec![
                    linear(in_dim, self.hidden_dim),
                    linear(self.hidden_dim, self.hidden_dim),
                    linear(self.hidden_dim, self.bottleneck_dim),
                ],
                last_layer: Param::from_tensor(Tensor::random(
                    [self.bottleneck_dim, self.out_dim],
                    burn::tensor::Distribution::Uniform(-bound, bound),
                    device,
                )),
            };
            super::materialize(&head);
            head
        })
    }
}

impl DinoHead {
    /// # Shapes
    /// `[batch, in_dim] -> [batch, out_dim]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let n = self.mlp.len();
        let mut x = x;
        for (i, layer) in self.mlp.iter().enumerate() {
            x = layer.forward(x);
            if i + 1 < n {
                x = gelu(x);
            }
        }
        let x = l2_normalize(x); // [batch, bottleneck]
        let v = self.last_layer.val(); // [bottleneck, out]
        let norm = v.clone().square().sum_dim(0).sqrt().clamp_min(1e-12); // [1, out]
        x.matmul(v / norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{device, rand_tensor};

    fn head() -> DinoHead {
        let cfg = DinoHeadConfig {
            out_dim: 12,
            hidden_dim: 16,
            bottleneck_dim: 8,
        };
        crate::models::init_seeded(&device(), 3, |d| cfg.init(10, d))
    }

    #[test]
    fn outputs_are_cosines_and_do_not_depend_on_the_last_layer_scale() {
        let h = head();
        let x = rand_tensor([5, 10], 1, &device());
        let y = h.forward(x.clone()); // [5, 12]
        assert_eq!(y.dims(), [5, 12]);
        let max = y.clone().abs().max().into_scalar::<f32>();
        assert!(max <= 1.0 + 1e-5, "each output is a cosine: {max}");
        // Scaling a direction column by any positive factor leaves the output unchanged: the
        // weight norm (with g fixed at 1) divides it out.
        let scale = Tensor::<1>::from_floats([3.0, 0.5, 1.0, 7.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 9.0], &device())
            .reshape([1, 12]);
        let mut scaled = h.clone();
        scaled.last_layer = Param::from_tensor(h.last_layer.val() * scale);
        let diff = (scaled.forward(x) - y).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{diff}");
    }
}
