// Infernet wire protocol v2, written from the protocol description alone (no
// Rust code): varint framing, CBOR via cborg, Signed envelopes, DHT keys and
// result checks. Used by vectors.mjs (test vectors) and client.mjs (a live
// js-libp2p node). cborg's default encoder sorts map keys (shortest first,
// then bytewise), a different layout than the Rust encoder's field order:
// receivers must never depend on two encoders agreeing byte for byte.

import { encode as cborgEncode, decode as cborgDecode, Tokenizer, Token, Type } from 'cborg'
import { sha256 } from 'multiformats/hashes/sha2'
import { CID } from 'multiformats/cid'
import { publicKeyFromProtobuf, publicKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey, peerIdFromString } from '@libp2p/peer-id'
import { createHash } from 'node:crypto'

// ---------------------------------------------------------------------------
// Protocol names and limits

/** `version` of every JobMessage and `protocol_version` of every advert. */
export const PROTOCOL_VERSION = 2
/** Versions this implementation understands (adverts with others are dropped). */
export const KNOWN_PROTOCOL_VERSIONS = [2]
/** Stream protocol of the job exchange. */
export const JOB_PROTOCOL = '/infernet/job/2'
/** Gossipsub topic of provider adverts. */
export const ADVERT_TOPIC = 'infernet/providers/2'
/** Kademlia protocol id (a DHT of Infernet nodes only). */
export const KAD_PROTOCOL = '/infernet/kad/1'
/** Identify protocol-version string. */
export const IDENTIFY_PROTOCOL_VERSION = '/infernet/id/1'
/** Prefix of the DHT provider key of a model id. */
export const MODEL_KEY_PREFIX = 'infernet/model/'
/** Largest request frame body. */
export const MAX_REQUEST_BYTES = 1024 * 1024
/** Largest response frame body. */
export const MAX_RESPONSE_BYTES = 8 * 1024 * 1024
/** Tolerated advert clock skew, either way. */
export const MAX_ADVERT_SKEW_MS = 5 * 60 * 1000
/** Signing domains, and the payload field naming the signer for each. */
export const DOMAIN = Object.freeze({ advert: 'advert/2', result: 'result/2', receipt: 'receipt/2' })
export const SIGNER_FIELD = Object.freeze({ 'advert/2': 'peer_id', 'result/2': 'provider', 'receipt/2': 'client' })
/** JobMessage body variants. */
export const BODY_VARIANTS = Object.freeze([
  'QuoteRequest', 'QuoteOffer', 'Accept', 'Run', 'Poll', 'Progress',
  'Result', 'Receipt', 'Ack', 'Cancel', 'Error'
])
/** Error codes of `Error` bodies. */
export const ERROR_CODES = Object.freeze([
  'UnsupportedVersion', 'NotAProvider', 'UnknownModel', 'UnknownJob', 'InvalidRequest',
  'QuoteExpired', 'Busy', 'Cancelled', 'Timeout', 'BadSignature', 'PaymentRequired', 'Internal'
])
/** Output variants (the CBOR inside a Result's `output` byte string). */
export const OUTPUT_VARIANTS = Object.freeze(['Text', 'Embeddings', 'Logits', 'Classes', 'Bytes'])
/** Input variants of a Run. */
export const INPUT_VARIANTS = Object.freeze(['Text', 'Texts', 'Tokens', 'Bytes', 'Tensor'])

/** A protocol violation by the other side (or a bad test vector). */
export class WireError extends Error {
  constructor (message) {
    super(message)
    this.name = 'WireError'
  }
}

// ---------------------------------------------------------------------------
// Bytes

const utf8 = new TextEncoder()

export function toHex (bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

export function fromHex (hex) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new WireError(`not a hex string: ${String(hex).slice(0, 40)}`)
  }
  return new Uint8Array(Buffer.from(hex, 'hex'))
}

