//! Run-time choice of compute backend.

use std::sync::Mutex;

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

/// Runs a tiny computation to find out whether a device really works: GPU runtimes fail lazily,
/// on first use, and some by panicking on their own threads, where this thread then sees only a
/// closed channel. So every panic during the probe is recorded instead of printed, and the
/// first, the root cause (e.g. cudarc's "Unable to dynamically load the \"cuda\" shared
/// library"), is the reason given. The panic hook is process-wide: probes take turns, and a
/// panic elsewhere in that short window is recorded here rather than printed (its payload still
/// reaches whoever catches it).
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
fn probe(device: Device) -> Result<Device, String> {
    static TURN: Mutex<()> = Mutex::new(());
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let seen = || SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    seen().clear();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let text = info.payload_as_str().unwrap_or("unknown failure");
        SEEN.lock().unwrap_or_else(|e| e.into_inner()).push(text.to_string());
    }));
    let d = device.clone();
    let result = std::panic::catch_unwind(move || {
        let t = Tensor::<1>::from_floats([1.0, 2.0], &d);
        t.sum().into_scalar::<f32>()
    });
    std::panic::set_hook(previous);
    match result {
        Ok(v) if (v - 3.0).abs() < 1e-6 => Ok(device),
        Ok(v) => Err(format!("wrong result from probe: 1 + 2 = {v}")),
        Err(_) => {
            let first = seen().first().cloned().unwrap_or_else(|| "unknown failure".into());
            // cudarc lists every library name it tried; the first sentence says what matters.
            let line = first.lines().next().unwrap_or_default();
            Err(line.split(" - searched for").next().unwrap_or(line).to_string())
        }
    }
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

/// The backend a job runs on and why: for `auto`, why each faster backend was passed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chosen {
    /// `cpu`, `cuda` or `wgpu`.
    pub backend: &'static str,
    pub reason: String,
}

/// Resolves a choice to a plain (non-autodiff) device.
pub fn resolve(choice: BackendChoice) -> Result<Device, CassError> {
    resolve_explained(choice).map(|(device, _)| device)
}

/// Resolves a choice to a plain device, saying which backend it is and why.
///
/// `auto` tries CUDA device 0, then a wgpu GPU adapter (discrete, then integrated), then takes
/// the CPU. It passes over wgpu's CPU adapters (lavapipe, llvmpipe, WARP): they run the same
/// kernels on the CPU, slower than the Flex backend; naming `wgpu` still reaches them.
pub fn resolve_explained(choice: BackendChoice) -> Result<(Device, Chosen), CassError> {
    let named = |backend, reason: &str| Chosen {
        backend,
        reason: reason.into(),
    };
    match choice {
        BackendChoice::Cpu => Ok((Device::flex(), named("cpu", "asked for"))),
        BackendChoice::Cuda => {
            #[cfg(feature = "cuda")]
            {
                probe(Device::cuda(0))
                    .map(|d| (d, named("cuda", "asked for")))
                    .map_err(|e| CassError::Backend {
                        message: format!("no usable CUDA device: {e}"),
                    })
            }
            #[cfg(not(feature = "cuda"))]
            Err(missing("cuda"))
        }
        BackendChoice::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                probe(Device::wgpu(Default::default()))
                    .map(|d| (d, named("wgpu", "asked for")))
                    .map_err(|e| CassError::Backend {
                        message: format!("no usable wgpu device: {e}"),
                    })
            }
            #[cfg(not(feature = "wgpu"))]
            Err(missing("wgpu"))
        }
        BackendChoice::Auto => {
            let mut passed: Vec<String> = Vec::new();
            #[cfg(feature = "cuda")]
            match probe(Device::cuda(0)) {
                Ok(d) => return Ok((d, named("cuda", "auto: CUDA device 0 works"))),
                Err(e) => passed.push(format!("cuda: {e}")),
            }
            #[cfg(not(feature = "cuda"))]
            passed.push("cuda: not in this build".into());
            #[cfg(feature = "wgpu")]
            {
                use burn::tensor::DeviceKind;
                for (kind, what) in [
                    (DeviceKind::DiscreteGpu(0), "discrete"),
                    (DeviceKind::IntegratedGpu(0), "integrated"),
                ] {
                    if let Ok(d) = probe(Device::wgpu(kind)) {
                        let why = format!("auto: {}; wgpu found a {what} GPU adapter", passed.join("; "));
                        return Ok((
                            d,
                            Chosen {
                                backend: "wgpu",
                                reason: why,
                            },
                        ));
                    }
                }
                passed.push(
                    "wgpu: no discrete or integrated GPU adapter (CPU adapters such as lavapipe \
                     are slower than the CPU backend; ask for `wgpu` to use one anyway)"
                        .into(),
                );
            }
            #[cfg(not(feature = "wgpu"))]
            passed.push("wgpu: not in this build".into());
            Ok((
                Device::flex(),
                Chosen {
                    backend: "cpu",
                    reason: format!("auto: {}", passed.join("; ")),
                },
            ))
        }
    }
}

