import test from 'ava'

import { METHODS, METHOD_NAMES, isMethod, pretrainDir, runsOf } from '../ts/methods/info.js'
import { methodConfig } from '../ts/methods/start.js'

test('one table of methods: every method has its start, its runs and its folder', (t) => {
  // Every method parses a unit's input: the shared run settings, and its network where it trains one per run.
  for (const m of METHOD_NAMES) {
    const networks = runsOf(m, ['cnn', 'vit']).at(-1) ?? []
    const c = methodConfig(m, {
      preset: 'cpu-small',
      overrides: { accumulate: 2 },
      networks,
      batchSize: 8,
      epochs: 1,
      device: 'cpu',
    }) as Record<string, unknown>
    t.like(c, { batchSize: 8, accumulate: 2, epochs: 1, device: 'cpu' }, m)
    if (!METHODS[m].together) t.is(c.arch, 'vit', m)
  }
  t.deepEqual(runsOf('vicreg', ['cnn', 'vit']), [['cnn'], ['vit']], 'VICReg one backbone per run')
  t.deepEqual(runsOf('cass', ['cnn', 'vit']), [['cnn', 'vit']], 'CASS trains both networks in one run')
  t.deepEqual(runsOf('dino', ['cnn', 'vit']), [['cnn'], ['vit']], 'DINO one backbone per run')
  t.is(pretrainDir('cass', ['cnn', 'vit'], '-b8'), 'pretrain/cass-b8')
  t.is(pretrainDir('dino', ['vit']), 'pretrain/dino-vit')
  t.true(isMethod('dino'))
  t.false(isMethod('constructor'), 'a hostile name does not find Object.prototype')
  t.false(isMethod('byol'))
  for (const m of METHOD_NAMES) t.regex(METHODS[m].color, /^#[0-9a-f]{6}$/)
})
