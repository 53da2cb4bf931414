/**
 * The timm-named tensors an export draws from, checked like timm's `load_state_dict(strict=True)`:
 * every tensor the architecture needs is there with the shape the architecture gives it, and
 * every tensor there is used (one left over means the architecture in the spec is not the one
 * the weights were trained with, e.g. two blocks per stage where the spec says one).
 */
import { DataError } from '../errors.js'
import type { GraphBuilder, HostTensor } from './graph.js'

/** An expected shape; `null` accepts any size on that axis (a classifier's width). */
export type ShapePattern = (number | null)[]

const shown = (shape: readonly (number | null)[]) => `[${shape.map((d) => d ?? '*').join(', ')}]`

export class WeightTable {
  private readonly used = new Set<string>()

  constructor(private readonly tensors: Map<string, HostTensor>) {
    for (const [name, t] of tensors) {
      if (!(t.data instanceof Float32Array)) throw new DataError(`tensor ${name}: data is not a Float32Array`, 'bad-weights')
      const size = t.shape.reduce((a, b) => a * b, 1)
      if (!t.shape.every((d) => Number.isInteger(d) && d >= 0) || size !== t.data.length) {
        throw new DataError(`tensor ${name}: shape ${shown(t.shape)} does not hold its ${t.data.length} values`, 'bad-weights')
      }
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name)
  }

  /** The tensor `name`, which must match `shape`. */
  take(name: string, shape: ShapePattern): HostTensor {
    const t = this.tensors.get(name)
    if (!t) throw new DataError(`tensor ${name} is missing (expected shape ${shown(shape)})`, 'bad-weights')
    if (t.shape.length !== shape.length || shape.some((d, i) => d !== null && d !== t.shape[i])) {
      throw new DataError(`tensor ${name} has shape ${shown(t.shape)}, the architecture needs ${shown(shape)}`, 'bad-weights')
    }
    this.used.add(name)
    return t
  }

  /** Takes `name` (checked against `shape`) into the graph as an initializer of that name. */
  param(g: GraphBuilder, name: string, shape: ShapePattern): string {
    return g.weight(name, this.take(name, shape))
  }

  /**
   * Takes a linear layer's `[out, in]` weight into the graph transposed, as `<name>.T` (`[in, out]`),
   * for a `MatMul` on tokens of any rank; its bias as `<prefix>.bias`.
   */
  linear(g: GraphBuilder, prefix: string, inputs: number, outputs: number): { weightT: string; bias: string } {
    const w = this.take(`${prefix}.weight`, [outputs, inputs])
    const t = new Float32Array(w.data.length)
    for (let o = 0; o < outputs; o++) for (let i = 0; i < inputs; i++) t[i * outputs + o] = w.data[o * inputs + i]
    return {
      weightT: g.weight(`${prefix}.weight.T`, { shape: [inputs, outputs], data: t }),
      bias: this.param(g, `${prefix}.bias`, [outputs]),
    }
  }

  /** Fails naming the tensors never taken, except those `allowed` to be left over. */
  checkAllUsed(what: string, allowed: (name: string) => boolean = () => false): void {
    const unused = [...this.tensors.keys()].filter((k) => !this.used.has(k) && !allowed(k))
    if (unused.length) {
      const more = unused.length > 5 ? ` and ${unused.length - 5} more` : ''
      throw new DataError(`tensors that ${what} does not use: ${unused.slice(0, 5).join(', ')}${more}`, 'bad-weights')
    }
  }
}
