import test from 'ava'

import { Eta, type EtaUnit, armCost, pretrainCost } from '../ts/experiment/eta.js'

// The demo's sizes: 500 validation and 2,000 test images, at most 30 epochs, a pool of 1,000.
const demoArm = (network: 'cnn' | 'vit', fraction: number, labelled: number) =>
  armCost({ network, fraction }, { labelled, val: 500, test: 2000, maxEpochs: 30 })
const seconds = (eta: Eta, u: EtaUnit) => eta.rate(u)! * u.size
const near = (a: number, b: number) => Math.abs(a - b) < 1e-9 * Math.max(1, Math.abs(b))

test("ETA of an unseen 100 % arm: the 1 % arms' rate scaled by its size, not their 7 s (the 13 s for a 90 s arm)", (t) => {
  const eta = new Eta()
  const [one, ten, full] = [demoArm('cnn', 0.01, 10), demoArm('cnn', 0.1, 100), demoArm('cnn', 1, 999)]
  for (const u of [one, one, ten, ten, full, full]) eta.add(u)
  t.is(eta.text(), 'ETA after the first unit')
  // The demo's CNN arms took about 7 s at 1 %, 9 s at 10 % and 42 s at 100 %
  // (bench/results/2026-11-26-vm-demo-mnist.json).
  eta.record(one, 7)
  eta.record(one, 7)
  const atFull = seconds(eta, full)
  t.true(atFull > 30 && atFull < 55, `a 100 % arm priced at ${atFull} s`)
  const atTen = seconds(eta, ten)
  t.true(atTen > 8 && atTen < 15, `a 10 % arm priced at ${atTen} s`)
  t.is(eta.estimate().unknown, 0)
  t.true(Math.abs(eta.estimate().seconds - 2 * atTen - 2 * atFull) < 1e-9)
})

test('ETA: once arms of a network and fraction finished, their own time prices the rest of them', (t) => {
  const eta = new Eta()
  const [one, full] = [demoArm('vit', 0.01, 10), demoArm('vit', 1, 999)]
  for (const u of [one, one, full, full, full]) eta.add(u)
  eta.record(one, 5)
  eta.record(full, 90)
  // The 100 % arms cost what the 100 % arm did, whatever the 1 % ones took.
  t.true(near(seconds(eta, full), 90))
  t.true(near(seconds(eta, one), 5))
  t.true(near(eta.estimate().seconds, 5 + 2 * 90))
  t.is(eta.text(), 'ETA 3 min')
  // A ViT arm never seen prices from the arms seen, a CNN's the same way: one kind, one fallback.
  const cnn = demoArm('cnn', 0.1, 100)
  t.true(seconds(eta, cnn) > 5 && seconds(eta, cnn) < 90)
})

test('ETA: kinds never share a rate; while a kind has no finished unit the ETA is a lower bound', (t) => {
  const eta = new Eta()
  const cass = pretrainCost({ method: 'cass', networks: ['cnn', 'vit'], batchSize: 64, epochs: 1 })
  const dinoCnn = pretrainCost({ method: 'dino', networks: ['cnn'], batchSize: 64, epochs: 1 })
  const sweep = pretrainCost({ method: 'cass', networks: ['cnn', 'vit'], batchSize: 64, epochs: 3 })
  const arm = demoArm('cnn', 0.01, 10)
  for (const u of [cass, dinoCnn, sweep, arm, arm]) eta.add(u)
  eta.record(cass, 120)
  // The 3-epoch sweep is the same method, networks and batch: three times the 1-epoch run.
  t.true(near(seconds(eta, sweep), 360))
  // DINO on one network: CASS's rate per epoch and network (half of CASS's run).
  t.true(near(seconds(eta, dinoCnn), 60))
  // Arms have no rate yet: the 420 s known is a lower bound.
  t.is(eta.rate(arm), undefined)
  t.true(near(eta.estimate().seconds, 420))
  t.is(eta.estimate().unknown, 2)
  t.is(eta.text(), 'ETA over 7 min')
})

test('ETA: a unit finished in an earlier run is skipped or recorded, and no longer remains', (t) => {
  const eta = new Eta()
  const [a, b] = [demoArm('cnn', 0.01, 10), demoArm('cnn', 0.1, 100)]
  for (const u of [a, a, b]) eta.add(u)
  eta.skip(b)
  eta.record(a, 6)
  t.true(near(eta.estimate().seconds, 6))
  t.is(eta.estimate().unknown, 0)
  eta.record(a, 8)
  t.deepEqual(eta.estimate(), { seconds: 0, unknown: 0 })
  t.is(eta.text(), 'ETA 0 s')
})
