//! Adam (Kingma and Ba, 2015) exactly as `torch.optim.Adam` computes it, with its moments kept
//! by parameter name so that they can be checkpointed next to timm-named weights and resumed.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::{Gradients, TensorData};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{HostTensor, read_safetensors, safetensors_bytes, to_host, write_atomic};
use crate::error::CassError;
use crate::params::ParamNamer;

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
}

impl Adam {
    pub fn new(config: AdamConfig) -> Self {
        Self {
            config,
            step: 0,
            state: BTreeMap::new(),
        }
    }

    /// Applies one update with learning rate `lr` to every parameter of `module` that has a
    /// gradient in `grads`, and returns the updated module.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, grads: &Gradients) -> M {
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

struct AdamMapper<'a> {
    adam: &'a mut Adam,
    lr: f64,
    grads: &'a Gradients,
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
        let Some(grad) = tensor.grad(self.grads) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let name = self.namer.param_name();
        let shape = tensor.dims();
        let c = self.adam.config;
        let p = tensor.inner().reshape([-1]); // [n]
        let mut g = grad.reshape([-1]); // [n]
        if c.weight_decay != 0.0 {
            g = g + p.clone().mul_scalar(c.weight_decay);
        }
        let n = p.dims()[0];
        let device = p.device();
        let m = self.adam.state.remove(&name).unwrap_or_else(|| Moments {
            exp_avg: Tensor::zeros([n], &device),
            exp_avg_sq: Tensor::zeros([n], &device),
        });
        let exp_avg = m.exp_avg.mul_scalar(c.beta1) + g.clone().mul_scalar(1.0 - c.beta1);
        let exp_avg_sq = m.exp_avg_sq.mul_scalar(c.beta2) + g.square().mul_scalar(1.0 - c.beta2);
        let t = self.adam.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        let denom = exp_avg_sq.clone().sqrt().div_scalar(bias2.sqrt()).add_scalar(c.eps);
        let updated = p - (exp_avg.clone() / denom).mul_scalar(self.lr / bias1);
        self.adam.state.insert(name, Moments { exp_avg, exp_avg_sq });
        let updated = updated.reshape(shape).autodiff().require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
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
        let bytes = fs::read(path).map_err(|e| CassError::io(path, e))?;
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
