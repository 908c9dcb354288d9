//! Property tests (proptest) of the three parsers that read input the node
//! does not control: the `/infernet/job/2` wire codec (varint frames of
//! strict CBOR, adverts on gossipsub), the plugin manifest
//! (`infernet-plugin.toml`) and the node config. Each property feeds a
//! bounded number of generated inputs (`ProptestConfig::cases`, no
//! persistence file) through the function the host itself calls and checks
//! that it answers with a value or an error: never a panic, a hang or an
//! allocation of a size the input merely declares (an abort or a test that
//! does not finish would be the failure). Where an input is valid, the
//! properties also check the answer (round trips, bounds).
//!
//! The counts keep the whole module to a few seconds (`cargo test -p
//! infernet-tests --test it fuzz::`); a failure prints the shrunk input.
//! For a longer run, `PROPTEST_CASES=100000` overrides every count.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

/// `cases` generated inputs, nothing written to disk, and a failure's
/// shrinking bounded too (a failing run reports within seconds).
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// One edit of a sequence (bytes of a frame, characters of a TOML file).
#[derive(Debug, Clone)]
enum Edit<T> {
    /// Replace the item at the index.
    Set(usize, T),
    /// Insert an item before the index.
    Insert(usize, T),
    /// Remove the item at the index.
    Delete(usize),
    /// Cut the sequence at the index.
    Truncate(usize),
    /// Copy `len` items from one index to another (repeats a field, a header).
    Copy(usize, usize, usize),
}

/// Up to `max` edits, each drawing its items from `item`.
fn edits<T: std::fmt::Debug + Clone + 'static>(
    item: impl Strategy<Value = T> + Clone + 'static,
    max: usize,
) -> impl Strategy<Value = Vec<Edit<T>>> {
    let edit = prop_oneof![
        4 => (any::<usize>(), item.clone()).prop_map(|(i, v)| Edit::Set(i, v)),
        2 => (any::<usize>(), item).prop_map(|(i, v)| Edit::Insert(i, v)),
        2 => any::<usize>().prop_map(Edit::Delete),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), any::<usize>(), 1usize..16).prop_map(|(a, b, n)| Edit::Copy(a, b, n)),
    ];
    prop::collection::vec(edit, 1..=max)
}

/// `v` with `edits` applied (indices taken modulo the current length).
fn apply<T: Clone>(mut v: Vec<T>, edits: &[Edit<T>]) -> Vec<T> {
    for e in edits {
        let len = v.len();
        match e.clone() {
            Edit::Set(i, x) if len > 0 => v[i % len] = x,
            Edit::Insert(i, x) => v.insert(i % (len + 1), x),
            Edit::Delete(i) if len > 0 => {
                v.remove(i % len);
            }
            Edit::Truncate(i) => v.truncate(i % (len + 1)),
            Edit::Copy(from, to, n) if len > 0 => {
                let from = from % len;
                let part: Vec<T> = v[from..(from + n).min(len)].to_vec();
                let to = to % (len + 1);
                v.splice(to..to, part);
            }
            _ => {}
        }
    }
    v
}

/// Text of up to `max` characters of any kind (control, astral, ...).
fn any_text(max: usize) -> impl Strategy<Value = String> + Clone {
    prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

/// Text of up to `max` pieces, mostly `fragments` (TOML punctuation,
/// headers, keys, values), the rest any character.
fn toml_ish(fragments: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(fragments).prop_map(String::from),
            1 => any::<char>().prop_map(String::from),
        ],
        0..max,
    )
    .prop_map(|parts| parts.concat())
}

/// A TOML basic string holding `s` exactly.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The job-protocol codec: [`decode`], [`Encoded`], the varint frame reader
/// and the [`JobCodec`] a swarm runs on every inbound stream.
mod wire {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;
    use infernet_host::p2p::advert::verify_advert_bytes;
    use infernet_host::p2p::codec::{frame, read_frame, varint, Frame, JobCodec};
    use infernet_host::p2p::libp2p::identity::Keypair;
    use infernet_host::p2p::libp2p::request_response::Codec;
    use infernet_host::p2p::libp2p::StreamProtocol;
    use infernet_host::p2p::protocol::{
        decode, encode, now_ms, Advert, BackendRef, Encoded, ErrorCode, EscrowRef, JobBody,
        JobMessage, Money, PayTo, ProofAttachment, ReceiptBody, ResultBody, SignedAdvert,
        SignedReceipt, SignedResult, Tensor, Usage, WireError, WireInput, WireOutput, JOB_PROTOCOL,
        MAX_REQUEST_BYTES, PROTOCOL_VERSION,
    };
    use std::io;
    use std::sync::LazyLock;
    use std::time::{Duration, Instant};

    /// Signs the generated results and receipts (so they verify after a
    /// round trip).
    static KEY: LazyLock<Keypair> =
        LazyLock::new(|| Keypair::ed25519_from_bytes([7u8; 32]).unwrap());

    fn peer() -> String {
        KEY.public().to_peer_id().to_string()
    }

    fn proto() -> StreamProtocol {
        StreamProtocol::new(JOB_PROTOCOL)
    }

    /// How long one decode of a few KiB may take, however hostile: far above
    /// what it needs (microseconds), far below what materialising a declared
    /// 2^32-byte item would.
    const DECODE_BOUND: Duration = Duration::from_secs(2);

    /// `JobCodec::read_request` over an in-memory stream.
    fn read_request(stream: Vec<u8>) -> io::Result<Frame> {
        block_on(JobCodec::default().read_request(&proto(), &mut Cursor::new(stream)))
    }

    /// What the host does with a message it decoded: validate it, check
    /// the signatures it carries, hash and re-encode it. None may panic;
    /// re-encoding what was decoded must decode to the same encoding.
    fn use_message(m: &JobMessage) {
        let _ = m.validate();
        let _ = m.job_id();
        match &m.body {
            JobBody::Result {
                output,
                signed,
                proof,
            } => {
                let _ = signed.verify_output(output);
                let _ = output.hash();
                let _ = proof.as_ref().map(|p| p.hash());
            }
            JobBody::Receipt(r) => {
                let _ = r.verify();
            }
            _ => {}
        }
        let bytes = encode(m).expect("a decoded message re-encodes");
        let again: JobMessage = decode(&bytes).expect("a re-encoded message decodes");
        assert_eq!(
            encode(&again).unwrap(),
            bytes,
            "re-encoding is a fixed point"
        );
    }

