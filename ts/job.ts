/**
 * A running engine job: a Promise of its result, progress callbacks and cancellation (a token the
 * engine checks before every step, also set by an `AbortSignal`).
 */
import type { BindingEvent } from '../index.js'
import { toProgressEvent } from './binding.js'
import { fromNative } from './errors.js'
import type { ProgressEvent } from './events.js'
import { native } from './native.js'

export interface JobOptions {
  /** Aborting cancels the job at its next step. */
  signal?: AbortSignal
  /** Called on the main thread for every progress event. Exceptions thrown here are ignored. */
  onProgress?: (event: ProgressEvent) => void
}

/** A running engine job. Awaitable; `cancel()` stops it at the next step. */
export class Job<T> implements PromiseLike<T> {
  readonly result: Promise<T>
  readonly #token: { cancel(): void }

  /** @internal */
  constructor(token: { cancel(): void }, result: Promise<T>) {
    this.#token = token
    this.result = result
  }

  /** Stops the job at its next step; pre-training then writes a resumable checkpoint. */
  cancel(): void {
    this.#token.cancel()
  }

  then<A = T, B = never>(
    onFulfilled?: ((value: T) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.result.then(onFulfilled, onRejected)
  }
}

type Token = InstanceType<ReturnType<typeof native>['BindingCancelToken']>

/**
 * Starts an engine job: `start` gets the cancellation token and the progress callback to hand to
 * the binding, `convert` turns the binding's outcome into the public result.
 */
export function startJob<T, R>(
  opts: JobOptions,
  start: (token: Token, onEvent: (event: BindingEvent) => void) => Promise<R>,
  convert: (outcome: R) => T,
): Job<T> {
  const binding = native()
  const token = new binding.BindingCancelToken()
  const onAbort = () => token.cancel()
  if (opts.signal?.aborted) token.cancel()
  opts.signal?.addEventListener('abort', onAbort, { once: true })
  const onEvent = (event: BindingEvent) => {
    if (!opts.onProgress) return
    try {
      opts.onProgress(toProgressEvent(event))
    } catch {
      // A throwing progress handler must not take the training job (or the process) down.
    }
  }
  let promise: Promise<R>
  try {
    promise = start(token, onEvent)
  } catch (e) {
    promise = Promise.reject(e)
  }
  const result = promise.then(convert, (e: unknown) => {
    throw fromNative(e)
  })
  void result.finally(() => opts.signal?.removeEventListener('abort', onAbort)).catch(() => {})
  return new Job<T>(token, result)
}
