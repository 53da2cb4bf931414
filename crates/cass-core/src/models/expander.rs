//! VICReg's expander (Bardes, Ponce and LeCun 2022, section 4.2; `main_vicreg.py`'s `Projector`):
//! linear layers to the given widths with BatchNorm and ReLU between them and nothing after the
//! last (8192-8192-8192 in the paper). Its BatchNorm is PyTorch's ([`super::batch_norm`]:
//! momentum 0.1, eps 1e-5, running variance from the unbiased batch variance).

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::batch_norm::BatchNorm;

/// The expander: `linears[i]`, then `norms[i]` and a ReLU for every layer but the last.
#[derive(Module, Debug)]
pub struct Expander {
    pub linears: Vec<Linear>,
    pub norms: Vec<BatchNorm>,
}

/// An expander from `in_dim` features through `widths` (PyTorch's default `Linear` initialisation).
pub fn expander(in_dim: usize, widths: &[usize], device: &Device) -> Expander {
    let mut linears = Vec::with_capacity(widths.len());
    let mut norms = Vec::with_capacity(widths.len().saturating_sub(1));
    let mut from = in_dim;
    for (i, &w) in widths.iter().enumerate() {
        linears.push(LinearConfig::new(from, w).init(device));
        if i + 1 < widths.len() {
            norms.push(BatchNorm::new(w, 1e-5, device));
        }
        from = w;
    }
    Expander { linears, norms }
}

impl Expander {
    /// # Shapes
    /// `[batch, in_dim] -> [batch, widths.last()]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut x = x;
        for (i, linear) in self.linears.iter().enumerate() {
            x = linear.forward(x);
            if let Some(norm) = self.norms.get(i) {
                x = relu(norm.forward(x));
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{device, rand_tensor};

    #[test]
    fn widths_and_normalised_hidden_layers() {
        let d = device().autodiff();
        let e = expander(6, &[16, 16, 8], &d);
        assert_eq!((e.linears.len(), e.norms.len()), (3, 2));
        let y = e.forward(rand_tensor([10, 6], 1, &d));
        assert_eq!(y.dims(), [10, 8]);
        // The first hidden layer after BatchNorm (train mode) has zero batch mean per unit.
        let h = e.norms[0].forward(e.linears[0].forward(rand_tensor([10, 6], 2, &d)));
        let m = h.mean_dim(0).abs().max().into_scalar::<f32>();
        assert!(m < 1e-5, "{m}");
    }
}
