//! Kernel traces: a per-job commitment to every host kernel call.
//!
//! Every tensor a plugin holds carries a [`Digest`]. A matmul's or a
//! linear layer's output, and values the guest supplies, get a hash of
//! their dtype, shape and little-endian bytes (their *content*); every
//! other call's output is named by the call itself
//! ([`Leaf::derived_digest`]: op, parameters, input digests); a model
//! weight by the model's weights hash and the tensor's name (so 100 MB of
//! weights are never re-hashed per job). Every kernel call of a
//! traced job appends one [`Leaf`] — op, parameters, the digests of its
//! inputs, the digest of its output — and the job's trace is the Merkle
//! tree over the leaves' hashes in call order ([`Trace::root`]). Two runs of
//! one deterministic plugin on the same weights, input and parameters make
//! the same calls on the same values, so their leaves match one for one up
//! to the first call whose output differs; [`first_divergence`] finds it
//! with one pair of child hashes per tree level (the bisection of
//! `/infernet/verify/1`), and [`MerkleProof`] shows any one leaf belongs
//! to a signed root.
//!
//! The digest is exact on purpose: it commits to the bits a provider
//! computed. Honest float noise (another SIMD path, another summation
//! order) is judged where it can be, at the referee, which re-executes the
//! one diverging op on the committed inputs and compares each party's
//! revealed output with a tolerance (`docs/ARCHITECTURE.md`, "Kernel traces").

use super::KernelError;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A 32-byte hash.
pub type Digest = [u8; 32];

/// Domain tags, so a digest of one kind can never pass for another.
const TENSOR: &[u8] = b"infernet/trace/tensor/1";
const WEIGHT: &[u8] = b"infernet/trace/weight/1";
const QWEIGHT: &[u8] = b"infernet/trace/qweight/1";
const LEAF: &[u8] = b"infernet/trace/leaf/1";
const DERIVED: &[u8] = b"infernet/trace/derived/1";
const NODE: &[u8] = b"infernet/trace/node/1";
const ROOT: &[u8] = b"infernet/trace/root/1";

/// Leaves one trace may hold (4 Mi): far past any real job here (a
/// 32-token SmolLM-135M generation makes about 40,000 calls). Memory is
/// bounded before that: each leaf is charged to the plugin's tensor budget.
pub const MAX_LEAVES: usize = 1 << 22;

/// The trace tree's height: leaves sit at level 0 and the tree is padded
/// to 2^[`DEPTH`] leaves, so every trace has the same shape and any two can
/// be bisected level by level.
pub const DEPTH: u32 = 24;

/// The dtype's name as traces spell it.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::U8 => "u8",
        DType::U32 => "u32",
        DType::I64 => "i64",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F32 => "f32",
        DType::F64 => "f64",
        _ => "other",
    }
}

/// Values of at least this many bytes are hashed with BLAKE3, smaller ones
/// with SHA-256: on this class of CPU SHA-256 (SHA-NI) is the faster of the
/// two below a few KiB and BLAKE3 (SIMD over chunks) far faster above.
pub const BLAKE3_FROM: usize = 4096;

/// The hash of a tensor's content: the tag, dtype, shape and values.
fn content(dtype: &str, dims: &[usize], bytes: &[u8]) -> Digest {
    let mut head = Vec::with_capacity(64);
    head.extend_from_slice(TENSOR);
    head.extend_from_slice(&(dtype.len() as u64).to_le_bytes());
    head.extend_from_slice(dtype.as_bytes());
    head.extend_from_slice(&(dims.len() as u64).to_le_bytes());
    for d in dims {
        head.extend_from_slice(&(*d as u64).to_le_bytes());
    }
    if bytes.len() >= BLAKE3_FROM {
        let mut h = blake3::Hasher::new();
        h.update(&head);
        h.update(bytes);
        *h.finalize().as_bytes()
    } else {
        let mut h = Sha256::new();
        h.update(&head);
        h.update(bytes);
        h.finalize().into()
    }
}

/// The content digest of a tensor: dtype, shape and little-endian bytes.
pub fn tensor_digest(t: &Tensor) -> Result<Digest, KernelError> {
    let dims = t.dims();
    let name = dtype_name(t.dtype());
    with_values(t, |bytes| content(name, dims, bytes))
}

/// The content digest of raw values (what [`tensor_digest`] gives for a
/// tensor holding them): how a referee checks revealed bytes.
pub fn bytes_digest(dtype: &str, dims: &[usize], bytes: &[u8]) -> Digest {
    content(dtype, dims, bytes)
}

