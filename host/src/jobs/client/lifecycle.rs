//! The lifecycle loop ([`Inner::drive`]) and the store writes it makes:
//! one persisted step per turn, failover back to `quoted`.

use super::*;
use crate::p2p::AttestedOutcome;

impl Inner {
    pub(super) fn step_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.step_timeout_ms)
    }

    pub(super) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ClientError> + Send + 'static,
    ) -> Result<T, ClientError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ClientError::Worker(e.to_string()))?
    }

    pub(super) async fn record(&self, id: &str) -> Result<JobRecord, ClientError> {
        let id = id.to_string();
        self.db(move |s| s.jobs().get(&id)?.ok_or(ClientError::UnknownJob(id)))
            .await
    }

    /// Persists `from -> to`; see [`advance_path`](Self::advance_path).
    pub(super) async fn advance(
        &self,
        id: &str,
        from: JobState,
        to: JobState,
        detail: String,
        update: JobUpdate,
    ) -> Result<(), ClientError> {
        self.advance_path(id, vec![(from, to, detail)], update)
            .await
    }

    /// Persists `steps` (`(from, to, detail)`) in one transaction, with
    /// `update` set at the last. A conflict (the job moved on, e.g.
    /// cancelled) is not an error: the driver re-reads the row. A crash
    /// point (test hooks) on one of the states commits the steps up to it
    /// and aborts there, which is where a kill at that state leaves a job.
    pub(super) async fn advance_path(
        &self,
        id: &str,
        mut steps: Vec<(JobState, JobState, String)>,
        update: JobUpdate,
    ) -> Result<(), ClientError> {
        let id = id.to_string();
        if let Some(i) = steps
            .iter()
            .position(|(_, to, _)| crate::jobs::crash_requested(to.as_str()))
        {
            steps.truncate(i + 1);
        }
        self.db(move |s| {
            let path: Vec<(JobState, JobState, &str)> =
                steps.iter().map(|(f, t, d)| (*f, *t, d.as_str())).collect();
            match s.jobs().transition_path(&id, &path, &update) {
                Ok(()) => {
                    if let Some((_, to, _)) = path.last() {
                        crash_point(*to);
                    }
                    Ok(())
                }
                Err(StoreError::StateConflict { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    pub(super) async fn fail(
        &self,
        record: &JobRecord,
        message: String,
    ) -> Result<(), ClientError> {
        let update = JobUpdate {
            error: Some(message.clone()),
            ..JobUpdate::default()
        };
        self.advance(&record.id, record.state, JobState::Failed, message, update)
            .await
    }

    /// [`Inner::drive_steps`] in the job's `tracing` span (every log line
    /// of the job carries its id), recording a finished job's tokens into
    /// the node's metrics.
    pub(super) async fn drive(
        &self,
        id: &str,
        events: Option<&Events>,
    ) -> Result<JobOutcome, ClientError> {
        use tracing::Instrument;
        let model = self.record(id).await.map(|r| r.model).unwrap_or_default();
        let span = tracing::info_span!("job", id = %id, model = %model, role = "client");
        let started = Instant::now();
        let outcome = self.drive_steps(id, events).instrument(span).await;
        if let Ok(o) = &outcome {
            let tokens = u64::from(o.signed.payload.usage.output_tokens);
            let took = started.elapsed();
            self.metrics.job_tokens("client", &model, tokens, took);
        }
        outcome
    }

    /// The lifecycle loop: one persisted step per turn until the job is
    /// settled or failed.
    async fn drive_steps(
        &self,
        id: &str,
        events: Option<&Events>,
    ) -> Result<JobOutcome, ClientError> {
        let job_id = id.to_string();
        let mut excluded = self
            .db(move |s| Ok(failed_providers(&s.jobs().events(&job_id)?)))
            .await?;
        let mut slot: Option<InFlight> = None;
        loop {
            let rec = self.record(id).await?;
            let req = stored_request(&rec)?;
            let provider: Option<PeerId> =
                rec.provider_peer.as_deref().and_then(|p| p.parse().ok());
            if let (Some(p), None) = (provider, &slot) {
                if rec.state.is_active() && rec.state < JobState::Delivered {
                    slot = Some(InFlight::take(&self.in_flight, p));
                }
            }
            match rec.state {
                JobState::Created => match self.choose(&rec, &req, &excluded).await {
                    Ok(pick) => {
                        let update = JobUpdate {
                            provider_peer: Some(pick.provider.to_string()),
                            quote_id: Some(pick.quote.id.clone()),
                            bump_attempts: true,
                            ..JobUpdate::default()
                        };
                        let detail = format!(
                            "provider {} at {}",
                            pick.provider,
                            crate::payments::display(pick.quote.price, &pick.quote.currency)
                        );
                        self.advance(id, JobState::Created, JobState::Quoted, detail, update)
                            .await?;
                        slot = Some(pick.slot);
                    }
                    Err(e) => {
                        self.fail_and_refund(&rec, e.to_string()).await?;
                        return Err(e);
                    }
                },
                JobState::Quoted => {
                    let Some(provider) = provider.filter(|p| !excluded.contains(p)) else {
                        slot = None;
                        self.reassign(&rec, &req, &excluded, None, &mut slot)
                            .await?;
                        continue;
                    };
                    if let Some(tx) = events {
                        let price = self.price_of(&rec).await?;
                        let _ = tx.send(StreamEvent::Assigned {
                            provider,
                            price,
                            attempt: rec.attempts as u32,
                        });
                    }
                    self.refund_open(id, Some(rec.attempts)).await?;
                    let escrow = match self.hold(&rec, provider).await {
                        Ok(e) => e,
                        Err(StepError::Provider(reason)) => {
                            self.provider_failed(&rec, provider, &reason, events, &mut excluded)
                                .await?;
                            slot = None;
                            self.reassign(&rec, &req, &excluded, Some(&reason), &mut slot)
                                .await?;
                            continue;
                        }
                        Err(StepError::Fatal(e)) => {
                            self.fail_and_refund(&rec, e.to_string()).await?;
                            return Err(e);
                        }
                    };
                    let held = escrow.as_ref().map(|e| {
                        format!(
                            "escrow {} funded: {} via {}",
                            e.escrow_id,
                            crate::payments::display(e.amount.amount, &e.amount.currency),
                            e.adapter
                        )
                    });
                    let accept = JobMessage::new(JobBody::Accept {
                        job_id: wire_id(&rec),
                        quote_id: rec.quote_id.clone().unwrap_or_default(),
                        escrow,
                    });
                    // A prepaid offer: the provider's commitment, then the
                    // escrow released before the run (`exchange.rs`).
                    let reply = match self.exchange(provider, accept, self.step_timeout()).await {
                        Ok(JobBody::Committed { job_id, commitment }) => self
                            .prepay(&rec, provider, *commitment)
                            .await
                            .map(|()| JobBody::Ack { job_id }),
                        other => other,
                    };
                    match reply {
                        Ok(JobBody::Ack { .. }) => {
                            // escrowed -> assigned -> running commit together.
                            let run = format!("run sent as {}", wire_id(&rec));
                            self.advance_path(
                                id,
                                vec![
                                    (
                                        JobState::Quoted,
                                        JobState::Escrowed,
                                        held.clone().unwrap_or_else(|| {
                                            "no escrow: the quote is free".into()
                                        }),
                                    ),
                                    (
                                        JobState::Escrowed,
                                        JobState::Assigned,
                                        match &held {
                                            Some(_) => "escrow confirmed by the provider".into(),
                                            None => "accepted (unpaid)".into(),
                                        },
                                    ),
                                    (JobState::Assigned, JobState::Running, run),
                                ],
                                JobUpdate::default(),
                            )
                            .await?;
                        }
                        Ok(other) => {
                            let reason =
                                format!("unexpected reply to accept: {}", body_name(&other));
                            self.provider_failed(&rec, provider, &reason, events, &mut excluded)
                                .await?;
                            slot = None;
                            self.reassign(&rec, &req, &excluded, Some(&reason), &mut slot)
                                .await?;
                        }
                        Err(StepError::Provider(_)) if self.moved_on(&rec).await? => {}
                        Err(StepError::Provider(reason)) => {
                            self.provider_failed(&rec, provider, &reason, events, &mut excluded)
                                .await?;
                            slot = None;
                            self.reassign(&rec, &req, &excluded, Some(&reason), &mut slot)
                                .await?;
                        }
                        Err(StepError::Fatal(e)) => {
                            self.fail_and_refund(&rec, e.to_string()).await?;
                            return Err(e);
                        }
                    }
                }
                JobState::Escrowed => {
                    self.advance(
                        id,
                        JobState::Escrowed,
                        JobState::Assigned,
                        "escrow confirmed by the provider".into(),
                        JobUpdate::default(),
                    )
                    .await?;
                }
                JobState::Assigned => {
                    self.advance(
                        id,
                        JobState::Assigned,
                        JobState::Running,
                        format!("run sent as {}", wire_id(&rec)),
                        JobUpdate::default(),
                    )
                    .await?;
                }
                JobState::Running => {
                    let Some(provider) = provider else {
                        return Err(ClientError::Corrupt {
                            job_id: id.into(),
                            reason: "running without a provider".into(),
                        });
                    };
                    // A prepaid job that did not come: the arbiter holding the
                    // provider's stake gets it, or slashes the stake.
                    let ran = match self.run(&rec, &req, provider, events).await {
                        Err(
                            e @ (StepError::Provider(_)
                            | StepError::Fatal(ClientError::Rejected { .. })),
                        ) if !self.moved_on(&rec).await? => {
                            match self.claim_undelivered(&rec, provider).await? {
                                Some(Ok(result)) => Ok(result),
                                Some(Err(note)) => Err(super::exchange::with_note(e, &note)),
                                None => Err(e),
                            }
                        }
                        other => other,
                    };
                    match ran {
                        Ok((output, signed, proof)) => {
                            let expect = match &req.proof {
                                Some(system) => {
                                    self.advertised_proof(provider, &req.model, system).await
                                }
                                None => None,
                            };
                            let mut stored = stored_result(&output, &signed)?;
                            add_proof(&mut stored, proof.as_deref(), expect.as_ref()).map_err(
                                |e| ClientError::Corrupt {
                                    job_id: rec.id.clone(),
                                    reason: e.to_string(),
                                },
                            )?;
                            let update = JobUpdate {
                                result: Some(stored),
                                ..JobUpdate::default()
                            };
                            self.advance(
                                id,
                                JobState::Running,
                                JobState::Delivered,
                                format!("result from {provider}"),
                                update,
                            )
                            .await?;
                        }
                        Err(StepError::Provider(_)) if self.moved_on(&rec).await? => {}
                        Err(StepError::Provider(reason)) => {
                            self.provider_failed(&rec, provider, &reason, events, &mut excluded)
                                .await?;
                            slot = None;
                            let detail = format!("{PROVIDER_FAILED}{provider}: {reason}");
                            self.advance(
                                id,
                                JobState::Running,
                                JobState::Quoted,
                                detail,
                                JobUpdate::default(),
                            )
                            .await?;
                        }
                        Err(StepError::Fatal(e)) => {
                            self.fail_and_refund(&rec, e.to_string()).await?;
                            return Err(e);
                        }
                    }
                }
                // A replica of a verified job waits here, its payment held,
                // until the replicas are compared (`verify.rs`).
                JobState::Delivered if req.hold => return self.outcome(&rec).await,
                JobState::Delivered if req.proof.is_some() => {
                    slot = None;
                    let outcome = self.outcome(&rec).await?;
                    let checked = self.check_proof(&rec, &req, &outcome).await?;
                    match checked {
                        Ok(vk_id) => {
                            let mut stored = rec.result.clone().unwrap_or_default();
                            if let Some(p) = stored.get_mut("proof") {
                                p["verified_vk_id"] = serde_json::Value::String(vk_id.clone());
                            }
                            let system = req.proof.clone().unwrap_or_default();
                            self.attest(outcome.provider, id, AttestedOutcome::Verified, None)
                                .await;
                            self.advance(
                                id,
                                JobState::Delivered,
                                JobState::Verified,
                                format!("proof verified: {system}, vk {vk_id}"),
                                JobUpdate {
                                    result: Some(stored),
                                    ..JobUpdate::default()
                                },
                            )
                            .await?;
                        }
                        Err(refusal) => {
                            let reason = refusal.reason().to_string();
                            tracing::warn!(job = %id, provider = %outcome.provider, %reason, "proof rejected");
                            if let ProofRefusal::Invalid(_) = refusal {
                                let peer = outcome.provider.to_string();
                                self.db(move |s| Ok(s.peers().record_outcome(&peer, false)?))
                                    .await?;
                                // The signed result whose proof fails is the evidence.
                                let evidence = Some(outcome.signed.payload.hash());
                                self.attest(
                                    outcome.provider,
                                    id,
                                    AttestedOutcome::Cheated,
                                    evidence,
                                )
                                .await;
                            }
                            let e = ClientError::ProofRejected {
                                job_id: id.into(),
                                provider: outcome.provider.to_string(),
                                reason,
                            };
                            self.fail_and_refund(&rec, e.to_string()).await?;
                            return Err(e);
                        }
                    }
                }
                JobState::Delivered | JobState::Verified => {
                    slot = None;
                    let outcome = self.outcome(&rec).await?;
                    let released = self.release(&rec).await?;
                    let peer = outcome.provider.to_string();
                    self.db(move |s| Ok(s.peers().record_outcome(&peer, true)?))
                        .await?;
                    let verification = match (rec.state, &req.proof) {
                        (JobState::Verified, Some(_)) => "verification: proof checked",
                        (JobState::Verified, None) => "verification: replicas compared",
                        _ => "verification: none",
                    };
                    self.advance(
                        id,
                        rec.state,
                        JobState::Settled,
                        format!("{verification}; {}", released.summary),
                        JobUpdate::default(),
                    )
                    .await?;
                    self.send_receipt(&rec, &outcome, released.status);
                }
                JobState::Settled => return self.outcome(&rec).await,
                JobState::Failed | JobState::Refunded => {
                    return Err(ClientError::Failed {
                        job_id: id.into(),
                        message: rec.error.unwrap_or_else(|| "failed".into()),
                    })
                }
                other => {
                    return Err(ClientError::Corrupt {
                        job_id: id.into(),
                        reason: format!("a client job cannot be `{other}` yet"),
                    })
                }
            }
        }
    }

    /// The job left `rec.state` while a step ran (cancelled): the step's
    /// failure is not the provider's.
    pub(super) async fn moved_on(&self, rec: &JobRecord) -> Result<bool, ClientError> {
        Ok(self.record(&rec.id).await?.state != rec.state)
    }

    /// Records a provider failure for this job (event log via the caller's
    /// transition, reputation, stream event).
    pub(super) async fn provider_failed(
        &self,
        rec: &JobRecord,
        provider: PeerId,
        reason: &str,
        events: Option<&Events>,
        excluded: &mut HashSet<PeerId>,
    ) -> Result<(), ClientError> {
        tracing::warn!(job = %rec.id, %provider, reason, "provider failed; failing over");
        excluded.insert(provider);
        let peer = provider.to_string();
        self.db(move |s| Ok(s.peers().record_outcome(&peer, false)?))
            .await?;
        if let Some(tx) = events {
            let _ = tx.send(StreamEvent::Failover {
                from: provider,
                reason: reason.to_string(),
            });
        }
        Ok(())
    }

    /// Picks a new provider for a job in `quoted` (or fails the job).
    pub(super) async fn reassign(
        &self,
        rec: &JobRecord,
        req: &StoredRequest,
        excluded: &HashSet<PeerId>,
        failure: Option<&str>,
        slot: &mut Option<InFlight>,
    ) -> Result<(), ClientError> {
        match self.choose(rec, req, excluded).await {
            Ok(pick) => {
                let (id, peer, quote) = (
                    rec.id.clone(),
                    pick.provider.to_string(),
                    pick.quote.id.clone(),
                );
                let failed: Vec<String> = excluded.iter().map(|p| p.to_string()).collect();
                let detail = match (rec.provider_peer.as_deref(), failure) {
                    (Some(old), Some(reason)) if failed.iter().any(|f| f == old) => {
                        format!("{PROVIDER_FAILED}{old}: {reason}; reassigned to {peer}")
                    }
                    (Some(old), None) if failed.iter().any(|f| f == old) => {
                        format!("{PROVIDER_FAILED}{old}: reassigned to {peer}")
                    }
                    _ => format!("reassigned to {peer}"),
                };
                self.db(move |s| {
                    match s
                        .jobs()
                        .reassign(&id, JobState::Quoted, &peer, &quote, &detail)
                    {
                        Ok(()) | Err(StoreError::StateConflict { .. }) => Ok(()),
                        Err(e) => Err(e.into()),
                    }
                })
                .await?;
                *slot = Some(pick.slot);
                Ok(())
            }
            Err(e) => {
                let e = self
                    .explain_exhausted(rec, req, excluded, failure, e)
                    .await?;
                self.fail_and_refund(rec, e.to_string()).await?;
                Err(e)
            }
        }
    }

    /// When no provider is left because every one failed this job, says
    /// so with each one's reason (from the job's events, plus the failure
    /// at hand) instead of "no provider serves the model".
    async fn explain_exhausted(
        &self,
        rec: &JobRecord,
        req: &StoredRequest,
        excluded: &HashSet<PeerId>,
        failure: Option<&str>,
        e: ClientError,
    ) -> Result<ClientError, ClientError> {
        if excluded.is_empty() || !matches!(e, ClientError::NoProviders { .. }) {
            return Ok(e);
        }
        let job = rec.id.clone();
        let events = self.db(move |s| Ok(s.jobs().events(&job)?)).await?;
        let mut failures: Vec<String> = provider_failures(&events)
            .map(|f| {
                match (
                    f.split_once("; reassigned to "),
                    f.split_once(": reassigned to "),
                ) {
                    (Some((failure, _)), _) => failure.to_string(),
                    (None, Some((peer, _))) => format!("{peer}: failed"),
                    (None, None) => f.to_string(),
                }
            })
            .collect();
        if let (Some(peer), Some(reason)) = (rec.provider_peer.as_deref(), failure) {
            failures.push(format!("{peer}: {reason}"));
        }
        // A provider excluded without a recorded reason (a dead process's
        // earlier run) is still named.
        for p in excluded {
            let p = p.to_string();
            if !failures.iter().any(|f| f.starts_with(&p)) {
                failures.push(format!("{p}: failed earlier"));
            }
        }
        Ok(ClientError::ProvidersFailed {
            model: req.model.clone(),
            failures,
        })
    }
}
