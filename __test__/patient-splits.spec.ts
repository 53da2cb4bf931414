/**
 * Patient-level splits: given groups, the seeded stratified splits and the label-fraction
 * samples keep every group whole, stay stratified by class, and are seeded; without groups they
 * are exactly what they were.
 */
import test from 'ava'

import { countGroups, sampleFraction, stratifiedSplit } from '../ts/data/splits.js'
import { rng } from './helpers.js'

/** 600 images of 120 patients with 1 to 9 images each, 3 classes (a patient's images share a class but one). */
function cohort(seed: number) {
  const next = rng(seed)
  const labels: number[] = []
  const groups: (string | null)[] = []
  for (let p = 0; p < 120; p++) {
    const n = 1 + Math.floor(next() * 9)
    for (let k = 0; k < n; k++) {
      // Every tenth patient has one image of another class: the group goes by its majority.
      labels.push(p % 10 === 0 && k === 0 ? (p + 1) % 3 : p % 3)
      groups.push(`patient-${p}`)
    }
  }
  return { labels, groups, indices: labels.map((_, i) => i) }
}

const splitOf = (parts: number[][], groups: (string | null)[]) => {
  const where = new Map<string, Set<number>>()
  parts.forEach((part, p) => {
    for (const i of part) where.set(groups[i]!, (where.get(groups[i]!) ?? new Set()).add(p))
  })
  return where
}

test('no patient in two splits; every image in exactly one; class shares near the fractions; seeded', (t) => {
  for (const seed of [1, 2, 3]) {
    const { labels, groups, indices } = cohort(seed)
    const parts = stratifiedSplit(indices, labels, [0.7, 0.1, 0.2], seed, groups)
    t.deepEqual(
      [...splitOf(parts, groups).entries()].filter(([, s]) => s.size > 1),
      [],
    )
    t.deepEqual(
      parts.flat().sort((a, b) => a - b),
      indices,
    )
    // Stratified: each class's share of each part within 8 points of the fraction (patients are 1-9 images).
    for (const c of [0, 1, 2]) {
      const total = indices.filter((i) => labels[i] === c).length
      parts.forEach((part, p) => {
        const share = part.filter((i) => labels[i] === c).length / total
        t.true(Math.abs(share - [0.7, 0.1, 0.2][p]) < 0.08, `seed ${seed}, class ${c}, part ${p}: ${share.toFixed(3)}`)
      })
    }
    t.true(parts.every((p) => countGroups(p, groups) > 0))
    t.deepEqual(stratifiedSplit(indices, labels, [0.7, 0.1, 0.2], seed, groups), parts)
    t.notDeepEqual(stratifiedSplit(indices, labels, [0.7, 0.1, 0.2], seed + 10, groups), parts)
  }
})

test('label fractions take whole patients, at least one per class, near the fraction of each class', (t) => {
  const { labels, groups, indices } = cohort(4)
  for (const fraction of [0.01, 0.1, 0.5, 1]) {
    const chosen = sampleFraction(indices, labels, fraction, 9, groups)
    const picked = new Set(chosen)
    // Whole patients: a patient is all in or all out.
    for (const g of new Set(groups)) {
      const members = indices.filter((i) => groups[i] === g)
      t.true(members.every((i) => picked.has(i)) || members.every((i) => !picked.has(i)), `${g} split by the sample`)
    }
    for (const c of [0, 1, 2]) {
      const total = indices.filter((i) => labels[i] === c).length
      const got = chosen.filter((i) => labels[i] === c).length
      t.true(got >= 1, `fraction ${fraction}: class ${c} has no image`)
      if (fraction >= 0.1) t.true(Math.abs(got / total - fraction) < 0.06, `fraction ${fraction}, class ${c}: ${got}/${total}`)
    }
    t.deepEqual(sampleFraction(indices, labels, fraction, 9, groups), chosen)
  }
  t.is(sampleFraction(indices, labels, 1, 9, groups).length, indices.length)
})

test('images without a group are groups of their own; without any group the splits are those of before', (t) => {
  const { labels, indices } = cohort(5)
  const none = labels.map(() => null)
  t.deepEqual(stratifiedSplit(indices, labels, [0.7, 0.1, 0.2], 3, none), stratifiedSplit(indices, labels, [0.7, 0.1, 0.2], 3))
  t.deepEqual(sampleFraction(indices, labels, 0.1, 3, none), sampleFraction(indices, labels, 0.1, 3))
  // Mixed: grouped images stay together, ungrouped ones are dealt one by one.
  const some = labels.map((_, i) => (i < 100 ? `p${Math.floor(i / 5)}` : null))
  const parts = stratifiedSplit(indices, labels, [0.7, 0.1, 0.2], 3, some)
  const where = splitOf(
    parts,
    some.map((g, i) => g ?? `alone-${i}`),
  )
  t.true([...where.values()].every((s) => s.size === 1))
  t.is(countGroups(indices, some), 20 + (indices.length - 100))
})
