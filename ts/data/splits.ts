/**
 * Seeded, stratified splitting and label-fraction sampling. Given groups (a patient's images),
 * both keep every group whole: a patient is in one split and in or out of a label sample, never
 * both sides (a leak that makes every test metric too good).
 */

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
export function sampleFraction(indices: number[], labels: number[], fraction: number, seed: number, groups?: Groups): number[] {
  if (!(fraction > 0 && fraction <= 1)) throw new RangeError(`label fraction must be in (0, 1], got ${fraction}`)
  if (hasGroups(indices, groups)) return sampleGroups(indices, labels, fraction, seed, groups!)
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
export function stratifiedSplit(
  indices: number[],
  labels: number[],
  fractions: number[],
  seed: number,
  groups?: Groups,
): number[][] {
  if (hasGroups(indices, groups)) return splitGroups(indices, labels, fractions, seed, groups!)
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

/**
 * The group of each image by index (a PatientID, a CSV's group column), or null/undefined where
 * an image has none: such an image is a group of its own.
 */
export type Groups = ArrayLike<string | null | undefined>

const hasGroups = (indices: number[], groups?: Groups) =>
  groups !== undefined && indices.some((i) => groups[i] !== null && groups[i] !== undefined)

/** A group's images and the class it is stratified by: its most frequent label (the lowest on a tie). */
interface Unit {
  members: number[]
  label: number
}

function units(indices: number[], labels: number[], groups: Groups): Map<number, Unit[]> {
  const byGroup = new Map<string, number[]>()
  const out: Unit[] = []
  for (const i of indices) {
    const g = groups[i]
    if (g === null || g === undefined) out.push({ members: [i], label: labels[i] })
    else if (byGroup.has(g)) byGroup.get(g)!.push(i)
    else byGroup.set(g, [i])
  }
  for (const members of byGroup.values()) {
    const counts = new Map<number, number>()
    for (const i of members) counts.set(labels[i], (counts.get(labels[i]) ?? 0) + 1)
    const label = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0][0]
    out.push({ members, label })
  }
  // A fixed order before the seeded shuffle: by class, then by first image.
  out.sort((a, b) => a.label - b.label || a.members[0] - b.members[0])
  const byClass = new Map<number, Unit[]>()
  for (const u of out) {
    if (!byClass.has(u.label)) byClass.set(u.label, [])
    byClass.get(u.label)!.push(u)
  }
  return byClass
}

/**
 * `stratifiedSplit` over whole groups: per class, groups are shuffled and dealt out in turn; a
 * group goes to the part whose share of the class's images its middle image falls in.
 */
function splitGroups(indices: number[], labels: number[], fractions: number[], seed: number, groups: Groups): number[][] {
  const random = seededRandom(seed)
  const parts: number[][] = fractions.map(() => [])
  for (const classUnits of units(indices, labels, groups).values()) {
    const shuffled = shuffle(classUnits, random)
    const total = shuffled.reduce((n, u) => n + u.members.length, 0)
    const ends: number[] = []
    let end = 0
    fractions.forEach((f, p) => {
      end = p === fractions.length - 1 ? total : end + Math.round(total * f)
      ends.push(end)
    })
    let at = 0
    for (const u of shuffled) {
      const middle = at + u.members.length / 2
      const p = ends.findIndex((e) => middle <= e)
      parts[p < 0 ? parts.length - 1 : p].push(...u.members)
      at += u.members.length
    }
  }
  return parts.map((p) => p.sort((a, b) => a - b))
}

/**
 * `sampleFraction` over whole groups: per class, shuffled groups are taken while that brings the
 * sample closer to `fraction` of the class's images; at least one group per class.
 */
function sampleGroups(indices: number[], labels: number[], fraction: number, seed: number, groups: Groups): number[] {
  const random = seededRandom(seed)
  const out: number[] = []
  for (const classUnits of units(indices, labels, groups).values()) {
    const total = classUnits.reduce((n, u) => n + u.members.length, 0)
    const want = Math.max(1, Math.round(total * fraction))
    let taken = 0
    for (const u of shuffle(classUnits, random)) {
      if (taken > 0 && taken + u.members.length - want > want - taken) break
      out.push(...u.members)
      taken += u.members.length
    }
  }
  return out.sort((a, b) => a - b)
}

/** Distinct groups among `indices` (images without a group count one each). */
export function countGroups(indices: number[], groups: Groups): number {
  const seen = new Set<string>()
  let alone = 0
  for (const i of indices) {
    const g = groups[i]
    if (g === null || g === undefined) alone++
    else seen.add(g)
  }
  return seen.size + alone
}
