/**
 * ResNet (He et al., 2016) as ONNX nodes, operation for operation the engine's
 * `models/resnet.rs`, which is timm's `ResNet` (the same names, one to one):
 *
 *   conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2 (pad 1) -> layer1..layer4 -> global average pool
 *
 * Stage `s` (0-based) is `layers[s]` blocks of width `baseWidth << s`; the first block of stages
 * 2-4 has stride 2. A basic block is conv1 3x3 (stride) -> bn1 -> relu -> conv2 3x3 -> bn2; a
 * bottleneck is conv1 1x1 -> bn1 -> relu -> conv2 3x3 (stride, or on conv1 with `strideIn1x1`)
 * -> bn2 -> relu -> conv3 1x1 (4x wider) -> bn3. The shortcut is `downsample.0` (1x1 conv, the
 * block's stride) + `downsample.1` (BatchNorm) where the weights have one, else the identity;
 * then add, relu. BatchNorm is the evaluation form, on `running_mean` / `running_var`.
 *
 * BatchNorm stays a node rather than being folded into the convolution: the file keeps timm's
 * tensors as they are, and runtimes fuse the pair themselves (onnxruntime does at load).
 */
import { DataError } from '../errors.js'
import { type GraphBuilder, float } from './graph.js'
import type { WeightTable } from './weights.js'

export interface ResNetSpec {
  block: 'basic' | 'bottleneck'
  /** Blocks per stage. */
  layers: [number, number, number, number]
  /** Width of the stem and the first stage. */
  baseWidth: number
  /** Stride of a downsampling bottleneck on its first 1x1 convolution (ResNet v1, Keras). */
  strideIn1x1: boolean
  bnEps: number
}

/**
 * Adds the ResNet's pooled embedding of `pixels` (already normalised) to `g`, as the value
 * `features`.
 *
 * # Shapes
 * `[batch, 3, h, w] -> [batch, baseWidth * 8 * (1 or 4)]`
 */
export function resnetFeatures(
  g: GraphBuilder,
  w: WeightTable,
  spec: ResNetSpec,
  pixels: string,
): { features: string; dim: number } {
  const expansion = spec.block === 'basic' ? 1 : 4
  const conv = (name: string, x: string, cin: number, cout: number, k: number, stride: number, pad: number) =>
    g.op('Conv', [x, w.param(g, `${name}.weight`, [cout, cin, k, k])], name, {
      kernel_shape: [k, k],
      strides: [stride, stride],
      pads: [pad, pad, pad, pad],
    })
  const bn = (name: string, x: string, channels: number) =>
    g.op(
      'BatchNormalization',
      [x, ...['weight', 'bias', 'running_mean', 'running_var'].map((k) => w.param(g, `${name}.${k}`, [channels]))],
      name,
      { epsilon: float(spec.bnEps) },
    )
  const relu = (x: string, name: string) => g.op('Relu', [x], name)

  const block = (name: string, x: string, inPlanes: number, planes: number, stride: number): string => {
    const out = planes * expansion
    let shortcut = x
    if (w.has(`${name}.downsample.0.weight`)) {
      shortcut = bn(`${name}.downsample.1`, conv(`${name}.downsample.0`, x, inPlanes, out, 1, stride, 0), out)
    } else if (stride !== 1 || inPlanes !== out) {
      throw new DataError(
        `${name} has stride ${stride} and ${inPlanes} -> ${out} channels, so it needs a shortcut projection, but ${name}.downsample.0.weight is missing`,
        'bad-weights',
      )
    }
    let y: string
    if (spec.block === 'basic') {
      y = relu(bn(`${name}.bn1`, conv(`${name}.conv1`, x, inPlanes, planes, 3, stride, 1), planes), `${name}.act1`)
      y = bn(`${name}.bn2`, conv(`${name}.conv2`, y, planes, planes, 3, 1, 1), planes)
    } else {
      const [s1, s3] = spec.strideIn1x1 ? [stride, 1] : [1, stride]
      y = relu(bn(`${name}.bn1`, conv(`${name}.conv1`, x, inPlanes, planes, 1, s1, 0), planes), `${name}.act1`)
      y = relu(bn(`${name}.bn2`, conv(`${name}.conv2`, y, planes, planes, 3, s3, 1), planes), `${name}.act2`)
      y = bn(`${name}.bn3`, conv(`${name}.conv3`, y, planes, out, 1, 1, 0), out)
    }
    return relu(g.op('Add', [y, shortcut], `${name}.add`), `${name}.act`)
  }

  const base = spec.baseWidth
  let x = relu(bn('bn1', conv('conv1', pixels, 3, base, 7, 2, 3), base), 'act1')
  x = g.op('MaxPool', [x], 'maxpool', { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] })
  let inPlanes = base
  spec.layers.forEach((blocks, s) => {
    const planes = base * 2 ** s
    for (let b = 0; b < blocks; b++) {
      x = block(`layer${s + 1}.${b}`, x, inPlanes, planes, s > 0 && b === 0 ? 2 : 1)
      inPlanes = planes * expansion
    }
  })
  const pooled = g.op('GlobalAveragePool', [x], 'global_pool') // [batch, channels, 1, 1]
  return { features: g.op('Flatten', [pooled], 'features', { axis: 1 }), dim: inPlanes } // [batch, channels]
}
