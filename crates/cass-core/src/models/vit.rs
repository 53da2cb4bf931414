//! Vision Transformer (Dosovitskiy et al., 2021) in timm's layout (`patch_embed.proj`,
//! `cls_token`, `pos_embed`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`,
//! `norm`, `head`): pre-LayerNorm (eps 1e-6), exact GELU, CLS-token pooling.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::module::{attention, interpolate};
use burn::tensor::ops::{AttentionModuleOptions, InterpolateMode, InterpolateOptions};

use super::gelu::gelu;
use super::host_attention;
use super::host_linear::linear;
use super::host_tensor::on_host;

const LN_EPS: f64 = 1e-6;

/// Configuration of a ViT.
#[derive(Config, Debug)]
pub struct VitConfig {
    /// Input image side (square images).
    pub image_size: usize,
    /// Patch side.
    #[config(default = 16)]
    pub patch_size: usize,
    /// Token width.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads (must divide `embed_dim`).
    pub num_heads: usize,
    /// Hidden width of the MLP as a multiple of `embed_dim`.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Width of the classification head.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
}

impl VitConfig {
    /// ViT-Ti/16 (192 wide, 12 blocks, 3 heads).
    pub fn tiny(image_size: usize, num_classes: usize) -> Self {
        Self::new(image_size, 192, 12, 3).with_num_classes(num_classes)
    }
    /// ViT-S/16 (384 wide, 12 blocks, 6 heads).
    pub fn small(image_size: usize, num_classes: usize) -> Self {
        Self::new(image_size, 384, 12, 6).with_num_classes(num_classes)
    }
    /// ViT-B/16 (768 wide, 12 blocks, 12 heads).
    pub fn base(image_size: usize, num_classes: usize) -> Self {
        Self::new(image_size, 768, 12, 12).with_num_classes(num_classes)
    }

    /// Number of patches (tokens without the CLS token).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Checks the geometry; returns a readable message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "vit.imageSize ({}) must be a positive multiple of vit.patchSize ({})",
                self.image_size, self.patch_size
            ));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "vit.numHeads ({}) must divide vit.embedDim ({})",
                self.num_heads, self.embed_dim
            ));
        }
        Ok(())
    }

    /// Builds the network with timm-like initialisation (truncated normal replaced by a
    /// normal of std 0.02 for linear weights and position embeddings).
    pub fn init(&self, device: &Device) -> Vit {
        super::with_init_lock(|| {
            let model = self.build(device);
            super::materialize(&model);
            model
        })
    }

    fn build(&self, device: &Device) -> Vit {
        if let Err(msg) = self.validate() {
            panic!("{msg}");
        }
        let d = self.embed_dim;
        let normal = Initializer::Normal { mean: 0.0, std: 0.02 };
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).with_initializer(normal.clone()).init(device);
        let hidden = (d as f64 * self.mlp_ratio) as usize;
        let blocks = (0..self.depth)
            .map(|_| VitBlock {
                norm1: LayerNormConfig::new(d).with_epsilon(LN_EPS).init(device),
                attn: Attention {
                    qkv: linear(d, 3 * d),
                    proj: linear(d, d),
                    num_heads: self.num_heads,
                },
                norm2: LayerNormConfig::new(d).with_epsilon(LN_EPS).init(device),
                mlp: Mlp {
                    fc1: linear(d, hidden),
                    fc2: linear(hidden, d),
                },
            })
            .collect();
        Vit {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([self.in_channels, d], [self.patch_size, self.patch_size])
                    .with_stride([self.patch_size, self.patch_size])
                    .init(device),
            },
            cls_token: Param::from_tensor(Tensor::random(
                [1, 1, d],
                burn::tensor::Distribution::Normal(0.0, 1e-6),
                device,
            )),
            pos_embed: Param::from_tensor(Tensor::random(
                [1, self.num_patches() + 1, d],
                burn::tensor::Distribution::Normal(0.0, 0.02),
                device,
            )),
            blocks,
            norm: LayerNormConfig::new(d).with_epsilon(LN_EPS).init(device),
            head: linear(d, self.num_classes),
        }
    }
}

/// Non-overlapping patch projection (`patch_embed.proj`).
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Conv2d,
}

/// Multi-head self-attention with a fused `qkv` projection.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub proj: Linear,
    #[module(skip)]
    pub num_heads: usize,
}

impl Attention {
    /// Queries, keys and values, each `[batch, heads, tokens, head_dim]`.
    fn qkv(&self, x: Tensor<3>) -> [Tensor<4>; 3] {
        let [b, n, d] = x.dims();
        let h = self.num_heads;
        let hd = d / h;
        let qkv = linear(&self.qkv, x).reshape([b, n, 3, h, hd]).permute([2, 0, 3, 1, 4]); // [3, batch, heads, tokens, head_dim]
        let q = qkv.clone().narrow(0, 0, 1).reshape([b, h, n, hd]);
        let k = qkv.clone().narrow(0, 1, 1).reshape([b, h, n, hd]);
        let v = qkv.narrow(0, 2, 1).reshape([b, h, n, hd]);
        [q, k, v]
    }

