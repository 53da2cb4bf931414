//! ResNet (He et al., 2016) in the torchvision / timm layout, so that parameter names match
//! timm state dicts one to one (`conv1`, `bn1`, `layer1.0.conv1`, ..., `fc`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::module::adaptive_avg_pool2d;

use super::batch_norm::BatchNorm;
use super::conv::{ConvStrategy, conv_bn};
use super::host_pool::max_pool2d;

/// Residual block type.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34).
    Basic,
    /// 1x1 -> 3x3 -> 1x1 with expansion 4 (ResNet-50 and deeper).
    Bottleneck,
}

/// Configuration of a ResNet.
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Block type.
    pub block: BlockKind,
    /// Number of blocks in each of the four stages.
    pub layers: [usize; 4],
    /// Width of the stem and of the first stage (64 in the standard nets).
    #[config(default = 64)]
    pub base_width: usize,
    /// Width of the classification head (1000 for ImageNet heads).
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Original ResNet v1 (Keras/Caffe): the stride of a downsampling bottleneck sits on its
    /// first 1x1 convolution instead of the 3x3 (torchvision "v1.5").
    #[config(default = false)]
    pub stride_in_1x1: bool,
    /// BatchNorm epsilon (1e-5 in torchvision, 1e-3 in Keras).
    #[config(default = 1e-5)]
    pub bn_eps: f64,
}

impl ResNetConfig {
    /// ResNet-18 (basic blocks, [2, 2, 2, 2]).
    pub fn resnet18(num_classes: usize) -> Self {
        Self::new(BlockKind::Basic, [2, 2, 2, 2]).with_num_classes(num_classes)
    }
    /// ResNet-34 (basic blocks, [3, 4, 6, 3]).
    pub fn resnet34(num_classes: usize) -> Self {
        Self::new(BlockKind::Basic, [3, 4, 6, 3]).with_num_classes(num_classes)
    }
    /// ResNet-50 (bottlenecks, [3, 4, 6, 3]).
    pub fn resnet50(num_classes: usize) -> Self {
        Self::new(BlockKind::Bottleneck, [3, 4, 6, 3]).with_num_classes(num_classes)
    }

    fn expansion(&self) -> usize {
        match self.block {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }

    /// Width of the pooled embedding (`forward_features`).
    pub fn feature_dim(&self) -> usize {
        self.base_width * 8 * self.expansion()
    }

    /// Builds the network with torchvision's initialisation (Kaiming-normal fan-out convolutions,
    /// unit BatchNorm).
    pub fn init(&self, device: &Device) -> ResNet {
        super::with_init_lock(|| {
            let model = self.build(device);
            super::materialize(&model);
            model
        })
    }

    fn build(&self, device: &Device) -> ResNet {
        assert!(
            self.layers.iter().all(|&n| n > 0),
            "every ResNet stage needs at least one block"
        );
        let conv1 = conv(self.in_channels, self.base_width, 7, 2, 3, device);
        let bn1 = bn(self.base_width, self.bn_eps, device);
        let maxpool = MaxPool2dConfig::new([3, 3])
            .with_strides([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init();
        let mut in_planes = self.base_width;
        let mut stages: Vec<Vec<Block>> = Vec::with_capacity(4);
        for (i, &blocks) in self.layers.iter().enumerate() {
            let planes = self.base_width << i;
            let stride = if i == 0 { 1 } else { 2 };
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let s = if b == 0 { stride } else { 1 };
                stage.push(self.block_init(in_planes, planes, s, device));
                in_planes = planes * self.expansion();
            }
            stages.push(stage);
        }
        let fc = LinearConfig::new(self.feature_dim(), self.num_classes).init(device);
        let mut it = stages.into_iter();
        ResNet {
            conv1,
            bn1,
            maxpool,
            layer1: it.next().unwrap_or_default(),
            layer2: it.next().unwrap_or_default(),
            layer3: it.next().unwrap_or_default(),
            layer4: it.next().unwrap_or_default(),
            fc,
            conv: ConvStrategy::Auto,
        }
    }

    fn block_init(&self, in_planes: usize, planes: usize, stride: usize, device: &Device) -> Block {
        let out = planes * self.expansion();
        let downsample = (stride != 1 || in_planes != out).then(|| Downsample {
            conv: conv(in_planes, out, 1, stride, 0, device),
            bn: bn(out, self.bn_eps, device),
        });
        match self.block {
            BlockKind::Basic => Block {
                conv1: conv(in_planes, planes, 3, stride, 1, device),
                bn1: bn(planes, self.bn_eps, device),
                conv2: conv(planes, planes, 3, 1, 1, device),
                bn2: bn(planes, self.bn_eps, device),
                conv3: None,
                bn3: None,
                downsample,
            },
            BlockKind::Bottleneck => {
                let (s1, s3) = if self.stride_in_1x1 { (stride, 1) } else { (1, stride) };
                Block {
                    conv1: conv(in_planes, planes, 1, s1, 0, device),
                    bn1: bn(planes, self.bn_eps, device),
                    conv2: conv(planes, planes, 3, s3, 1, device),
                    bn2: bn(planes, self.bn_eps, device),
                    conv3: Some(conv(planes, out, 1, 1, 0, device)),
                    bn3: Some(bn(out, self.bn_eps, device)),
                    downsample,
                }
            }
        }
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, pad: usize, device: &Device) -> Conv2d {
    // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") -> std = sqrt(2 / fan_out).
    let fan_out = (cout * k * k) as f64;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: (2.0 / fan_out).sqrt(),
        })
        .init(device)
}

fn bn(features: usize, eps: f64, device: &Device) -> BatchNorm {
    BatchNorm::new(features, eps, device)
}

/// 1x1 projection of the shortcut (`downsample.0` conv, `downsample.1` BatchNorm in timm).
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// A residual block; `conv3`/`bn3` exist only in bottlenecks.
#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    pub downsample: Option<Downsample>,
}