export function concatBytes (...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

export function bytesEqual (a, b) {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Lowercase hex sha256 of `bytes`. */
export function sha256Hex (bytes) {
  return createHash('sha256').update(bytes).digest('hex')
}

// ---------------------------------------------------------------------------
// CBOR

/**
 * A CBOR float kept as a float. JS has one number type, so a decoded 1.0
 * would re-encode as the integer 1; decodeCborKeepFloats wraps every CBOR
 * float in this, and encodeCbor writes it back as a float.
 */
export class CborFloat {
  constructor (value) {
    this.value = value
  }
}

const ENCODE_OPTIONS = Object.freeze({
  typeEncoders: {
    Object: (obj) => obj instanceof CborFloat ? [new Token(Type.float, obj.value)] : null
  }
})

/**
 * cborg's default encoding: map keys sorted (shortest first, then bytewise),
 * minimal integers, floats in the smallest width that holds them exactly.
 */
export function encodeCbor (value) {
  return cborgEncode(value, ENCODE_OPTIONS)
}

const DECODE_OPTIONS = Object.freeze({
  rejectDuplicateMapKeys: true, // duplicate keys are an error, not last-wins
  allowUndefined: false, // CBOR undefined never appears in the protocol
  allowIndefinite: true, // accepted: any definite or indefinite layout
  allowBigInt: true // u64 above 2^53 decodes as BigInt rather than losing bits
})

/** Strict decode: exactly one CBOR item, no trailing bytes, no duplicate keys. */
export function decodeCbor (bytes) {
  try {
    return cborgDecode(bytes, DECODE_OPTIONS)
  } catch (e) {
    throw new WireError(`malformed CBOR: ${e.message}`)
  }
}

// A private tag number: the tokenizer below puts it in front of every float
// token, and the tag decoder wraps the float in CborFloat.
const FLOAT_MARK = 0x1f10a7

class FloatMarkingTokenizer {
  constructor (data, options) {
    this.inner = new Tokenizer(data, options)
    this.pending = null
  }

  pos () { return this.inner.pos() }

  done () { return this.pending == null && this.inner.done() }

  next () {
    if (this.pending != null) {
      const t = this.pending
      this.pending = null
      return t
    }
    const t = this.inner.next()
    if (t.type === Type.float) {
      this.pending = t
      return new Token(Type.tag, FLOAT_MARK, 0)
    }
    return t
  }
}

/** decodeCbor, with floats wrapped in CborFloat (for faithful re-encoding). */
export function decodeCborKeepFloats (bytes) {
  const data = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const options = { ...DECODE_OPTIONS, tags: { [FLOAT_MARK]: (v) => new CborFloat(v) } }
  options.tokenizer = new FloatMarkingTokenizer(data, options)
  try {
    return cborgDecode(data, options)
  } catch (e) {
    throw new WireError(`malformed CBOR: ${e.message}`)
  }
}

// ---------------------------------------------------------------------------
// Framing: unsigned LEB128 varint of the body length, then the body.

export function encodeVarint (n) {
  if (!Number.isSafeInteger(n) || n < 0) throw new WireError(`varint out of range: ${n}`)
  const out = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    out.push(byte)
  } while (n > 0)
  return Uint8Array.from(out)
}

/** `{value, length}` of the varint at `offset`, or null when the bytes end inside it. */
export function decodeVarint (bytes, offset = 0, maxBytes = 9) {
  let value = 0
  let mul = 1
  for (let i = 0; i < maxBytes; i++) {
    if (offset + i >= bytes.length) return null
    const b = bytes[offset + i]
    value += (b & 0x7f) * mul
    mul *= 128
    if ((b & 0x80) === 0) return { value, length: i + 1 }
  }
  throw new WireError(`length varint longer than ${maxBytes} bytes`)
}

/** One frame around already-encoded CBOR `body`. */
export function frameBytes (body, max = MAX_REQUEST_BYTES) {
  if (body.length > max) throw new WireError(`message of ${body.length} bytes exceeds the ${max}-byte limit`)
  return concatBytes(encodeVarint(body.length), body)
}

/** The frame for a JobMessage object. */
export function encodeFrame (message, max = MAX_REQUEST_BYTES) {
  return frameBytes(encodeCbor(message), max)
}

/**
 * Splits one complete frame (all bytes the peer wrote before closing) into
 * its body; the declared length must match exactly.
 */
export function unframe (bytes, max = MAX_RESPONSE_BYTES) {
  const v = decodeVarint(bytes, 0)
  if (v == null) throw new WireError(bytes.length === 0 ? 'empty stream: no frame' : 'stream ended inside the length varint')
  if (v.value > max) throw new WireError(`declared length ${v.value} exceeds the ${max}-byte limit`)
  if (v.value === 0) throw new WireError('zero-length frame')
  const end = v.length + v.value
  if (bytes.length < end) throw new WireError(`declared ${v.value} bytes, the stream ended after ${bytes.length - v.length}`)
  if (bytes.length > end) throw new WireError(`${bytes.length - end} trailing bytes after the frame`)
  return { body: bytes.subarray(v.length, end), lengthBytes: v.length, declared: v.value }
}

/** Decodes a whole frame into a checked JobMessage. */
export function decodeFrame (bytes, max = MAX_RESPONSE_BYTES) {
  const { body } = unframe(bytes, max)
  return parseJobMessage(decodeCbor(body))
}

// ---------------------------------------------------------------------------
// Job messages

function isMap (v) {
  return v != null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof CborFloat)
}

