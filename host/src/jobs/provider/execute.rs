//! Running an admitted job: the store transitions around the backend
//! call, proving, signing, cancelling, and the stored outcome a repeated
//! `Run` or a final `Poll` gets.

use super::*;

impl Inner {
    /// Refuses a proof request this node cannot serve.
    pub(super) fn check_proof(&self, model: &str, system: &str) -> Result<(), ProviderError> {
        match self.node.prover(model) {
            Some(p) if p.system == system => Ok(()),
            Some(p) => Err(ProviderError::ProofUnavailable(format!(
                "model `{model}` is proved in `{}` here, not `{system}`",
                p.system
            ))),
            None => Err(ProviderError::ProofUnavailable(format!(
                "this provider does not prove model `{model}` (asked for a `{system}` proof)"
            ))),
        }
    }

    /// Proves `job`'s output with the model's prover and checks that the
    /// backend's `output` is the proved one.
    pub(super) fn prove(
        &self,
        job: &JobRequest,
        output: &WireOutput,
        system: &str,
    ) -> Result<ProofAttachment, ProviderError> {
        self.check_proof(&job.model, system)?;
        let proved_model = self
            .node
            .prover(&job.model)
            .ok_or_else(|| ProviderError::ProofUnavailable(job.model.clone()))?;
        let JobInput::Bytes(bytes) = &job.input else {
            return Err(ProviderError::Proof(format!(
                "{system} proofs need a bytes input (int8 values)"
            )));
        };
        let x: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
        let prover = &proved_model.prover;
        let started = std::time::Instant::now();
        let proved = prover
            .prove(&x)
            .map_err(|e| ProviderError::Proof(e.to_string()))?;
        tracing::info!(job = %job.id, system, prove_ms = started.elapsed().as_millis() as u64, "proof");
        let matches = match output {
            WireOutput::Bytes(b) => decode_logits(b).as_deref() == Some(&proved.output[..]),
            WireOutput::Classes(c) => {
                c.len() == 1
                    && usize::try_from(c[0]).ok()
                        == Some(infernet_verifier::quant::argmax(&proved.output))
            }
            _ => false,
        };
        if !matches {
            return Err(ProviderError::Proof(
                "the backend's output is not the proved model's output".into(),
            ));
        }
        #[allow(unused_mut)]
        let mut envelope = proved.envelope;
        #[cfg(feature = "test-hooks")]
        if self.tamper_proofs.load(Ordering::Relaxed) {
            if let Some(b) = envelope.proof.get_mut(40) {
                *b ^= 0x01;
            }
        }
        Ok(ProofAttachment {
            system: system.to_string(),
            envelope: serde_json::to_vec(&envelope)
                .map_err(|e| ProviderError::Proof(e.to_string()))?,
            vk: proved_model.vk.clone(),
            logits: proved.output,
        })
    }

    pub(super) fn check_model(&self, model: &str) -> Result<(), ProviderError> {
        let available = self.node.models();
        if available.iter().any(|m| m == model) {
            Ok(())
        } else {
            Err(ProviderError::UnknownModel {
                model: model.into(),
                available,
            })
        }
    }

