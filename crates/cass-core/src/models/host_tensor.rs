//! What the CPU's own operations (`host_conv`, `host_norm`, `host_pool`, `host_attention`,
//! `host_linear`, the GELU, the optimiser's `adam_host`) share at burn's backend-extension door:
//! whether a tensor is theirs to take, its values as a host slice and back, its four
//! dimensions, and an optional tensor argument.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, ExtensionType};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};

/// Whether the CPU's own operations take this tensor: f32 on a Flex device (plain or autodiff).
pub fn on_host<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && x.device().inner() == Device::flex()
}

/// A Flex tensor of this shape from host values.
pub fn tensor(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape.to_vec()))
}

/// A tensor, or none.
#[derive(ExtensionType)]
pub enum Optional<B: Backend> {
    Some(FloatTensor<B>),
    Nothing,
}

impl<B: Backend> Optional<B> {
    pub fn into_option(self) -> Option<FloatTensor<B>> {
        match self {
            Optional::Some(t) => Some(t),
            Optional::Nothing => None,
        }
    }
}

impl Optional<Dispatch> {
    pub fn of<const D: usize>(t: Option<Tensor<D>>) -> Self {
        t.map_or(Optional::Nothing, |t| Optional::Some(t.into_dispatch()))
    }
}

/// The four dimensions of a 4-dimensional shape.
pub fn dims4(shape: &burn::tensor::Shape) -> [usize; 4] {
    let d: &[usize] = shape.as_ref();
    d.try_into().expect("a 4-dimensional tensor")
}

/// The tensor's values as one contiguous f32 slice (copied only when strided).
pub fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    assert_eq!(t.dtype(), DType::F32, "the CPU kernels compute in f32");
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().expect("contiguous").to_vec()),
    }
}