function expectMap (v, what) {
  if (!isMap(v)) throw new WireError(`${what}: expected a map, got ${describe(v)}`)
  return v
}

function expectText (v, what) {
  if (typeof v !== 'string') throw new WireError(`${what}: expected text, got ${describe(v)}`)
  return v
}

function expectUint (v, what) {
  if (typeof v === 'bigint' && v >= 0n) return v
  if (!Number.isInteger(v) || v < 0) throw new WireError(`${what}: expected an unsigned integer, got ${describe(v)}`)
  return v
}

function expectBytes (v, what) {
  if (!(v instanceof Uint8Array)) throw new WireError(`${what}: expected a byte string, got ${describe(v)}`)
  return v
}

function describe (v) {
  if (v === null) return 'null'
  if (v instanceof Uint8Array) return `bytes(${v.length})`
  if (Array.isArray(v)) return `array(${v.length})`
  return typeof v === 'object' ? 'map' : `${typeof v} ${String(v).slice(0, 40)}`
}

/** `{version: 2, body: {[variant]: fields}}`. */
export function jobMessage (variant, fields) {
  if (!BODY_VARIANTS.includes(variant)) throw new WireError(`unknown body variant ${variant}`)
  return { version: PROTOCOL_VERSION, body: { [variant]: fields } }
}

/** The one key of an externally tagged enum value, and its content. */
export function enumVariant (value, variants, what) {
  if (typeof value === 'string') {
    // A unit variant (never used by the protocol's enums, but valid serde).
    if (!variants.includes(value)) throw new WireError(`${what}: unknown variant ${value}`)
    return { variant: value, value: null }
  }
  expectMap(value, what)
  const keys = Object.keys(value)
  if (keys.length !== 1) throw new WireError(`${what}: expected a map with exactly one key, got ${keys.length}: ${keys.join(', ')}`)
  if (!variants.includes(keys[0])) throw new WireError(`${what}: unknown variant ${keys[0]}`)
  return { variant: keys[0], value: value[keys[0]] }
}

/**
 * Checks a decoded JobMessage: version 2, one known body variant, and the
 * shape of the fields a client acts on. Returns `{version, variant, fields, message}`.
 */
