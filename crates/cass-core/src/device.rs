//! Run-time choice of compute backend.

use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use crate::error::CassError;

/// Which backend a job runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// burn's Flex CPU backend (always built).
    #[default]
    Cpu,
    /// CUDA (cargo feature `cuda`).
    Cuda,
    /// wgpu (cargo feature `wgpu`).
    Wgpu,
    /// The first GPU backend built and working, else the CPU.
    Auto,
}

/// Floating-point precision of a job's tensors (parameters, activations and gradients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats (the GPU backends' matrix products may still use TF32 tensor cores).
    #[default]
    F32,
    /// bfloat16 everywhere, on GPU backends only.
    Bf16,
}

/// Backends compiled into this build.
pub fn available_backends() -> Vec<&'static str> {
    let mut v = vec!["cpu"];
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v
}

/// Runs a tiny computation to find out whether a device really works (GPU runtimes fail lazily,
/// on first use, and some by panicking).
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
fn probe(device: Device) -> Result<Device, String> {
    let d = device.clone();
    std::panic::catch_unwind(move || {
        let t = Tensor::<1>::from_floats([1.0, 2.0], &d);
        t.sum().into_scalar::<f32>()
    })
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown failure".into())
    })
    .and_then(|v| {
        if (v - 3.0).abs() < 1e-6 {
            Ok(device)
        } else {
            Err("wrong result from probe".into())
        }
    })
}

fn missing(name: &str) -> CassError {
    CassError::Backend {
        message: format!(
            "backend `{name}` is not in this build (built with: {}); rebuild with the `{name}` cargo feature",
            available_backends().join(", ")
        ),
    }
}

/// Resolves a choice to a plain (non-autodiff) device whose float tensors have `precision`.
/// The precision is set before the probe: burn fixes a device's default types at its first tensor.
pub fn resolve_with(choice: BackendChoice, precision: Precision) -> Result<Device, CassError> {
    if precision == Precision::F32 {
        return resolve(choice);
    }
    let needs_gpu = || CassError::Backend {
        message: format!(
            "precision {precision:?} needs an explicit GPU backend (cuda or wgpu), not {choice:?}: the CPU backend computes in f32"
        ),
    };
    let mut device: Device = match choice {
        BackendChoice::Cpu | BackendChoice::Auto => Err(needs_gpu()),
        BackendChoice::Cuda => {
            #[cfg(feature = "cuda")]
            let d = Ok(Device::cuda(0));
            #[cfg(not(feature = "cuda"))]
            let d = Err(missing("cuda"));
            d
        }
        BackendChoice::Wgpu => {
            #[cfg(feature = "wgpu")]
            let d = Ok(Device::wgpu(Default::default()));
            #[cfg(not(feature = "wgpu"))]
            let d = Err(missing("wgpu"));
            d
        }
    }?;
    device.configure(FloatDType::BF16).map_err(|e| CassError::Backend {
        message: format!("cannot set bf16 on {choice:?}: {e:?}"),
    })?;
    probe(device).map_err(|e| CassError::Backend {
        message: format!("{choice:?} with bf16 failed: {e}"),
    })
}

/// Resolves a choice to a plain (non-autodiff) device.
pub fn resolve(choice: BackendChoice) -> Result<Device, CassError> {
    match choice {
        BackendChoice::Cpu => Ok(Device::flex()),
        BackendChoice::Cuda => {
            #[cfg(feature = "cuda")]
            {
                probe(Device::cuda(0)).map_err(|e| CassError::Backend {
                    message: format!("no usable CUDA device: {e}"),
                })
            }
            #[cfg(not(feature = "cuda"))]
            Err(missing("cuda"))
        }
        BackendChoice::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                probe(Device::wgpu(Default::default())).map_err(|e| CassError::Backend {
                    message: format!("no usable wgpu device: {e}"),
                })
            }
            #[cfg(not(feature = "wgpu"))]
            Err(missing("wgpu"))
        }
        BackendChoice::Auto => {
            for c in [BackendChoice::Cuda, BackendChoice::Wgpu] {
                if let Ok(d) = resolve(c) {
                    return Ok(d);
                }
            }
            Ok(Device::flex())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_needs_an_explicit_gpu_backend() {
        for choice in [BackendChoice::Cpu, BackendChoice::Auto] {
            let e = resolve_with(choice, Precision::Bf16).unwrap_err().to_string();
            assert!(e.contains("needs an explicit GPU backend"), "{e}");
        }
        if !cfg!(feature = "cuda") {
            let e = resolve_with(BackendChoice::Cuda, Precision::Bf16)
                .unwrap_err()
                .to_string();
            assert!(e.contains("not in this build"), "{e}");
        }
        // f32 is the plain resolution.
        assert_eq!(
            resolve_with(BackendChoice::Cpu, Precision::F32).unwrap(),
            Device::flex()
        );
    }
}
