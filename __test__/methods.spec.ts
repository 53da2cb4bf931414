import test from 'ava'

import { METHODS, METHOD_NAMES, isMethod, pretrainDir, runsOf } from '../ts/methods/info.js'
import { METHOD_START } from '../ts/methods/start.js'

test('one table of methods: every method has its start, its runs and its folder', (t) => {
  t.deepEqual(Object.keys(METHOD_START).sort(), [...METHOD_NAMES].sort(), 'a method without a start (or the reverse)')
  t.deepEqual(runsOf('cass', ['cnn', 'vit']), [['cnn', 'vit']], 'CASS trains both networks in one run')
  t.deepEqual(runsOf('dino', ['cnn', 'vit']), [['cnn'], ['vit']], 'DINO one backbone per run')
  t.is(pretrainDir('cass', ['cnn', 'vit'], '-b8'), 'pretrain/cass-b8')
  t.is(pretrainDir('dino', ['vit']), 'pretrain/dino-vit')
  t.true(isMethod('dino'))
  t.false(isMethod('constructor'), 'a hostile name does not find Object.prototype')
  t.false(isMethod('byol'))
  for (const m of METHOD_NAMES) t.regex(METHODS[m].color, /^#[0-9a-f]{6}$/)
})
