//! `POST /v1/embeddings`: the texts sent to a provider as one job
//! (`WireInput::Texts`), one vector back per text, as floats or, when
//! `encoding_format = "base64"` (what the `openai` Python client asks for
//! by default), as base64 of little-endian f32s.

use super::error::ApiError;
use super::request::{network, parse, EmbeddingRequest, MAX_SHARDS};
use super::text::{headers, meta};
use super::ApiState;
use crate::p2p::{WireInput, WireOutput};
use crate::payments::money_json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;

pub(super) async fn embeddings(
    State(s): State<ApiState>,
    headers_in: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        let key = s.authorize_jobs(&headers_in)?;
        let req: EmbeddingRequest = parse(&body)?;
        let base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::bad_field(
                    "encoding_format",
                    format!("`{other}`: expected `float` or `base64`"),
                ))
            }
        };
        let inputs = req.input.into_vec();
        if inputs.is_empty() || inputs.iter().any(String::is_empty) {
            return Err(ApiError::bad_field(
                "input",
                "`input` must be a non-empty string or a list of non-empty strings",
            ));
        }
        let n = inputs.len();
        let shards = req.infernet.as_ref().and_then(|o| o.shards).unwrap_or(1);
        if shards == 0 || shards > MAX_SHARDS {
            return Err(ApiError::bad_field(
                "infernet.shards",
                format!("`shards` must be 1 to {MAX_SHARDS}, got {shards}"),
            ));
        }
        let mut opts = network(req.infernet, &s.cfg, &headers_in)?;
        let reserved = s.spend.reserve(key, &mut opts)?;
        let failed = |e| ApiError::from_client(&req.model, e);
        // One job, or (`infernet.shards` > 1) one per provider, merged.
        let (output, extra, input_tokens, out_headers, price) = if shards > 1 {
            let out = s
                .node
                .submit_sharded(&req.model, inputs, opts, shards as usize)
                .await
                .map_err(failed)?;
            let tokens: u32 = out
                .shards
                .iter()
                .map(|sh| sh.outcome.usage().input_tokens)
                .sum();
            let extra = serde_json::json!({
                "shards": out.shards.iter().map(|sh| {
                    let mut m = meta(&sh.outcome);
                    m["texts"] = serde_json::json!([sh.items.start, sh.items.end]);
                    m
                }).collect::<Vec<_>>(),
                "price": out.price.iter().map(|p| money_json(p.amount, &p.currency)).collect::<Vec<_>>(),
            });
            let price = out.price.first().map(|p| (p.amount, p.currency.clone()));
            (
                out.output,
                extra,
                tokens,
                axum::http::HeaderMap::new(),
                price,
            )
        } else {
            let outcome = s
                .node
                .submit(&req.model, WireInput::Texts(inputs), opts)
                .await
                .map_err(failed)?;
            let price = Some((outcome.price.amount, outcome.price.currency.clone()));
            let (extra, tokens, out_headers) = (
                meta(&outcome),
                outcome.usage().input_tokens,
                headers(&outcome),
            );
            (outcome.output, extra, tokens, out_headers, price)
        };
        if let (Some(r), Some((amount, currency))) = (reserved, &price) {
            r.settle(*amount, currency);
        }
        let WireOutput::Embeddings(vectors) = &output else {
            return Err(ApiError::bad_request(
                "not_an_embedding_model",
                format!("model `{}` does not return embeddings", req.model),
            ));
        };
        if vectors.len() != n {
            return Err(ApiError::upstream(format!(
                "the provider returned {} vectors for {n} inputs",
                vectors.len()
            )));
        }
        let data: Vec<serde_json::Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let embedding = if base64 {
                    serde_json::json!(encode_f32s(v))
                } else {
                    serde_json::json!(v)
                };
                serde_json::json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        let body = serde_json::json!({
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
            "infernet": extra,
        });
        Ok((out_headers, Json(body)).into_response())
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Standard base64 (with padding) of `v` as little-endian f32s.
fn encode_f32s(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_of_floats() {
        // 1.0f32 = 00 00 80 3f
        assert_eq!(super::encode_f32s(&[1.0]), "AACAPw==");
        assert_eq!(super::encode_f32s(&[]), "");
    }
}