/// Runs `f` on the tensor's values, little-endian, without a copy when it
/// is a contiguous CPU tensor of a plain dtype.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[u8]) -> R) -> Result<R, KernelError> {
    use candle_core::{CpuStorage, Storage};
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let bytes: Option<&[u8]> = match cpu {
                CpuStorage::F32(v) => Some(bytemuck::cast_slice(&v[start..end])),
                CpuStorage::U32(v) => Some(bytemuck::cast_slice(&v[start..end])),
                CpuStorage::I64(v) => Some(bytemuck::cast_slice(&v[start..end])),
                CpuStorage::F64(v) => Some(bytemuck::cast_slice(&v[start..end])),
                CpuStorage::U8(v) => Some(&v[start..end]),
                _ => None,
            };
            if let Some(b) = bytes.filter(|_| cfg!(target_endian = "little")) {
                return Ok(f(b));
            }
        }
    }
    let bytes =
        super::ops::raw_bytes(t).map_err(|e| KernelError::Invalid(format!("trace: {e}")))?;
    Ok(f(&bytes))
}

/// A tensor's values, as a party reveals them in a dispute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revealed {
    /// Dtype name ([`dtype_name`]).
    pub dtype: String,
    /// Shape.
    pub dims: Vec<u64>,
    /// Little-endian values.
    #[serde(with = "hexbytes")]
    pub bytes: Vec<u8>,
}

impl Revealed {
    /// The values of `t`.
    pub fn of(t: &Tensor) -> Result<Revealed, KernelError> {
        Ok(Revealed {
            dtype: dtype_name(t.dtype()).into(),
            dims: t.dims().iter().map(|&d| d as u64).collect(),
            bytes: super::ops::raw_bytes(t)
                .map_err(|e| KernelError::Invalid(format!("reveal: {e}")))?,
        })
    }

    /// Their content digest (what a leaf's output or input digest must be).
    pub fn digest(&self) -> Digest {
        let dims: Vec<usize> = self.dims.iter().map(|&d| d as usize).collect();
        bytes_digest(&self.dtype, &dims, &self.bytes)
    }

    /// A tensor holding them, on `device`; refused when the bytes do not
    /// fill the shape.
    pub fn to_tensor(&self, device: &candle_core::Device) -> Result<Tensor, KernelError> {
        let dtype = super::call::parse_dtype(&self.dtype)?;
        let dims: Vec<usize> = self
            .dims
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        let n = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.size_in_bytes()));
        if n != Some(self.bytes.len()) {
            return Err(KernelError::Invalid(format!(
                "revealed {} bytes for a {} tensor of shape {:?}",
                self.bytes.len(),
                self.dtype,
                self.dims
            )));
        }
        Ok(Tensor::from_raw_buffer(&self.bytes, dtype, &dims, device)?)
    }
}

/// What a replay keeps: the values of wanted tensors, by digest.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    /// Digests whose values are wanted.
    pub wanted: std::collections::HashSet<Digest>,
    /// Values found so far.
    pub found: std::collections::HashMap<Digest, Revealed>,
    /// Also keep the output of the call at this index.
    pub at: Option<usize>,
    /// That output, once made.
    pub at_value: Option<Revealed>,
}

impl Capture {
    /// Keeps `t`'s values if its digest is wanted (once).
    pub fn offer(&mut self, digest: &Digest, t: &Tensor) -> Result<(), KernelError> {
        if self.wanted.contains(digest) && !self.found.contains_key(digest) {
            self.found.insert(*digest, Revealed::of(t)?);
        }
        Ok(())
    }
}

