/**
 * The one conversion from the binding's types (generated `index.d.ts`) to the public ones: the
 * binding leaves absent values out where the public types say `null`, and gives statuses and
 * kinds as plain strings.
 */
import type * as Binding from '../index.js'
import type { DeviceEvent, FinetuneResult, Metrics, PretrainResult, ProgressEvent } from './events.js'
import { addonChoice } from './native.js'

export function toProgressEvent(e: Binding.BindingEvent): ProgressEvent {
  if (e.type === 'device') return { ...e, backend: e.backend as DeviceEvent['backend'], addon: addonChoice() }
  return e.type === 'epoch' ? { ...e, valLoss: e.valLoss ?? null } : e
}

const status = (s: string) => s as 'completed' | 'cancelled'

export function toPretrainResult(o: Binding.PretrainOutcome): PretrainResult {
  return { ...o, status: status(o.status) }
}

export function toMetrics(m: Binding.Metrics): Metrics {
  return {
    ...m,
    macroAuroc: m.macroAuroc ?? null,
    aurocPerClass: m.aurocPerClass.map((v) => v ?? null),
  }
}

export function toFinetuneResult(o: Binding.FinetuneOutcome): FinetuneResult {
  return { ...o, status: status(o.status), valMetrics: toMetrics(o.valMetrics) }
}
