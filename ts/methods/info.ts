/**
 * The self-supervised methods as every layer above the engine knows them: the experiment's
 * planner and runner, the CLI's lists, the report's labels and colours all read this table.
 * A method is one entry here and one in `methods/start.ts` (its config and how it runs). This
 * file imports nothing, so the report and the planner can read it without the native addon.
 */

export interface MethodInfo {
  /** How tables and plots name it. */
  label: string
  /** Its colour in the report's plots. */
  color: string
  /**
   * Whether one pre-training trains every network at once (CASS: a CNN and a ViT together), or
   * one run trains one backbone (DINO, as in its paper).
   */
  together: boolean
}

export const METHODS = {
  cass: { label: 'CASS', color: '#1f77b4', together: true },
  dino: { label: 'DINO', color: '#ff7f0e', together: false },
} as const satisfies Record<string, MethodInfo>

/** A pre-training method; `random` and `imagenet` are the fine-tuning starts without one. */
export type MethodName = keyof typeof METHODS

export const METHOD_NAMES = Object.keys(METHODS) as MethodName[]

export const isMethod = (x: unknown): x is MethodName => typeof x === 'string' && Object.hasOwn(METHODS, x)

/** The networks each pre-training run of `method` trains, given the experiment's networks. */
export function runsOf<N extends string>(method: MethodName, networks: readonly N[]): N[][] {
  return METHODS[method].together ? [[...networks]] : networks.map((n) => [n])
}

/** A pre-training run's folder under the experiment's: `pretrain/cass`, `pretrain/dino-vit`, plus a sweep suffix. */
export function pretrainDir(method: MethodName, networks: readonly string[], suffix = ''): string {
  return `pretrain/${METHODS[method].together ? method : `${method}-${networks.join('-')}`}${suffix}`
}
