/**
 * Fails on an import circle between modules: TypeScript files under `ts/` (relative imports;
 * type-only ones are left out, as they vanish at run time) and Rust modules under
 * `crates/<crate>/src` (`crate::`, `super::` and child-module paths outside comments and test
 * modules; a child using its own parent is not counted, that being Rust's usual layout).
 *
 *   node --import tsx scripts/check-cycles.ts [--list]
 *
 * KNOWN lists circles tolerated for now (none today: the two this check found when it was written,
 * network building in `inference.rs` and the CASS objective importing its trainer, were broken by
 * moving `build_network`/`load_into` to `models/build.rs` and `StepOutput` to `ssl/objective.rs`);
 * a circle not listed, or a listed one that grew, fails.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs'
import path from 'node:path'

const root = path.resolve(__dirname, '..')

/** Strongly connected components with more than one member (Tarjan). */
function circles(graph: Map<string, Set<string>>): string[][] {
  let index = 0
  const stack: string[] = []
  const on = new Set<string>()
  const idx = new Map<string, number>()
  const low = new Map<string, number>()
  const out: string[][] = []
  const visit = (v: string) => {
    idx.set(v, index)
    low.set(v, index++)
    stack.push(v)
    on.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!))
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = []
      let w: string
      do {
        w = stack.pop()!
        on.delete(w)
        scc.push(w)
      } while (w !== v)
      if (scc.length > 1) out.push(scc.sort())
    }
  }
  for (const v of graph.keys()) if (!idx.has(v)) visit(v)
  return out
}

function files(dir: string, ext: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f)
    return statSync(p).isDirectory() ? files(p, ext) : p.endsWith(ext) ? [p] : []
  })
}

function tsGraph(): Map<string, Set<string>> {
  const g = new Map<string, Set<string>>()
  for (const file of files(path.join(root, 'ts'), '.ts')) {
    const from = path.relative(root, file)
    const edges = new Set<string>()
    for (const m of readFileSync(file, 'utf8').matchAll(/^(import|export)([^'"]*)from '(\.[^']+)'/gm)) {
      // Type-only imports vanish at run time; a circle of them is no load-order hazard.
      const specifiers = m[2].replace(/^\s*type\s/, '').match(/\{([^}]*)\}/)?.[1]
      const typeOnly =
        /^\s*type\s/.test(m[2]) || (specifiers !== undefined && specifiers.split(',').every((x) => /^\s*(type\s|$)/.test(x)))
      if (!typeOnly) edges.add(path.relative(root, path.resolve(path.dirname(file), m[3].replace(/\.js$/, '.ts'))))
    }
    g.set(from, edges)
  }
  return g
}

function rustGraph(crate: string): Map<string, Set<string>> {
  const src = path.join(root, 'crates', crate, 'src')
  const modOf = (file: string) => {
    const rel = path.relative(src, file).replace(/\.rs$/, '').split(path.sep)
    if (rel.at(-1) === 'mod' || rel.at(-1) === 'lib') rel.pop()
    return rel.join('::')
  }
  const sources = files(src, '.rs').filter((f) => !/_tests?\.rs$|\/tests?\.rs$|\/testing\//.test(f))
  const mods = new Set(sources.map(modOf))
  const g = new Map<string, Set<string>>()
  for (const file of sources) {
    const from = modOf(file)
    // Test modules inside a file are not part of the module's design.
    const text = readFileSync(file, 'utf8')
      .split(/#\[cfg\(test\)\]\s*mod tests\s*\{/)[0]
      .replace(/\/\/.*$/gm, '') // comments name modules without depending on them
    const edges = new Set<string>()
    const uses = [...text.matchAll(/crate::((?:[a-z_0-9]+::)*[a-z_0-9]+)/g)].map((m) => m[1])
    // `super::x` from a child, and a parent's `child::x` for the modules it declares.
    const parent = from.split('::').slice(0, -1).join('::')
    for (const m of text.matchAll(/\bsuper::((?:[a-z_0-9]+::)*[a-z_0-9]+)/g)) uses.push(parent ? `${parent}::${m[1]}` : m[1])
    const children = [...text.matchAll(/^\s*(?:pub(?:\([a-z]+\))? )?mod ([a-z_0-9]+);/gm)].map((m) => m[1])
    for (const child of children)
      for (const m of text.matchAll(new RegExp(`(?<![a-z_0-9:])(?:self::)?${child}::([a-z_0-9:]*)`, 'g')))
        uses.push(`${from ? `${from}::` : ''}${child}::${m[1]}`.replace(/::$/, ''))
    // `use crate::a::{b, c::d}` groups: each branch is a path under `a`.
    for (const m of text.matchAll(/crate::([a-z_0-9:]*)\{([^}]*)\}/g))
      for (const part of m[2].split(',')) uses.push(`${m[1]}${part.trim()}`)
    for (const u of uses) {
      const parts = u.split('::')
      let target = ''
      for (let i = parts.length; i > 0; i--) {
        const cand = parts.slice(0, i).join('::')
        if (mods.has(cand)) {
          target = cand
          break
        }
      }
      // The crate root only declares modules and re-exports them; a child using its parent
      // (`super::`, the items a `mod.rs` keeps for its children) is Rust's usual layout.
      if (!target || target === from || from === '' || from.startsWith(`${target}::`)) continue
      edges.add(target)
    }
    g.set(from || '(crate root)', edges)
  }
  return g
}

/** Circles present when the check was written; remove each entry with its circle. */
const KNOWN: string[] = ([] = [
  // Network building and loading live in `inference.rs`, which fine-tuning and DINO use.
  'cass-core: inference <-> ssl <-> ssl::dino <-> train::finetune',
  // The CASS objective and the trainer share config types both ways.
  'cass-core: ssl::cass <-> ssl::cass_config <-> ssl::objective',
])

function main() {
  const found = [
    ...circles(tsGraph()).map((c) => `ts: ${c.join(' <-> ')}`),
    ...['cass-core', 'cass-node'].flatMap((crate) => circles(rustGraph(crate)).map((c) => `${crate}: ${c.join(' <-> ')}`)),
  ]
  const fresh = found.filter((c) => !KNOWN.includes(c))
  for (const c of found) process.stdout.write(`${KNOWN.includes(c) ? 'known' : 'NEW'} circle: ${c}\n`)
  if (fresh.length) {
    process.stderr.write(`${fresh.length} import circle(s) not in KNOWN: break them (move the shared piece down)\n`)
    process.exit(1)
  }
  process.stdout.write(`no new import circles (${found.length} known)\n`)
}

main()
