//! The two backbones CASS trains together, and a closed enum over them for the code paths
//! (fine-tuning, evaluation, embedding) that take either.

pub mod batch_norm;
pub mod budget;
pub mod build;
pub mod conv;
pub mod dino_head;
pub mod expander;
pub mod gelu;
pub mod host_attention;
pub mod host_conv;
pub mod host_linear;
pub mod host_matmul;
pub mod host_norm;
pub mod host_pool;
pub mod host_tensor;
pub mod resnet;
pub mod vit;

use std::sync::Mutex;

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
pub use resnet::{BlockKind, ResNet, ResNetConfig};
pub use vit::{Vit, VitConfig};

/// burn's random initialisers draw from one process-wide generator, and parameters initialise
/// lazily, on first use. So that a seed reproduces the same weights even while other jobs (or
/// tests) build models on other threads, every model is built under this lock and all its
/// parameters are materialised before the lock is released. The lock is re-entrant per thread
/// (building a network inside [`init_seeded`] takes it again).
static INIT_LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    static INIT_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` holding the model-initialisation lock.
pub fn with_init_lock<R>(f: impl FnOnce() -> R) -> R {
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            INIT_DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
    let outermost = INIT_DEPTH.with(|d| d.get() == 0);
    let _guard = outermost.then(|| INIT_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    INIT_DEPTH.with(|d| d.set(d.get() + 1));
    let _depth = Depth;
    f()
}

/// Initialises every lazily-initialised parameter of `module` now.
pub fn materialize<M: Module>(module: &M) {
    struct Materialize;
    impl ModuleVisitor for Materialize {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Materialize);
}

/// Builds a module from `build` with the generator seeded by `seed`, reproducibly, and with the
/// same weights on every backend: `build` gets the CPU device (autodiff if `device` is), and the
/// materialised module then moves to `device`. burn's backends draw different numbers from the
/// same seed, so a network initialised on a GPU would not be the one the CPU builds: the wgpu
/// spec found a 22 % different first loss from the same seed before this.
pub fn init_seeded<M: Module>(device: &Device, seed: u64, build: impl FnOnce(&Device) -> M) -> M {
    let cpu = if device.is_autodiff() {
        Device::flex().autodiff()
    } else {
        Device::flex()
    };
    with_init_lock(|| {
        cpu.seed(seed);
        let module = build(&cpu);
        materialize(&module);
        // `fork`, not `to_device`: a moved parameter must stay a trainable leaf, not become the
        // output of a tracked copy (which fails at the second backward).
        if &cpu == device { module } else { module.fork(device) }
    })
}

/// Which of the two networks a downstream job uses.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Arch {
    /// The CNN (ResNet).
    Cnn,
    /// The Vision Transformer.
    Vit,
}

impl Arch {
    /// Name used in file names and reports.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Cnn => "cnn",
            Arch::Vit => "vit",
        }
    }
}

/// Either backbone.
#[derive(Module, Debug)]
pub enum Network {
    Cnn(ResNet),
    Vit(Vit),
}

impl Network {
    /// The same network with the CNN's convolutions computed as `conv` says (a ViT has none).
    pub fn with_conv(self, conv: conv::ConvStrategy) -> Self {
        match self {
            Network::Cnn(m) => Network::Cnn(m.with_conv(conv)),
            v => v,
        }
    }

    /// Pooled embedding. `[batch, 3, h, w] -> [batch, feature_dim]`
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Cnn(m) => m.forward_features(x),
            Network::Vit(m) => m.forward_features(x),
        }
    }

    /// Head output. `[batch, 3, h, w] -> [batch, classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Cnn(m) => m.forward(x),
            Network::Vit(m) => m.forward(x),
        }
    }

    /// Replaces the head by a new linear layer of `num_classes` outputs.
    pub fn with_new_head(self, num_classes: usize, device: &Device) -> Self {
        match self {
            Network::Cnn(m) => Network::Cnn(m.with_new_head(num_classes, device)),
            Network::Vit(m) => Network::Vit(m.with_new_head(num_classes, device)),
        }
    }

    /// Which backbone this is.
    pub fn arch(&self) -> Arch {
        match self {
            Network::Cnn(_) => Arch::Cnn,
            Network::Vit(_) => Arch::Vit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::module_tensors;
    use crate::testing::{device, rand_tensor, tiny_bottleneck, tiny_resnet, tiny_vit};

    fn trainable_count<M: burn::module::Module>(m: &M) -> usize {
        module_tensors(m)
            .iter()
            .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
            .map(|(_, t)| t.data.len())
            .sum()
    }

    #[test]
    fn resnet50_has_torchvision_names_shapes_and_parameter_count() {
        let m = ResNetConfig::resnet50(1000).init(&device());
        let t = module_tensors(&m);
        for (name, shape) in [
            ("conv1.weight", vec![64, 3, 7, 7]),
            ("bn1.weight", vec![64]),
            ("bn1.running_var", vec![64]),
            ("layer1.0.downsample.0.weight", vec![256, 64, 1, 1]),
            ("layer1.0.downsample.1.bias", vec![256]),
            ("layer2.0.conv2.weight", vec![128, 128, 3, 3]),
            ("layer4.2.conv3.weight", vec![2048, 512, 1, 1]),
            ("fc.weight", vec![1000, 2048]),
            ("fc.bias", vec![1000]),
        ] {
            assert_eq!(t.get(name).map(|x| x.shape.clone()), Some(shape), "{name}");
        }
        assert_eq!(trainable_count(&m), 25_557_032);
    }

    #[test]
    fn resnet18_parameter_count_matches_torchvision() {
        assert_eq!(
            trainable_count(&ResNetConfig::resnet18(1000).init(&device())),
            11_689_512
        );
    }

    #[test]
    fn vit_base_384_has_timm_names_and_parameter_count() {
        let m = VitConfig::base(384, 1000).init(&device());
        let t = module_tensors(&m);
        for (name, shape) in [
            ("cls_token", vec![1, 1, 768]),
            ("pos_embed", vec![1, 577, 768]),
            ("patch_embed.proj.weight", vec![768, 3, 16, 16]),
            ("blocks.0.norm1.weight", vec![768]),
            ("blocks.11.attn.qkv.weight", vec![2304, 768]),
            ("blocks.11.attn.proj.bias", vec![768]),
            ("blocks.3.mlp.fc1.weight", vec![3072, 768]),
            ("norm.bias", vec![768]),
            ("head.weight", vec![1000, 768]),
        ] {
            assert_eq!(t.get(name).map(|x| x.shape.clone()), Some(shape), "{name}");
        }
        assert_eq!(trainable_count(&m), 86_859_496);
    }

    #[test]
    fn forward_shapes_for_every_variant() {
        let d = device();
        let x = rand_tensor([2, 3, 32, 32], 1, &d);
        for cfg in [
            tiny_resnet(10),
            tiny_bottleneck(10),
            tiny_bottleneck(10).with_stride_in_1x1(true),
        ] {
            let m = cfg.init(&d);
            assert_eq!(m.forward_features(x.clone()).dims(), [2, cfg.feature_dim()]);
            assert_eq!(m.forward(x.clone()).dims(), [2, 10]);
        }
        let v = tiny_vit(32, 10).init(&d);
        assert_eq!(v.forward_features(x.clone()).dims(), [2, 16]);
        assert_eq!(v.forward(x).dims(), [2, 10]);
    }

    #[test]
    fn invalid_vit_geometry_is_reported_with_the_field() {
        let err = tiny_vit(30, 10).validate().unwrap_err();
        assert!(err.contains("vit.imageSize"), "{err}");
        let err = VitConfig::new(32, 18, 1, 4).validate().unwrap_err();
        assert!(err.contains("vit.numHeads"), "{err}");
    }

    #[test]
    fn new_head_changes_only_the_output_width() {
        let d = device();
        let x = rand_tensor([2, 3, 16, 16], 2, &d);
        let net = Network::Vit(tiny_vit(16, 10).init(&d));
        let before = net.forward_features(x.clone()).into_data();
        let net = net.with_new_head(3, &d);
        assert_eq!(net.forward(x.clone()).dims(), [2, 3]);
        assert_eq!(net.forward_features(x).into_data(), before);
    }
}
