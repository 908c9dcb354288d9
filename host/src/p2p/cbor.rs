//! CBOR on the wire: strict encode/decode, hashes, and [`Encoded`], a value
//! carried as a CBOR byte string so that what is hashed or signed is the
//! exact bytes the sender wrote, never a re-encoding (PROTOCOL.md §4).
//!
//! Our encoder writes structs as maps keyed by field name in declaration
//! order; decoding accepts any key order and any integer width, ignores
//! unknown keys and refuses duplicate ones, so another implementation's
//! encoder (RFC 8949 sorted keys, say) interoperates. Nothing here depends
//! on two encoders agreeing byte for byte.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::ops::Deref;

/// CBOR encode/decode failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Could not encode.
    #[error("cbor encode: {0}")]
    Encode(String),
    /// Could not decode.
    #[error("malformed cbor: {0}")]
    Decode(String),
    /// Valid CBOR followed by extra bytes.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// Too large.
    #[error("message of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Size seen (at least).
        size: usize,
        /// Limit.
        max: usize,
    },
}

/// This node's CBOR encoding (struct fields in declaration order).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    cbor4ii::serde::to_vec(Vec::new(), value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Strict CBOR decoding: one item, no trailing bytes, nesting bounded.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    use cbor4ii::core::dec::{Read, Reference};
    let mut de = cbor4ii::serde::Deserializer::new(cbor4ii::core::utils::SliceReader::new(bytes));
    let value = T::deserialize(&mut de).map_err(|e| CodecError::Decode(e.to_string()))?;
    let mut rest = de.into_inner();
    let left = match rest.fill(usize::MAX) {
        Ok(Reference::Long(b)) => b.len(),
        Ok(Reference::Short(b)) => b.len(),
        Err(_) => 0,
    };
    if left != 0 {
        return Err(CodecError::Trailing(left));
    }
    Ok(value)
}

/// sha256 (hex) of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha256 (hex) of this node's encoding of `value` (local idempotency keys;
/// never compared with another node's hash).
pub fn hash_value<T: Serialize>(value: &T) -> String {
    sha256_hex(&encode(value).unwrap_or_default())
}

/// A value together with the exact CBOR bytes it was read from (or
/// written as). On the wire it is a CBOR byte string holding those bytes;
/// [`Encoded::hash`] and signatures are over them. Read-only: a changed
/// value needs a new [`Encoded::new`], so bytes and value never disagree.
#[derive(Clone)]
pub struct Encoded<T> {
    bytes: Vec<u8>,
    value: T,
}

impl<T: Serialize> Encoded<T> {
    /// Encodes `value` with this node's encoder.
    pub fn new(value: T) -> Result<Encoded<T>, CodecError> {
        Ok(Encoded {
            bytes: encode(&value)?,
            value,
        })
    }
}

impl<T: DeserializeOwned> Encoded<T> {
    /// Decodes `bytes` strictly, keeping them as they are.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Encoded<T>, CodecError> {
        let value = decode(&bytes)?;
        Ok(Encoded { bytes, value })
    }
}

impl<T> Encoded<T> {
    /// The exact encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The decoded value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The decoded value, bytes dropped.
    pub fn into_value(self) -> T {
        self.value
    }

    /// sha256 (hex) of the exact bytes.
    pub fn hash(&self) -> String {
        sha256_hex(&self.bytes)
    }
}

impl<T> Deref for Encoded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> PartialEq for Encoded<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

/// Compares the decoded value (convenient in tests and checks).
impl<T: PartialEq> PartialEq<T> for Encoded<T> {
    fn eq(&self, other: &T) -> bool {
        self.value == *other
    }
}

impl<T: fmt::Debug> fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T> Serialize for Encoded<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.bytes)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Encoded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Encoded<T>, D::Error> {
        let bytes = bytes::deserialize(d)?;
        Encoded::from_bytes(bytes).map_err(serde::de::Error::custom)
    }
}

/// `f32` lists that read any CBOR float width (f16, f32, f64, rounded to
/// the nearest f32) and integers: other encoders write 1.5 as a half, 0.1
/// as a double and 1.0 as the integer 1. Written as f32.
pub(crate) mod floats {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Deserialize;
    use std::fmt;

    struct AnyFloat(f32);

