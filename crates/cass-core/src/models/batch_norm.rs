//! BatchNorm with PyTorch's running statistics: the running variance is updated with the
//! UNBIASED batch variance (`n / (n - 1)` times the population variance), as
//! `torch.nn.BatchNorm2d` does. burn's own `BatchNorm` updates it with the biased variance, which
//! makes running statistics, and so evaluation outputs after training, drift from timm's.
//! Parameter names are burn's (`gamma`, `beta`), mapped to timm's by the checkpoint code.

use burn::module::{Param, RunningState};
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module::{batch_norm, batch_norm_train};

use super::host_norm::host_batch_norm_train;
use super::host_tensor::on_host;

/// A BatchNorm over channel axis 1, momentum 0.1.
#[derive(Module, Debug)]
pub struct BatchNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    #[module(skip)]
    pub momentum: f64,
    #[module(skip)]
    pub epsilon: f64,
}

impl BatchNorm {
    /// Unit scale, zero shift, zero mean and unit variance, like a fresh PyTorch layer.
    pub fn new(features: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([features], device)),
            beta: Param::from_tensor(Tensor::zeros([features], device)),
            running_mean: RunningState::new(Tensor::zeros([features], &device.clone().inner())),
            running_var: RunningState::new(Tensor::ones([features], &device.clone().inner())),
            momentum: 0.1,
            epsilon,
        }
    }

    /// Batch statistics when the layer trains (its input and its parameters on an autodiff
    /// device), running statistics otherwise: in evaluation mode (`valid()`: plain parameters),
    /// also on an autodiff input, which explanations differentiate through (`crate::explain`).
    ///
    /// # Shapes
    /// `[batch, channels, ...] -> [batch, channels, ...]`
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let device = input.device();
        if !device.is_autodiff() || !self.gamma.val().device().is_autodiff() {
            let mean = self.running_mean.value().to_device(&device);
            let var = self.running_var.value().to_device(&device);
            return batch_norm(input, self.gamma.val(), self.beta.val(), mean, var, self.epsilon);
        }
        let dims = input.dims();
        let out = batch_norm_train(input, self.gamma.val(), self.beta.val(), self.epsilon);
        self.track(out.mean, out.variance, dims.iter().product::<usize>() / dims[1]);
        out.output
    }

    /// `relu?(self.forward(x) + residual)`: the BatchNorm with what follows it in a ResNet
    /// block. In training on the CPU backend (f32) it is one operation,
    /// [`host_batch_norm_train`], where `host` allows (the `conv` strategy `auto`: `native`
    /// keeps burn's operations); elsewhere the three.
    ///
    /// # Shapes
    /// `x, residual [batch, channels, h, w] -> [batch, channels, h, w]`
    pub fn forward_block(&self, x: Tensor<4>, residual: Option<Tensor<4>>, relu: bool, host: bool) -> Tensor<4> {
        let device = x.device();
        let trains = device.is_autodiff() && self.gamma.val().device().is_autodiff();
        let host = host && on_host(&x);
        if trains && host {
            let [b, _, h, w] = x.dims();
            let out = host_batch_norm_train(x, (self.gamma.val(), self.beta.val()), residual, self.epsilon, relu);
            self.track(out.mean, out.variance, b * h * w);
            return out.output;
        }
        let y = self.forward(x);
        let y = match residual {
            Some(r) => y + r,
            None => y,
        };
        if relu { activation::relu(y) } else { y }
    }

    /// Moves the running statistics towards the batch's (`variance` biased, over `n` values
    /// per channel).
    fn track(&self, mean: Tensor<1>, variance: Tensor<1>, n: usize) {
        let device = mean.device();
        let unbiased = if n > 1 { n as f64 / (n - 1) as f64 } else { 1.0 };
        let m = self.momentum;
        let running_mean = self.running_mean.value_sync().to_device(&device);
        let running_var = self.running_var.value_sync().to_device(&device);
        self.running_mean.update(
            running_mean
                .mul_scalar(1.0 - m)
                .add(mean.detach().mul_scalar(m))
                .detach(),
        );
        self.running_var.update(
            running_var
                .mul_scalar(1.0 - m)
                .add(variance.detach().mul_scalar(m * unbiased))
                .detach(),
        );
    }
}
