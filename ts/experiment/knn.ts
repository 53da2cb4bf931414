/**
 * k-nearest-neighbour classification of frozen embeddings: the cheap, label-efficient probe of
 * what pre-training learned (no training, one hyper-parameter). Cosine similarity, and each of
 * the `k` nearest training embeddings votes for its class with weight `exp(sim / T)`, as the
 * weighted kNN that DINO and lightly report (T = 0.07).
 */

export interface KnnResult {
  accuracy: number
  macroF1: number
  predictions: number[]
}

function normalizeRows(x: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(x.length)
  for (let r = 0; r < x.length / dim; r++) {
    let norm = 0
    for (let j = 0; j < dim; j++) norm += x[r * dim + j] ** 2
    const inv = 1 / Math.max(Math.sqrt(norm), 1e-12)
    for (let j = 0; j < dim; j++) out[r * dim + j] = x[r * dim + j] * inv
  }
  return out
}

/** Macro-F1 over `classes` classes (a class never predicted nor present counts as F1 0 only when present). */
export function macroF1(truth: number[], predicted: number[], classes: number): number {
  const tp = new Array<number>(classes).fill(0)
  const fp = new Array<number>(classes).fill(0)
  const fn = new Array<number>(classes).fill(0)
  truth.forEach((t, i) => {
    const p = predicted[i]
    if (p === t) tp[t]++
    else {
      fp[p]++
      fn[t]++
    }
  })
  const f1s: number[] = []
  for (let c = 0; c < classes; c++) {
    if (tp[c] + fn[c] === 0) continue // absent from the truth: not averaged, as scikit-learn's labels=present
    const denom = 2 * tp[c] + fp[c] + fn[c]
    f1s.push(denom === 0 ? 0 : (2 * tp[c]) / denom)
  }
  return f1s.length ? f1s.reduce((a, b) => a + b, 0) / f1s.length : 0
}

/**
 * Classifies each `query` row by its `k` most similar `train` rows.
 *
 * `train`: `[nTrain, dim]` row-major with labels `trainLabels`; `query`: `[nQuery, dim]` with
 * labels `queryLabels` (for the scores).
 */
export function knnClassify(
  train: Float32Array,
  trainLabels: number[],
  query: Float32Array,
  queryLabels: number[],
  dim: number,
  classes: number,
  k = 20,
  temperature = 0.07,
): KnnResult {
  const nTrain = trainLabels.length
  if (train.length !== nTrain * dim || query.length !== queryLabels.length * dim)
    throw new Error(`kNN: embeddings and labels disagree (${train.length}/${dim} vs ${nTrain})`)
  const a = normalizeRows(train, dim)
  const q = normalizeRows(query, dim)
  const kk = Math.min(k, nTrain)
  const predictions: number[] = []
  const sims = new Float64Array(nTrain)
  for (let r = 0; r < queryLabels.length; r++) {
    for (let i = 0; i < nTrain; i++) {
      let s = 0
      for (let j = 0; j < dim; j++) s += q[r * dim + j] * a[i * dim + j]
      sims[i] = s
    }
    // The k largest by partial selection: O(n k), fine for k of a few tens.
    const votes = new Float64Array(classes)
    const taken = new Uint8Array(nTrain)
    for (let n = 0; n < kk; n++) {
      let best = -1
      for (let i = 0; i < nTrain; i++) if (!taken[i] && (best < 0 || sims[i] > sims[best])) best = i
      taken[best] = 1
      votes[trainLabels[best]] += Math.exp(sims[best] / temperature)
    }
    let arg = 0
    for (let c = 1; c < classes; c++) if (votes[c] > votes[arg]) arg = c
    predictions.push(arg)
  }
  const correct = predictions.filter((p, i) => p === queryLabels[i]).length
  return {
    accuracy: queryLabels.length ? correct / queryLabels.length : 0,
    macroF1: macroF1(queryLabels, predictions, classes),
    predictions,
  }
}