export function parseJobMessage (msg) {
  expectMap(msg, 'JobMessage')
  const version = expectUint(msg.version, 'JobMessage.version')
  if (version !== PROTOCOL_VERSION) throw new WireError(`unsupported JobMessage version ${version}`)
  const { variant, value } = enumVariant(msg.body, BODY_VARIANTS, 'JobMessage.body')
  const fields = expectMap(value, `${variant}`)
  switch (variant) {
    case 'QuoteOffer':
      expectText(fields.job_id, 'QuoteOffer.job_id')
      expectText(fields.quote_id, 'QuoteOffer.quote_id')
      expectMap(fields.price, 'QuoteOffer.price')
      expectUint(fields.price.amount, 'QuoteOffer.price.amount')
      expectText(fields.price.currency, 'QuoteOffer.price.currency')
      expectUint(fields.valid_until_ms, 'QuoteOffer.valid_until_ms')
      break
    case 'Result':
      expectBytes(fields.output, 'Result.output')
      expectMap(fields.signed, 'Result.signed')
      if (fields.proof != null) expectBytes(fields.proof, 'Result.proof')
      break
    case 'Ack':
      expectText(fields.job_id, 'Ack.job_id')
      break
    case 'Error':
      if (fields.job_id != null) expectText(fields.job_id, 'Error.job_id')
      expectText(fields.code, 'Error.code')
      expectText(fields.message ?? '', 'Error.message')
      break
    case 'Receipt':
      expectBytes(fields.payload, 'Receipt.payload')
      break
  }
  return { version, variant, fields, message: msg }
}

export function quoteRequest ({ jobId, model, inputTokens, maxOutputTokens, params = [] }) {
  return jobMessage('QuoteRequest', {
    job_id: jobId,
    model,
    input_tokens: inputTokens,
    max_output_tokens: maxOutputTokens,
    params
  })
}

export function accept ({ jobId, quoteId, escrow = null }) {
  return jobMessage('Accept', { job_id: jobId, quote_id: quoteId, escrow })
}

export function run ({ jobId, model, input, params = [], stream = false, proof }) {
  const fields = { job_id: jobId, model, input, params, stream }
  if (proof != null) fields.proof = proof
  return jobMessage('Run', fields)
}

/** Input `{"Text": prompt}`. */
export function textInput (text) {
  return { Text: text }
}

/** Tokens for a QuoteRequest's estimate: whitespace-separated words. */
export function countWords (text) {
  return text.split(/\s+/).filter(Boolean).length
}

// ---------------------------------------------------------------------------
// Signed envelopes

/** `"infernet:" DOMAIN "\0" || payload`. */
export function signingInput (domain, payloadBytes) {
  return concatBytes(utf8.encode(`infernet:${domain}\0`), payloadBytes)
}

/**
 * Encodes `payload` with cborg and signs it with libp2p `privateKey` under
 * `domain`. Returns `{envelope, payloadBytes, bytes}` (bytes: CBOR of the envelope).
 */
export async function signPayload (privateKey, domain, payload) {
  const payloadBytes = encodeCbor(payload)
  return signPayloadBytes(privateKey, domain, payloadBytes)
}

/** Signs already-encoded payload bytes as they are. */
export async function signPayloadBytes (privateKey, domain, payloadBytes) {
  const signature = await privateKey.sign(signingInput(domain, payloadBytes))
  const envelope = {
    payload: payloadBytes,
    signature: new Uint8Array(signature),
    public_key: publicKeyToProtobuf(privateKey.publicKey)
  }
  return { envelope, payloadBytes, bytes: encodeCbor(envelope) }
}

/**
 * Checks a decoded Signed map: the three byte strings present, the key
 * decodes, its peer id equals the payload's signer field, and the signature
 * verifies over the RECEIVED payload bytes. Returns `{payload, signer, peerId, publicKey}`.
 */
export async function verifySigned (envelope, domain) {
  const signerField = SIGNER_FIELD[domain]
  if (signerField == null) throw new WireError(`unknown signing domain ${domain}`)
  expectMap(envelope, `Signed<${domain}>`)
  const payloadBytes = expectBytes(envelope.payload, `Signed<${domain}>.payload`)
  const signature = expectBytes(envelope.signature, `Signed<${domain}>.signature`)
  const keyBytes = expectBytes(envelope.public_key, `Signed<${domain}>.public_key`)
  let publicKey
  try {
    publicKey = publicKeyFromProtobuf(keyBytes)
  } catch (e) {
    throw new WireError(`Signed<${domain}>: malformed public key: ${e.message}`)
  }
  const payload = expectMap(decodeCbor(payloadBytes), `Signed<${domain}> payload`)
  const claimed = expectText(payload[signerField], `Signed<${domain}> payload.${signerField}`)
  let claimedId
  try {
    claimedId = peerIdFromString(claimed)
  } catch {
    throw new WireError(`claimed signer \`${claimed}\` is not a peer id`)
  }
  const actual = peerIdFromPublicKey(publicKey)
  if (!actual.equals(claimedId)) {
    throw new WireError(`public key is ${actual}'s, payload.${signerField} claims ${claimed}`)
  }
  const ok = await publicKey.verify(signingInput(domain, payloadBytes), signature)
  if (ok !== true) throw new WireError(`Signed<${domain}>: signature does not verify`)
  return { payload, signer: actual.toString(), peerId: actual, publicKey }
}

