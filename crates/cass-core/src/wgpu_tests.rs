//! The wgpu backend, for real: a CASS step and a short pre-training on wgpu, against the CPU
//! backend. On machines without a GPU, Mesa's lavapipe (Debian's `mesa-vulkan-drivers`, which
//! `.ci/run` installs) is a Vulkan device on the CPU. Run with `--features wgpu`.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;

use crate::data::{ImageSet, upload};
use crate::device::{BackendChoice, resolve, resolve_explained};
use crate::events::{CancelToken, Silent};
use crate::models::vit::VitConfig;
use crate::ssl::cass::{CassTrainer, PretrainConfig, pretrain};
use crate::ssl::{Method, StepAt};
use crate::testing::{synthetic_images, tiny_pretrain};
use crate::train::run_config::RunConfig;

/// The Vulkan driver manifests the loader reads; without one there is no wgpu device here.
fn vulkan_driver() -> Option<String> {
    let dirs = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"];
    dirs.iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".json"))
}

fn wgpu_device() -> Option<Device> {
    if vulkan_driver().is_none() {
        eprintln!("skipped: no Vulkan driver (install Debian's mesa-vulkan-drivers for lavapipe)");
        return None;
    }
    Some(resolve(BackendChoice::Wgpu).expect("a Vulkan driver is installed, so wgpu must work"))
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cass-wgpu-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

/// The same weights on both devices: initialised on the CPU, saved, loaded on wgpu.
fn trainers(cfg: &PretrainConfig, gpu: &Device, dir: &Path) -> (CassTrainer, CassTrainer) {
    let cpu = CassTrainer::new(cfg, &Device::flex());
    fs::create_dir_all(dir).unwrap();
    cpu.save(dir, 0).unwrap();
    let on_gpu = CassTrainer::load(cfg, dir, gpu).unwrap();
    (cpu, on_gpu)
}

#[test]
fn cass_steps_on_wgpu_match_the_cpu_backend() {
    let Some(gpu) = wgpu_device() else { return };
    let cfg = tiny_pretrain();
    let dir = tmp("steps");
    let (mut cpu, mut on_gpu) = trainers(&cfg, &gpu, &dir);
    let (bytes, _) = synthetic_images(cfg.run.batch_size, cfg.image_size, 4);
    let set = ImageSet::from_memory(bytes, cfg.run.batch_size, cfg.image_size, cfg.image_size).unwrap();
    let host = crate::data::assemble(&set, &(0..cfg.run.batch_size).collect::<Vec<_>>(), None);
    let mut pairs = Vec::new();
    for step in 0..3 {
        let at = StepAt {
            step,
            total: 3,
            epoch: 0,
            per_epoch: 3,
        };
        let a = cpu.train_step(upload(&host, &set, &Device::flex()), at, 1).loss;
        let b = on_gpu.train_step(upload(&host, &set, &gpu), at, 1).loss;
        pairs.push((a, b));
    }
    // Same weights, same augmentation parameters (drawn on the host), same data: the losses
    // differ only by the two backends' summation orders, compounded over the steps. Measured on
    // lavapipe (Mesa 22.3.6): 3.1e-7, 9.0e-7 and 1.1e-6 relative over three steps.
    for (k, (a, b)) in pairs.iter().enumerate() {
        let rel = (a - b).abs() / a.abs().max(1e-6);
        eprintln!("step {k}: cpu {a:.7} wgpu {b:.7} relative difference {rel:.2e}");
        assert!(rel < 2e-5, "step {k}: cpu {a} against wgpu {b}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_short_pretraining_runs_on_wgpu_and_its_checkpoint_loads_on_the_cpu() {
    let Some(_) = wgpu_device() else { return };
    let t = tiny_pretrain();
    let cfg = PretrainConfig {
        run: RunConfig {
            backend: BackendChoice::Wgpu,
            ..t.run
        },
        ..t
    };
    let (bytes, _) = synthetic_images(12, 16, 6);
    let set = Arc::new(ImageSet::from_memory(bytes, 12, 16, 16).unwrap());
    let out = tmp("pretrain");
    let done = pretrain(&cfg, set, vec![], &out, false, &mut Silent, &CancelToken::new()).unwrap();
    assert_eq!(done.steps, 6);
    assert!(done.losses.iter().all(|l| l.is_finite()), "{:?}", done.losses);
    // The checkpoint is backend-independent: the CPU reads it.
    let cpu_cfg = tiny_pretrain();
    CassTrainer::load(&cpu_cfg, &out.join("checkpoint"), &Device::flex()).unwrap();
    fs::remove_dir_all(&out).unwrap();
}

#[test]
fn auto_passes_over_a_cpu_adapter_and_says_so() {
    if vulkan_driver().is_none() {
        eprintln!("skipped: no Vulkan driver");
        return;
    }
    let (_, chosen) = resolve_explained(BackendChoice::Auto).unwrap();
    eprintln!("auto: {chosen:?}");
    assert!(chosen.reason.contains("cuda: not in this build"), "{chosen:?}");
    // With no GPU on the machine there is no GPU adapter: the CPU backend is faster than
    // lavapipe running the same kernels, so auto takes it and says why.
    if no_gpu() {
        assert_eq!(chosen.backend, "cpu");
        assert!(
            chosen.reason.contains("wgpu: no discrete or integrated GPU adapter"),
            "{chosen:?}"
        );
    }
}

/// No GPU device nodes (DRM render nodes, NVIDIA's): wgpu's only adapters are CPU ones.
fn no_gpu() -> bool {
    let render_nodes = fs::read_dir("/dev/dri")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
        })
        .unwrap_or(false);
    !render_nodes && !Path::new("/dev/nvidia0").exists()
}

#[test]
fn a_batch_over_the_devices_buffer_limit_is_a_named_error() {
    let Some(_) = wgpu_device() else { return };
    // 12 images of 1024 px: the batch alone is 144 MiB as f32, over lavapipe's 128 MiB per
    // buffer. (On a GPU with larger buffers this may fit; then only a failure is checked.)
    let t = tiny_pretrain();
    let cfg = PretrainConfig {
        run: RunConfig {
            backend: BackendChoice::Wgpu,
            batch_size: 12,
            epochs: 1,
            ..t.run
        },
        image_size: 1024,
        vit: VitConfig::new(1024, 16, 2, 2).with_patch_size(64).with_num_classes(16),
        ..t
    };
    let (bytes, _) = synthetic_images(12, 1024, 3);
    let set = Arc::new(ImageSet::from_memory(bytes, 12, 1024, 1024).unwrap());
    let out = tmp("limit");
    let result = pretrain(&cfg, set, vec![], &out, false, &mut Silent, &CancelToken::new());
    if no_gpu() {
        // lavapipe: the convolution's unfolded input is the first buffer over the limit
        // (measured: 1764.0 MiB).
        let e = result.unwrap_err();
        eprintln!("{e}");
        assert_eq!(e.code(), "device-limit");
        assert!(e.to_string().contains("the device cannot hold one buffer of"), "{e}");
    } else if let Err(e) = result {
        assert_eq!(e.code(), "device-limit", "{e}");
    }
    let _ = fs::remove_dir_all(&out);
}