    /// Every decoder the host runs on peer bytes, on `bytes`: as a job
    /// message, an advert (gossipsub), a result output, as the body of a
    /// request frame and as a raw request stream. The codec answers every
    /// in-memory stream with a frame (a message or `Invalid`), never an
    /// I/O error that would drop the stream without a reply.
    fn exercise(bytes: &[u8]) {
        if let Ok(m) = decode::<JobMessage>(bytes) {
            use_message(&m);
        }
        if let Ok(a) = decode::<SignedAdvert>(bytes) {
            let _ = a.verify();
        }
        let _ = verify_advert_bytes(bytes, now_ms(), 60_000);
        if let Ok(o) = Encoded::<WireOutput>::from_bytes(bytes.to_vec()) {
            let _ = o.hash();
        }
        for stream in [frame(bytes), bytes.to_vec()] {
            match read_request(stream.clone()) {
                Ok(Frame::Message(m)) => use_message(&m),
                Ok(Frame::Invalid(_)) => {}
                Err(e) => panic!("in-memory request stream failed: {e}"),
            }
            let _ = block_on(JobCodec::default().read_response(&proto(), &mut Cursor::new(stream)));
        }
    }

    // -- generated messages ------------------------------------------------

    fn short() -> impl Strategy<Value = String> + Clone {
        any_text(12)
    }

    fn params() -> impl Strategy<Value = Vec<(String, String)>> + Clone {
        prop::collection::vec((short(), any_text(24)), 0..4)
    }

    fn money() -> impl Strategy<Value = Money> + Clone {
        (any::<u64>(), short()).prop_map(|(amount, currency)| Money { amount, currency })
    }

    /// Finite floats: a NaN never equals itself, so round trips compare
    /// finite values (NaNs from the wire are in `exercise`).
    fn floats(max: usize) -> impl Strategy<Value = Vec<f32>> + Clone {
        prop::collection::vec(-1.0e6f32..1.0e6f32, 0..=max)
    }

    fn tensor() -> impl Strategy<Value = Tensor> + Clone {
        (prop::collection::vec(any::<u32>(), 0..3), floats(8))
            .prop_map(|(shape, data)| Tensor { shape, data })
    }

    fn input() -> impl Strategy<Value = WireInput> + Clone {
        prop_oneof![
            any_text(32).prop_map(WireInput::Text),
            prop::collection::vec(short(), 0..4).prop_map(WireInput::Texts),
            prop::collection::vec(any::<u32>(), 0..8).prop_map(WireInput::Tokens),
            tensor().prop_map(WireInput::Tensor),
            prop::collection::vec(any::<u8>(), 0..32).prop_map(WireInput::Bytes),
        ]
    }

    fn output() -> impl Strategy<Value = WireOutput> + Clone {
        prop_oneof![
            any_text(32).prop_map(WireOutput::Text),
            prop::collection::vec(floats(4), 0..3).prop_map(WireOutput::Embeddings),
            tensor().prop_map(WireOutput::Logits),
            prop::collection::vec(any::<u32>(), 0..8).prop_map(WireOutput::Classes),
            prop::collection::vec(any::<u8>(), 0..32).prop_map(WireOutput::Bytes),
        ]
    }

    fn escrow() -> impl Strategy<Value = EscrowRef> + Clone {
        (short(), short(), money(), short(), short(), any::<u64>()).prop_map(
            |(adapter, escrow_id, amount, depositor, beneficiary, expires_at_ms)| EscrowRef {
                adapter,
                escrow_id,
                amount,
                depositor,
                beneficiary,
                expires_at_ms,
            },
        )
    }

    fn pay_to() -> impl Strategy<Value = PayTo> + Clone {
        (short(), short(), prop::collection::vec(short(), 0..3)).prop_map(
            |(adapter, beneficiary, currencies)| PayTo {
                adapter,
                beneficiary,
                currencies,
                prepay: false,
            },
        )
    }

    fn error_code() -> impl Strategy<Value = ErrorCode> + Clone {
        prop::sample::select(vec![
            ErrorCode::UnsupportedVersion,
            ErrorCode::UnknownJob,
            ErrorCode::InvalidRequest,
            ErrorCode::Busy,
            ErrorCode::Cancelled,
            ErrorCode::Timeout,
            ErrorCode::BadSignature,
        ])
    }

    /// A `Result` whose signed body names the output's hash, signed by
    /// [`KEY`], with a proof attachment or none.
    fn result() -> impl Strategy<Value = JobBody> + Clone {
        let proof = prop::option::of(
            (
                short(),
                prop::collection::vec(any::<u8>(), 0..16),
                prop::collection::vec(any::<i64>(), 0..4),
            )
                .prop_map(|(system, envelope, logits)| ProofAttachment {
                    system,
                    envelope: envelope.clone(),
                    vk: envelope,
                    logits,
                }),
        );
        (
            output(),
            short(),
            short(),
            any::<(u32, u32)>(),
            prop::option::of(short()),
            any::<u64>(),
            proof,
        )
            .prop_map(
                |(output, job_id, model_id, (i, o), client, timestamp_ms, proof)| {
                    let output = Encoded::new(output).unwrap();
                    let proof = proof.map(|p| Box::new(Encoded::new(p).unwrap()));
                    let body = ResultBody {
                        job_id,
                        model_id,
                        output_hash: output.hash(),
                        usage: Usage {
                            input_tokens: i,
                            output_tokens: o,
                        },
                        backend: BackendRef {
                            name: "echo".into(),
                            version: "1.0.0".into(),
                            sha256: "00".into(),
                        },
                        provider: peer(),
                        client,
                        timestamp_ms,
                        trace_root: None,
                        proof_hash: proof.as_ref().map(|p| p.hash()),
                        binds: None,
                    };
                    JobBody::Result {
                        output,
                        signed: SignedResult::sign(body, &KEY).unwrap(),
                        proof,
                    }
                },
            )
    }

    fn receipt() -> impl Strategy<Value = JobBody> + Clone {
        (
            short(),
            short(),
            any::<bool>(),
            any::<u64>(),
            prop::option::of(short()),
        )
            .prop_map(
                |(job_id, output_hash, accepted, timestamp_ms, escrow_status)| {
                    let body = ReceiptBody {
                        job_id,
                        output_hash,
                        client: peer(),
                        provider: "p".into(),
                        accepted,
                        timestamp_ms,
                        escrow_status,
                    };
                    JobBody::Receipt(SignedReceipt::sign(body, &KEY).unwrap())
                },
            )
    }

