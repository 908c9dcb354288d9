// Self-test of the JS side, no Rust needed:
//
//   node --test selftest.mjs
//
// Builds a sample vectors file shaped like docs/protocol/vectors.json but
// encoded in the Rust node's layout (map keys in struct field order, not
// cborg's sorted order), in the OS temp dir, checks that vectors.mjs
// accepts it and refuses tampered copies, and checks the codec's strictness
// (duplicate keys, trailing bytes, framing, adverts, results). Then runs
// client.mjs against mock-provider.mjs on loopback (TCP, WebSocket, two
// hops, tampered results, timeout).

import test from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, execFile, spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { encode as cborgEncode } from 'cborg'
import { generateKeyPairFromSeed, generateKeyPair, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import * as w from './wire.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'infernet-js-selftest-'))
test.after(() => rmSync(dir, { recursive: true, force: true }))

// Encoded like the Rust node: keys in insertion (= declaration) order.
const rustLayout = (v) => cborgEncode(v, { mapSorter: null })

const SEED = Uint8Array.from({ length: 32 }, (_, i) => i + 1)
const CLIENT_SEED = new Uint8Array(32).fill(9)

async function sampleVectors () {
  const key = await generateKeyPairFromSeed('Ed25519', SEED)
  const clientKey = await generateKeyPairFromSeed('Ed25519', CLIENT_SEED)
  const peer = peerIdFromPublicKey(key.publicKey).toString()
  const client = peerIdFromPublicKey(clientKey.publicKey).toString()
  const signed = []
  const envelopes = {}
  async function sign (name, domain, payload, by = key) {
    const payloadBytes = rustLayout(payload)
    const input = w.signingInput(domain, payloadBytes)
    const signature = await by.sign(input)
    const env = { payload: payloadBytes, signature, public_key: publicKeyToProtobuf(by.publicKey) }
    envelopes[name] = env
    signed.push({
      name,
      domain,
      payload: w.toJsonView(payload),
      payload_hex: w.toHex(payloadBytes),
      signing_input_hex: w.toHex(input),
      signature_hex: w.toHex(signature),
      envelope_hex: w.toHex(rustLayout(env))
    })
  }
  const output = rustLayout({ Text: 'hello world' })
  await sign('advert', 'advert/2', {
    peer_id: peer,
    addrs: ['/ip4/127.0.0.1/tcp/4001'],
    models: ['tiny-llama'],
    quote: { amount: 5, currency: 'USD' },
    capacity: 2,
    wit_version: '0.2.0',
    protocol_version: 2,
    stake: null,
    timestamp_ms: 1700000000000
  })
  await sign('result', 'result/2', {
    job_id: 'j-1.1',
    model_id: 'tiny-llama',
    output_hash: w.sha256Hex(output),
    usage: { input_tokens: 2, output_tokens: 2 },
    backend: { name: 'echo', version: '0.1.0', sha256: '00'.repeat(32) },
    provider: peer,
    client,
    timestamp_ms: 1700000000001,
    trace_root: null
  })
  await sign('receipt', 'receipt/2', {
    job_id: 'j-1.1',
    output_hash: w.sha256Hex(output),
    client,
    provider: peer,
    accepted: true,
    timestamp_ms: 1700000000002
  }, clientKey)
  const k = await w.modelKey('tiny-llama')
  const messages = {
    quote_request: w.quoteRequest({ jobId: 'j-1.1', model: 'tiny-llama', inputTokens: 2, maxOutputTokens: 16, params: [['max_tokens', '16']] }),
    quote_offer: w.jobMessage('QuoteOffer', { job_id: 'j-1.1', quote_id: 'q1', price: { amount: 42, currency: 'USD' }, breakdown: [['input', 2], ['output', 40]], valid_until_ms: 1700000060000 }),
    accept: w.accept({ jobId: 'j-1.1', quoteId: 'q1' }),
    run: w.run({ jobId: 'j-1.1', model: 'tiny-llama', input: w.textInput('hello world'), params: [['max_tokens', '16']] }),
    ack: w.jobMessage('Ack', { job_id: 'j-1.1' }),
    result: w.jobMessage('Result', { output, signed: envelopes.result }),
    receipt: w.jobMessage('Receipt', envelopes.receipt),
    error: w.jobMessage('Error', { job_id: null, code: 'InvalidRequest', message: 'malformed frame' })
  }
  const frames = Object.entries(messages).map(([name, message]) => {
    const body = rustLayout(message)
    return { name, message: w.toJsonView(message), frame_hex: w.toHex(w.concatBytes(w.encodeVarint(body.length), body)) }
  })
  const keySection = (seed, k) => ({ ed25519_secret_hex: w.toHex(seed), peer_id: peerIdFromPublicKey(k.publicKey).toString(), public_key_protobuf_hex: w.toHex(publicKeyToProtobuf(k.publicKey)) })
  return {
    protocol_version: 2,
    job_protocol: '/infernet/job/2',
    advert_topic: 'infernet/providers/2',
    key: keySection(SEED, key),
    client_key: keySection(CLIENT_SEED, clientKey),
    result_output: { output: { Text: 'hello world' }, output_hash: w.sha256Hex(output), output_hex: w.toHex(output) },
    signed,
    dht_keys: [{ model: 'tiny-llama', multihash_hex: w.toHex(k.multihash), cid: k.cid.toString() }],
    frames
  }
}

function runVectors (vectors, extra = []) {
  const path = join(dir, `v-${Math.random().toString(16).slice(2)}.json`)
  writeFileSync(path, JSON.stringify(vectors, null, 2))
  try {
    const out = execFileSync(process.execPath, [join(here, 'vectors.mjs'), path, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
    return { code: 0, out: JSON.parse(out.toString()) }
  } catch (e) {
    return { code: e.status, out: JSON.parse(e.stdout.toString()), err: e.stderr.toString() }
  }
}

const clone = (v) => JSON.parse(JSON.stringify(v))

test('vectors.mjs accepts a Rust-layout sample and emits a cborg re-encoding', async () => {
  const v = await sampleVectors()
  const emit = join(dir, 'emitted.json')
  const r = runVectors(v, ['--emit', emit])
  assert.equal(r.code, 0, r.err)
  assert.deepEqual(r.out, { ok: true, checked: 2 + 3 + 3 + 1 + 1 + 8 })
  const e = JSON.parse(readFileSync(emit, 'utf8'))
  assert.equal(e.frames.length, 8)
  // cborg's layout is a different byte string, but the same message.
  assert.ok(e.frames.some(f => !f.same_bytes_as_vector))
  for (const f of e.frames) {
    const m = w.decodeFrame(w.fromHex(f.frame_hex))
    assert.equal(w.compareJsonView(m.message, f.message), null)
  }
  for (const s of e.signed) {
    const { signer } = await w.verifySigned(w.decodeCbor(w.fromHex(s.envelope_hex)), s.domain)
    assert.equal(signer, s.name === 'receipt' ? v.client_key.peer_id : v.key.peer_id)
  }
})

test('vectors.mjs refuses tampered vectors', async () => {
  const v = await sampleVectors()
  const cases = {
    'payload JSON view': (x) => { x.signed[0].payload.capacity = 3 },
    'payload bytes': (x) => { x.signed[1].payload_hex = x.signed[1].payload_hex.replace(/..$/, '00') },
    signature: (x) => { x.signed[0].signature_hex = x.signed[0].signature_hex.replace(/^../, 'ff') },
    'signing input': (x) => { x.signed[2].signing_input_hex = x.signed[2].signing_input_hex.replace('2f32', '2f31') },
    'peer id': (x) => { x.key.peer_id = '12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf' },
    multihash: (x) => { x.dht_keys[0].multihash_hex = x.dht_keys[0].multihash_hex.replace(/..$/, '00') },
    model: (x) => { x.dht_keys[0].model = 'other' },
    cid: (x) => { x.dht_keys[0].cid = x.dht_keys[0].cid.replace(/.$/, 'a') },
    'frame length': (x) => { x.frames[0].frame_hex = x.frames[0].frame_hex + '00' },
    'frame JSON view': (x) => { x.frames[3].message.body.Run.stream = true },
    'frame missing field': (x) => { x.frames[2].message.body.Accept.extra = 'x' },
    'receipt signed by the provider key': (x) => { x.client_key = x.key },
    'protocol version': (x) => { x.protocol_version = 1 },
    'result output hash': (x) => { x.result_output.output_hash = '00'.repeat(32) },
    'result output view': (x) => { x.result_output.output = { Text: 'hello' } }
  }
  for (const [name, tamper] of Object.entries(cases)) {
    const t = clone(v)
    tamper(t)
    const r = runVectors(t)
    assert.equal(r.code, 1, `tampered ${name} was accepted`)
    assert.equal(r.out.ok, false)
    assert.match(r.err, /MISMATCH/)
    if (process.env.SELFTEST_VERBOSE) console.error(`${name}: ${r.out.error}`)
  }
})

test('CBOR decoding is strict but layout-agnostic', () => {
  // {"body": {"Ack": {"job_id": "j"}}, "version": 2 as a 4-byte integer}
  const wide = w.concatBytes(
    Uint8Array.from([0xa2, 0x64]), new TextEncoder().encode('body'),
    Uint8Array.from([0xa1, 0x63]), new TextEncoder().encode('Ack'),
    Uint8Array.from([0xa1, 0x66]), new TextEncoder().encode('job_id'), Uint8Array.from([0x61, 0x6a]),
    Uint8Array.from([0x67]), new TextEncoder().encode('version'), Uint8Array.from([0x1a, 0, 0, 0, 2])
  )
  const m = w.parseJobMessage(w.decodeCbor(wide))
  assert.equal(m.variant, 'Ack')
  assert.equal(m.fields.job_id, 'j')
  // Duplicate keys and trailing bytes are refused.
  assert.throws(() => w.decodeCbor(Uint8Array.from([0xa2, 0x61, 0x61, 1, 0x61, 0x61, 2])), /repeat map key/)
  assert.throws(() => w.decodeCbor(Uint8Array.from([1, 2])), /malformed CBOR/)
  // Unknown keys are ignored, two body keys are not.
  assert.equal(w.parseJobMessage({ version: 2, extra: 1, body: { Ack: { job_id: 'j', x: 1 } } }).variant, 'Ack')
  assert.throws(() => w.parseJobMessage({ version: 2, body: { Ack: { job_id: 'j' }, Cancel: {} } }), /exactly one key/)
  assert.throws(() => w.parseJobMessage({ version: 1, body: { Ack: { job_id: 'j' } } }), /version 1/)
  // cborg sorts keys: shortest first.
  assert.equal(w.toHex(w.encodeCbor({ version: 2, body: null })), 'a264626f6479f66776657273696f6e02')
  // JSON views: a byte string as hex, as serde_json's byte array, or as the CBOR value it holds.
  const inner = w.encodeCbor({ Text: 'hi' })
  for (const view of [w.toHex(inner), [...inner], { Text: 'hi' }]) assert.equal(w.compareJsonView({ o: inner }, { o: view }), null)
  assert.match(w.compareJsonView({ o: inner }, { o: { Text: 'ho' } }), /\$\.o<cbor>\.Text/)
  // Absent and null optional fields are the same; floats compare as f32.
  assert.equal(w.compareJsonView({ a: 1 }, { a: 1, proof: null }), null)
  assert.equal(w.compareJsonView({ x: Math.fround(0.1) }, { x: 0.1 }), null)
  assert.match(w.compareJsonView({ a: 1 }, { a: 1, proof: 'groth16' }), /absent from CBOR/)
})

test('framing: varint length, exact body, caps', () => {
  assert.equal(w.toHex(w.encodeVarint(0)), '00')
  assert.equal(w.toHex(w.encodeVarint(127)), '7f')
  assert.equal(w.toHex(w.encodeVarint(128)), '8001')
  assert.equal(w.toHex(w.encodeVarint(300)), 'ac02')
  assert.deepEqual(w.decodeVarint(w.encodeVarint(8 * 1024 * 1024)), { value: 8 * 1024 * 1024, length: 4 })
  const f = w.encodeFrame(w.jobMessage('Ack', { job_id: 'j' }))
  assert.equal(w.decodeFrame(f).fields.job_id, 'j')
  assert.throws(() => w.decodeFrame(f.subarray(0, f.length - 1)), /stream ended/)
  assert.throws(() => w.decodeFrame(w.concatBytes(f, Uint8Array.of(0))), /trailing/)
  assert.throws(() => w.decodeFrame(new Uint8Array(0)), /empty/)
  assert.throws(() => w.decodeFrame(Uint8Array.of(0x80)), /inside the length/)
  assert.throws(() => w.decodeFrame(w.encodeVarint(9 * 1024 * 1024)), /exceeds/)
  assert.throws(() => w.encodeFrame({ version: 2, body: { Ack: { job_id: 'x'.repeat(w.MAX_REQUEST_BYTES) } } }), /exceeds/)
})

test('adverts: signature over exact bytes, key, version, skew', async () => {
  const key = await generateKeyPair('Ed25519')
  const peer = peerIdFromPublicKey(key.publicKey).toString()
  const now = Date.now()
  const make = (over = {}) => w.advertPayload({ peerId: peer, models: ['m'], quote: { amount: 1, currency: 'USD' }, timestampMs: now, ...over })
  const ok = await w.signPayload(key, w.DOMAIN.advert, make())
  assert.equal((await w.verifyAdvertBytes(ok.bytes, now)).signer, peer)
  // The same payload in another layout, signed as such, verifies too.
  const other = await w.signPayloadBytes(key, w.DOMAIN.advert, rustLayout(make()))
  assert.equal((await w.verifyAdvertBytes(other.bytes, now)).advert.peer_id, peer)
  // But a re-encoding of a signed payload does not carry the signature.
  const swapped = w.encodeCbor({ ...other.envelope, payload: ok.payloadBytes })
  await assert.rejects(w.verifyAdvertBytes(swapped, now), /does not verify/)
  const stale = await w.signPayload(key, w.DOMAIN.advert, make({ timestampMs: now - 6 * 60 * 1000 }))
  await assert.rejects(w.verifyAdvertBytes(stale.bytes, now), /stale/)
  const future = await w.signPayload(key, w.DOMAIN.advert, make({ timestampMs: now + 6 * 60 * 1000 }))
  await assert.rejects(w.verifyAdvertBytes(future.bytes, now), /stale/)
  const v99 = await w.signPayload(key, w.DOMAIN.advert, { ...make(), protocol_version: 99 })
  await assert.rejects(w.verifyAdvertBytes(v99.bytes, now), /unknown protocol version 99/)
  const otherKey = await generateKeyPair('Ed25519')
  const stolen = w.encodeCbor({ ...ok.envelope, public_key: publicKeyToProtobuf(otherKey.publicKey) })
  await assert.rejects(w.verifyAdvertBytes(stolen, now), /claims/)
  // A signature for another domain does not verify as an advert.
  const wrongDomain = await w.signPayloadBytes(key, w.DOMAIN.result, ok.payloadBytes)
  await assert.rejects(w.verifyAdvertBytes(wrongDomain.bytes, now), /does not verify/)
  await assert.rejects(w.verifyAdvertBytes(Uint8Array.of(1, 2), now), /malformed/)
})

test('results: signer, output hash over received bytes, ids', async () => {
  const key = await generateKeyPair('Ed25519')
  const provider = peerIdFromPublicKey(key.publicKey).toString()
  const client = '12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf'
  const output = rustLayout({ Text: 'hi' })
  const body = {
    job_id: 'j', model_id: 'm', output_hash: w.sha256Hex(output), usage: { input_tokens: 1, output_tokens: 1 },
    backend: { name: 'b', version: '1', sha256: '00' }, provider, client, timestamp_ms: Date.now(), trace_root: null
  }
  const signed = (await w.signPayload(key, w.DOMAIN.result, body)).envelope
  const want = { jobId: 'j', modelId: 'm', provider, client }
  const r = await w.verifyResult({ output, signed }, want)
  assert.deepEqual(r.output, { Text: 'hi' })
  // Same output, other bytes (cborg layout is identical for one key, so add a width change).
  const wider = Uint8Array.from([0xa1, 0x64, ...new TextEncoder().encode('Text'), 0x78, 0x02, ...new TextEncoder().encode('hi')])
  await assert.rejects(w.verifyResult({ output: wider, signed }, want), /output_hash/)
  await assert.rejects(w.verifyResult({ output, signed }, { ...want, client: provider }), /client/)
  await assert.rejects(w.verifyResult({ output, signed }, { ...want, jobId: 'k' }), /job_id/)
  await assert.rejects(w.verifyResult({ output, signed }, { ...want, provider: client }), /expected provider/)
})

// ---------------------------------------------------------------------------
// client.mjs end to end against mock-provider.mjs (both ends ours: this
// checks the client's flow and its refusals, not interop with Rust).

function startMock (args = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(here, 'mock-provider.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d) => { stderr += d })
    const lines = []
    const rl = createInterface({ input: child.stdout })
    const timer = setTimeout(() => { child.kill(); reject(new Error(`mock printed no addresses: ${stderr}`)) }, 15000)
    rl.on('line', (line) => {
      lines.push(line)
      const listen = lines.filter((l) => l.startsWith('listen ')).map((l) => l.slice(7))
      if (listen.length === 2) {
        clearTimeout(timer)
        resolve({
          child,
          peer: lines.find((l) => l.startsWith('peer ')).slice(5),
          tcp: listen.find((a) => !a.includes('/ws/')),
          ws: listen.find((a) => a.includes('/ws/')),
          stderr: () => stderr
        })
      }
    })
    child.on('error', reject)
  })
}

function runClient (args) {
  return new Promise((resolve) => {
    const t0 = Date.now()
    execFile(process.execPath, [join(here, 'client.mjs'), ...args], { timeout: 60000 }, (err, stdout, stderr) => {
      const lines = stdout.trim().split('\n')
      resolve({ code: err ? err.code : 0, lines, out: JSON.parse(lines[lines.length - 1]), stderr, ms: Date.now() - t0 })
    })
  })
}

test('client.mjs runs a job over TCP, and its advert reaches the provider', async (t) => {
  const mock = await startMock()
  t.after(() => mock.child.kill())
  const r = await runClient(['--bootstrap', mock.tcp, '--model', 'echo', '--prompt', 'hello js world', '--timeout-ms', '30000', '--advert-model', 'js-model'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.lines.length, 1, 'exactly one line on stdout')
  assert.equal(r.out.ok, true)
  assert.equal(r.out.provider, mock.peer)
  assert.deepEqual(r.out.output, { Text: 'echo: hello js world' })
  assert.equal(r.out.result_verified, true)
  assert.equal(r.out.found_via_dht, true)
  assert.equal(r.out.advert_verified, true)
  assert.equal(r.out.published_advert, true)
  assert.deepEqual(r.out.usage, { input_tokens: 3, output_tokens: 4 })
  assert.match(r.out.output_hash, /^[0-9a-f]{64}$/)
  assert.match(mock.stderr(), new RegExp(`advert accepted from ${r.out.peer_id}: models js-model`))
  assert.match(mock.stderr(), new RegExp(`identified ${r.out.peer_id}: /infernet/id/1`))
})

test('client.mjs finds a provider behind the bootstrap peer, over WebSocket', async (t) => {
  const boot = await startMock(['--model', 'other'])
  t.after(() => boot.child.kill())
  const provider = await startMock(['--model', 'echo', '--bootstrap', boot.tcp])
  t.after(() => provider.child.kill())
  const r = await runClient(['--bootstrap', boot.ws, '--model', 'echo', '--prompt', 'two hops', '--timeout-ms', '30000'])
  assert.equal(r.code, 0, r.stderr)
  assert.equal(r.out.provider, provider.peer)
  assert.deepEqual(r.out.output, { Text: 'echo: two hops' })
  assert.equal(r.out.published_advert, false)
  assert.match(r.stderr, /connected to .* over \/ip4\/127\.0\.0\.1\/tcp\/\d+\/ws/)
})

test('client.mjs refuses bad results and stops at its timeout', async (t) => {
  for (const [tamper, why] of [['output', /output_hash/], ['signature', /signature does not verify/], ['client', /result client/]]) {
    const mock = await startMock(['--tamper', tamper])
    t.after(() => mock.child.kill())
    const r = await runClient(['--bootstrap', mock.tcp, '--model', 'echo', '--prompt', 'x', '--timeout-ms', '30000'])
    assert.equal(r.code, 1, `tampered ${tamper} was accepted`)
    assert.equal(r.out.ok, false)
    assert.equal(r.out.step, 'job')
    assert.match(r.out.error, why)
  }
  const mock = await startMock()
  t.after(() => mock.child.kill())
  const r = await runClient(['--bootstrap', mock.tcp, '--model', 'no-such-model', '--prompt', 'x', '--timeout-ms', '3000'])
  assert.equal(r.code, 1)
  assert.deepEqual([r.out.ok, r.out.step], [false, 'dht'])
  assert.ok(r.ms < 3000 + 1500, `took ${r.ms} ms`)
  const refused = await runClient(['--bootstrap', '/ip4/127.0.0.1/tcp/1/p2p/' + mock.peer, '--model', 'echo', '--prompt', 'x', '--timeout-ms', '3000'])
  assert.deepEqual([refused.code, refused.out.ok, refused.out.step], [1, false, 'dial'])
})
