/**
 * The ETA of a `cass experiment`, from what its finished units cost. Units differ by orders of
 * magnitude: a pre-training against an arm, and among arms a 100 % one against a 1 % one (on the
 * demo, a 100 % CNN arm took 42 s against 7 s at 1 %, a ViT one 63 s against 5.5 s:
 * `bench/results/2026-11-26-vm-demo-mnist.json`). A single rate per kind said 13 s for an arm that
 * then took 90 s.
 *
 * So every unit is planned with a `kind` (pre-training, arm), a `key` (the units expected to cost
 * the same: an arm's network and label fraction) and a `size` (its work in the kind's own unit,
 * e.g. an arm's image passes). A remaining unit costs its size times the seconds per size of
 *   1. the finished units of its key, when there are any (what the same network at the same
 *      fraction took: the measurement itself);
 *   2. else the finished units of its kind (a 100 % arm not yet seen is the 1 % arms' rate scaled
 *      by its size);
 *   3. else nothing is known: the ETA counts what is known and says it is a lower bound.
 */

import type { ArmUnit, PretrainUnit } from './plan.js'

/** A planned unit of work. */
export interface EtaUnit {
  /** `pretrain`, `arm`: units of different kinds never share a rate. */
  kind: string
  /** Units expected to cost the same per size (e.g. `cnn 0.01`). */
  key: string
  /** Its work, in any unit shared by its kind (e.g. image passes); positive. */
  size: number
}

interface Spent {
  size: number
  seconds: number
}

export interface EtaEstimate {
  /** Seconds left for the units that have a rate. */
  seconds: number
  /** Remaining units with no finished unit of their kind yet: `seconds` is then a lower bound. */
  unknown: number
}

export class Eta {
  readonly #remaining: EtaUnit[] = []
  readonly #byKey = new Map<string, Spent>()
  readonly #byKind = new Map<string, Spent>()

  /** A unit that will run. */
  add(unit: EtaUnit): void {
    this.#remaining.push(unit)
  }

  /** A unit finished in `seconds`: no longer remaining, and a measurement of its key and kind. */
  record(unit: EtaUnit, seconds: number): void {
    this.#take(unit)
    if (!(seconds >= 0) || !(unit.size > 0)) return
    for (const [map, k] of [
      [this.#byKey, keyOf(unit)],
      [this.#byKind, unit.kind],
    ] as const) {
      const s = map.get(k) ?? { size: 0, seconds: 0 }
      s.size += unit.size
      s.seconds += seconds
      map.set(k, s)
    }
  }

  /** A unit that will not run here (finished in an earlier run of the experiment). */
  skip(unit: EtaUnit): void {
    this.#take(unit)
  }

  /** Seconds per size for `unit`: of its key, else of its kind, else undefined. */
  rate(unit: EtaUnit): number | undefined {
    const spent = this.#byKey.get(keyOf(unit)) ?? this.#byKind.get(unit.kind)
    return spent && spent.size > 0 ? spent.seconds / spent.size : undefined
  }

  estimate(): EtaEstimate {
    let seconds = 0
    let unknown = 0
    for (const u of this.#remaining) {
      const rate = this.rate(u)
      if (rate === undefined) unknown++
      else seconds += rate * u.size
    }
    return { seconds, unknown }
  }

  text(): string {
    const { seconds, unknown } = this.estimate()
    if (this.#remaining.length === 0) return 'ETA 0 s'
    if (unknown === this.#remaining.length) return 'ETA after the first unit'
    const t = seconds < 90 ? `${seconds.toFixed(0)} s` : `${(seconds / 60).toFixed(0)} min`
    return unknown ? `ETA over ${t}` : `ETA ${t}`
  }

  #take(unit: EtaUnit): void {
    const i = this.#remaining.findIndex((u) => u.kind === unit.kind && keyOf(u) === keyOf(unit) && u.size === unit.size)
    if (i >= 0) this.#remaining.splice(i, 1)
  }
}

const keyOf = (u: EtaUnit) => JSON.stringify([u.kind, u.key])

/**
 * A pre-training costs about its epochs x networks (CASS trains two at once; measured on 2 cores,
 * one CASS epoch took about as long as DINO's CNN and ViT epochs together). Runs of one method,
 * networks and batch size share a rate.
 */
export function pretrainCost(u: Pick<PretrainUnit, 'method' | 'networks' | 'batchSize' | 'epochs'>): EtaUnit {
  return { kind: 'pretrain', key: `${u.method} ${u.networks.join('+')} batch ${u.batchSize}`, size: u.epochs * u.networks.length }
}

/**
 * An arm's work in training-image passes: every epoch trains on its labelled images and validates
 * on the validation images, then the test images are evaluated once. A forward pass alone costs
 * about a third of a forward and backward one: fitting seconds per epoch = a x labelled + b x 500
 * validation images to the demo's 1 % and 100 % arms (`bench/results/2026-11-26-vm-demo-mnist.json`)
 * gives a / b = 3.2 for the CNN and 2.9 for the ViT. How early an arm stops is not known in
 * advance; the arms of one network and fraction share a rate, which learns it.
 */
export function armCost(
  a: Pick<ArmUnit, 'network' | 'fraction'>,
  n: { labelled: number; val: number; test: number; maxEpochs: number },
): EtaUnit {
  return { kind: 'arm', key: `${a.network} ${a.fraction}`, size: n.maxEpochs * (n.labelled + n.val / 3) + n.test / 3 }
}
