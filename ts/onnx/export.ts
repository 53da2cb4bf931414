/**
 * ONNX export of the engine's two backbones, built from their timm-named weights and their
 * architecture (no tracing: the graph is written op by op, `resnet.ts` and `vit.ts`).
 *
 * The model, opset 17 (ir_version 8, producer `cass-ssl`):
 * - input `pixels`: float32 `[batch, 3, imageSize, imageSize]`, RGB in [0, 1] (8-bit values
 *   divided by 255), `batch` a dynamic axis. The image must already be at `imageSize`: the graph
 *   does not resize.
 * - the normalisation is inside the graph, as the engine applies it: for `bgr` networks the
 *   channels are first reversed (Gather [2, 1, 0] on axis 1), then `(x - mean) / std` per channel,
 *   with `mean` and `std` given in the network's channel order. Callers feed plain RGB.
 * - output `logits` `[batch, numClasses]` (the classifier: `fc` of a ResNet, `head` of a ViT) or
 *   `features` `[batch, dim]` (the pooled embedding, timm's `forward_features` plus pooling).
 * - metadata_props: `cass.arch`, `cass.output`, `cass.image_size`, `cass.input` (a sentence on
 *   what to feed) and `cass.preprocess`, the normalisation as the engine's weight files state it
 *   (`{"channel_order":"rgb","mean":[...],"std":[...]}`), plus the caller's `metadata`.
 *
 * Weights are checked strictly: a missing tensor, a tensor of another shape, or one the
 * architecture leaves unused is a `DataError` (code `bad-weights`); the classifier may be
 * absent or unused when the output is `features`.
 */
import { z } from 'zod'

import { LIMITS, checkVitGeometry, parseWith, resnetSchema, vitSchema } from '../config.js'
import { GraphBuilder, type HostTensor } from './graph.js'
import { type ResNetSpec, resnetFeatures } from './resnet.js'
import { type VitSpec, vitFeatures } from './vit.js'
import { WeightTable } from './weights.js'

export const ONNX_OPSET = 17
export const ONNX_IR_VERSION = 8

export interface OnnxNetworkSpec {
  arch: 'cnn' | 'vit'
  cnn?: ResNetSpec
  vit?: VitSpec
  /** logits: the classifier head's output (fc / head); features: the pooled embedding (forward_features) */
  output: 'logits' | 'features'
  imageSize: number
  /** per channel, for inputs in [0,1], in the network's channel order */
  normalization: { mean: [number, number, number]; std: [number, number, number]; channelOrder: 'rgb' | 'bgr' }
  /** timm-named tensors (row-major f32), e.g. conv1.weight, bn1.running_mean, layer1.0.conv1.weight, fc.weight; patch_embed.proj.weight, cls_token, pos_embed, blocks.0.norm1.weight, blocks.0.attn.qkv.weight, head.weight ... */
  tensors: Map<string, HostTensor>
  metadata?: Record<string, string>
}

/** The metadata keys this export writes; the caller's `metadata` may not use them. */
const OWN_KEYS = ['cass.arch', 'cass.output', 'cass.image_size', 'cass.input', 'cass.preprocess']

const imageSize = z.number().int().min(1).max(LIMITS.imageSize)
const triple = <S extends z.ZodType>(s: S) => z.tuple([s, s, s])

const specSchema = z
  .strictObject({
    arch: z.enum(['cnn', 'vit']),
    cnn: resnetSchema.optional(),
    vit: vitSchema.extend({ imageSize }).optional(),
    output: z.enum(['logits', 'features']),
    imageSize,
    normalization: z.strictObject({
      mean: triple(z.number()),
      std: triple(z.number().positive()),
      channelOrder: z.enum(['rgb', 'bgr']),
    }),
    tensors: z.instanceof(Map),
    metadata: z.record(z.string(), z.string()).optional(),
  })
  .superRefine((s, ctx) => {
    if (s[s.arch] === undefined) {
      ctx.addIssue({ code: 'custom', path: [s.arch], message: `required when arch is "${s.arch}"` })
    }
    if (s.arch === 'vit' && s.vit !== undefined) {
      if (s.vit.imageSize !== s.imageSize) {
        ctx.addIssue({
          code: 'custom',
          path: ['vit', 'imageSize'],
          message: `${s.vit.imageSize} is not imageSize ${s.imageSize}`,
        })
      }
      checkVitGeometry({ vit: s.vit, imageSize: s.imageSize }, ctx)
    }
    for (const key of Object.keys(s.metadata ?? {}).filter((k) => OWN_KEYS.includes(k))) {
      ctx.addIssue({ code: 'custom', path: ['metadata', key], message: 'is written by the export itself' })
    }
  })

/** The ONNX model (serialised `ModelProto`) of one network; see the module comment. */
export function buildOnnx(spec: OnnxNetworkSpec): Uint8Array {
  const s = parseWith(specSchema, spec, 'ONNX export')
  const { mean, std, channelOrder } = s.normalization
  const g = new GraphBuilder()
  const weights = new WeightTable(spec.tensors)

  let x = g.input('pixels') // [batch, 3, size, size], RGB in [0, 1]
  if (channelOrder === 'bgr') x = g.op('Gather', [x, g.int64s('bgr_channels', [2, 1, 0])], 'bgr', { axis: 1 })
  x = g.op('Sub', [x, g.floats('mean', mean, [1, 3, 1, 1])], 'centred')
  x = g.op('Div', [x, g.floats('std', std, [1, 3, 1, 1])], 'normalised')

  const { features, dim } = s.arch === 'cnn' ? resnetFeatures(g, weights, s.cnn!, x) : vitFeatures(g, weights, s.vit!, x)
  const head = s.arch === 'cnn' ? 'fc' : 'head'
  let outputDim = dim
  let output = features
  if (s.output === 'logits') {
    const weight = weights.take(`${head}.weight`, [null, dim])
    outputDim = weight.shape[0]
    const bias = weights.param(g, `${head}.bias`, [outputDim])
    output = g.op('Gemm', [features, g.weight(`${head}.weight`, weight), bias], 'logits', { transB: 1 }) // [batch, classes]
  }
  const isHead = (name: string) => name === `${head}.weight` || name === `${head}.bias`
  weights.checkAllUsed(`the ${s.arch} of this spec`, (name) => s.output === 'features' && isHead(name))

  const { arch, output: kind } = s
  return g.encode({
    inputs: [{ name: 'pixels', dims: ['batch', 3, s.imageSize, s.imageSize] }],
    outputs: [{ name: output, dims: ['batch', outputDim] }],
    opsetVersion: ONNX_OPSET,
    irVersion: ONNX_IR_VERSION,
    producerName: 'cass-ssl',
    graphName: `cass-ssl ${arch} ${kind}`,
    docString: `cass-ssl ${arch === 'cnn' ? 'ResNet' : 'ViT'} (${kind}); input pixels: RGB in [0, 1], normalised in the graph`,
    metadata: {
      ...s.metadata,
      'cass.arch': arch,
      'cass.output': kind,
      'cass.image_size': String(s.imageSize),
      'cass.input': `pixels: float32 [batch, 3, ${s.imageSize}, ${s.imageSize}], RGB in [0, 1]; the graph applies cass.preprocess`,
      'cass.preprocess': JSON.stringify({ channel_order: channelOrder, mean, std }),
    },
  })
}
