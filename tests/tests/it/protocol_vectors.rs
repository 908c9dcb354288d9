//! The test vectors of `docs/PROTOCOL.md` (`docs/protocol/vectors.json`):
//! fixed keys, each signed payload type, DHT keys and job frames, as this
//! implementation produces them. This test rebuilds them and fails if the
//! file differs (the spec and the code disagree), then checks that every
//! vector decodes and verifies here. The js-libp2p implementation checks
//! the same file (`js_interop::js_checks_the_test_vectors`).
//!
//! After a deliberate protocol change: `INFERNET_WRITE_VECTORS=1 cargo test
//! -p infernet-tests --test it protocol_vectors`, review the diff, commit.

use infernet_host::p2p::codec::frame;
use infernet_host::p2p::libp2p::identity::Keypair;
use infernet_host::p2p::protocol::{
    decode, encode, signing_input, Advert, BackendRef, Encoded, ErrorCode, JobBody, JobMessage,
    Money, ReceiptBody, ResultBody, SignatureError, Signed, SignedAdvert, SignedPayload,
    SignedReceipt, SignedResult, Usage, WireInput, WireOutput, ADVERT_TOPIC, JOB_PROTOCOL,
    PROTOCOL_VERSION,
};
use infernet_host::p2p::{model_multihash, PeerId};
use serde_json::{json, Value};

const TIMESTAMP_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn vectors_path() -> std::path::PathBuf {
    infernet_tests::repo_root().join("docs/protocol/vectors.json")
}

fn provider_key() -> Keypair {
    Keypair::ed25519_from_bytes([7u8; 32]).unwrap()
}

fn client_key() -> Keypair {
    Keypair::ed25519_from_bytes([9u8; 32]).unwrap()
}

fn peer(key: &Keypair) -> String {
    key.public().to_peer_id().to_string()
}

/// CBOR as JSON: byte strings become lowercase hex strings.
fn json_view(bytes: &[u8]) -> Value {
    use cbor4ii::core::dec::Decode;
    use cbor4ii::core::utils::SliceReader;
    let value = cbor4ii::core::Value::decode(&mut SliceReader::new(bytes)).unwrap();
    fn conv(v: cbor4ii::core::Value) -> Value {
        use cbor4ii::core::Value as C;
        match v {
            C::Null => Value::Null,
            C::Bool(b) => json!(b),
            C::Integer(i) => json!(i64::try_from(i).expect("vectors use 64-bit integers")),
            C::Float(f) => json!(f),
            C::Bytes(b) => json!(hex::encode(b)),
            C::Text(t) => json!(t),
            C::Array(a) => Value::Array(a.into_iter().map(conv).collect()),
            C::Map(m) => Value::Object(
                m.into_iter()
                    .map(|(k, v)| match k {
                        C::Text(k) => (k, conv(v)),
                        other => panic!("non-text map key {other:?}"),
                    })
                    .collect(),
            ),
            other => panic!("unexpected CBOR item {other:?}"),
        }
    }
    conv(value)
}