/// Bytes as hex in human-readable formats, a byte string in binary ones.
mod hexbytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
        } else {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Vec<u8>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a byte string")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                    Ok(v.to_vec())
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                    Ok(v)
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

/// The digest of a sampled token.
pub fn token_digest(token: u32) -> Digest {
    bytes_digest("token", &[], &token.to_le_bytes())
}

/// The digest of a model weight: the model's weights hash and the tensor's
/// name (the referee loads it by name from the same weights).
pub fn weight_digest(weights_hash: &str, name: &str) -> Digest {
    named_weight(WEIGHT, weights_hash, name)
}

/// The digest of a quantized model weight (a GGUF tensor as stored): as
/// [`weight_digest`], in its own domain, so the stored blocks and the
/// dequantized tensor of one name never share a digest.
pub fn qweight_digest(weights_hash: &str, name: &str) -> Digest {
    named_weight(QWEIGHT, weights_hash, name)
}

fn named_weight(tag: &[u8], weights_hash: &str, name: &str) -> Digest {
    let mut h = Sha256::new();
    h.update(tag);
    h.update((weights_hash.len() as u64).to_le_bytes());
    h.update(weights_hash.as_bytes());
    h.update(name.as_bytes());
    h.finalize().into()
}

/// One kernel call as the trace records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaf {
    /// The kernel (`matmul`, `binary.add`, `from-f32`, `weight`, …).
    pub op: String,
    /// Its parameters that are not tensors, in a fixed textual form
    /// (`dim=1`, `eps=0.00001`, a weight's name, a sampler's seed and draw).
    pub params: String,
    /// Digests of its tensor inputs, in argument order.
    #[serde(with = "digest::list")]
    pub inputs: Vec<Digest>,
    /// Output dtype (`f32`, …; `token` for a sampled token id).
    pub dtype: String,
    /// Output shape.
    pub dims: Vec<u64>,
    /// Digest of the output.
    #[serde(with = "digest")]
    pub output: Digest,
}

impl Leaf {
    /// Memory the leaf holds (its fields and their heap parts), what a
    /// traced plugin is charged per call.
    pub fn held_bytes(&self) -> u64 {
        let heap = self.op.len()
            + self.params.len()
            + self.dtype.len()
            + 32 * self.inputs.len()
            + 8 * self.dims.len();
        (std::mem::size_of::<Leaf>() + heap) as u64
    }

    /// The leaf's hash: what the Merkle tree is built over.
    pub fn hash(&self) -> Digest {
        let mut h = self.fields(LEAF);
        h.update(self.output);
        h.finalize().into()
    }

    /// The output digest of an exact op (a rearrangement, selection or
    /// exact conversion, `Op::is_exact`): the hash of the call itself. Its
    /// values are a bit-exact function of its inputs on any machine, so
    /// naming the call names the values, and the host need not hash
    /// them — which is what keeps tracing cheap when a KV cache is
    /// concatenated every step. Such a leaf certifies itself: anyone can
    /// check `output == derived_digest()`.
    pub fn derived_digest(&self) -> Digest {
        self.fields(DERIVED).finalize().into()
    }

    fn fields(&self, tag: &[u8]) -> Sha256 {
        let mut h = Sha256::new();
        h.update(tag);
        for s in [&self.op, &self.params, &self.dtype] {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        h.update((self.inputs.len() as u64).to_le_bytes());
        for i in &self.inputs {
            h.update(i);
        }
        h.update((self.dims.len() as u64).to_le_bytes());
        for d in &self.dims {
            h.update(d.to_le_bytes());
        }
        h
    }
}

fn node(l: &Digest, r: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update(NODE);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// The hash of an all-empty subtree at each level (level 0: an absent leaf).
fn empty(level: u32) -> Digest {
    use std::sync::OnceLock;
    static EMPTY: OnceLock<Vec<Digest>> = OnceLock::new();
    let table = EMPTY.get_or_init(|| {
        let mut v = vec![[0u8; 32]];
        for l in 0..DEPTH as usize {
            v.push(node(&v[l], &v[l]));
        }
        v
    });
    table[level as usize]
}

/// The signed form of a trace: how many leaves and the tree's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceRoot {
    /// Leaves in the trace.
    pub len: u64,
    /// `H(root tag, len, top node)`.
    pub root: Digest,
}

impl TraceRoot {
    /// Text form: `<len>:<hex root>` (what results carry).
    pub fn to_text(&self) -> String {
        format!("{}:{}", self.len, hex::encode(self.root))
    }

    /// Parses [`to_text`](Self::to_text).
    pub fn parse(s: &str) -> Option<Self> {
        let (len, root) = s.split_once(':')?;
        let len = len.parse().ok()?;
        let root = hex::decode(root).ok()?.try_into().ok()?;
        Some(TraceRoot { len, root })
    }
}

/// The signed root of a tree of `len` leaves whose top node is `top`.
pub fn seal(len: u64, top: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update(ROOT);
    h.update(len.to_le_bytes());
    h.update(top);
    h.finalize().into()
}

/// A job's kernel trace: its leaves in call order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The calls.
    pub leaves: Vec<Leaf>,
    /// A replay's stopping point: calls past it are refused.
    #[serde(skip)]
    pub stop_after: Option<usize>,
}

