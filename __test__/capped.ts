/**
 * A reader run in a child process whose writable memory is capped (`ulimit -d`, which on Linux
 * counts every private writable mapping, Buffers included, but not the address space WebAssembly
 * reserves, so `tsx` still starts): an input that would grow past the cap ends the child with an
 * allocation failure or a signal instead of taking the machine's memory. A reader passes when it
 * ends with its own clear error, well below the cap.
 */
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'

import { tempDir } from './helpers.js'

const root = path.resolve(__dirname, '..')

export interface CappedRun {
  /** The child's exit status, null when a signal ended it. */
  status: number | null
  signal: NodeJS.Signals | null
  /** What the script printed last: `{ ok: ... }` or `{ error, name }`. */
  result: { ok?: unknown; error?: string; name?: string } | undefined
  stderr: string
}

/**
 * Runs `body` (TypeScript; `imports` are `name: 'ts/...' path` pairs from the repository root)
 * under a `capBytes` memory cap. `body` is an async function body whose return value is reported
 * as `{ ok }`; a thrown error is reported as `{ error, name }` with exit status 1.
 */
export function runCapped(imports: Record<string, string>, body: string, capBytes: number, timeoutMs = 120_000): CappedRun {
  const script = path.join(tempDir('capped'), 'run.ts')
  const lines = Object.entries(imports).map(([name, file]) => `import { ${name} } from ${JSON.stringify(path.join(root, file))}`)
  writeFileSync(
    script,
    `${lines.join('\n')}
const run = async () => {
${body}
}
run().then(
  (ok) => console.log(JSON.stringify({ ok })),
  (e) => {
    console.log(JSON.stringify({ error: String(e?.message ?? e), name: e?.constructor?.name }))
    process.exitCode = 1
  },
)
`,
  )
  const cmd = `ulimit -d ${Math.ceil(capBytes / 1024)} && exec "$0" --import tsx "$1"`
  const r = spawnSync('bash', ['-c', cmd, process.execPath, script], { cwd: root, encoding: 'utf8', timeout: timeoutMs })
  const last = r.stdout.trim().split('\n').at(-1)
  let result: CappedRun['result']
  try {
    result = last ? (JSON.parse(last) as CappedRun['result']) : undefined
  } catch {
    result = undefined
  }
  return { status: r.status, signal: r.signal, result, stderr: r.stderr }
}