    impl<'de> Deserialize<'de> for AnyFloat {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AnyFloat, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = AnyFloat;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a number")
                }
                fn visit_f32<E>(self, v: f32) -> Result<AnyFloat, E> {
                    Ok(AnyFloat(v))
                }
                fn visit_f64<E>(self, v: f64) -> Result<AnyFloat, E> {
                    Ok(AnyFloat(v as f32))
                }
                fn visit_u64<E>(self, v: u64) -> Result<AnyFloat, E> {
                    Ok(AnyFloat(v as f32))
                }
                fn visit_i64<E>(self, v: i64) -> Result<AnyFloat, E> {
                    Ok(AnyFloat(v as f32))
                }
            }
            d.deserialize_any(V)
        }
    }

    struct List;

    impl<'de> Visitor<'de> for List {
        type Value = Vec<f32>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of numbers")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f32>, A::Error> {
            let mut out = Vec::new();
            while let Some(AnyFloat(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(out)
        }
    }

    /// A `Vec<f32>` field.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        d.deserialize_seq(List)
    }

    /// A `Vec<Vec<f32>>` field (embeddings).
    pub mod nested {
        use super::*;

        struct Row(Vec<f32>);
        impl<'de> Deserialize<'de> for Row {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Row, D::Error> {
                super::deserialize(d).map(Row)
            }
        }

        /// Reads rows of any-width floats.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f32>>, D::Error> {
            Vec::<Row>::deserialize(d).map(|rows| rows.into_iter().map(|r| r.0).collect())
        }
    }
}

/// `Vec<u8>` as a CBOR byte string instead of an array of integers.
pub(crate) mod bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
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
            // JSON (the job store's copy of a request) writes bytes as an
            // array of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pair {
        a: u32,
        b: String,
    }

    #[test]
    fn strict_decode() {
        let mut bytes = encode(&Pair {
            a: 1,
            b: "x".into(),
        })
        .unwrap();
        assert_eq!(decode::<Pair>(&bytes).unwrap().a, 1);
        bytes.push(0);
        assert_eq!(decode::<Pair>(&bytes), Err(CodecError::Trailing(1)));
        assert!(decode::<Pair>(&[0xff, 0x00, 0x13]).is_err());
    }

    #[test]
    fn another_encoders_layout_decodes_and_keeps_its_bytes() {
        // {"b": "x", "a": 1}: keys in the other order, `a` as a 4-byte int.
        let theirs = vec![0xa2, 0x61, b'b', 0x61, b'x', 0x61, b'a', 0x1a, 0, 0, 0, 1];
        let mine = encode(&Pair {
            a: 1,
            b: "x".into(),
        })
        .unwrap();
        assert_ne!(theirs, mine);
        let e = Encoded::<Pair>::from_bytes(theirs.clone()).unwrap();
        assert_eq!(
            *e.value(),
            Pair {
                a: 1,
                b: "x".into()
            }
        );
        assert_eq!(e.bytes(), &theirs[..]);
        assert_eq!(e.hash(), sha256_hex(&theirs));
        // Re-serialised, the bytes travel as they came.
        let wrapped = encode(&e).unwrap();
        let back: Encoded<Pair> = decode(&wrapped).unwrap();
        assert_eq!(back.bytes(), &theirs[..]);
    }

    #[test]
    fn floats_of_any_width_and_integers_read_as_f32() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "floats::deserialize")]
            data: Vec<f32>,
        }
        // {"data": [1.5 as f16, 0.1 as f64, 1 as int, -2 as int, 0.25 as f32]}
        let mut b = vec![
            0xa1, 0x64, b'd', b'a', b't', b'a', 0x85, 0xf9, 0x3e, 0x00, 0xfb,
        ];
        b.extend_from_slice(&0.1f64.to_be_bytes());
        b.extend_from_slice(&[0x01, 0x21, 0xfa]);
        b.extend_from_slice(&0.25f32.to_be_bytes());
        let t: T = decode(&b).unwrap();
        assert_eq!(t.data, vec![1.5, 0.1f32, 1.0, -2.0, 0.25]);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        // {"a": 1, "a": 2, "b": "x"}
        let dup = vec![
            0xa3, 0x61, b'a', 0x01, 0x61, b'a', 0x02, 0x61, b'b', 0x61, b'x',
        ];
        let err = decode::<Pair>(&dup).unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
    }
}