impl Trace {
    /// Appends a call; refused past [`MAX_LEAVES`] (or a replay's stopping point).
    pub fn push(&mut self, leaf: Leaf) -> Result<(), KernelError> {
        if self.stop_after.is_some_and(|n| self.leaves.len() >= n) {
            return Err(KernelError::Limit(
                "replay stopped at the call under dispute".into(),
            ));
        }
        if self.leaves.len() >= MAX_LEAVES {
            return Err(KernelError::Limit(format!(
                "this job's kernel trace is full ({MAX_LEAVES} calls); a traced job may make no more kernel calls"
            )));
        }
        self.leaves.push(leaf);
        Ok(())
    }

    /// The tree's levels, bottom first, each trimmed to its non-empty nodes.
    pub fn tree(&self) -> Tree {
        let mut levels = vec![self.leaves.iter().map(Leaf::hash).collect::<Vec<_>>()];
        for l in 0..DEPTH {
            let below = &levels[l as usize];
            let up = below
                .chunks(2)
                .map(|p| node(&p[0], p.get(1).unwrap_or(&empty(l))))
                .collect();
            levels.push(up);
        }
        Tree { levels }
    }

    /// The signed root.
    pub fn root(&self) -> TraceRoot {
        self.tree().root()
    }
}

/// A trace's Merkle tree, level 0 the leaf hashes, level [`DEPTH`] the top.
#[derive(Debug, Clone)]
pub struct Tree {
    levels: Vec<Vec<Digest>>,
}

impl Tree {
    /// Leaves.
    pub fn len(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// Whether the trace is empty.
    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    /// The node at `level`, `index` (an empty subtree's hash past the end).
    pub fn node(&self, level: u32, index: u64) -> Digest {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
            .unwrap_or_else(|| empty(level.min(DEPTH)))
    }

    /// The signed root.
    pub fn root(&self) -> TraceRoot {
        let len = self.len();
        TraceRoot {
            len,
            root: seal(len, &self.node(DEPTH, 0)),
        }
    }

    /// The proof that leaf `index` is in this tree.
    pub fn proof(&self, index: u64) -> MerkleProof {
        let siblings = (0..DEPTH).map(|l| self.node(l, (index >> l) ^ 1)).collect();
        MerkleProof { index, siblings }
    }
}

/// The sibling hashes from a leaf up to the top.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    /// Leaf index.
    pub index: u64,
    /// One sibling per level, bottom first ([`DEPTH`] of them).
    #[serde(with = "digest::list")]
    pub siblings: Vec<Digest>,
}

impl MerkleProof {
    /// Whether `leaf` sits at this proof's index under `root`.
    pub fn verify(&self, root: &TraceRoot, leaf: &Leaf) -> bool {
        if self.siblings.len() != DEPTH as usize || self.index >= root.len {
            return false;
        }
        let mut h = leaf.hash();
        for (l, s) in self.siblings.iter().enumerate() {
            h = if (self.index >> l) & 1 == 0 {
                node(&h, s)
            } else {
                node(s, &h)
            };
        }
        seal(root.len, &h) == root.root
    }
}

/// Where bisection of two trees is: the node both walk down from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Level of the node (counting from the leaves).
    pub level: u32,
    /// Its index on that level.
    pub index: u64,
}

impl Cursor {
    /// The top of the tree.
    pub const TOP: Cursor = Cursor {
        level: DEPTH,
        index: 0,
    };

    /// One bisection step: given the two children (left, right) of this
    /// node in each tree, the child to descend into — the left one when the
    /// left children differ, else the right one. `None` when the children
    /// agree (the nodes do not differ below here).
    pub fn step(&self, a: (Digest, Digest), b: (Digest, Digest)) -> Option<Cursor> {
        let level = self.level.checked_sub(1)?;
        if a.0 != b.0 {
            Some(Cursor {
                level,
                index: self.index * 2,
            })
        } else if a.1 != b.1 {
            Some(Cursor {
                level,
                index: self.index * 2 + 1,
            })
        } else {
            None
        }
    }

    /// Whether the two children hash to the node (a party's answer checked
    /// against what it committed to one level up).
    pub fn children_match(&self, parent: &Digest, children: (Digest, Digest)) -> bool {
        node(&children.0, &children.1) == *parent
    }
}