// ---------------------------------------------------------------------------
// Adverts

/** The advert payload for our own node. */
export function advertPayload ({ peerId, addrs = [], models, quote, capacity = 1, witVersion = '0.2.0', stake = null, timestampMs = Date.now() }) {
  return {
    peer_id: peerId,
    addrs,
    models,
    quote,
    capacity,
    wit_version: witVersion,
    protocol_version: PROTOCOL_VERSION,
    stake,
    timestamp_ms: timestampMs
  }
}

/**
 * Decodes and checks a gossiped advert (CBOR of Signed<Advert>): decodes,
 * key is the advert's peer_id, signature verifies, protocol_version known,
 * timestamp within ±5 minutes of `nowMs`. Returns `{advert, signer}`.
 */
export async function verifyAdvertBytes (data, nowMs = Date.now(), maxSkewMs = MAX_ADVERT_SKEW_MS) {
  const { payload, signer } = await verifySigned(decodeCbor(data), DOMAIN.advert)
  const version = expectUint(payload.protocol_version, 'Advert.protocol_version')
  if (!KNOWN_PROTOCOL_VERSIONS.includes(Number(version))) throw new WireError(`unknown protocol version ${version}`)
  const ts = Number(expectUint(payload.timestamp_ms, 'Advert.timestamp_ms'))
  const skew = Math.abs(nowMs - ts)
  if (skew > maxSkewMs) throw new WireError(`stale advert: timestamp ${skew} ms away from now`)
  if (!Array.isArray(payload.models)) throw new WireError('Advert.models: expected an array')
  return { advert: payload, signer }
}

// ---------------------------------------------------------------------------
// Results

/**
 * Checks a Result body: the signed ResultBody verifies under `result/2`, its
 * signer is `provider`, output_hash is sha256 of the output bytes as
 * received, and job_id / model_id / provider / client are what we asked
 * for. Returns `{body, output, outputHash}` (output decoded).
 */
export async function verifyResult (fields, { jobId, modelId, provider, client }) {
  const output = expectBytes(fields.output, 'Result.output')
  const { payload: body, signer } = await verifySigned(fields.signed, DOMAIN.result)
  if (provider != null && signer !== String(provider)) {
    throw new WireError(`result signed by ${signer}, expected provider ${provider}`)
  }
  const outputHash = sha256Hex(output)
  if (body.output_hash !== outputHash) {
    throw new WireError(`output_hash ${body.output_hash} != sha256 of the received output ${outputHash}`)
  }
  if (jobId != null && body.job_id !== jobId) throw new WireError(`result job_id ${body.job_id}, expected ${jobId}`)
  if (modelId != null && body.model_id !== modelId) throw new WireError(`result model_id ${body.model_id}, expected ${modelId}`)
  if (body.provider !== signer) throw new WireError(`result provider ${body.provider} is not its signer ${signer}`)
  if (client !== undefined && (body.client ?? null) !== client) {
    throw new WireError(`result client ${body.client}, expected ${client}`)
  }
  const decoded = decodeCbor(output)
  enumVariant(decoded, OUTPUT_VARIANTS, 'Output')
  return { body, output: decoded, outputHash }
}

// ---------------------------------------------------------------------------
// DHT keys

