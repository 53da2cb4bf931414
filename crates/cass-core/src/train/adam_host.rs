//! Adam's update of one parameter on the CPU backend in one pass: the two moments and the new
//! value computed element by element, in the same f32 operations and order as the tensor form in
//! `adam.rs` (which runs elsewhere). That form is about ten tensor operations, each a pass over
//! the parameter with its own allocation: on ResNet-18 (11.7 M parameters) 0.06-0.08 s of a
//! 0.8-1.0 s CASS step (`bench_step --what breakdown`); one pass: 0.018-0.019 s
//! (`bench/results/2026-12-06-vm-cpu-cnn-round2-steps.json`).

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use crate::models::host_tensor::values;

/// The scalars of one update: the decay rates, epsilon, the learning rate over the first
/// moment's bias correction, the square root of the second's.
#[derive(Clone, Copy, Debug)]
pub struct Coefficients {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub step_size: f64,
    pub bias2_sqrt: f64,
}

/// One Adam update as a backend operation.
#[backend_extension(Flex)]
pub trait HostAdam: Backend {
    /// `(p', m', v')` from the parameter, its gradient and the moments, all `[n]`.
    fn host_adam(
        p: FloatTensor<Self>,
        g: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        beta1: f64,
        beta2: f64,
        eps: f64,
        step_size: f64,
        bias2_sqrt: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// Values per task: large enough that a task's fixed cost is small, small enough that a
/// ResNet's larger weights are spread over every thread.
const CHUNK: usize = 1 << 15;

impl HostAdam for Flex {
    fn host_adam(
        p: FlexTensor,
        g: FlexTensor,
        m: FlexTensor,
        v: FlexTensor,
        beta1: f64,
        beta2: f64,
        eps: f64,
        step_size: f64,
        bias2_sqrt: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (p, g) = (values(&p), values(&g));
        let n = p.len();
        assert_eq!(g.len(), n, "Adam's parameter and gradient have one size");
        // The moments are updated in place when this update holds their only reference (the
        // optimiser takes them out of its state for it; `storage_mut` copies them otherwise),
        // sparing two allocations the size of the parameter.
        let (mut m, mut v) = (sole(m, n), sole(v, n));
        // The scalars as the tensor form's f32 scalar operations use them.
        let (b1, c1) = (beta1 as f32, (1.0 - beta1) as f32);
        let (b2, c2) = (beta2 as f32, (1.0 - beta2) as f32);
        let (eps, step_size, bias2_sqrt) = (eps as f32, step_size as f32, bias2_sqrt as f32);
        let mut p2 = vec![0f32; n];
        p2.par_chunks_mut(CHUNK)
            .zip(m.storage_mut::<f32>().par_chunks_mut(CHUNK))
            .zip(v.storage_mut::<f32>().par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(i, ((p2, m), v))| {
                let n = p2.len();
                let r = i * CHUNK..i * CHUNK + n;
                let (p, g) = (&p[r.clone()], &g[r]);
                let (m, v) = (&mut m[..n], &mut v[..n]);
                for j in 0..n {
                    let m_j = m[j] * b1 + g[j] * c1;
                    let v_j = v[j] * b2 + g[j] * g[j] * c2;
                    let denom = v_j.sqrt() / bias2_sqrt + eps;
                    m[j] = m_j;
                    v[j] = v_j;
                    p2[j] = p[j] - m_j / denom * step_size;
                }
            });
        (FlexTensor::from_data(TensorData::new(p2, [n])), m, v)
    }
}

/// `t` itself when it is exactly its `n` contiguous values, else a contiguous copy. Writing
/// through `storage_mut` then copies the values first if another tensor shares them.
fn sole(t: FlexTensor, n: usize) -> FlexTensor {
    if t.layout().contiguous_offsets() == Some((0, n)) && t.bytes().len() == n * 4 {
        t
    } else {
        FlexTensor::from_data(TensorData::new(values(&t).into_owned(), [n]))
    }
}

/// Whether [`fused_update`] runs on these tensors: a plain CPU device, f32.
pub fn runs_here(tensors: [&Tensor<1>; 4]) -> bool {
    tensors
        .iter()
        .all(|t| t.device() == Device::flex() && t.dtype() == DType::F32)
}

/// `(p', m', v')` in one pass, where [`runs_here`]; the moments are updated in place when these
/// are their only references.
pub fn fused_update(
    p: &Tensor<1>,
    g: &Tensor<1>,
    (m, v): (Tensor<1>, Tensor<1>),
    c: Coefficients,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let (p, m, v) = <Dispatch as HostAdam>::host_adam(
        p.clone().into_dispatch(),
        g.clone().into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        c.beta1,
        c.beta2,
        c.eps,
        c.step_size,
        c.bias2_sqrt,
    );
    (
        Tensor::from_dispatch(p),
        Tensor::from_dispatch(m),
        Tensor::from_dispatch(v),
    )
}
