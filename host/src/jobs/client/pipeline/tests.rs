//! Unit tests of the pipeline driver's pure parts.

use super::step::{check_output, concat, fits_in_a_request, keep_last_rows, outputs_agree};
use super::*;
use crate::p2p::protocol::Tensor;

fn tensor(shape: &[u32], from: f32) -> Tensor {
    let n: u32 = shape.iter().product();
    Tensor {
        shape: shape.to_vec(),
        data: (0..n).map(|i| from + i as f32).collect(),
    }
}

#[test]
fn job_options_map_to_a_pipeline_or_are_refused_by_name() {
    let none = VerifyPolicy::None;
    let o = PipelineOptions::for_job(&InferOptions::default(), &none).unwrap();
    assert_eq!(o.max_tokens, super::super::DEFAULT_MAX_OUTPUT_TOKENS);
    assert!(o.decode && !o.replicate);
    let ask = |opts: InferOptions, configured: &VerifyPolicy| {
        PipelineOptions::for_job(&opts, configured).map_err(|e| e.to_string())
    };
    let hot = InferOptions {
        temperature: Some(0.7),
        ..Default::default()
    };
    assert!(ask(hot, &none).unwrap_err().contains("temperature"));
    let proved = InferOptions {
        proof: Some("groth16".into()),
        ..Default::default()
    };
    assert!(ask(proved, &none).unwrap_err().contains("groth16"));
    let spot = InferOptions {
        verify: Some(VerifyPolicy::SpotCheck(0.5)),
        ..Default::default()
    };
    assert!(ask(spot, &none).unwrap_err().contains("replicate(2)"));
    let twice = InferOptions {
        verify: Some(VerifyPolicy::Replicate(2)),
        ..Default::default()
    };
    assert!(ask(twice, &none).unwrap().replicate);
    // The node's default: replicate(2) applies, a spot check does not.
    assert!(
        ask(InferOptions::default(), &VerifyPolicy::Replicate(2))
            .unwrap()
            .replicate
    );
    assert!(
        !ask(InferOptions::default(), &VerifyPolicy::SpotCheck(0.1))
            .unwrap()
            .replicate
    );
}

#[test]
fn a_rebuild_concatenates_what_a_stage_was_sent() {
    let toks = [WireInput::Tokens(vec![1, 2, 3]), WireInput::Tokens(vec![4])];
    assert_eq!(concat(&toks), Some(WireInput::Tokens(vec![1, 2, 3, 4])));
    let hidden = [
        WireInput::Tensor(tensor(&[1, 2, 3], 0.0)),
        WireInput::Tensor(tensor(&[1, 1, 3], 6.0)),
    ];
    assert_eq!(
        concat(&hidden),
        Some(WireInput::Tensor(tensor(&[1, 3, 3], 0.0)))
    );
    // A text prompt then tokens cannot be one prefill.
    let mixed = [WireInput::Text("hi".into()), WireInput::Tokens(vec![4])];
    assert_eq!(concat(&mixed), None);
    assert_eq!(concat(&mixed[..1]), Some(mixed[0].clone()));
    // Only the step's own rows go on.
    let mut t = tensor(&[1, 3, 2], 0.0);
    keep_last_rows(&mut t, 1);
    assert_eq!(
        (t.shape.clone(), t.data.clone()),
        (vec![1, 1, 2], vec![4.0, 5.0])
    );
}

#[test]
fn stage_outputs_are_checked_and_replicas_compared() {
    let hop = Hop {
        span_id: "m@0..1/2".into(),
        span: crate::models::span::LayerSpan {
            start: 0,
            end: 1,
            total: 2,
        },
        provider: PeerId::random(),
        rtt_ms: None,
        free: 1,
    };
    let stage = Stage::new(hop);
    let out = |t: Tensor| WireOutput::Logits(t);
    assert!(check_output(&stage, &out(tensor(&[1, 2, 8], 0.0)), 2, false).is_ok());
    assert!(check_output(&stage, &out(tensor(&[1, 3, 8], 0.0)), 2, false).is_err());
    assert!(check_output(&stage, &out(tensor(&[1, 50], 0.0)), 2, true).is_ok());
    assert!(check_output(&stage, &out(tensor(&[1, 2, 8], 0.0)), 2, true).is_err());
    let mut short = tensor(&[1, 2, 8], 0.0);
    short.data.pop();
    let e = check_output(&stage, &out(short), 2, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("m@0..1/2") && e.contains("15 values"), "{e}");
    assert!(check_output(&stage, &WireOutput::Text("x".into()), 1, true).is_err());
    // Replicas: last-bit noise agrees, a 1e-3 change does not.
    let a = tensor(&[1, 1, 4], 10.0);
    let mut b = a.clone();
    b.data[0] += 1e-6;
    assert!(outputs_agree(&out(a.clone()), &out(b.clone())));
    b.data[0] = a.data[0] * (1.0 + 1e-3);
    assert!(!outputs_agree(&out(a.clone()), &out(b)));
    assert!(!outputs_agree(&out(a), &out(tensor(&[1, 2, 2], 10.0))));
    assert_eq!(argmax(&[0.5, 2.0, 2.0, -1.0]), Some(1));
    assert_eq!(argmax(&[]), None);
}

#[test]
fn an_input_too_big_for_one_request_is_refused_before_it_is_sent() {
    // 300 rows of 576: 864 KB of CBOR at most, fits; 400 rows do not.
    assert!(fits_in_a_request(&WireInput::Tensor(tensor(&[1, 300, 576], 0.0))).is_ok());
    let e = fits_in_a_request(&WireInput::Tensor(tensor(&[1, 400, 576], 0.0))).unwrap_err();
    assert!(
        e.contains("1008 KiB") && e.contains("at most 358 tokens"),
        "{e}"
    );
    assert!(fits_in_a_request(&WireInput::Tokens(vec![1; 100_000])).is_ok());
    assert!(fits_in_a_request(&WireInput::Text("x".repeat(2 << 20))).is_err());
}