impl Block {
    /// # Shapes
    /// `[batch, c_in, h, w] -> [batch, c_out, h / stride, w / stride]`
    pub fn forward(&self, x: Tensor<4>, conv: ConvStrategy) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(d) => conv_bn(&d.conv, &d.bn, x.clone(), conv, None, false),
            None => x.clone(),
        };
        let y = conv_bn(&self.conv1, &self.bn1, x, conv, None, true);
        match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => {
                let y = conv_bn(&self.conv2, &self.bn2, y, conv, None, true);
                conv_bn(conv3, bn3, y, conv, Some(shortcut), true)
            }
            _ => conv_bn(&self.conv2, &self.bn2, y, conv, Some(shortcut), true),
        }
    }
}

/// ResNet with a linear classification head.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<Block>,
    pub layer2: Vec<Block>,
    pub layer3: Vec<Block>,
    pub layer4: Vec<Block>,
    pub fc: Linear,
    /// How convolutions are computed (the run config's `conv`; the same convolution either way,
    /// summed in another order, see [`super::conv`]).
    #[module(skip)]
    pub conv: ConvStrategy,
}

impl ResNet {
    /// The output of stage `upto` (1 to 4: `layer1` .. `layer4`), where class-activation maps
    /// are taken.
    ///
    /// # Shapes
    /// `[batch, 3, h, w] -> [batch, c, h', w']`, `h' = h / 2^(upto + 1)` rounded up
    pub fn forward_to_stage(&self, x: Tensor<4>, upto: usize) -> Tensor<4> {
        let mut x = conv_bn(&self.conv1, &self.bn1, x, self.conv, None, true);
        x = max_pool2d(&self.maxpool, x);
        for stage in self.stages().into_iter().take(upto) {
            for block in stage {
                x = block.forward(x, self.conv);
            }
        }
        x
    }

    /// Logits from the output of stage `from` (the rest of [`Self::forward`]).
    ///
    /// # Shapes
    /// `[batch, c, h', w'] -> [batch, num_classes]`
    pub fn forward_from_stage(&self, mut x: Tensor<4>, from: usize) -> Tensor<2> {
        for stage in self.stages().into_iter().skip(from) {
            for block in stage {
                x = block.forward(x, self.conv);
            }
        }
        self.fc.forward(Self::pool(x))
    }

    fn stages(&self) -> [&[Block]; 4] {
        [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
    }

    /// Global average pooling of the last stage's output.
    ///
    /// # Shapes
    /// `[batch, feature_dim, h', w'] -> [batch, feature_dim]`
    pub fn pool(x: Tensor<4>) -> Tensor<2> {
        let [b, c, _, _] = x.dims();
        adaptive_avg_pool2d(x, [1, 1]).reshape([b, c]) // [batch, channels]
    }

    /// Pooled embedding after global average pooling.
    ///
    /// # Shapes
    /// `[batch, 3, h, w] -> [batch, feature_dim]`
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        Self::pool(self.forward_to_stage(x, 4))
    }

    /// Head output ("logits").
    ///
    /// # Shapes
    /// `[batch, 3, h, w] -> [batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.forward_features(x))
    }

    /// The same network with convolutions computed as `conv` says.
    pub fn with_conv(mut self, conv: ConvStrategy) -> Self {
        self.conv = conv;
        self
    }

    /// Replaces the classification head by a freshly initialised linear layer.
    pub fn with_new_head(mut self, num_classes: usize, device: &Device) -> Self {
        let [d_in, _] = self.fc.weight.dims();
        self.fc = super::with_init_lock(|| {
            let fc = LinearConfig::new(d_in, num_classes).init(device);
            super::materialize(&fc);
            fc
        });
        self
    }
}
