import { rmSync } from 'node:fs'

import test from 'ava'

import {
  ConfigError,
  type DinoInput,
  type StepEvent,
  embed,
  finetune,
  inspectCheckpoint,
  parseDinoConfig,
  pretrainDino,
} from '../ts/index.js'
import { stripes, tempDir } from './helpers.js'

const tinyDino = (arch: 'cnn' | 'vit'): DinoInput => ({
  preset: 'cpu-small',
  arch,
  cnn: { block: 'basic', layers: [1, 1, 1, 1], baseWidth: 4 },
  vit: { patchSize: 4, embedDim: 16, depth: 1, numHeads: 2 },
  outDim: 32,
  hiddenDim: 16,
  bottleneckDim: 8,
  imageSize: 16,
  localCropSize: 8,
  batchSize: 4,
  epochs: 2,
})

test('the DINO presets: the paper follows DINO, cpu-small peaks at the rate of CASS', (t) => {
  const paper = parseDinoConfig({ preset: 'paper', arch: 'vit' })
  t.is(paper.outDim, 65536)
  t.deepEqual([paper.hiddenDim, paper.bottleneckDim], [2048, 256])
  t.deepEqual([paper.momentumTeacher, paper.teacherTemp, paper.studentTemp, paper.centerMomentum], [0.996, 0.04, 0.1, 0.9])
  t.deepEqual([paper.weightDecay, paper.weightDecayEnd, paper.clipGrad, paper.freezeLastLayerEpochs], [0.04, 0.4, 3, 1])
  t.deepEqual([paper.globalCropScale, paper.localCropScale, paper.localCrops], [[0.4, 1], [0.05, 0.4], 8])
  t.is(paper.baseLr, 5e-4)
  const small = parseDinoConfig({ arch: 'cnn' })
  t.is((small.baseLr * small.batchSize) / 256, 1e-3)
})

test('DINO configs name the field they fail on', (t) => {
  const noArch = t.throws(() => parseDinoConfig({} as DinoInput), { instanceOf: ConfigError })
  t.is(noArch.field, 'arch')
  const crop = t.throws(() => parseDinoConfig({ ...tinyDino('vit'), localCropSize: 6 }), { instanceOf: ConfigError })
  t.is(crop.field, 'localCropSize')
  // A CNN takes local crops of any size.
  t.is(parseDinoConfig({ ...tinyDino('cnn'), localCropSize: 6 }).localCropSize, 6)
  const temp = t.throws(() => parseDinoConfig({ ...tinyDino('cnn'), teacherTemp: 0 }), { instanceOf: ConfigError })
  t.is(temp.field, 'teacherTemp')
})

for (const arch of ['cnn', 'vit'] as const) {
  test(`DINO pre-trains a ${arch}, whose checkpoint fine-tunes and embeds like a CASS one`, async (t) => {
    const { images, labels } = stripes(16, 16, 9)
    const outDir = tempDir(`dino-${arch}`)
    const steps: StepEvent[] = []
    const r = await pretrainDino({
      config: tinyDino(arch),
      images,
      outDir,
      onProgress: (e) => e.type === 'step' && steps.push(e),
    })
    t.is(r.status, 'completed')
    t.is(r.steps, 8)
    t.true(r.losses.every(Number.isFinite))
    t.deepEqual(
      steps[0].parts.map(([name]) => name),
      ['dino', `${arch}_spread`, 'teacher_momentum', 'teacher_temp'],
    )
    // The spread arrives typed, for the one network DINO trains.
    t.deepEqual(
      Object.keys(steps[0].spread).filter((k) => steps[0].spread[k as 'cnn'] != null),
      [arch],
    )
    t.is(steps[0].spread[arch], steps[0].parts[1][1])
    const info = inspectCheckpoint(outDir)
    t.is(info.method, 'dino-pretrain')
    t.deepEqual(info.networks, [arch])
    const samples = { indices: [...Array(16).keys()], labels }
    const ft = await finetune({
      config: { preset: 'cpu-small', arch, numClasses: 2, imageSize: 16, batchSize: 4, maxEpochs: 1 },
      from: outDir,
      images,
      train: samples,
      val: samples,
      outDir: tempDir(`dino-ft-${arch}`),
    })
    t.is(ft.status, 'completed')
    const e = await embed({ checkpoint: outDir, images, indices: [0, 1] })
    t.is(e.count, 2)
    t.is(e.dim, arch === 'cnn' ? 32 : 16)
    const again = t.throws(() => pretrainDino({ config: tinyDino(arch), images, outDir }), { instanceOf: ConfigError })
    t.is(again.field, 'outDir')
    rmSync(outDir, { recursive: true })
    rmSync(ft.checkpoint, { recursive: true })
  })
}