/// The index of the first leaf at which two trees differ (`None` when they
/// are equal), by walking both from the top: [`DEPTH`] steps, each one
/// pair of child hashes per tree. Leaves before it are identical.
pub fn first_divergence(a: &Tree, b: &Tree) -> Option<u64> {
    if a.node(DEPTH, 0) == b.node(DEPTH, 0) {
        return None;
    }
    let mut at = Cursor::TOP;
    while at.level > 0 {
        let kids = |t: &Tree| {
            (
                t.node(at.level - 1, at.index * 2),
                t.node(at.level - 1, at.index * 2 + 1),
            )
        };
        at = at.step(kids(a), kids(b))?;
    }
    Some(at.index)
}

/// A digest as 64 hex digits in human-readable formats (JSON evidence),
/// 32 raw bytes in binary ones (CBOR on the wire and on disk).
pub mod digest {
    use super::Digest;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes one digest.
    pub fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(d))
        } else {
            s.serialize_bytes(d)
        }
    }

    /// Deserializes one digest.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        super::hexbytes::deserialize(d)?
            .try_into()
            .map_err(|_| serde::de::Error::custom("a digest is 32 bytes"))
    }

    /// One digest in a sequence.
    #[derive(Serialize, Deserialize)]
    struct One(#[serde(with = "self")] Digest);

    /// A list of digests.
    pub mod list {
        use super::{Digest, One};
        use serde::{Deserialize, Deserializer, Serializer};

        /// Serializes a list.
        pub fn serialize<S: Serializer>(d: &[Digest], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(d.iter().map(|d| One(*d)))
        }

        /// Deserializes a list.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Digest>, D::Error> {
            Ok(Vec::<One>::deserialize(d)?
                .into_iter()
                .map(|o| o.0)
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u64) -> Leaf {
        Leaf {
            op: "matmul".into(),
            params: String::new(),
            inputs: vec![[i as u8; 32]],
            dtype: "f32".into(),
            dims: vec![2, 2],
            output: [(i * 7) as u8; 32],
        }
    }

    fn trace(n: u64) -> Trace {
        Trace {
            leaves: (0..n).map(leaf).collect(),
            stop_after: None,
        }
    }

    #[test]
    fn proofs_verify_and_bind_index_and_content() {
        let t = trace(37);
        let tree = t.tree();
        let root = tree.root();
        for i in [0, 1, 17, 36] {
            let p = tree.proof(i);
            assert!(p.verify(&root, &t.leaves[i as usize]), "leaf {i}");
            assert!(!p.verify(&root, &leaf(99)), "another leaf at {i}");
            let mut moved = p.clone();
            moved.index ^= 1;
            assert!(!moved.verify(&root, &t.leaves[i as usize]));
        }
        // A root claiming another length does not accept the same proof.
        let longer = TraceRoot { len: 38, ..root };
        assert!(!tree.proof(3).verify(&longer, &t.leaves[3]));
        assert_eq!(TraceRoot::parse(&root.to_text()), Some(root));
    }

    #[test]
    fn bisection_finds_the_first_differing_leaf() {
        let a = trace(1000);
        for at in [0usize, 1, 511, 512, 999] {
            let mut b = a.clone();
            b.leaves[at].output[0] ^= 1;
            // Later leaves differ too (a changed value flows on).
            for l in b.leaves.iter_mut().skip(at + 1).step_by(3) {
                l.output[1] ^= 1;
            }
            assert_eq!(first_divergence(&a.tree(), &b.tree()), Some(at as u64));
        }
        // A trace that stops early diverges where it stops.
        let short = Trace {
            leaves: a.leaves[..600].to_vec(),
            stop_after: None,
        };
        assert_eq!(first_divergence(&a.tree(), &short.tree()), Some(600));
        assert_eq!(first_divergence(&a.tree(), &a.tree()), None);
    }

    #[test]
    fn content_digest_matches_bytes_digest_and_sees_one_bit() {
        let t = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &candle_core::Device::Cpu).unwrap();
        let bytes: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            tensor_digest(&t).unwrap(),
            bytes_digest("f32", &[2, 3], &bytes)
        );
        // A transposed (strided) view hashes its logical order.
        let tt = t.t().unwrap();
        assert_eq!(
            tensor_digest(&tt).unwrap(),
            tensor_digest(&tt.contiguous().unwrap()).unwrap()
        );
        let mut other = bytes.clone();
        other[0] ^= 1;
        assert_ne!(
            bytes_digest("f32", &[2, 3], &other),
            bytes_digest("f32", &[2, 3], &bytes)
        );
        assert_ne!(
            bytes_digest("f32", &[3, 2], &bytes),
            bytes_digest("f32", &[2, 3], &bytes)
        );
    }
}