/// RFC 4648 base32, lowercase, no padding (multibase `b`).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0);
    for &b in bytes {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buf >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn signed_vector<T: SignedPayload>(name: &str, signed: &Signed<T>) -> Value {
    let payload = signed.payload.bytes();
    json!({
        "name": name,
        "domain": T::DOMAIN,
        "payload": json_view(payload),
        "payload_hex": hex::encode(payload),
        "signing_input_hex": hex::encode(signing_input::<T>(payload)),
        "signature_hex": hex::encode(&signed.signature),
        "envelope_hex": hex::encode(encode(signed).unwrap()),
    })
}

fn frame_vector(name: &str, msg: &JobMessage) -> Value {
    let body = encode(msg).unwrap();
    json!({
        "name": name,
        "message": json_view(&body),
        "frame_hex": hex::encode(frame(&body)),
    })
}

fn output() -> Encoded<WireOutput> {
    Encoded::new(WireOutput::Text("HELLO WORLD".into())).unwrap()
}

fn advert() -> SignedAdvert {
    let key = provider_key();
    let a = Advert {
        peer_id: peer(&key),
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        models: vec!["tiny-llama".into()],
        quote: Money {
            amount: 250,
            currency: "USD".into(),
        },
        capacity: 4,
        wit_version: "0.2.0".into(),
        protocol_version: PROTOCOL_VERSION,
        stake: None,
        stake_cert: None,
        timestamp_ms: TIMESTAMP_MS,
        proofs: vec![],
        verifier: false,
        untraced: vec![],
    };
    SignedAdvert::sign(a, &key).unwrap()
}

fn result() -> SignedResult {
    let key = provider_key();
    let body = ResultBody {
        job_id: "job-1.1".into(),
        model_id: "tiny-llama".into(),
        output_hash: output().hash(),
        usage: Usage {
            input_tokens: 2,
            output_tokens: 2,
        },
        backend: BackendRef {
            name: "llama".into(),
            version: "0.2.0".into(),
            sha256: "ab".repeat(32),
        },
        provider: peer(&key),
        client: Some(peer(&client_key())),
        timestamp_ms: TIMESTAMP_MS,
        trace_root: None,
        proof_hash: None,
        binds: None,
    };
    SignedResult::sign(body, &key).unwrap()
}

fn receipt() -> SignedReceipt {
    let key = client_key();
    let body = ReceiptBody {
        job_id: "job-1.1".into(),
        output_hash: output().hash(),
        client: peer(&key),
        provider: peer(&provider_key()),
        accepted: true,
        timestamp_ms: TIMESTAMP_MS,
        escrow_status: None,
    };
    SignedReceipt::sign(body, &key).unwrap()
}

fn frames() -> Vec<(&'static str, JobMessage)> {
    vec![
        (
            "quote_request",
            JobMessage::new(JobBody::QuoteRequest {
                job_id: "job-1.1".into(),
                model: "tiny-llama".into(),
                input_tokens: 2,
                max_output_tokens: 16,
                params: vec![("max_tokens".into(), "16".into())],
                input: None,
            }),
        ),
        (
            "accept_unpaid",
            JobMessage::new(JobBody::Accept {
                job_id: "job-1.1".into(),
                quote_id: "q-1".into(),
                escrow: None,
            }),
        ),
        (
            "run",
            JobMessage::new(JobBody::Run {
                job_id: "job-1.1".into(),
                model: "tiny-llama".into(),
                input: WireInput::Text("hello world".into()),
                params: vec![("max_tokens".into(), "16".into())],
                stream: false,
                proof: None,
            }),
        ),
        (
            "result",
            JobMessage::new(JobBody::Result {
                output: output(),
                signed: result(),
                proof: None,
            }),
        ),
        ("receipt", JobMessage::new(JobBody::Receipt(receipt()))),
        (
            "error",
            JobMessage::error(
                Some("job-1.1".into()),
                ErrorCode::UnsupportedVersion,
                "protocol version 1 not supported; this node speaks 2",
            ),
        ),
    ]
}

fn build() -> Value {
    let key = provider_key();
    let client = client_key();
    let keys = |k: &Keypair, seed: u8| {
        json!({
            "ed25519_secret_hex": hex::encode([seed; 32]),
            "peer_id": peer(k),
            "public_key_protobuf_hex": hex::encode(k.public().encode_protobuf()),
        })
    };
    let dht_keys: Vec<Value> = ["tiny-llama", "echo"]
        .iter()
        .map(|model| {
            let mh = model_multihash(model);
            let mut cid = vec![0x01, 0x55];
            cid.extend_from_slice(&mh);
            json!({
                "model": model,
                "multihash_hex": hex::encode(&mh),
                "cid": format!("b{}", base32(&cid)),
            })
        })
        .collect();
    json!({
        "protocol_version": PROTOCOL_VERSION,
        "job_protocol": JOB_PROTOCOL,
        "advert_topic": ADVERT_TOPIC,
        "key": keys(&key, 7),
        "client_key": keys(&client, 9),
        "signed": [
            signed_vector("advert", &advert()),
            signed_vector("result", &result()),
            signed_vector("receipt", &receipt()),
        ],
        "result_output": {
            "output": json_view(output().bytes()),
            "output_hex": hex::encode(output().bytes()),
            "output_hash": output().hash(),
        },
        "dht_keys": dht_keys,
        "frames": frames().iter().map(|(n, m)| frame_vector(n, m)).collect::<Vec<_>>(),
    })
}

#[test]
fn the_spec_vectors_are_what_this_implementation_produces() {
    let built = serde_json::to_string_pretty(&build()).unwrap() + "\n";
    let path = vectors_path();
    if std::env::var_os("INFERNET_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &built).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate it with INFERNET_WRITE_VECTORS=1 cargo test -p infernet-tests --test it protocol_vectors",
            path.display()
        )
    });
    assert!(
        on_disk == built,
        "{} differs from what this build produces: the protocol changed. If that is \
         deliberate, regenerate it (INFERNET_WRITE_VECTORS=1 cargo test -p infernet-tests \
         --test it protocol_vectors), review the diff and update docs/PROTOCOL.md",
        path.display()
    );
}

