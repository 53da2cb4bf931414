//! Adam (Kingma and Ba, 2015) exactly as `torch.optim.Adam` computes it, with its moments kept
//! by parameter name so that they can be checkpointed next to timm-named weights and resumed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{Gradients, TensorData};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{HostTensor, read_safetensors, safetensors_bytes, to_host, write_atomic};
use crate::error::CassError;
use crate::params::ParamNamer;

use super::adam_host::{Coefficients, fused_update, runs_here};

/// Adam hyper-parameters (PyTorch defaults; the CASS paper uses lr 1e-3 for pre-training).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of one parameter.
#[derive(Debug, Clone)]
pub struct Moments {
    pub exp_avg: Tensor<1>,
    pub exp_avg_sq: Tensor<1>,
}

/// Adam with per-parameter state keyed by timm parameter name.
#[derive(Debug, Clone)]
pub struct Adam {
    pub config: AdamConfig,
    /// Number of optimizer steps taken (PyTorch's `state["step"]`, shared by all parameters).
    pub step: u64,
    pub state: BTreeMap<String, Moments>,
    /// AdamW (`torch.optim.AdamW`): the weight decay shrinks the parameter (`p *= 1 - lr wd`)
    /// instead of entering the gradient, and skips 1-D parameters (biases, norm scales), as
    /// DINO's parameter groups do. Off: `torch.optim.Adam`'s L2 term on every parameter.
    pub decoupled: bool,
    /// Per-parameter gradient clipping (DINO's `clip_gradients`): a gradient whose norm exceeds
    /// this is scaled to it (`g *= clip / (||g|| + 1e-6)`), before the update.
    pub clip: Option<f64>,
}

impl Adam {
    pub fn new(config: AdamConfig) -> Self {
        Self {
            config,
            step: 0,
            state: BTreeMap::new(),
            decoupled: false,
            clip: None,
        }
    }

    /// Applies one update with learning rate `lr` to every parameter of `module` that has a
    /// gradient in `grads`, and returns the updated module.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: &Gradients) -> M {
        self.update(lr, module, Grads::Graph(grads))
    }

    /// [`Adam::step`] with gradients gathered by parameter (a step's micro-batches summed, see
    /// [`crate::ssl::step`]).
    pub fn step_params<M: Module>(&mut self, lr: f64, module: M, grads: &GradientsParams) -> M {
        self.update(lr, module, Grads::ByParam(grads))
    }

    fn update<M: Module>(&mut self, lr: f64, module: M, grads: Grads) -> M {
        self.step += 1;
        let mut mapper = AdamMapper {
            adam: self,
            lr,
            grads,
            namer: ParamNamer::default(),
        };
        module.map(&mut mapper)
    }
}

/// Where a parameter's gradient is: in the backward pass's output, or gathered by parameter id.
#[derive(Clone, Copy)]
enum Grads<'a> {
    Graph(&'a Gradients),
    ByParam(&'a GradientsParams),
}

struct AdamMapper<'a> {
    adam: &'a mut Adam,
    lr: f64,
    grads: Grads<'a>,
    namer: ParamNamer,
}

impl ModuleMapper for AdamMapper<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.namer.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.namer.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let grad = match self.grads {
            Grads::Graph(g) => tensor.grad(g),
            Grads::ByParam(g) => g.get::<D>(id),
        };
        let Some(grad) = grad else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let name = self.namer.param_name();
        let shape = tensor.dims();
        let c = self.adam.config;
        let mut p = tensor.inner().reshape([-1]); // [n]
        let mut g = grad.reshape([-1]); // [n]
        if let Some(clip) = self.adam.clip {
            // On the device, without reading the norm back: min(1, clip / (||g|| + 1e-6)).
            let coef = g
                .clone()
                .square()
                .sum()
                .sqrt()
                .add_scalar(1e-6)
                .recip()
                .mul_scalar(clip)
                .clamp_max(1.0);
            g = g * coef;
        }
        if c.weight_decay != 0.0 {
            if !self.adam.decoupled {
                g = g + p.clone().mul_scalar(c.weight_decay);
            } else if shape.len() > 1 {
                p = p.mul_scalar(1.0 - self.lr * c.weight_decay);
            }
        }
        let n = p.dims()[0];
        let device = p.device();
        let m = self.adam.state.remove(&name).unwrap_or_else(|| Moments {
            exp_avg: Tensor::zeros([n], &device),
            exp_avg_sq: Tensor::zeros([n], &device),
        });
        let t = self.adam.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        let coefficients = Coefficients {
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            step_size: self.lr / bias1,
            bias2_sqrt: bias2.sqrt(),
        };
        let (updated, exp_avg, exp_avg_sq) = if runs_here([&p, &g, &m.exp_avg, &m.exp_avg_sq]) {
            fused_update(&p, &g, (m.exp_avg, m.exp_avg_sq), coefficients)
        } else {
            tensor_update(p, g, (m.exp_avg, m.exp_avg_sq), coefficients)
        };
        self.adam.state.insert(name, Moments { exp_avg, exp_avg_sq });
        let updated = updated.reshape(shape).autodiff().require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// `(p', m', v')`: one Adam update as tensor operations, for every backend (the CPU backend's
