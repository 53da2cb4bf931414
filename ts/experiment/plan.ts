/**
 * The units of a `cass experiment`, listed before anything runs (so the whole experiment has an
 * ETA and a killed one knows what is left): pre-training runs (CASS once for both networks, DINO
 * once per network, again per robustness-sweep value), fine-tuning arms (every network from every
 * start at every label fraction and seed; sweep runs at the smallest fraction) and kNN probes.
 */
import type { ArmRecord, MethodName, Network, PretrainRecord, StartName } from './results.js'
import { pretrainDir, runsOf } from '../methods/info.js'

export interface PlanSettings {
  methods: MethodName[]
  networks: Network[]
  fractions: number[]
  seeds: number
  /**
   * Seeds at fraction 1, where every seed fine-tunes on the same images and only the run's own
   * randomness differs (default: `seeds`).
   */
  seedsAtFull?: number
  /** The main run's pre-training batch size and epochs, and the sweeps' other values. */
  batchSize: number
  epochs: number
  batchSizes?: number[]
  epochsSweep?: number[]
  /** Weights references to fine-tune each network from as the `imagenet` start (the paper's start). */
  imagenet?: Partial<Record<Network, string>>
}

export interface PretrainUnit {
  method: MethodName
  networks: Network[]
  /** Folder under the experiment's, also the unit's identity. */
  dir: string
  batchSize: number
  epochs: number
  sweep?: PretrainRecord['sweep']
}

export interface ArmUnit {
  start: StartName
  network: Network
  fraction: number
  seed: number
  /** The pre-training this arm starts from (absent for `random` and `imagenet`). */
  pretrainDir?: string
  /** The weights reference of an `imagenet` arm. */
  weights?: string
  sweep?: ArmRecord['sweep']
}

export interface KnnUnit {
  start: MethodName
  network: Network
  pretrainDir: string
}

export interface Plan {
  pretraining: PretrainUnit[]
  arms: ArmUnit[]
  knn: KnnUnit[]
}

function pretrainUnits(s: PlanSettings, batchSize: number, epochs: number, suffix: string, sweep?: PretrainUnit['sweep']) {
  const units: PretrainUnit[] = []
  for (const method of s.methods) {
    // CASS trains both networks together; DINO one per run, as in the paper (`methods/info.ts`).
    for (const networks of runsOf(method, s.networks)) {
      const dir = pretrainDir(method, networks, suffix)
      units.push({ method, networks, dir, batchSize, epochs, ...(sweep ? { sweep } : {}) })
    }
  }
  return units
}

export function planExperiment(s: PlanSettings): Plan {
  const main = pretrainUnits(s, s.batchSize, s.epochs, '')
  const sweeps = [
    ...(s.batchSizes ?? [])
      .filter((b) => b !== s.batchSize)
      .flatMap((b) => pretrainUnits(s, b, s.epochs, `-b${b}`, 'batch-size')),
    ...(s.epochsSweep ?? []).filter((e) => e !== s.epochs).flatMap((e) => pretrainUnits(s, s.batchSize, e, `-e${e}`, 'epochs')),
  ]
  const dirOf = (units: PretrainUnit[], method: MethodName, network: Network) =>
    units.find((u) => u.method === method && u.networks.includes(network))?.dir
  const arms: ArmUnit[] = []
  const seeds = [...Array(s.seeds).keys()]
  const seedsAt = (fraction: number) => (fraction >= 1 ? [...Array(s.seedsAtFull ?? s.seeds).keys()] : seeds)
  for (const network of s.networks)
    for (const fraction of s.fractions)
      for (const seed of seedsAt(fraction))
        for (const start of [...s.methods, 'random', 'imagenet'] as StartName[]) {
          if (start === 'imagenet') {
            const weights = s.imagenet?.[network]
            if (weights !== undefined) arms.push({ start, network, fraction, seed, weights })
            continue
          }
          const pretrainDir = start === 'random' ? undefined : dirOf(main, start, network)
          arms.push({ start, network, fraction, seed, ...(pretrainDir ? { pretrainDir } : {}) })
        }
  // Sweeps probe robustness where labels are scarcest: the smallest fraction, every seed.
  const scarce = Math.min(...s.fractions)
  for (const u of sweeps)
    for (const network of u.networks)
      for (const seed of seeds)
        arms.push({
          start: u.method,
          network,
          fraction: scarce,
          seed,
          pretrainDir: u.dir,
          sweep: { kind: u.sweep!, value: u.sweep === 'batch-size' ? u.batchSize : u.epochs },
        })
  const knn = main.flatMap((u) => u.networks.map((network) => ({ start: u.method, network, pretrainDir: u.dir })))
  return { pretraining: [...main, ...sweeps], arms, knn }
}

/** The identity of an arm in `results.json` (what a resumed experiment skips). */
export function armKey(a: Pick<ArmUnit, 'start' | 'network' | 'fraction' | 'seed' | 'sweep'>): string {
  return [a.start, a.network, a.fraction, a.seed, a.sweep?.kind ?? '', a.sweep?.value ?? ''].join('|')
}

/** The folder, under `finetune/`, an arm's fine-tuning writes to. */
export function armTag(a: Pick<ArmUnit, 'start' | 'network' | 'fraction' | 'seed' | 'sweep'>): string {
  return `${a.start}-${a.network}-f${a.fraction}-s${a.seed}${a.sweep ? `-${a.sweep.kind}${a.sweep.value}` : ''}`
}
