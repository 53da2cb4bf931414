import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

import { seededRandom } from '../ts/data/splits.js'
import { type InMemoryImages, type PretrainInput, finetune, pretrain } from '../ts/index.js'

/** A fresh temporary directory. */
export const tempDir = (name: string) => mkdtempSync(path.join(tmpdir(), `cass-${name}-`))

/** Deterministic PRNG, so generated images are identical on every run. */
export const rng = seededRandom

/**
 * `count` RGB images of `size` x `size`, class 0 striped vertically and class 1 horizontally,
 * with noise. Returns the images and their labels (alternating).
 */
export function stripes(count: number, size: number, seed = 1): { images: InMemoryImages; labels: number[] } {
  const next = rng(seed)
  const pixels = new Uint8Array(count * size * size * 3)
  const labels: number[] = []
  for (let i = 0; i < count; i++) {
    const cls = i % 2
    labels.push(cls)
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const on = cls === 0 ? (x >> 1) % 2 : (y >> 1) % 2
        for (let c = 0; c < 3; c++) {
          const v = (on ? 210 : 40) + Math.round((next() - 0.5) * 40)
          pixels[((i * size + y) * size + x) * 3 + c] = Math.max(0, Math.min(255, v))
        }
      }
    }
  }
  return { images: { pixels, count, height: size, width: size }, labels }
}

/** A tiny pre-training config: seconds per epoch on one core. */
export const tinyPretrain: PretrainInput = {
  preset: 'cpu-small',
  cnn: { block: 'basic', layers: [1, 1, 1, 1], baseWidth: 4 },
  vit: { patchSize: 4, embedDim: 16, depth: 1, numHeads: 2 },
  headDim: 16,
  imageSize: 16,
  batchSize: 4,
  epochs: 2,
}

/** Calls `conv(layer, batchNorm)` for every convolution of the Keras ResNet-50, by Keras name, in order. */
export function forEachKerasResnet50Conv(conv: (name: string, bn: string) => void) {
  conv('conv1', 'bn_conv1')
  ;[3, 4, 6, 3].forEach((n, s) => {
    for (let b = 0; b < n; b++) {
      const id = `${s + 2}${String.fromCharCode(97 + b)}`
      for (const br of ['2a', '2b', '2c']) conv(`res${id}_branch${br}`, `bn${id}_branch${br}`)
      if (b === 0) conv(`res${id}_branch1`, `bn${id}_branch1`)
    }
  })
}

/**
 * A tiny classifier of stripes: `tinyPretrain` for one epoch into `root/pre`, then each network
 * in `arches` fine-tuned from it into `root/<arch>` (`root/ft` for `cnn` when `ftDir` says so),
 * trained on the first 16 images and validated on the rest; class names `vertical`, `horizontal`.
 */
export async function tinyClassifiers(
  root: string,
  images: InMemoryImages,
  labels: number[],
  opts: { arches: readonly ('cnn' | 'vit')[]; maxEpochs: number; dirOf?: (arch: 'cnn' | 'vit') => string },
): Promise<void> {
  await pretrain({ config: { ...tinyPretrain, epochs: 1 }, images, outDir: path.join(root, 'pre') })
  const rest = [...Array(images.count - 16).keys()].map((i) => i + 16)
  for (const arch of opts.arches) {
    await finetune({
      config: {
        arch,
        numClasses: 2,
        cnn: tinyPretrain.cnn,
        vit: tinyPretrain.vit,
        imageSize: images.height,
        batchSize: 4,
        maxEpochs: opts.maxEpochs,
        lr: 3e-3,
        augment: { enabled: false },
        device: 'cpu',
      },
      from: path.join(root, 'pre'),
      images,
      train: { indices: [...Array(16).keys()], labels: labels.slice(0, 16) },
      val: { indices: rest, labels: rest.map((i) => labels[i]) },
      outDir: path.join(root, opts.dirOf?.(arch) ?? arch),
      classNames: ['vertical', 'horizontal'],
    })
  }
}