/// one-pass form, `adam_host.rs`, computes the same in the same order).
fn tensor_update(
    p: Tensor<1>,
    g: Tensor<1>,
    (m, v): (Tensor<1>, Tensor<1>),
    c: Coefficients,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let exp_avg = m.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1);
    let exp_avg_sq = v.mul_scalar(c.beta2) + g.square().mul_scalar(1.0 - c.beta2);
    let denom = exp_avg_sq.clone().sqrt().div_scalar(c.bias2_sqrt).add_scalar(c.eps);
    let updated = p - (exp_avg.clone() / denom).mul_scalar(c.step_size);
    (updated, exp_avg, exp_avg_sq)
}

impl Adam {
    /// Writes the moments as safetensors: `exp_avg.<name>`, `exp_avg_sq.<name>` (flattened), and
    /// the step count and config in the metadata.
    pub fn save(&self, path: &Path) -> Result<(), CassError> {
        let mut tensors = BTreeMap::new();
        for (name, m) in &self.state {
            tensors.insert(format!("exp_avg.{name}"), to_host(m.exp_avg.clone(), false));
            tensors.insert(format!("exp_avg_sq.{name}"), to_host(m.exp_avg_sq.clone(), false));
        }
        let mut meta = HashMap::new();
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("config".to_string(), serde_json::to_string(&self.config).expect("json"));
        write_atomic(path, &safetensors_bytes(&tensors, &[], Some(meta)))
    }