    fn body() -> impl Strategy<Value = JobBody> + Clone {
        prop_oneof![
            (
                short(),
                short(),
                any::<u32>(),
                any::<u32>(),
                params(),
                prop::option::of(input())
            )
                .prop_map(
                    |(job_id, model, input_tokens, max_output_tokens, params, input)| {
                        JobBody::QuoteRequest {
                            job_id,
                            model,
                            input_tokens,
                            max_output_tokens,
                            params,
                            input,
                        }
                    }
                ),
            (
                short(),
                short(),
                money(),
                prop::collection::vec((short(), any::<u64>()), 0..3),
                any::<u64>(),
                prop::collection::vec(pay_to(), 0..2),
            )
                .prop_map(
                    |(job_id, quote_id, price, breakdown, valid_until_ms, pay_to)| {
                        JobBody::QuoteOffer {
                            job_id,
                            quote_id,
                            price,
                            breakdown,
                            valid_until_ms,
                            pay_to,
                        }
                    }
                ),
            (short(), short(), prop::option::of(escrow())).prop_map(
                |(job_id, quote_id, escrow)| JobBody::Accept {
                    job_id,
                    quote_id,
                    escrow
                }
            ),
            (
                short(),
                short(),
                input(),
                params(),
                any::<bool>(),
                prop::option::of(short())
            )
                .prop_map(|(job_id, model, input, params, stream, proof)| {
                    JobBody::Run {
                        job_id,
                        model,
                        input,
                        params,
                        stream,
                        proof,
                    }
                }),
            (short(), any::<u64>())
                .prop_map(|(job_id, after_seq)| JobBody::Poll { job_id, after_seq }),
            (
                short(),
                any::<u64>(),
                prop::collection::vec(short(), 0..4),
                any::<bool>()
            )
                .prop_map(|(job_id, seq, chunks, done)| JobBody::Progress {
                    job_id,
                    seq,
                    chunks,
                    done,
                }),
            result(),
            receipt(),
            short().prop_map(|job_id| JobBody::Ack { job_id }),
            (short(), any_text(32)).prop_map(|(job_id, reason)| JobBody::Cancel { job_id, reason }),
            (prop::option::of(short()), error_code(), any_text(32)).prop_map(
                |(job_id, code, message)| JobBody::Error(WireError {
                    job_id,
                    code,
                    message
                })
            ),
        ]
    }

    /// Any job message, at this build's version or another.
    fn message() -> impl Strategy<Value = JobMessage> + Clone {
        (
            prop_oneof![3 => Just(PROTOCOL_VERSION), 1 => any::<u16>()],
            body(),
        )
            .prop_map(|(version, body)| JobMessage { version, body })
    }

    // -- CBOR built by hand ------------------------------------------------

    /// A CBOR head: major type `major`, argument `n`, shortest form.
    fn head(major: u8, n: u64) -> Vec<u8> {
        let m = major << 5;
        match n {
            0..=23 => vec![m | n as u8],
            24..=0xff => vec![m | 24, n as u8],
            0x100..=0xffff => [vec![m | 25], (n as u16).to_be_bytes().to_vec()].concat(),
            0x1_0000..=0xffff_ffff => [vec![m | 26], (n as u32).to_be_bytes().to_vec()].concat(),
            _ => [vec![m | 27], n.to_be_bytes().to_vec()].concat(),
        }
    }

    fn text(s: &str) -> Vec<u8> {
        [head(3, s.len() as u64), s.as_bytes().to_vec()].concat()
    }

    fn map(n: u64) -> Vec<u8> {
        head(5, n)
    }

    /// Field, variant and key names of the wire types, so generated CBOR
    /// gets past the first map key.
    const NAMES: &[&str] = &[
        "version",
        "body",
        "QuoteRequest",
        "QuoteOffer",
        "Accept",
        "Run",
        "Poll",
        "Progress",
        "Result",
        "Receipt",
        "Ack",
        "Cancel",
        "Error",
        "job_id",
        "model",
        "input_tokens",
        "max_output_tokens",
        "params",
        "input",
        "quote_id",
        "price",
        "breakdown",
        "valid_until_ms",
        "pay_to",
        "escrow",
        "stream",
        "proof",
        "after_seq",
        "seq",
        "chunks",
        "done",
        "output",
        "signed",
        "reason",
        "code",
        "message",
        "Text",
        "Texts",
        "Tokens",
        "Tensor",
        "Bytes",
        "Embeddings",
        "Logits",
        "Classes",
        "shape",
        "data",
        "amount",
        "currency",
        "adapter",
        "escrow_id",
        "depositor",
        "beneficiary",
        "expires_at_ms",
        "currencies",
        "payload",
        "signature",
        "public_key",
        "peer_id",
        "addrs",
        "models",
        "quote",
        "capacity",
        "wit_version",
        "protocol_version",
        "stake",
        "timestamp_ms",
        "proofs",
        "model_id",
        "output_hash",
        "usage",
        "backend",
        "provider",
        "client",
        "trace_root",
        "proof_hash",
        "system",
        "envelope",
        "vk",
        "logits",
        "accepted",
        "escrow_status",
        "InvalidRequest",
        "Busy",
    ];

