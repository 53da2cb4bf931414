/**
 * Vision Transformer (Dosovitskiy et al., 2021) as ONNX nodes, operation for operation the
 * engine's `models/vit.rs`, which is timm's `VisionTransformer` with CLS pooling (the same
 * names, one to one):
 *
 *   patch_embed.proj (conv patch x patch, stride patch, with bias) -> flatten to tokens
 *   -> prepend cls_token -> add pos_embed -> blocks -> norm -> the CLS token
 *
 * A block is pre-LayerNorm (eps 1e-6): `x + attn(norm1(x))`, then `x + mlp(norm2(x))`. The
 * attention projects to a fused `qkv`, read as `[batch, tokens, 3, heads, head_dim]`, scores are
 * `q k^T / sqrt(head_dim)`, softmax over the keys, then `proj`. The MLP is fc1 -> GELU -> fc2, with
 * GELU in its exact form, `0.5 x (1 + erf(x / sqrt 2))` (opset 17 has no GELU node; runtimes
 * recognise the pattern). Linear layers are `MatMul` by the transposed weight (`<name>.weight.T`)
 * plus the bias.
 *
 * The image size is fixed: `pos_embed` holds one position per patch of the training grid.
 */
import { type GraphBuilder, float } from './graph.js'
import type { WeightTable } from './weights.js'

export interface VitSpec {
  imageSize: number
  patchSize: number
  embedDim: number
  depth: number
  numHeads: number
  /** Hidden width of the MLP over `embedDim` (the hidden width is truncated, as the engine does). */
  mlpRatio: number
}

const LN_EPS = 1e-6

/**
 * Adds the ViT's CLS embedding of `pixels` (already normalised) to `g`, as the value `features`.
 *
 * # Shapes
 * `[batch, 3, imageSize, imageSize] -> [batch, embedDim]`
 */
export function vitFeatures(g: GraphBuilder, w: WeightTable, spec: VitSpec, pixels: string): { features: string; dim: number } {
  const d = spec.embedDim
  const p = spec.patchSize
  const patches = (spec.imageSize / p) ** 2
  const tokens = 1 + patches
  const heads = spec.numHeads
  const headDim = d / heads
  const hidden = Math.trunc(d * spec.mlpRatio)

  const layerNorm = (name: string, x: string) =>
    g.op('LayerNormalization', [x, w.param(g, `${name}.weight`, [d]), w.param(g, `${name}.bias`, [d])], name, {
      axis: -1,
      epsilon: float(LN_EPS),
    })
  const linear = (name: string, x: string, inputs: number, outputs: number) => {
    const { weightT, bias } = w.linear(g, name, inputs, outputs)
    return g.op('Add', [g.op('MatMul', [x, weightT], `${name}.matmul`), bias], name)
  }
  // Constants shared by every block.
  const splitHeads = g.int64s('qkv_heads_shape', [0, 0, 3, heads, headDim])
  const mergeHeads = g.int64s('tokens_shape', [0, 0, d])
  const qkvIndex = [0, 1, 2].map((i) => g.int64s(`qkv_index_${i}`, [i], []))
  const scale = g.floats('attn_scale', [1 / Math.sqrt(headDim)], [])
  const sqrt2 = g.floats('sqrt2', [Math.SQRT2], [])
  const one = g.floats('one', [1], [])
  const half = g.floats('half', [0.5], [])

  const attention = (name: string, x: string) => {
    const qkv = linear(`${name}.qkv`, x, d, 3 * d) // [batch, tokens, 3 dim]
    const split = g.op('Reshape', [qkv, splitHeads], `${name}.qkv_heads`) // [batch, tokens, 3, heads, head_dim]
    const stacked = g.op('Transpose', [split], `${name}.qkv_stacked`, { perm: [2, 0, 3, 1, 4] }) // [3, batch, heads, tokens, head_dim]
    const [q, k, v] = ['q', 'k', 'v'].map((part, i) => g.op('Gather', [stacked, qkvIndex[i]], `${name}.${part}`, { axis: 0 }))
    const kT = g.op('Transpose', [k], `${name}.k_transposed`, { perm: [0, 1, 3, 2] }) // [batch, heads, head_dim, tokens]
    const scores = g.op('Mul', [g.op('MatMul', [q, kT], `${name}.qk`), scale], `${name}.scores`) // [batch, heads, tokens, tokens]
    const weights = g.op('Softmax', [scores], `${name}.softmax`, { axis: -1 })
    const mixed = g.op('MatMul', [weights, v], `${name}.mixed`) // [batch, heads, tokens, head_dim]
    const merged = g.op('Transpose', [mixed], `${name}.mixed_tokens`, { perm: [0, 2, 1, 3] }) // [batch, tokens, heads, head_dim]
    return linear(`${name}.proj`, g.op('Reshape', [merged, mergeHeads], `${name}.merged`), d, d)
  }
  const gelu = (name: string, x: string) => {
    const erf = g.op('Erf', [g.op('Div', [x, sqrt2], `${name}.scaled`)], `${name}.erf`)
    return g.op('Mul', [g.op('Mul', [x, g.op('Add', [erf, one], `${name}.one_plus_erf`)], `${name}.x_times`), half], name)
  }

  const grid = g.op(
    'Conv',
    [pixels, w.param(g, 'patch_embed.proj.weight', [d, 3, p, p]), w.param(g, 'patch_embed.proj.bias', [d])],
    'patch_embed.proj',
    {
      kernel_shape: [p, p],
      strides: [p, p],
    },
  ) // [batch, dim, grid, grid]
  const flat = g.op('Reshape', [grid, g.int64s('patch_tokens_shape', [0, d, patches])], 'patch_embed.flatten') // [batch, dim, patches]
  const patchTokens = g.op('Transpose', [flat], 'patch_embed.tokens', { perm: [0, 2, 1] }) // [batch, patches, dim]
  const batch = g.op('Shape', [pixels], 'batch_size', { start: 0, end: 1 }) // [1], int64
  const clsShape = g.op('Concat', [batch, g.int64s('cls_shape_tail', [1, d])], 'cls_shape', { axis: 0 })
  const cls = g.op('Expand', [w.param(g, 'cls_token', [1, 1, d]), clsShape], 'cls_tokens') // [batch, 1, dim]
  const joined = g.op('Concat', [cls, patchTokens], 'tokens', { axis: 1 }) // [batch, tokens, dim]
  let x = g.op('Add', [joined, w.param(g, 'pos_embed', [1, tokens, d])], 'pos_embedded')

  for (let b = 0; b < spec.depth; b++) {
    const name = `blocks.${b}`
    x = g.op('Add', [x, attention(`${name}.attn`, layerNorm(`${name}.norm1`, x))], `${name}.attn_residual`)
    const h = gelu(`${name}.mlp.act`, linear(`${name}.mlp.fc1`, layerNorm(`${name}.norm2`, x), d, hidden))
    x = g.op('Add', [x, linear(`${name}.mlp.fc2`, h, hidden, d)], `${name}.mlp_residual`)
  }
  const normed = layerNorm('norm', x) // [batch, tokens, dim]
  const clsIndex = g.int64s('cls_index', [0], [])
  return { features: g.op('Gather', [normed, clsIndex], 'features', { axis: 1 }), dim: d } // [batch, dim]
}