    /// The attention weights themselves, `softmax(q k^T / sqrt(head_dim))` per head: what
    /// [`Self::forward`] computes inside burn's fused kernel, spelled out for explanations
    /// (attention rollout), which need them.
    ///
    /// # Shapes
    /// `[batch, tokens, dim] -> [batch, heads, tokens, tokens]`
    pub fn weights(&self, x: Tensor<3>) -> Tensor<4> {
        let [q, k, _] = self.qkv(x);
        let [_, _, _, hd] = q.dims();
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (hd as f64).sqrt());
        burn::tensor::activation::softmax(scores, 3)
    }

    /// # Shapes
    /// `[batch, tokens, dim] -> [batch, tokens, dim]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        if on_host(&x) {
            // On the CPU, one operation from the projection's output (`host_attention`).
            return linear(
                &self.proj,
                host_attention::host_attention(linear(&self.qkv, x), self.num_heads),
            );
        }
        let [q, k, v] = self.qkv(x);
        // burn's fused scaled-dot-product attention (scale 1/sqrt(head_dim)); on an autodiff
        // device it is composed from differentiable ops, in evaluation the backend's kernel runs.
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default()); // [b, h, n, hd]
        let out = out.swap_dims(1, 2).reshape([b, n, d]); // [b, n, dim]
        linear(&self.proj, out)
    }
}

/// Two-layer MLP with exact (erf) GELU.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

/// Pre-norm transformer block.
#[derive(Module, Debug)]
pub struct VitBlock {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
}

impl VitBlock {
    /// # Shapes
    /// `[batch, tokens, dim] -> [batch, tokens, dim]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let normed = self.norm1.forward(x.clone());
        self.forward_from_norm1(x, normed)
    }

    /// The block given its input `x` and `normed = norm1(x)` computed by the caller: the split
    /// that lets explanations differentiate with respect to `norm1`'s output.
    ///
    /// # Shapes
    /// `[batch, tokens, dim], [batch, tokens, dim] -> [batch, tokens, dim]`
    pub fn forward_from_norm1(&self, x: Tensor<3>, normed: Tensor<3>) -> Tensor<3> {
        let x = x + self.attn.forward(normed);
        let hidden = gelu(linear(&self.mlp.fc1, self.norm2.forward(x.clone())));
        let y = linear(&self.mlp.fc2, hidden);
        x + y
    }
}

/// Vision Transformer with CLS pooling and a linear head.
#[derive(Module, Debug)]
pub struct Vit {
    pub patch_embed: PatchEmbed,
    pub cls_token: Param<Tensor<3>>,
    pub pos_embed: Param<Tensor<3>>,
    pub blocks: Vec<VitBlock>,
    pub norm: LayerNorm,
    pub head: Linear,
}

impl Vit {
    /// Patch tokens with the CLS token prepended and positions added.
    ///
    /// # Shapes
    /// `[batch, 3, h, w] -> [batch, 1 + patches, embed_dim]`
    pub fn embed_tokens(&self, x: Tensor<4>) -> Tensor<3> {
        let p = self.patch_embed.proj.forward(x); // [b, dim, h/p, w/p]
        let [b, d, gh, gw] = p.dims();
        let tokens = p.reshape([b, d, gh * gw]).swap_dims(1, 2); // [b, patches, dim]
        let cls = self.cls_token.val().expand([b, 1, d]);
        Tensor::cat(vec![cls, tokens], 1) + self.pos_embed_for(gh, gw) // [b, tokens, dim]
    }

    /// CLS-token embedding of the last block's output: the final LayerNorm, then the CLS row.
    ///
    /// # Shapes
    /// `[batch, tokens, embed_dim] -> [batch, embed_dim]`
    pub fn pool(&self, x: Tensor<3>) -> Tensor<2> {
        let [b, _, d] = x.dims();
        self.norm.forward(x).narrow(1, 0, 1).reshape([b, d])
    }

    /// CLS-token embedding after the final LayerNorm.
    ///
    /// # Shapes
    /// `[batch, 3, h, w] -> [batch, embed_dim]`
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.embed_tokens(x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.pool(x)
    }

    /// Head output ("logits").
    ///
    /// # Shapes
    /// `[batch, 3, h, w] -> [batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.forward_features(x))
    }

    /// The position embedding for a `gh x gw` patch grid: the trained one when the grid is the
    /// training grid, else its patch part resized bicubically (half-pixel centres), as DINO does
    /// for its smaller local crops. The CLS position is kept.
    ///
    /// # Shapes
    /// -> `[1, 1 + gh * gw, dim]`
    fn pos_embed_for(&self, gh: usize, gw: usize) -> Tensor<3> {
        let pe = self.pos_embed.val(); // [1, 1 + n, dim]
        let [_, tokens, d] = pe.dims();
        if tokens == 1 + gh * gw {
            return pe;
        }
        let side = ((tokens - 1) as f64).sqrt().round() as usize;
        let cls = pe.clone().narrow(1, 0, 1); // [1, 1, dim]
        let grid = pe
            .narrow(1, 1, tokens - 1)
            .reshape([1, side, side, d])
            .permute([0, 3, 1, 2]); // [1, dim, side, side]
        let resized = interpolate(
            grid,
            InterpolateOptions::new(InterpolateMode::Bicubic).with_output_size([gh, gw]),
        ); // [1, dim, gh, gw]
        let patches = resized.permute([0, 2, 3, 1]).reshape([1, gh * gw, d]);
        Tensor::cat(vec![cls, patches], 1)
    }

    /// Replaces the classification head by a freshly initialised linear layer.
    pub fn with_new_head(mut self, num_classes: usize, device: &Device) -> Self {
        let [d_in, _] = self.head.weight.dims();
        self.head = super::with_init_lock(|| {
            let head = LinearConfig::new(d_in, num_classes)
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
                .init(device);
            super::materialize(&head);
            head
        });
        self
    }
}