    /// One piece of CBOR-like input: a known name, a head of any major type
    /// and argument (huge lengths, tags, floats, breaks included), a small
    /// map or array header, or raw bytes.
    fn token() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::sample::select(NAMES).prop_map(text),
            2 => (0u8..8, 0u8..32).prop_map(|(m, info)| vec![m << 5 | info]),
            2 => (0u8..8, any::<u64>()).prop_map(|(m, n)| head(m, n)),
            3 => (4u8..6, 0u64..5).prop_map(|(m, n)| head(m, n)),
            1 => prop::collection::vec(any::<u8>(), 0..4),
        ]
    }

    /// Generated CBOR, sometimes behind the start of a valid job message
    /// or advert so the decoder gets deep into the types.
    fn cbor_soup() -> impl Strategy<Value = Vec<u8>> {
        let prefix = prop::sample::select(vec![
            vec![],
            [
                map(2),
                text("version"),
                vec![PROTOCOL_VERSION as u8],
                text("body"),
            ]
            .concat(),
            [
                map(2),
                text("version"),
                vec![PROTOCOL_VERSION as u8],
                text("body"),
                map(1),
                text("Run"),
            ]
            .concat(),
            [map(3), text("payload")].concat(),
        ]);
        (prefix, prop::collection::vec(token(), 0..48)).prop_map(|(p, t)| [p, t.concat()].concat())
    }

    /// Where a hostile item goes: the start of a message, advert or output
    /// up to the place its value is read (each a different visitor: text,
    /// bytes, floats, nested floats, params pairs, an ignored unknown key,
    /// an exact-bytes `Encoded`).
    fn contexts() -> Vec<Vec<u8>> {
        let msg = |v: &[Vec<u8>]| -> Vec<u8> {
            let mut out = [
                map(2),
                text("version"),
                vec![PROTOCOL_VERSION as u8],
                text("body"),
            ]
            .concat();
            out.extend(v.concat());
            out
        };
        vec![
            vec![],
            msg(&[map(1), text("Run"), map(1), text("job_id")]),
            msg(&[map(1), text("Run"), map(1), text("params")]),
            msg(&[map(1), text("Run"), map(1), text("params"), head(4, 1)]),
            msg(&[
                map(1),
                text("Run"),
                map(1),
                text("input"),
                map(1),
                text("Bytes"),
            ]),
            msg(&[
                map(1),
                text("Run"),
                map(1),
                text("input"),
                map(1),
                text("Tensor"),
                map(2),
                text("shape"),
                head(4, 0),
                text("data"),
            ]),
            msg(&[map(1), text("Result"), map(1), text("output")]),
            msg(&[map(1), text("Progress"), map(1), text("chunks")]),
            [
                map(3),
                text("version"),
                vec![PROTOCOL_VERSION as u8],
                text("zzz"),
            ]
            .concat(),
            [map(3), text("payload")].concat(),
            [map(3), text("signature")].concat(),
            [map(1), text("Embeddings")].concat(),
            [map(1), text("Embeddings"), head(4, 1)].concat(),
            [map(1), text("Text")].concat(),
        ]
    }

    /// Decodes `bytes` with every wire decoder, each within [`DECODE_BOUND`];
    /// returns whether any accepted them.
    fn decode_all_bounded(bytes: &[u8]) -> bool {
        let start = Instant::now();
        let mut accepted = decode::<JobMessage>(bytes).is_ok();
        accepted |= decode::<SignedAdvert>(bytes).is_ok();
        accepted |= Encoded::<WireOutput>::from_bytes(bytes.to_vec()).is_ok();
        accepted |= matches!(read_request(frame(bytes)), Ok(Frame::Message(_)));
        let took = start.elapsed();
        assert!(
            took < DECODE_BOUND,
            "decoding {} bytes took {took:?}",
            bytes.len()
        );
        accepted
    }

    proptest! {
        #![proptest_config(cases(512))]

        /// Any bytes (up to 4 KiB) given to any wire decoder, as a frame
        /// body or a raw stream, get a value or an error: no panic, and the
        /// request codec always produces a frame to answer.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..=4096)) {
            exercise(&bytes);
        }
    }

    proptest! {
        #![proptest_config(cases(2048))]

        /// Generated CBOR (known names, heads of every major type with any
        /// argument, small maps) gets deep into the decoders without a panic.
        #[test]
        fn generated_cbor_never_panics(bytes in cbor_soup()) {
            exercise(&bytes);
        }
    }

    proptest! {
        #![proptest_config(cases(1024))]

        /// Edits of a valid message's encoding and of its frame (a byte
        /// set, inserted, removed, a cut, a repeated run) never panic any
        /// decoder.
        #[test]
        fn edited_messages_never_panic(
            msg in message(),
            body_edits in edits(any::<u8>(), 3),
            frame_edits in edits(any::<u8>(), 3),
        ) {
            let body = encode(&msg).unwrap();
            exercise(&apply(body.clone(), &body_edits));
            exercise(&apply(frame(&body), &frame_edits));
        }
    }

    proptest! {
        #![proptest_config(cases(1024))]

        /// Encode → frame → `read_frame` → decode gives back the message;
        /// the `JobCodec` writes exactly that frame and reads it back as
        /// request and response; signatures still verify.
        #[test]
        fn messages_round_trip(msg in message()) {
            let body = encode(&msg).unwrap();
            let framed = frame(&body);
            let mut cur = Cursor::new(framed.clone());
            let read = block_on(read_frame(&mut cur, MAX_REQUEST_BYTES)).unwrap();
            prop_assert_eq!(&read, &body);
            prop_assert_eq!(decode::<JobMessage>(&read).unwrap(), msg.clone());

            let mut codec = JobCodec::default();
            let mut written = Vec::new();
            block_on(codec.write_request(&proto(), &mut written, Frame::Message(Box::new(msg.clone())))).unwrap();
            prop_assert_eq!(&written, &framed);
            let back = block_on(codec.read_request(&proto(), &mut Cursor::new(written))).unwrap();
            prop_assert_eq!(back, Frame::Message(Box::new(msg.clone())));
            let mut written = Vec::new();
            block_on(codec.write_response(&proto(), &mut written, msg.clone())).unwrap();
            let back = block_on(codec.read_response(&proto(), &mut Cursor::new(written))).unwrap();
            prop_assert_eq!(&back, &msg);

            match &back.body {
                JobBody::Result { output, signed, .. } => {
                    prop_assert_eq!(signed.verify_output(output).unwrap(), KEY.public().to_peer_id());
                }
                JobBody::Receipt(r) => {
                    prop_assert_eq!(r.verify().unwrap(), KEY.public().to_peer_id());
                }
                _ => {}
            }
            use_message(&back);
        }
    }

    proptest! {
        #![proptest_config(cases(512))]

        /// A valid signed advert verifies; any edit of its bytes is refused
        /// or verifies, never panics (`verify_advert_bytes` is what the
        /// gossipsub handler runs on every advert).
        #[test]
        fn edited_adverts_never_panic(
            models in prop::collection::vec(short(), 0..3),
            capacity in any::<u32>(),
            edits in edits(any::<u8>(), 6),
        ) {
            let advert = Advert {
                peer_id: peer(),
                addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
                models,
                quote: Money { amount: 5, currency: "USD".into() },
                capacity,
                wit_version: "0.2.0".into(),
                protocol_version: PROTOCOL_VERSION,
                stake: None,
                stake_cert: None,
                timestamp_ms: now_ms(),
                proofs: vec![],
                verifier: false,
                untraced: vec![],
            };
            let bytes = encode(&SignedAdvert::sign(advert, &KEY).unwrap()).unwrap();
            let (_, signer) = verify_advert_bytes(&bytes, now_ms(), 60_000).unwrap();
            prop_assert_eq!(signer, KEY.public().to_peer_id());
            exercise(&apply(bytes, &edits));
        }
    }

    proptest! {
        #![proptest_config(cases(1024))]

        /// A byte string, text string, array or map whose head claims 2^24
        /// to 2^64 - 1 items, inside a buffer of at most a few hundred bytes
        /// and at every kind of place a decoder reads one, is refused, and
        /// quickly: nothing is allocated or walked to the declared size.
        #[test]
        fn huge_declared_lengths_fail_fast(
            ctx in prop::sample::select(contexts()),
            major in prop::sample::select(vec![2u8, 3, 4, 5]),
            len in prop_oneof![(1u64 << 24)..(1u64 << 32), (1u64 << 32)..=u64::MAX],
            tail in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let bytes = [ctx, head(major, len), tail].concat();
            prop_assert!(!decode_all_bounded(&bytes), "a {len}-item claim was accepted");
        }
    }

    proptest! {
        #![proptest_config(cases(512))]

        /// Indefinite-length items that never end and nesting tens of
        /// thousands deep (arrays, maps, tags) fail within the bound, with
        /// no stack overflow: the decoder's depth limit holds everywhere,
        /// unknown keys included.
        #[test]
        fn unterminated_and_deep_items_fail_fast(
            ctx in prop::sample::select(contexts()),
            opener in prop::sample::select(vec![vec![0x5fu8], vec![0x7f], vec![0x9f], vec![0xbf], vec![0x81], vec![0xa1, 0x00], vec![0xc6], vec![0x9f, 0x9f]]),
            depth in 1usize..20_000,
            tail in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            let bytes = [ctx, opener.repeat(depth), tail].concat();
            decode_all_bounded(&bytes);
        }
    }

    proptest! {
        #![proptest_config(cases(2048))]

        /// `read_frame` on any stream and any cap returns a non-empty body
        /// of at most `max` bytes, exactly the declared bytes after the
        /// varint (nothing past them read), or an `InvalidData` error.
        #[test]
        fn read_frame_stays_within_max(
            stream in prop::collection::vec(any::<u8>(), 0..=300),
            max in 0usize..=300,
        ) {
            let mut cur = Cursor::new(stream.clone());
            match block_on(read_frame(&mut cur, max)) {
                Ok(body) => {
                    prop_assert!(!body.is_empty() && body.len() <= max);
                    let head = varint_len(&stream);
                    prop_assert_eq!(&body[..], &stream[head..head + body.len()]);
                    prop_assert_eq!(cur.position() as usize, head + body.len());
                }
                Err(e) => prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            }
        }
    }

    proptest! {
        #![proptest_config(cases(1024))]

        /// A declared length over `max` (up to the 4-byte varint limit,
        /// 256 MiB) is refused after reading the varint and before reading
        /// (or allocating for) any of the body; a 5-byte varint is refused.
        #[test]
        fn oversized_frames_are_refused_before_the_body(
            max in 0usize..=MAX_REQUEST_BYTES,
            over in 1usize..(1 << 28),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let len = max.saturating_add(over).min((1 << 28) - 1);
            prop_assume!(len > max);
            let head = varint(len);
            prop_assert!(head.len() <= 4);
            let mut cur = Cursor::new([head.clone(), body.clone()].concat());
            let err = block_on(read_frame(&mut cur, max)).unwrap_err();
            prop_assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            prop_assert!(err.to_string().contains("exceeds"), "{}", err);
            prop_assert_eq!(cur.position() as usize, head.len());

            let mut long = varint(len + (1 << 28));
            long.extend_from_slice(&body);
            let err = block_on(read_frame(&mut Cursor::new(long), usize::MAX)).unwrap_err();
            prop_assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }

    proptest! {
        #![proptest_config(cases(1024))]

        /// `frame` then `read_frame` gives the body back, leaves what
        /// follows unread, and a stream cut short is an error.
        #[test]
        fn frames_round_trip(
            body in prop::collection::vec(any::<u8>(), 1..2048),
            slack in 0usize..64,
            after in prop::collection::vec(any::<u8>(), 0..16),
            cut in any::<usize>(),
        ) {
            let framed = frame(&body);
            let mut cur = Cursor::new([framed.clone(), after].concat());
            prop_assert_eq!(block_on(read_frame(&mut cur, body.len() + slack)).unwrap(), body.clone());
            prop_assert_eq!(cur.position() as usize, framed.len());
            let short = framed[..cut % framed.len()].to_vec();
            prop_assert!(block_on(read_frame(&mut Cursor::new(short), body.len())).is_err());
        }
    }

    /// Length of the varint at the start of `stream` (only called when
    /// `read_frame` accepted one).
    fn varint_len(stream: &[u8]) -> usize {
        stream.iter().position(|b| b & 0x80 == 0).unwrap() + 1
    }
}