/// Runs a training loop (or any device work), turning the one panic a user can cause and fix
/// — a single buffer larger than the device allows — into [`CassError::DeviceLimit`] naming the
/// size and what to change. cubecl reports it as `can't allocate buffer of size: N` inside a
/// panic from wherever the tensor is read; other panics are bugs and continue unwinding.
pub fn within_device_limits<T>(f: impl FnOnce() -> Result<T, CassError>) -> Result<T, CassError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let text = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied());
            match text.and_then(device_limit) {
                Some(e) => Err(e),
                None => std::panic::resume_unwind(payload),
            }
        }
    }
}

/// The error for a panic message that reports a buffer over the device's limit, if it is one.
pub fn device_limit(panic_message: &str) -> Option<CassError> {
    let marker = "can't allocate buffer of size: ";
    let at = panic_message.find(marker)? + marker.len();
    let digits: String = panic_message[at..].chars().take_while(char::is_ascii_digit).collect();
    let bytes: u64 = digits.parse().ok()?;
    Some(CassError::DeviceLimit {
        message: format!(
            "the device cannot hold one buffer of {:.1} MiB, which this run needs (a batch of \
             images, an activation or a weight): it is over the device's largest buffer, whatever \
             memory is free (wgpu on lavapipe allows 128 MiB). Lower batchSize or imageSize, or \
             run on cpu or cuda",
            bytes as f64 / (1 << 20) as f64
        ),
    })
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

    #[test]
    fn auto_says_why_it_took_each_backend() {
        let (device, chosen) = resolve_explained(BackendChoice::Auto).unwrap();
        for (backend, built) in [("cuda", cfg!(feature = "cuda")), ("wgpu", cfg!(feature = "wgpu"))] {
            let missing = format!("{backend}: not in this build");
            assert_eq!(chosen.reason.contains(&missing), !built, "{chosen:?}");
        }
        if !cfg!(any(feature = "cuda", feature = "wgpu")) {
            assert_eq!((device, chosen.backend), (Device::flex(), "cpu"));
            assert!(chosen.reason.starts_with("auto: "), "{chosen:?}");
        }
        let (_, asked) = resolve_explained(BackendChoice::Cpu).unwrap();
        assert_eq!(
            asked,
            Chosen {
                backend: "cpu",
                reason: "asked for".into()
            }
        );
    }

    #[test]
    fn a_buffer_over_the_limit_is_a_named_error_and_other_panics_go_on() {
        let e = device_limit("Execution(...\n  can't allocate buffer of size: 167772160\nNo backtrace)").unwrap();
        assert_eq!(e.code(), "device-limit");
        assert!(e.to_string().contains("one buffer of 160.0 MiB"), "{e}");
        assert!(device_limit("index out of bounds").is_none());
        let caught = within_device_limits::<()>(|| panic!("can't allocate buffer of size: 1048576"));
        assert_eq!(caught.unwrap_err().code(), "device-limit");
        let other = std::panic::catch_unwind(|| within_device_limits::<()>(|| panic!("a bug")));
        assert!(other.is_err(), "other panics keep unwinding");
    }
}
