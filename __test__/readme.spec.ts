/**
 * The README's shell blocks still run: every `cass` line is run with `--help` added (the CLI
 * parses every flag strictly before it answers help, so an unknown or renamed flag fails), every
 * `npm run` script exists, and every page the README links to exists.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import path from 'node:path'

import test from 'ava'

const root = path.resolve(__dirname, '..')
const readme = readFileSync(path.join(root, 'README.md'), 'utf8')

/** Lines of the README's ```sh blocks, continuations joined, comments dropped. */
function shellLines(): string[] {
  const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1])
  return blocks
    .flatMap((b) => b.replace(/\\\n\s*/g, ' ').split('\n'))
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l !== '')
}

/** `cass` invocations of a line: `cass a | b ARGS` stands for `cass a ARGS` and `cass b ARGS`. */
function cassRuns(line: string): string[][] {
  const words = line.replace(/^npx /, '').split(/\s+/)
  if (words[0] !== 'cass') return []
  const rest = words.slice(1)
  const commands: string[] = [rest[0]]
  let i = 1
  while (rest[i] === '|') {
    commands.push(rest[i + 1])
    i += 2
  }
  // Placeholders: `[--x N]` brackets and `a|b` alternatives (the first one is run).
  const args = rest
    .slice(i)
    .map((w) => w.replace(/[[\]]/g, '').split('|')[0])
    .filter((w) => w !== '' && w !== '...')
  return commands.flatMap((c) => {
    if (c === 'weights') return (args[0] ?? '').split('|').map((sub) => ['weights', sub, ...args.slice(1)])
    return [[...c.split('|').map((x) => x), ...args]]
  })
}

test('every cass command line of the README parses: its command and every flag it shows exist', (t) => {
  const runs = shellLines().flatMap(cassRuns)
  t.true(runs.length >= 8, `found ${runs.length} cass lines`)
  for (const argv of runs) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'ts', 'cli.ts'), ...argv, '--help'], {
      encoding: 'utf8',
      cwd: root,
    })
    t.is(r.status, 0, `cass ${argv.join(' ')} --help: ${r.stderr}`)
    t.regex(r.stdout, /--/, `cass ${argv[0]} printed its usage`)
  }
})

test('every npm script the README runs exists, and every page it links to', (t) => {
  const scripts = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).scripts as Record<string, string>
  const npm = shellLines().flatMap((l) => l.split('&&').map((s) => s.trim()))
  for (const l of npm) {
    const m = /^npm (?:run (\S+)|test)/.exec(l)
    if (m) t.truthy(scripts[m[1] ?? 'test'], l)
  }
  const links = [...readme.matchAll(/\]\(((?:docs|bench|ts|crates)\/[^)#]+)/g)].map((m) => m[1])
  t.true(links.length >= 10)
  for (const link of links) t.true(existsSync(path.join(root, link)), link)
  // The pages' own relative links too (`../` into the repository, or a sibling page).
  for (const page of readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md'))) {
    const text = readFileSync(path.join(root, 'docs', page), 'utf8')
    for (const [, target] of text.matchAll(/\]\((?!https?:)([^)#\s]+)/g))
      t.true(existsSync(path.join(root, 'docs', target)), `docs/${page} links to ${target}`)
  }
  const lines = readme.split('\n').length
  t.true(lines <= 200, `the README is ${lines} lines; its details belong in docs/`)
})