    /// A client's `Cancel`: a job not yet delivered ends `failed` and its
    /// result, if the backend still produces one, is discarded (a running
    /// plugin call is not interrupted). Unknown or finished jobs: `Ack`.
    pub(super) fn cancel(
        &self,
        client: PeerId,
        job_id: String,
        reason: String,
    ) -> Result<JobMessage, ProviderError> {
        let jobs = self.store.jobs();
        if let Some(r) = jobs.get(&job_id)? {
            if r.role != JobRole::Provider || r.client_peer.as_deref() != Some(&client.to_string())
            {
                return Err(ProviderError::UnknownJob(job_id));
            }
            if r.state < JobState::Delivered && JobState::can_transition(r.state, JobState::Failed)
            {
                let message = format!("cancelled by the client: {reason}");
                let update = JobUpdate {
                    error: Some(message.clone()),
                    ..JobUpdate::default()
                };
                match jobs.transition_with(&job_id, r.state, JobState::Failed, &message, &update) {
                    Ok(()) | Err(StoreError::StateConflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(JobMessage::ack(job_id))
    }

    /// Inserts the provider-role row, or finds the earlier one. A new job
    /// must pass the payment gate ([`Inner::check_paid`]); a known one is
    /// answered from the store, to its own client only.
    pub(super) fn admit(
        &self,
        client: PeerId,
        job: &JobRequest,
        proof: Option<&str>,
    ) -> Result<Admission, ProviderError> {
        if self.store.jobs().get(&job.id)?.is_none() {
            self.check_paid(client, job)?;
        }
        let request_hash = request_hash(job, proof);
        let new = NewJob {
            id: job.id.clone(),
            role: JobRole::Provider,
            model: job.model.clone(),
            request_hash: request_hash.clone(),
            // The input too: a dispute replays the job from it.
            request: Some(serde_json::json!({
                "params": job.params,
                "input": wire_input(&job.input),
            })),
            client_peer: Some(client.to_string()),
            provider_peer: Some(self.key.public().to_peer_id().to_string()),
        };
        match self.store.jobs().insert(&new) {
            Ok(_) => Ok(Admission::New),
            Err(StoreError::DuplicateJob(id)) => {
                let record = self
                    .store
                    .jobs()
                    .get(&id)?
                    .ok_or_else(|| ProviderError::UnknownJob(id.clone()))?;
                if record.role != JobRole::Provider
                    || record.request_hash != request_hash
                    || record.client_peer.as_deref() != Some(client.to_string().as_str())
                {
                    return Ok(Admission::Seen(Box::new(Err(ProviderError::IdReused(id)))));
                }
                Ok(Admission::Seen(Box::new(stored_outcome(&record))))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Walks an admitted job to `running`, runs it, and stores the outcome
    /// (`delivered` with the signed result, or `failed`).
    pub(super) fn execute(
        &self,
        client: PeerId,
        job: JobRequest,
        sink: Option<ProgressSink>,
        proof: Option<String>,
    ) -> Result<JobMessage, ProviderError> {
        let span = tracing::info_span!("job", id = %job.id, model = %job.model, role = "provider");
        let _in_job = span.entered();
        let jobs = self.store.jobs();
        let id = job.id.clone();
        let steps = [
            (
                JobState::Created,
                JobState::Quoted,
                "run requested".to_string(),
            ),
            (JobState::Quoted, JobState::Escrowed, "no escrow yet".into()),
            (
                JobState::Escrowed,
                JobState::Assigned,
                format!("client {client}"),
            ),
            (JobState::Assigned, JobState::Running, String::new()),
        ];
        let steps: Vec<(JobState, JobState, &str)> =
            steps.iter().map(|(f, t, d)| (*f, *t, d.as_str())).collect();
        let outcome = jobs
            .transition_path(&id, &steps, &JobUpdate::default())
            .map_err(ProviderError::from)
            .and_then(|()| {
                crate::jobs::crash_at("provider-running");
                self.running.fetch_add(1, Ordering::Relaxed);
                let started = std::time::Instant::now();
                let owner = client.to_string();
                let bound = self.output_bound(&job.id);
                let result = self.node.run_for(&owner, &job, sink, bound);
                self.running.fetch_sub(1, Ordering::Relaxed);
                if let Ok((r, _)) = &result {
                    let tokens = u64::from(r.usage.input_tokens) + u64::from(r.usage.output_tokens);
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.speed.record(&job.model, ms, tokens);
                    let (metrics, out) = (self.node.runtime().metrics(), r.usage.output_tokens);
                    metrics.job_tokens("provider", &job.model, out.into(), started.elapsed());
                }
                result.map_err(|e| match e {
                    crate::node::NodeError::Busy { .. } => ProviderError::Busy(e.to_string()),
                    e => ProviderError::Backend(e.to_string()),
                })
            })
            .and_then(|(result, trace)| {
                let root = self.traces.keep(&id, &trace);
                let output = Encoded::new(to_wire_output(result.output))?;
                let usage = Usage {
                    input_tokens: result.usage.input_tokens,
                    output_tokens: result.usage.output_tokens,
                };
                let proof = match &proof {
                    Some(system) => {
                        Some(Box::new(Encoded::new(self.prove(&job, &output, system)?)?))
                    }
                    None => None,
                };
                let signed = self.sign(client, &job, &output, usage, proof.as_deref(), root)?;
                let reply = JobMessage::new(JobBody::Result {
                    output,
                    signed,
                    proof,
                });
                let update = JobUpdate {
                    result: Some(stored_result(&reply)?),
                    ..JobUpdate::default()
                };
                jobs.transition_with(&id, JobState::Running, JobState::Delivered, "", &update)?;
                crate::jobs::crash_at("provider-delivered");
                Ok(reply)
            });
        if let Err(e) = &outcome {
            self.mark_failed(&id, e);
        }
        outcome
    }

    pub(super) fn mark_failed(&self, id: &str, error: &ProviderError) {
        let jobs = self.store.jobs();
        let state = match jobs.get(id) {
            Ok(Some(r)) => r.state,
            _ => return,
        };
        if !JobState::can_transition(state, JobState::Failed) {
            return;
        }
        let message = error.to_string();
        let update = JobUpdate {
            error: Some(message.clone()),
            ..JobUpdate::default()
        };
        if let Err(e) = jobs.transition_with(id, state, JobState::Failed, &message, &update) {
            tracing::error!(job = %id, error = %e, "cannot record job failure");
        }
    }

    pub(super) fn sign(
        &self,
        client: PeerId,
        job: &JobRequest,
        output: &Encoded<WireOutput>,
        usage: Usage,
        proof: Option<&Encoded<ProofAttachment>>,
        trace: TraceRoot,
    ) -> Result<SignedResult, ProviderError> {
        let provider = self.key.public().to_peer_id().to_string();
        let mut body =
            crate::verify::result_body(&self.node, job, output.hash(), usage, trace, provider)
                .ok_or_else(|| ProviderError::UnknownModel {
                    model: job.model.clone(),
                    available: self.node.models(),
                })?;
        body.client = Some(client.to_string());
        #[cfg(feature = "test-hooks")]
        if let Some(sha) = self
            .claimed_sha256
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            body.backend.sha256 = sha;
        }
        body.proof_hash = proof.map(|p| p.hash());
        if let Some(b) = &mut body.binds {
            b.quote = self.accepted_quote(&job.id);
        }
        Ok(SignedResult::sign(body, &self.key)?)
    }
}

/// What a known job's row says a repeated `Run` or a final `Poll` gets.
pub(super) fn stored_outcome(record: &JobRecord) -> Result<JobMessage, ProviderError> {
    if let Some(stored) = &record.result {
        return load_result(&record.id, stored);
    }
    if record.state == JobState::Failed {
        return Err(ProviderError::FailedEarlier {
            job_id: record.id.clone(),
            message: record.error.clone().unwrap_or_default(),
        });
    }
    Err(ProviderError::InProgress(record.id.clone()))
}

/// The `Result` reply as stored in the job row: its output hash, and the
/// reply itself as hex CBOR (exact, unlike JSON floats).
pub(super) fn stored_result(reply: &JobMessage) -> Result<serde_json::Value, ProviderError> {
    let (JobBody::Result { signed, .. }, Ok(cbor)) = (&reply.body, encode(reply)) else {
        return Err(ProviderError::CorruptResult(
            reply.job_id().unwrap_or_default().into(),
        ));
    };
    Ok(serde_json::json!({
        "output_hash": signed.payload.output_hash,
        "reply_cbor": hex::encode(cbor),
    }))
}

pub(super) fn load_result(
    job_id: &str,
    stored: &serde_json::Value,
) -> Result<JobMessage, ProviderError> {
    stored
        .get("reply_cbor")
        .and_then(|v| v.as_str())
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| decode::<JobMessage>(&b).ok())
        .ok_or_else(|| ProviderError::CorruptResult(job_id.into()))
}

/// The idempotency key of a run: model, input and params (and the proof
/// system, when one is asked for).
pub(super) fn request_hash(job: &JobRequest, proof: Option<&str>) -> String {
    let input = wire_input(&job.input);
    match proof {
        None => hash_value(&(&job.model, &input, &job.params)),
        Some(p) => hash_value(&(&job.model, &input, &job.params, p)),
    }
}