#[test]
fn every_vector_on_disk_decodes_and_verifies_here() {
    let text = std::fs::read_to_string(vectors_path()).expect("docs/protocol/vectors.json");
    let v: Value = serde_json::from_str(&text).unwrap();
    let hexed = |v: &Value| hex::decode(v.as_str().unwrap()).unwrap();
    let provider: PeerId = v["key"]["peer_id"].as_str().unwrap().parse().unwrap();
    let client: PeerId = v["client_key"]["peer_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for s in v["signed"].as_array().unwrap() {
        let envelope = hexed(&s["envelope_hex"]);
        let signer = match s["name"].as_str().unwrap() {
            "advert" => decode::<SignedAdvert>(&envelope).unwrap().verify(),
            "result" => decode::<SignedResult>(&envelope).unwrap().verify(),
            "receipt" => decode::<SignedReceipt>(&envelope).unwrap().verify(),
            other => panic!("unknown vector {other}"),
        }
        .unwrap();
        let expected = if s["name"] == "receipt" {
            client
        } else {
            provider
        };
        assert_eq!(signer, expected, "{}", s["name"]);
        // One changed payload byte (the advert's capacity, 4 -> 5) and the
        // signature no longer verifies.
        if s["name"] == "advert" {
            let mut t: SignedAdvert = decode(&envelope).unwrap();
            let mut bytes = t.payload.bytes().to_vec();
            let at = bytes.windows(8).position(|w| w == b"capacity").unwrap() + 8;
            assert_eq!(bytes[at], 0x04);
            bytes[at] = 0x05;
            t.payload = Encoded::from_bytes(bytes).unwrap();
            assert_eq!(t.payload.capacity, 5);
            assert_eq!(t.verify(), Err(SignatureError::BadSignature));
        }
    }
    let out = &v["result_output"];
    let output = Encoded::<WireOutput>::from_bytes(hexed(&out["output_hex"])).unwrap();
    assert_eq!(output.hash(), out["output_hash"].as_str().unwrap());
    for f in v["frames"].as_array().unwrap() {
        let bytes = hexed(&f["frame_hex"]);
        let (len, body) = (bytes[0] as usize, &bytes[1..]);
        let body = if len & 0x80 == 0 {
            assert_eq!(len, body.len());
            body
        } else {
            // Two-byte varints for frames over 127 bytes.
            let len = (bytes[0] & 0x7f) as usize | (bytes[1] as usize) << 7;
            assert_eq!(len, bytes.len() - 2, "{}", f["name"]);
            &bytes[2..]
        };
        let msg: JobMessage = decode(body).unwrap();
        assert_eq!(msg.version, PROTOCOL_VERSION);
    }
}