/// The plugin manifest: `Package::open` (what `infernet plugin` and node
/// start run on a package directory) and the signature check behind it.
mod manifest {
    use super::*;
    use ed25519_dalek::SigningKey;
    use infernet_host::runtime::manifest::{sha256_hex, MANIFEST_FILE};
    use infernet_host::runtime::{Manifest, Package, PluginKind};
    use std::sync::LazyLock;

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn publisher() -> String {
        hex::encode(key().verifying_key().to_bytes())
    }

    /// A signed manifest for [`WASM`], as TOML.
    static VALID: LazyLock<String> = LazyLock::new(|| {
        let mut m = Manifest {
            name: "echo".into(),
            version: "1.2.3".parse().unwrap(),
            kind: PluginKind::Backend,
            wit: "0.2.0".parse().unwrap(),
            wasm: "p.wasm".into(),
            sha256: sha256_hex(WASM),
            signature: None,
        };
        m.sign(&key());
        let sig = m.signature.as_ref().unwrap();
        format!(
            "name = {}\nversion = \"{}\"\nkind = \"{}\"\nwit = \"{}\"\nwasm = {}\nsha256 = {}\n\n[signature]\npublisher = {}\nsignature = {}\n",
            toml_str(&m.name),
            m.version,
            m.kind,
            m.wit,
            toml_str(&m.wasm),
            toml_str(&m.sha256),
            toml_str(&sig.publisher),
            toml_str(&sig.signature),
        )
    });