    /// Restores moments written by [`Adam::save`].
    pub fn load(&mut self, path: &Path, device: &Device) -> Result<(), CassError> {
        let bytes = crate::checkpoint::read_bounded(path, 3 * crate::checkpoint::MAX_WEIGHTS_BYTES, "optimizer state")?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| CassError::data("bad-checkpoint", format!("unreadable optimizer state: {e}"), Some(path)))?;
        let step = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("step"))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| CassError::data("bad-checkpoint", "optimizer state has no step count", Some(path)))?;
        let tensors = read_safetensors(path)?;
        let mut state = BTreeMap::new();
        for (key, t) in &tensors {
            if let Some(name) = key.strip_prefix("exp_avg.") {
                let sq = tensors.get(&format!("exp_avg_sq.{name}")).ok_or_else(|| {
                    CassError::data("bad-checkpoint", format!("exp_avg_sq.{name} missing"), Some(path))
                })?;
                let mk =
                    |h: &HostTensor| Tensor::<1>::from_data(TensorData::new(h.data.clone(), [h.data.len()]), device);
                state.insert(
                    name.to_string(),
                    Moments {
                        exp_avg: mk(t),
                        exp_avg_sq: mk(sq),
                    },
                );
            }
        }
        self.step = step;
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The CPU's one-pass update equals the tensor form: the moments and the parameter, at the
    /// first step and a later one, over sizes below and above one task's chunk, with the
    /// moments updated in place (their only references) and copied (held elsewhere too).
    #[test]
    fn one_pass_update_equals_the_tensor_form() {
        use burn::tensor::Distribution;
        let d = Device::flex();
        for (n, step, shared) in [
            (7usize, 1i32, true),
            (40_000, 1, false),
            (70_001, 10, false),
            (70_001, 3, true),
        ] {
            let p = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &d);
            let g = Tensor::<1>::random([n], Distribution::Normal(0.0, 0.1), &d);
            let m = Tensor::<1>::random([n], Distribution::Normal(0.0, 0.01), &d);
            let v = Tensor::<1>::random([n], Distribution::Uniform(0.0, 1e-3), &d);
            let c = Coefficients {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                step_size: 1e-3 / (1.0 - 0.9f64.powi(step)),
                bias2_sqrt: (1.0 - 0.999f64.powi(step)).sqrt(),
            };
            assert!(runs_here([&p, &g, &m, &v]));
            let tensor = tensor_update(p.clone(), g.clone(), (m.clone(), v.clone()), c);
            let held = shared.then(|| (m.clone(), m.to_data(), v.clone(), v.to_data()));
            let fused = fused_update(&p, &g, (m, v), c);
            if let Some((m, m_before, v, v_before)) = held {
                // A moment held elsewhere too is copied, not overwritten.
                assert!(
                    m.to_data() == m_before && v.to_data() == v_before,
                    "n {n}: a shared moment changed"
                );
            }
            for (what, a, b) in [
                ("parameter", fused.0, tensor.0),
                ("m", fused.1, tensor.1),
                ("v", fused.2, tensor.2),
            ] {
                let scale = b.clone().abs().max().into_scalar::<f32>();
                let err = (a - b).abs().max().into_scalar::<f32>() / scale;
                assert!(err < 1e-6, "n {n} step {step}: {what} differs by {err}");
            }
        }
    }

    use burn::nn::{Linear, LinearConfig};

    use super::*;
    use crate::testing::device;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    /// A 2x2 linear layer (weight 2-D, bias 1-D) and the gradient of `sum(w * cw) + sum(b * cb)`:
    /// `cw` and `cb` themselves.
    fn layer_and_grads(cw: [[f32; 2]; 2], cb: [f32; 2]) -> (Linear, Gradients) {
        let d = device().autodiff();
        let layer = crate::models::init_seeded(&d, 1, |d| LinearConfig::new(2, 2).init(d));
        let loss = (layer.weight.val() * Tensor::<2>::from_floats(cw, &d)).sum()
            + (layer.bias.as_ref().unwrap().val() * Tensor::<1>::from_floats(cb, &d)).sum();
        let grads = loss.backward();
        (layer, grads)
    }

    #[test]
    fn adamw_decays_matrices_not_vectors_outside_the_gradient() {
        let (lr, wd, eps) = (0.1, 0.5, 1e-8);
        let (layer, grads) = layer_and_grads([[1.0, -2.0], [0.5, 4.0]], [3.0, -1.0]);
        let (w0, b0) = (values(layer.weight.val()), values(layer.bias.as_ref().unwrap().val()));
        let mut adam = Adam::new(AdamConfig {
            weight_decay: wd,
            eps,
            ..Default::default()
        });
        adam.decoupled = true;
        let out = adam.step(lr, layer, &grads);
        // First step: the bias-corrected update is lr * g / (|g| + eps), i.e. lr * sign(g).
        let (gw, gb) = ([1.0f64, -2.0, 0.5, 4.0], [3.0f64, -1.0]);
        for ((p, p0), g) in values(out.weight.val()).iter().zip(&w0).zip(gw) {
            let want = *p0 as f64 * (1.0 - lr * wd) - lr * g / (g.abs() + eps);
            assert!((*p as f64 - want).abs() < 1e-6, "{p} vs {want}");
        }
        for ((p, p0), g) in values(out.bias.unwrap().val()).iter().zip(&b0).zip(gb) {
            let want = *p0 as f64 - lr * g / (g.abs() + eps);
            assert!((*p as f64 - want).abs() < 1e-6, "bias is not decayed: {p} vs {want}");
        }
    }

    #[test]
    fn clipping_scales_each_gradient_to_the_norm_limit() {
        // The weight's gradient has norm 5, the bias's norm 0.5: only the first is clipped.
        let (layer, grads) = layer_and_grads([[3.0, 0.0], [0.0, 4.0]], [0.3, 0.4]);
        let mut adam = Adam::new(AdamConfig::default());
        adam.clip = Some(1.0);
        adam.step(1e-3, layer, &grads);
        // exp_avg after one step is (1 - beta1) g.
        let moments: Vec<Vec<f32>> = adam.state.values().map(|m| values(m.exp_avg.clone())).collect();
        let mut seen: Vec<f32> = moments
            .into_iter()
            .flatten()
            .map(|v| (v / 0.1 * 1e4).round() / 1e4)
            .collect();
        seen.sort_by(f32::total_cmp);
        assert_eq!(
            seen,
            [0.0, 0.0, 0.3, 0.4, 0.6, 0.8],
            "weight clipped to norm 1, bias untouched"
        );
    }
}
