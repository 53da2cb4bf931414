/** Seeded, stratified splitting and label-fraction sampling. */

/** mulberry32: a small, fast, well-mixed 32-bit PRNG. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function shuffle<T>(items: T[], random: () => number): T[] {
  const a = [...items]
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a
}

function byClass(indices: number[], labels: number[]): Map<number, number[]> {
  const m = new Map<number, number[]>()
  for (const i of indices) {
    const l = labels[i]
    if (!m.has(l)) m.set(l, [])
    m.get(l)!.push(i)
  }
  return new Map([...m.entries()].sort((a, b) => a[0] - b[0]))
}

/**
 * Samples `fraction` of `indices` per class (seeded), at least one image per class, as the CASS
 * protocol does for its 1 % / 10 % / 100 % label budgets. Returns indices in ascending order.
 */
export function sampleFraction(indices: number[], labels: number[], fraction: number, seed: number): number[] {
  if (!(fraction > 0 && fraction <= 1)) throw new RangeError(`label fraction must be in (0, 1], got ${fraction}`)
  const random = seededRandom(seed)
  const out: number[] = []
  for (const members of byClass(indices, labels).values()) {
    const k = Math.max(1, Math.round(members.length * fraction))
    out.push(...shuffle(members, random).slice(0, k))
  }
  return out.sort((a, b) => a - b)
}

/**
 * Seeded stratified split of `indices` into parts with the given fractions (the last part takes
 * the remainder); every class with enough images appears in every part.
 */
export function stratifiedSplit(indices: number[], labels: number[], fractions: number[], seed: number): number[][] {
  const random = seededRandom(seed)
  const parts: number[][] = fractions.map(() => [])
  for (const members of byClass(indices, labels).values()) {
    const shuffled = shuffle(members, random)
    let start = 0
    fractions.forEach((f, p) => {
      const n = p === fractions.length - 1 ? shuffled.length - start : Math.round(shuffled.length * f)
      parts[p].push(...shuffled.slice(start, start + n))
      start += n
    })
  }
  return parts.map((p) => p.sort((a, b) => a - b))
}