    /// Writes `text` as a package's manifest next to [`WASM`] (in a fresh
    /// directory: cases run on parallel threads), opens it as the host does
    /// (by directory and by manifest path, alike) and uses what it opened,
    /// which must be that wasm, from that directory. Whether it opened.
    fn open(text: &str, pinned: Option<&str>) -> bool {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), text).unwrap();
        std::fs::write(dir.path().join("p.wasm"), WASM).unwrap();
        let by_dir = Package::open(dir.path(), pinned);
        let by_file = Package::open(&dir.path().join(MANIFEST_FILE), pinned);
        assert_eq!(
            by_dir.is_ok(),
            by_file.is_ok(),
            "a directory and its manifest path differ"
        );
        match by_dir {
            Ok(p) => {
                assert_eq!(
                    p.wasm, WASM,
                    "an opened package's wasm hashes as its manifest says"
                );
                assert!(
                    p.wasm_path.parent() == Some(dir.path()) && !p.manifest.wasm.contains(".."),
                    "an opened package's wasm is a file in its directory: {:?}",
                    p.manifest.wasm
                );
                let _ = p.manifest.signing_message();
                let _ = p.manifest.verify_signature(None);
                let _ = p.manifest.kind.export_interface();
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    }

    fn pinned() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some(publisher())),
            Just(Some(publisher().to_uppercase())),
            any_text(70).prop_map(Some),
        ]
    }

    const FRAGMENTS: &[&str] = &[
        "name",
        "version",
        "kind",
        "wit",
        "wasm",
        "sha256",
        "[signature]",
        "publisher",
        "signature",
        " = ",
        "=",
        "\"",
        "'",
        "\"\"\"",
        "'''",
        "\n",
        "[",
        "]",
        "{",
        "}",
        ",",
        ".",
        "#",
        "\\",
        "\\u",
        "1.2.3",
        "0.2.0",
        "-alpha.1",
        "+build",
        "backend",
        "pricing",
        "payment",
        "p.wasm",
        "..",
        "/",
        "0",
        "9",
        "ff",
        "true",
        "1979-05-27T07:32:00Z",
        "inf",
        "nan",
        " ",
        "\t",
        "\r\n",
    ];

    /// A value for a field, as a TOML literal: mostly `valid` (so most
    /// manifests get past all but a field or two), else an edge case from
    /// `pool`, any text, or not a string at all.
    fn value(valid: &'static str, pool: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop_oneof![
            16 => Just(toml_str(valid)),
            1 => prop::sample::select(pool).prop_map(toml_str),
            1 => any_text(40).prop_map(|s| toml_str(&s)),
            1 => prop::sample::select(vec!["1", "-1", "1.5", "true", "[]", "{}", "\"\"", "1979-05-27", "9223372036854775807"])
                .prop_map(String::from),
        ]
    }

    const VERSIONS: &[&str] = &[
        "1.2.3",
        "0.2.0",
        "0.1.0",
        "1.0.0-alpha.1+build.5",
        "01.2.3",
        "1.2",
        "",
        "1.2.3-",
        "18446744073709551615.18446744073709551615.18446744073709551615",
        "18446744073709551616.0.0",
        "1.2.3+",
        "v1.2.3",
        " 1.2.3",
    ];
    const KINDS: &[&str] = &["backend", "pricing", "payment", "Backend", "", "verifier"];
    const WASMS: &[&str] = &[
        "p.wasm",
        "../p.wasm",
        "/etc/passwd",
        "",
        ".",
        "sub/p.wasm",
        "p.wasm\0",
        "..",
        "./p.wasm",
        "C:\\p.wasm",
        "infernet-plugin.toml",
        "p.wasm/",
        "\u{202e}p.wasm",
    ];
    const HEX: &[&str] = &["", "zz", "0", "00", "abc", "DEADBEEF"];

    fn sha() -> impl Strategy<Value = String> {
        let valid = sha256_hex(WASM);
        prop_oneof![
            14 => Just(toml_str(&valid)),
            2 => Just(toml_str(&valid.to_uppercase())),
            1 => prop::sample::select(HEX).prop_map(toml_str),
        ]
    }

    fn signature() -> impl Strategy<Value = Option<(String, String)>> {
        let valid = VALID
            .lines()
            .find_map(|l| l.strip_prefix("signature = "))
            .unwrap()
            .to_string();
        let sig = prop_oneof![
            12 => Just(valid.clone()),
            1 => Just(format!("{}\"", &valid[..valid.len() - 3])),
            1 => Just(toml_str(&"0".repeat(128))),
            1 => prop::sample::select(HEX).prop_map(toml_str),
        ];
        let publ = prop_oneof![
            12 => Just(toml_str(&publisher())),
            1 => Just(toml_str(&"f".repeat(64))),
            1 => Just(toml_str(&"0".repeat(64))),
            1 => prop::sample::select(HEX).prop_map(toml_str),
        ];
        prop::option::weighted(0.8, (publ, sig))
    }

    /// A manifest built field by field from [`value`]s, each field present
    /// or missing, signed or not (well or badly), with or without an
    /// unknown key.
    fn structured() -> impl Strategy<Value = String> {
        let field = |name: &'static str, v: BoxedStrategy<String>| {
            prop::option::weighted(0.97, v)
                .prop_map(move |v| v.map(|v| format!("{name} = {v}\n")).unwrap_or_default())
        };
        (
            field("name", value("echo", &["", "a b", "ééé"]).boxed()),
            field("version", value("1.2.3", VERSIONS).boxed()),
            field("kind", value("backend", KINDS).boxed()),
            field("wit", value("0.2.0", VERSIONS).boxed()),
            field("wasm", value("p.wasm", WASMS).boxed()),
            field("sha256", sha().boxed()),
            prop::option::weighted(0.1, Just("extra = 1\n".to_string())),
            signature(),
        )
            .prop_map(|(n, v, k, w, wasm, sha, extra, sig)| {
                let mut t = [n, v, k, w, wasm, sha, extra.unwrap_or_default()].concat();
                if let Some((p, s)) = sig {
                    t.push_str(&format!("[signature]\npublisher = {p}\nsignature = {s}\n"));
                }
                t
            })
    }

    /// The valid manifest the edits start from opens, pinned or by the
    /// wrong publisher not: the edits start from a manifest that gets past
    /// every check.
    #[test]
    fn the_valid_manifest_opens() {
        assert!(open(&VALID, None), "{}", *VALID);
        assert!(open(&VALID, Some(&publisher())));
        assert!(!open(&VALID, Some(&"0".repeat(64))));
    }

    proptest! {
        #![proptest_config(cases(256))]

        /// Any text, mostly TOML-shaped, as a manifest: opened or refused
        /// with an error, never a panic.
        #[test]
        fn arbitrary_manifests_never_panic(text in toml_ish(FRAGMENTS, 96), pinned in pinned()) {
            open(&text, pinned.as_deref());
        }
    }

    proptest! {
        #![proptest_config(cases(512))]

        /// Character edits of the valid signed manifest never panic.
        #[test]
        fn edited_manifests_never_panic(
            edits in edits(prop_oneof![3 => prop::sample::select(vec!['"', '=', '[', ']', '\n', '.', '\\', '0', 'f', '-', '+', ' ', '\'', '#']), 1 => any::<char>()], 6),
            pinned in pinned(),
        ) {
            let text: String = apply(VALID.chars().collect(), &edits).into_iter().collect();
            open(&text, pinned.as_deref());
        }
    }

    proptest! {
        #![proptest_config(cases(512))]

        /// Manifests built from plausible, edge-case and nonsense field
        /// values (versions overflowing u64, `wasm` paths escaping the
        /// package, malformed hex, bad signatures, wrong types) never
        /// panic; one that opens names a file in its own directory.
        #[test]
        fn structured_manifests_never_panic(text in structured(), pinned in pinned()) {
            open(&text, pinned.as_deref());
        }
    }
}

/// The node config: `Config::parse` (what `Config::load` runs on the file's
/// text) with its validation, and the values the node derives from it.
mod config {
    use super::*;
    use infernet_host::config::{flatten_table, Config};
    use infernet_host::p2p::libp2p::identity::Keypair;
    use std::path::Path;
    use std::sync::LazyLock;

    const BASE: &str = "/srv/infernet";

    /// A full config in the shape of the test networks' provider configs,
    /// every section present.
    static VALID: LazyLock<String> = LazyLock::new(|| {
        let peer = Keypair::ed25519_from_bytes([1u8; 32])
            .unwrap()
            .public()
            .to_peer_id();
        format!(
            "[node]\ndata_dir = \"node\"\ndevice = \"cpu\"\nroles = [\"provider\", \"client\"]\n\
             listen = [\"/ip4/127.0.0.1/tcp/0\"]\nbootstrap = [\"/ip4/127.0.0.1/tcp/4001/p2p/{peer}\"]\n\
             mdns = false\nadvert_interval_secs = 1\nescrow_sweep_secs = 15\n\n\
             [[backend]]\nplugin = \"plugins/echo\"\n\
             [backend.limits]\nmemory_mb = 256\nwall_time_ms = 5000\ntensor_mb = 64\ncopy_out_mb = 16\nfuel = 1000000\n\
             [[backend.models]]\nid = \"echo\"\npath = \"echo-model\"\n\n\
             [pricing]\nplugin = \"plugins/pricing-flat\"\n\
             [pricing.config]\nper_input_token = 1\nper_output_token = 2\nminimum = 10\n\n\
             [[payment]]\nplugin = \"plugins/payment-ledger\"\nconfirm = \"client\"\naccount = \"acct\"\n\
             allowed_hosts = [\"api.example.com\", \"http://127.0.0.1:8080\"]\n\
             [payment.config]\nnetwork = \"test\"\n\n\
             [client]\nmax_attempts = 3\nquote_fanout = 2\nescrow_secs = 600\npay_currency = \"USD\"\n\
             [client.weights]\nprice = 1.0\nreputation = 0.5\nlatency = 0.25\nload = 1.0\n"
        )
    });

