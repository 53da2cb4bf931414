/**
 * Typed errors. Every failure of the engine crosses the binding as a JSON message
 * `{ kind, code, message, field?, path?, step? }`; `fromNative` is the ONE place that turns it
 * into one of these classes.
 */

export class CassError extends Error {
  /** Stable machine-readable code, e.g. `invalid-config`, `bad-cache`, `non-finite-loss`. */
  readonly code: string
  constructor(message: string, code: string) {
    super(message)
    this.name = new.target.name
    this.code = code
  }
}

/** A configuration or argument is invalid; `field` is its path (e.g. `vit.numHeads`). */
export class ConfigError extends CassError {
  readonly field: string
  /** Every problem found, one `path: message` line each. */
  readonly issues: string[]
  constructor(message: string, field: string, issues: string[]) {
    super(message, 'invalid-config')
    this.field = field
    this.issues = issues
  }
}

/**
 * A problem with the data, the weights or the run (unreadable file, empty class, NaN loss).
 * Fetching weights adds the codes `offline`, `not-found`, `download-failed`,
 * `download-stalled`, `checksum-mismatch` and `too-large` (see `weights/hub.ts`, `weights/resolve.ts`).
 */
export class DataError extends CassError {
  readonly path?: string
  readonly step?: number
  constructor(message: string, code: string, path?: string, step?: number) {
    super(message, code)
    this.path = path
    this.step = step
  }
}

/** A file could not be read or written. */
export class IoError extends CassError {
  readonly path: string
  constructor(message: string, path: string) {
    super(message, 'io')
    this.path = path
  }
}

/**
 * The requested device/backend is not in this build or not present (`backend-unavailable`), or
 * cannot hold what the run needs (`device-limit`: one buffer over the device's limit).
 */
export class BackendError extends CassError {
  constructor(message: string, code: 'backend-unavailable' | 'device-limit' = 'backend-unavailable') {
    super(message, code)
  }
}

interface NativeErrorShape {
  kind?: string
  code?: string
  message?: string
  field?: string
  path?: string | null
  step?: number | null
}

/** Converts an error thrown or rejected by the native addon into a typed error. */
export function fromNative(err: unknown): Error {
  if (!(err instanceof Error)) return new CassError(String(err), 'internal')
  let shape: NativeErrorShape
  try {
    shape = JSON.parse(err.message) as NativeErrorShape
  } catch {
    return err
  }
  const message = shape.message ?? err.message
  switch (shape.kind) {
    case 'config':
      return new ConfigError(message, shape.field ?? '(root)', [])
    case 'io':
      return new IoError(message, shape.path ?? '')
    case 'backend':
      return new BackendError(message)
    case 'deviceLimit':
      return new BackendError(message, 'device-limit')
    case 'internal':
      // An engine panic: a bug, not a problem with the inputs, so no CassError subclass.
      return new Error(message)
    default:
      return new DataError(message, shape.code ?? 'internal', shape.path ?? undefined, shape.step ?? undefined)
  }
}