/** `0x12 0x20 || sha256("infernet/model/<id>")`, and the CIDv1 (raw) over it. */
export async function modelKey (modelId) {
  const digest = await sha256.digest(utf8.encode(MODEL_KEY_PREFIX + modelId))
  const cid = CID.createV1(0x55, digest)
  return { digest, multihash: digest.bytes, cid }
}

// ---------------------------------------------------------------------------
// JSON views

/**
 * A decoded CBOR value as JSON-friendly data: byte strings as lowercase
 * hex, BigInts as numbers when safe (else decimal strings).
 */
export function toJsonView (v) {
  if (v instanceof CborFloat) return v.value
  if (v instanceof Uint8Array) return toHex(v)
  if (typeof v === 'bigint') return (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER)) ? Number(v) : v.toString()
  if (Array.isArray(v)) return v.map(toJsonView)
  if (isMap(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJsonView(x)]))
  return v
}

/**
 * Structural comparison of a decoded CBOR value with a JSON view. Byte
 * strings match lowercase hex strings (also: arrays of byte values, as
 * serde_json writes them, or, for a byte string holding CBOR, a map of the
 * value it encodes); absent map keys match null; floats match when equal
 * as f32. Returns null when equal, or the first difference with its path.
 */
export function compareJsonView (actual, expected, path = '$') {
  if (actual instanceof CborFloat) actual = actual.value
  if (actual instanceof Uint8Array) {
    if (typeof expected === 'string') {
      return toHex(actual) === expected ? null : `${path}: bytes ${toHex(actual)} != "${expected}"`
    }
    if (Array.isArray(expected) && expected.every(x => Number.isInteger(x))) {
      return bytesEqual(actual, Uint8Array.from(expected)) ? null : `${path}: bytes ${toHex(actual)} != [${expected}]`
    }
    if (isMap(expected)) {
      // A byte string that carries CBOR (a signed payload, a Result's
      // output) may be shown as the value it encodes.
      let inner
      try {
        inner = decodeCbor(actual)
      } catch {
        return `${path}: byte string ${toHex(actual).slice(0, 64)} is not CBOR, JSON view has a map`
      }
      return compareJsonView(inner, expected, `${path}<cbor>`)
    }
    return `${path}: byte string, JSON view has ${JSON.stringify(expected)}`
  }
  if (typeof actual === 'bigint') {
    if (typeof expected === 'number' && Number(actual) === expected) return null
    if (typeof expected === 'string' && actual.toString() === expected) return null
    return `${path}: ${actual} != ${JSON.stringify(expected)}`
  }
  if (typeof actual === 'number') {
    if (typeof expected !== 'number') return `${path}: ${actual} != ${JSON.stringify(expected)}`
    if (actual === expected || Math.fround(actual) === Math.fround(expected)) return null
    return `${path}: ${actual} != ${expected}`
  }
  if (Array.isArray(actual)) {
    if (!Array.isArray(expected)) return `${path}: array, JSON view has ${JSON.stringify(expected)}`
    if (actual.length !== expected.length) return `${path}: array of ${actual.length}, JSON view has ${expected.length}`
    for (let i = 0; i < actual.length; i++) {
      const d = compareJsonView(actual[i], expected[i], `${path}[${i}]`)
      if (d) return d
    }
    return null
  }
  if (isMap(actual)) {
    if (!isMap(expected)) return `${path}: map, JSON view has ${JSON.stringify(expected)}`
    const keys = new Set([...Object.keys(actual), ...Object.keys(expected)])
    for (const k of keys) {
      const inA = Object.hasOwn(actual, k)
      const inE = Object.hasOwn(expected, k)
      if (inA && inE) {
        const d = compareJsonView(actual[k], expected[k], `${path}.${k}`)
        if (d) return d
      } else if (inA && actual[k] !== null) {
        return `${path}.${k}: present in CBOR (${JSON.stringify(toJsonView(actual[k]))}), absent from the JSON view`
      } else if (inE && expected[k] !== null) {
        return `${path}.${k}: absent from CBOR, JSON view has ${JSON.stringify(expected[k])}`
      }
    }
    return null
  }
  return actual === expected ? null : `${path}: ${JSON.stringify(actual)} != ${JSON.stringify(expected)}`
}