    /// Parses and validates `text` as the node does, then derives what the
    /// node derives from a config (roles, models, each plugin's effective
    /// limits, plugin settings as strings). Whether it was accepted.
    fn load(text: &str) -> bool {
        match Config::parse(text, Path::new(BASE)) {
            Ok(c) => {
                let _ = c.roles();
                let _ = c.models().count();
                for b in &c.backend {
                    let _ = b.limits.limits();
                }
                if let Some(p) = &c.pricing {
                    let _ = p.limits.limits();
                    let _ = flatten_table(&p.config);
                }
                for p in &c.payment {
                    let _ = p.limits.limits();
                    let _ = flatten_table(&p.config);
                }
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    }

    /// What a key holds, so that most generated values have its type and a
    /// plausible value (and get past parsing to validation), the rest not.
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        /// An integer: timeouts, counts, limits, rates.
        Int,
        /// A float: selection weights.
        Float,
        /// A boolean.
        Bool,
        /// A string from these.
        Str(&'static [&'static str]),
        /// An array of strings from these.
        List(&'static [&'static str]),
    }
    use Kind::*;

    const DEVICES: &[&str] = &[
        "cpu",
        "cuda",
        "cuda:0",
        "cuda:99999999999999999999",
        "cuda:",
        "cuda:-1",
        " cpu ",
        "tpu",
    ];
    const ROLES: &[&str] = &["provider", "client", "verifier", "Provider", ""];
    const ADDRS: &[&str] = &[
        "/ip4/127.0.0.1/tcp/0",
        "/ip4/0.0.0.0/udp/4001/quic-v1",
        "/ip6/::1/tcp/1/ws",
        "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5",
        "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWxxx",
        "/dns4/x/tcp/1",
        "/ip4/999.0.0.1/tcp/1",
        "not a multiaddr",
        "",
        "/",
    ];
    const CURRENCIES: &[&str] = &["USD", "BTC", "ETH", "USDC-POLYGON", "usd", "XXX", ""];
    const HOSTS: &[&str] = &[
        "api.example.com",
        "api.example.com:8443",
        "http://127.0.0.1:8080",
        "https://x:99999",
        "host:0",
        "host:08",
        "host:+1",
        "[::1]:443",
        "[::1",
        "[]",
        "[::1]x",
        "http://",
        "ftp://x",
        "a b",
        "x/y",
        "*.x",
        "",
    ];
    const PATHS: &[&str] = &["p", "plugins/echo", "../p", "/abs/p", "", "\u{0}"];
    const KEYS: &[&str] = &[
        "0000000000000000000000000000000000000000000000000000000000000000",
        "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c",
        "zz",
        "",
        "00",
    ];
    const WORDS: &[&str] = &[
        "echo", "", " ", "groth16", "plonk", "status", "client", "acct",
    ];

    const NODE: &[(&str, Kind)] = &[
        ("data_dir", Str(PATHS)),
        ("device", Str(DEVICES)),
        ("roles", List(ROLES)),
        ("listen", List(ADDRS)),
        ("bootstrap", List(ADDRS)),
        ("mdns", Bool),
        ("advert_interval_secs", Int),
        ("escrow_sweep_secs", Int),
    ];
    const CLIENT: &[(&str, Kind)] = &[
        ("discovery_timeout_ms", Int),
        ("quote_timeout_ms", Int),
        ("step_timeout_ms", Int),
        ("run_timeout_ms", Int),
        ("max_attempts", Int),
        ("quote_fanout", Int),
        ("pay_currency", Str(CURRENCIES)),
        ("escrow_secs", Int),
        ("funding_timeout_ms", Int),
        ("rate_source", Str(&["fixed", "file", "Fixed"])),
        ("rates_file", Str(PATHS)),
        ("rates_max_age_secs", Int),
    ];
    const WEIGHTS: &[(&str, Kind)] = &[
        ("price", Float),
        ("reputation", Float),
        ("latency", Float),
        ("load", Float),
    ];
    const RATES: &[(&str, Kind)] = &[
        ("USD", Int),
        ("BTC", Int),
        ("ETH", Int),
        ("XXX", Int),
        ("usd", Int),
    ];
    const PLUGIN: &[(&str, Kind)] = &[("publisher_key", Str(KEYS))];
    const MODEL: &[(&str, Kind)] = &[
        ("id", Str(WORDS)),
        ("path", Str(PATHS)),
        ("proof", Str(WORDS)),
    ];
    const SETTINGS: &[(&str, Kind)] = &[
        ("per_input_token", Int),
        ("minimum", Int),
        ("network", Str(WORDS)),
        ("account", Str(WORDS)),
    ];
    const PAYMENT: &[(&str, Kind)] = &[
        ("publisher_key", Str(KEYS)),
        ("account", Str(WORDS)),
        ("confirm", Str(WORDS)),
        ("allowed_hosts", List(HOSTS)),
    ];
    const LIMITS: &[(&str, Kind)] = &[
        ("memory_mb", Int),
        ("wall_time_ms", Int),
        ("kernel_time_ms", Int),
        ("tensor_mb", Int),
        ("copy_out_mb", Int),
        ("kernel_work_mflop", Int),
        ("tensor_handles", Int),
        ("stream_tokens", Int),
        ("stream_mb", Int),
        ("fuel", Int),
    ];

    /// A plausible value of `kind`, edges included (0, the top of i64,
    /// NaN and infinite floats, bad devices, hosts, currencies).
    fn plausible(kind: Kind) -> BoxedStrategy<String> {
        match kind {
            Int => prop_oneof![
                24 => (1u64..100_000).prop_map(|n| n.to_string()),
                1 => prop::sample::select(vec!["0", "-1", "4096", "4097", "17592186044416", "9223372036854775807", "-9223372036854775808"])
                    .prop_map(String::from),
                1 => any::<i64>().prop_map(|n| n.to_string()),
            ]
            .boxed(),
            Float => prop_oneof![
                4 => (0.0f64..10.0).prop_map(|f| format!("{f:?}")),
                1 => prop::sample::select(vec!["nan", "inf", "-inf", "-1.0", "-0.0", "1e308", "0"]).prop_map(String::from),
            ]
            .boxed(),
            Bool => any::<bool>().prop_map(|b| b.to_string()).boxed(),
            Str(pool) => prop::sample::select(pool).prop_map(toml_str).boxed(),
            List(pool) => prop::collection::vec(prop::sample::select(pool).prop_map(toml_str), 0..3)
                .prop_map(|v| format!("[{}]", v.join(", ")))
                .boxed(),
        }
    }

    /// Any TOML value, whatever the key: integers, floats, booleans,
    /// strings, arrays, tables, dates.
    fn any_value() -> impl Strategy<Value = String> {
        prop_oneof![
            2 => any::<i64>().prop_map(|n| n.to_string()),
            2 => prop::sample::select(vec!["1.5", "-0.0", "nan", "inf", "true", "false", "{}", "[]", "[1, \"a\"]", "{ A = \"B\" }", "1979-05-27T07:32:00Z", "07:32:00"])
                .prop_map(String::from),
            2 => any_text(24).prop_map(|s| toml_str(&s)),
        ]
    }

    /// `header`, the first `always` of `keys` (those a table requires),
    /// then any subset of the rest, in order; each value mostly
    /// [`plausible`], sometimes anything.
    fn table(
        header: &'static str,
        keys: &'static [(&'static str, Kind)],
        always: usize,
    ) -> BoxedStrategy<String> {
        let (required, optional) = keys.split_at(always);
        prop::sample::subsequence(optional.to_vec(), 0..=optional.len())
            .prop_flat_map(move |chosen| {
                required
                    .iter()
                    .copied()
                    .chain(chosen)
                    .map(|(k, kind)| {
                        prop_oneof![40 => plausible(kind), 1 => any_value().boxed()]
                            .prop_map(move |v| format!("{k} = {v}\n"))
                    })
                    .collect::<Vec<_>>()
            })
            .prop_map(move |lines| format!("{header}\n{}", lines.concat()))
            .boxed()
    }

    /// `s`'s text or, `1 - p` of the time, nothing.
    fn maybe(p: f64, s: BoxedStrategy<String>) -> impl Strategy<Value = String> {
        prop::option::weighted(p, s).prop_map(Option::unwrap_or_default)
    }

    /// A config of any of the sections in the order the docs write them:
    /// `[node]`, `[client]` (weights, rates), backends (limits, models),
    /// `[pricing]` (settings, limits), payments (settings, limits).
    fn structured() -> impl Strategy<Value = String> {
        let client = (
            table("[client]", CLIENT, 0),
            maybe(0.5, table("[client.weights]", WEIGHTS, 0)),
            maybe(0.3, table("[client.rates]", RATES, 0)),
        )
            .prop_map(|(a, b, c)| a + &b + &c);
        let backend = (
            table("[[backend]]\nplugin = \"p\"", PLUGIN, 0),
            maybe(0.5, table("[backend.limits]", LIMITS, 0)),
            prop::collection::vec(table("[[backend.models]]", MODEL, 2), 0..3),
        )
            .prop_map(|(a, b, c)| a + &b + &c.concat());
        let pricing = (
            table("[pricing]\nplugin = \"p\"", PLUGIN, 0),
            maybe(0.5, table("[pricing.config]", SETTINGS, 0)),
            maybe(0.5, table("[pricing.limits]", LIMITS, 0)),
        )
            .prop_map(|(a, b, c)| a + &b + &c);
        let payment = (
            table("[[payment]]\nplugin = \"p\"", PAYMENT, 0),
            maybe(0.5, table("[payment.config]", SETTINGS, 0)),
            maybe(0.5, table("[payment.limits]", LIMITS, 0)),
        )
            .prop_map(|(a, b, c)| a + &b + &c);
        (
            maybe(0.7, table("[node]", NODE, 0)),
            maybe(0.5, client.boxed()),
            prop::collection::vec(backend, 0..3),
            maybe(0.5, pricing.boxed()),
            prop::collection::vec(payment, 0..3),
        )
            .prop_map(|(n, c, b, p, pay)| [n, c, b.concat(), p, pay.concat()].concat())
    }

    const FRAGMENTS: &[&str] = &[
        "[node]\n",
        "[client]\n",
        "[[backend]]\n",
        "[[backend.models]]\n",
        "[backend.limits]\n",
        "[pricing]\n",
        "[[payment]]\n",
        "plugin = ",
        "id = ",
        "path = ",
        "memory_mb = ",
        "tensor_mb = ",
        "device = ",
        "listen = ",
        "roles = ",
        "\"",
        "'",
        "=",
        "[",
        "]",
        "{",
        "}",
        ",",
        "\n",
        "'''",
        "\"\"\"",
        "#",
        "1",
        "-",
        ".",
        "e",
        "inf",
        "nan",
        "true",
        "0x",
        "1979-05-27",
        "T",
        ":",
        "\\u",
        "\\",
        " ",
        "9223372036854775807",
    ];

    /// The valid config the edits start from is accepted, and a limit at
    /// the top of TOML's integer range, for every limits key in every
    /// plugin section, is accepted or refused without overflowing when the
    /// node derives the effective limits.
    #[test]
    fn the_valid_config_loads_and_huge_limits_do_not_overflow() {
        assert!(load(&VALID), "{}", *VALID);
        for section in [
            "[[backend]]\nplugin = \"p\"\n[backend.limits]",
            "[pricing]\nplugin = \"p\"\n[pricing.limits]",
            "[[payment]]\nplugin = \"p\"\n[payment.limits]",
        ] {
            for (key, _) in LIMITS {
                load(&format!("{section}\n{key} = {}\n", i64::MAX));
            }
        }
    }

    proptest! {
        #![proptest_config(cases(1024))]

        /// Any text, mostly TOML-shaped, as a config: accepted or refused
        /// with an error naming the problem, never a panic.
        #[test]
        fn arbitrary_configs_never_panic(text in toml_ish(FRAGMENTS, 128)) {
            load(&text);
        }
    }

    proptest! {
        #![proptest_config(cases(1024))]

        /// Character edits of the full valid config never panic.
        #[test]
        fn edited_configs_never_panic(
            edits in edits(prop_oneof![3 => prop::sample::select(vec!['"', '=', '[', ']', '\n', '.', '/', '0', '9', '-', ' ', '\'', ':', '#']), 1 => any::<char>()], 6),
        ) {
            let text: String = apply(VALID.chars().collect(), &edits).into_iter().collect();
            load(&text);
        }
    }

    proptest! {
        #![proptest_config(cases(1024))]

        /// Configs built section by section from edge-case values (i64
        /// extremes, NaN and infinite weights, bad devices, multiaddrs,
        /// currencies, hosts, wrong types) never panic in parsing,
        /// validation or the limits the node derives.
        #[test]
        fn structured_configs_never_panic(text in structured()) {
            load(&text);
        }
    }

    proptest! {
        #![proptest_config(cases(512))]

        /// Every limits key, in every plugin section, at any positive TOML
        /// integer: accepted (but a `memory_mb` over 4096), so the effective
        /// limits are derived, without overflow.
        #[test]
        fn any_positive_limit_is_derived_without_overflow(
            section in prop::sample::select(vec![("[[backend]]", "backend"), ("[pricing]", "pricing"), ("[[payment]]", "payment")]),
            key in prop::sample::select(LIMITS).prop_map(|(k, _)| k),
            value in 1i64..=i64::MAX,
        ) {
            let (table, name) = section;
            let text = format!("{table}\nplugin = \"p\"\n[{name}.limits]\n{key} = {value}\n");
            let accepted = load(&text);
            prop_assert!(accepted || (key == "memory_mb" && value > 4096), "refused: {}", text);
        }
    }
}
