//! One network step each: choosing a provider (discovery, quotes,
//! ranking), the bounded request/response, the run with streaming or
//! polling, the stored outcome, and the receipt.

use super::*;
use crate::verify::reputation;

impl Inner {
    /// Finds providers, asks the best-ranked for quotes, and picks one
    /// within budget.
    pub(super) async fn choose(
        &self,
        rec: &JobRecord,
        req: &StoredRequest,
        excluded: &HashSet<PeerId>,
    ) -> Result<Pick, ClientError> {
        if rec.attempts >= i64::from(self.cfg.max_attempts) {
            return Err(ClientError::Failed {
                job_id: rec.id.clone(),
                message: format!(
                    "gave up after {} providers (client.max_attempts); last: {}",
                    rec.attempts,
                    rec.error
                        .clone()
                        .unwrap_or_else(|| "see `infernet jobs --json`".into())
                ),
            });
        }
        // Providers that failed this job, and those it must not use (the
        // other replicas' providers), which are no failure of theirs.
        let mut avoid = excluded.clone();
        avoid.extend(req.excluded());
        let providers = self
            .discover(&req.model, req.proof.as_deref(), &avoid, &req.only)
            .await?;
        // Reputation from verified outcomes only (`verify::reputation`):
        // the decayed score's lower bound; a provider proven to cheat is
        // not asked while any other is available.
        let scores = self.scores(&providers).await?;
        let reputations: Vec<f64> = scores.iter().map(|s| s.lower).collect();
        let bar = scores.iter().any(|s| !s.barred);
        let candidates: Vec<Candidate> = providers
            .iter()
            .enumerate()
            .filter(|(i, _)| !(bar && scores[*i].barred))
            .map(|(i, p)| Candidate {
                index: i,
                price: p.advert.as_ref().map_or(0, |a| a.quote.amount),
                reputation: reputations[i],
                latency: p.latency,
                in_flight: self.load(&p.peer_id),
                capacity: p.advert.as_ref().map_or(0, |a| a.capacity),
            })
            .collect();
        let mut asked: Vec<usize> = rank(&candidates, &self.cfg.weights)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        // The preferred provider (a batch shard's) is asked first.
        let preferred = |i: &usize| {
            req.prefer
                .as_deref()
                .is_some_and(|p| providers[*i].peer_id.to_string() == p)
        };
        if let Some(at) = asked.iter().position(preferred) {
            let i = asked.remove(at);
            asked.insert(0, i);
        }
        asked.truncate(self.cfg.quote_fanout as usize);
        let input_tokens = estimate_tokens(&req.input);
        let quote_timeout = Duration::from_millis(self.cfg.quote_timeout_ms);
        let requests = asked.iter().map(|&i| {
            let peer = providers[i].peer_id;
            let msg = JobMessage::new(JobBody::QuoteRequest {
                job_id: rec.id.clone(),
                model: req.model.clone(),
                input_tokens,
                max_output_tokens: req.max_output_tokens,
                params: req.params.clone(),
                input: Some(req.input.clone()),
            });
            async move { (i, self.exchange(peer, msg, quote_timeout).await) }
        });
        let replies = futures::future::join_all(requests).await;
        let mut errors = Vec::new();
        let mut quotes: Vec<(usize, QuoteRecord)> = Vec::new();
        let mut terms: Vec<(String, String)> = Vec::new();
        for (i, reply) in replies {
            let peer = providers[i].peer_id;
            match reply {
                Ok(JobBody::QuoteOffer { price, pay_to, .. })
                    if !self.can_pay(&peer, &price, &pay_to) =>
                {
                    errors.push(format!(
                        "{peer}: {}",
                        self.cannot_pay_reason(&peer, &price, &pay_to)
                    ))
                }
                Ok(JobBody::QuoteOffer {
                    quote_id,
                    price,
                    breakdown,
                    valid_until_ms,
                    pay_to,
                    ..
                }) => {
                    terms.push((
                        quote_id.clone(),
                        serde_json::to_string(&pay_to).unwrap_or_else(|_| "[]".into()),
                    ));
                    quotes.push((
                        i,
                        QuoteRecord {
                            id: quote_id,
                            job_id: rec.id.clone(),
                            provider_peer: peer.to_string(),
                            model: req.model.clone(),
                            price: price.amount,
                            currency: price.currency,
                            breakdown,
                            expires_at_ms: i64::try_from(valid_until_ms).unwrap_or(i64::MAX),
                            accepted: false,
                            created_at_ms: crate::store::now_ms(),
                        },
                    ))
                }
                Ok(other) => errors.push(format!("{peer}: unexpected reply {}", body_name(&other))),
                Err(StepError::Provider(reason)) => errors.push(format!("{peer}: {reason}")),
                Err(StepError::Fatal(e)) => return Err(e),
            }
        }
        let records: Vec<QuoteRecord> = quotes.iter().map(|q| q.1.clone()).collect();
        self.db(move |s| {
            for q in &records {
                if let Err(e) = s.quotes().insert(q) {
                    tracing::debug!(quote = %q.id, error = %e, "quote not recorded");
                }
            }
            for (id, json) in &terms {
                s.quotes().set_pay_to(id, json)?;
            }
            Ok(())
        })
        .await?;
        if quotes.is_empty() {
            return Err(ClientError::NoQuotes {
                model: req.model.clone(),
                errors,
            });
        }
        let cheapest = quotes.iter().min_by_key(|q| q.1.price).map(|(i, q)| {
            Box::new((
                Money {
                    amount: q.price,
                    currency: q.currency.clone(),
                },
                providers[*i].peer_id,
            ))
        });
        quotes.retain(|(_, q)| {
            req.max_budget.is_none_or(|b| q.price <= b)
                && req.currency.as_ref().is_none_or(|c| *c == q.currency)
        });
        if quotes.is_empty() {
            let budget = match (&req.max_budget, &req.currency) {
                (Some(b), Some(c)) => crate::payments::display(*b, c),
                // Rows stored before a budget always named its currency.
                (Some(b), None) => format!("{b} (minor units)"),
                (None, Some(c)) => format!("any amount in {c}"),
                (None, None) => "none".into(),
            };
            return Err(ClientError::OverBudget { budget, cheapest });
        }
        // Rank again on real prices and current load; take the slot under
        // the lock so concurrent jobs see each other's choices.
        let (i, quote) = {
            let mut table = self
                .in_flight
                .lock()
                .map_err(|_| ClientError::Worker("in-flight table poisoned".into()))?;
            let final_candidates: Vec<Candidate> = quotes
                .iter()
                .enumerate()
                .map(|(k, (i, q))| Candidate {
                    index: k,
                    price: q.price,
                    reputation: reputations[*i],
                    latency: providers[*i].latency,
                    in_flight: table.get(&providers[*i].peer_id).copied().unwrap_or(0),
                    capacity: providers[*i].advert.as_ref().map_or(0, |a| a.capacity),
                })
                .collect();
            let best = match quotes.iter().position(|(i, _)| preferred(i)) {
                Some(k) => k,
                None => rank(&final_candidates, &self.cfg.weights)[0].0,
            };
            let picked = quotes.swap_remove(best);
            *table.entry(providers[picked.0].peer_id).or_default() += 1;
            picked
        };
        let provider = providers[i].peer_id;
        let slot = InFlight {
            peer: provider,
            table: self.in_flight.clone(),
        };
        let (job, qid) = (rec.id.clone(), quote.id.clone());
        self.db(move |s| Ok(s.quotes().accept(&job, &qid)?)).await?;
        Ok(Pick {
            provider,
            quote,
            slot,
        })
    }

    pub(super) fn load(&self, peer: &PeerId) -> u32 {
        self.in_flight
            .lock()
            .ok()
            .and_then(|t| t.get(peer).copied())
            .unwrap_or(0)
    }

    /// Each provider's reputation from verified outcomes, in order
    /// (`verify::reputation`: the decayed score's lower bound, and whether
    /// it is barred as a proven cheat).
    pub(super) async fn scores(
        &self,
        providers: &[ProviderInfo],
    ) -> Result<Vec<reputation::Score>, ClientError> {
        let peers: Vec<String> = providers.iter().map(|p| p.peer_id.to_string()).collect();
        let (me, params) = (
            self.net.peer_id().to_string(),
            reputation::Params::from_config(&self.cfg.reputation),
        );
        self.db(move |s| {
            Ok(reputation::scores(
                s,
                &me,
                &peers,
                &params,
                crate::store::now_ms(),
            )?)
        })
        .await
    }

    /// Providers of `model` not in `excluded`, waiting up to the discovery
    /// timeout for at least one.
    pub(super) async fn discover(
        &self,
        model: &str,
        proof: Option<&str>,
        excluded: &HashSet<PeerId>,
        only: &[String],
    ) -> Result<Vec<ProviderInfo>, ClientError> {
        // A verifier gets no ordinary job from a client that knows it is
        // one (its advert says so, or it is one of this client's
        // verifiers: a peer found before its advert is known by id only);
        // a spot check re-run by a verifier goes only to those listed.
        let pool = |p: &ProviderInfo| {
            let id = p.peer_id.to_string();
            match only.is_empty() {
                true => {
                    !(p.advert.as_ref().is_some_and(|a| a.verifier)
                        || self.verify.verifiers.contains(&id))
                }
                false => only.contains(&id),
            }
        };
        // A prover of the model, under a key this client's pin accepts.
        let pin = self.cfg.proof_pins.get(model);
        let proves = |p: &ProviderInfo| {
            proof.is_none_or(|system| {
                p.advert.as_ref().is_some_and(|a| {
                    a.proof_for(model, system).is_some_and(|pa| {
                        pin.is_none_or(|pin| super::check_pin(model, pa, pin).is_ok())
                    })
                })
            })
        };
        let usable = |all: &[ProviderInfo]| -> Vec<ProviderInfo> {
            all.iter()
                .filter(|p| !excluded.contains(&p.peer_id) && pool(p) && proves(p))
                .cloned()
                .collect()
        };
        let cached = self.providers.lock().ok().and_then(|c| {
            c.get(model)
                .filter(|(at, _)| at.elapsed() < PROVIDER_CACHE_TTL)
                .map(|(_, all)| usable(all))
        });
        if let Some(found) = cached.filter(|f| !f.is_empty()) {
            return Ok(found);
        }
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.cfg.discovery_timeout_ms);
        loop {
            let all = self
                .net
                .providers_of(model)
                .await
                .map_err(ClientError::Network)?;
            let found = usable(&all);
            if !found.is_empty() {
                if let Ok(mut c) = self.providers.lock() {
                    c.insert(model.to_string(), (Instant::now(), all));
                }
                return Ok(found);
            }
            if Instant::now() >= deadline {
                if let (Some(system), Some(pin)) = (proof, pin) {
                    let refusals: Vec<String> = all
                        .iter()
                        .filter(|p| !excluded.contains(&p.peer_id))
                        .filter_map(|p| {
                            let pa = p.advert.as_ref()?.proof_for(model, system)?;
                            let why = super::check_pin(model, pa, pin).err()?;
                            Some(format!("provider {}: {why}", p.peer_id))
                        })
                        .collect();
                    if !refusals.is_empty() {
                        return Err(ClientError::UntrustedProvers {
                            model: model.into(),
                            refusals,
                        });
                    }
                }
                if let (Some(system), false) = (proof, all.is_empty()) {
                    return Err(ClientError::NoProvers {
                        model: model.into(),
                        system: system.into(),
                        waited_ms: started.elapsed().as_millis() as u64,
                        others: all.len(),
                    });
                }
                let mut available: Vec<String> = self
                    .net
                    .adverts()
                    .await
                    .map_err(ClientError::Network)?
                    .into_iter()
                    .flat_map(|a| a.models)
                    .collect();
                available.sort();
                available.dedup();
                return Err(ClientError::NoProviders {
                    model: model.into(),
                    waited_ms: started.elapsed().as_millis() as u64,
                    available,
                });
            }
            tokio::time::sleep(DISCOVERY_RETRY).await;
        }
    }

    /// One request/response with a bound; sorts failures by fault.
    pub(super) async fn exchange(
        &self,
        peer: PeerId,
        msg: JobMessage,
        bound: Duration,
    ) -> Result<JobBody, StepError> {
        match tokio::time::timeout(bound, self.net.send_job(peer, msg)).await {
            Err(_) => Err(StepError::Provider(format!(
                "no reply within {} ms",
                bound.as_millis()
            ))),
            Ok(Err(NetworkError::Closed)) => {
                Err(StepError::Fatal(ClientError::Network(NetworkError::Closed)))
            }
            Ok(Err(e)) => Err(StepError::Provider(e.to_string())),
            Ok(Ok(reply)) => match reply.body {
                JobBody::Error(e) => Err(classify(peer, e)),
                body => Ok(body),
            },
        }
    }

    /// Sends `Run` and waits for the signed result, streaming or polling.
    pub(super) async fn run(
        &self,
        rec: &JobRecord,
        req: &StoredRequest,
        provider: PeerId,
        events: Option<&Events>,
    ) -> Result<
        (
            Encoded<WireOutput>,
            SignedResult,
            Option<Box<Encoded<ProofAttachment>>>,
        ),
        StepError,
    > {
        let job_id = wire_id(rec);
        let deadline = Instant::now() + Duration::from_millis(self.cfg.run_timeout_ms);
        let msg = JobMessage::new(JobBody::Run {
            job_id: job_id.clone(),
            model: req.model.clone(),
            input: req.input.clone(),
            params: req.params.clone(),
            stream: events.is_some(),
            proof: req.proof.clone(),
        });
        let left = deadline.saturating_duration_since(Instant::now());
        let mut after_seq = 0;
        let mut reply = self.exchange(provider, msg.clone(), left).await;
        let mut backoff = BUSY_POLL;
        loop {
            // The provider is at its in-flight bound or capacity: the Run
            // was not taken. Send it again (same wire id: never run twice).
            if let Err(StepError::Provider(m)) = &reply {
                if m.starts_with(BUSY_PREFIX) && m.contains(RETRY_LATER) {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(StepError::Provider(format!(
                            "provider stayed busy for client.run_timeout_ms = {}",
                            self.cfg.run_timeout_ms
                        )));
                    }
                    reply = self.exchange(provider, msg.clone(), left).await;
                    continue;
                }
            }
            match reply {
                Ok(JobBody::Result {
                    output,
                    signed,
                    proof,
                }) => {
                    let p = &signed.payload;
                    if p.job_id != job_id
                        || p.model_id != req.model
                        || p.client.as_deref() != Some(&self.net.peer_id().to_string())
                    {
                        return Err(StepError::Provider(format!(
                            "signed result names job {} / model {} / client {:?}, not this job",
                            p.job_id, p.model_id, p.client
                        )));
                    }
                    return Ok((output, signed, proof));
                }
                Ok(JobBody::Progress { seq, chunks, .. }) => {
                    if let Some(tx) = events {
                        for c in chunks {
                            let _ = tx.send(StreamEvent::Token(c));
                        }
                    }
                    after_seq = seq;
                }
                // Ack: a streamed run started. Busy: it was already running
                // (a resumed job). Either way, poll.
                Ok(JobBody::Ack { .. }) => {}
                Err(StepError::Provider(ref m)) if m.starts_with(BUSY_PREFIX) => {
                    tokio::time::sleep(BUSY_POLL).await;
                }
                Ok(other) => {
                    return Err(StepError::Provider(format!(
                        "unexpected reply to run: {}",
                        body_name(&other)
                    )))
                }
                Err(e) => return Err(e),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StepError::Provider(format!(
                    "no result within client.run_timeout_ms = {}",
                    self.cfg.run_timeout_ms
                )));
            }
            let poll = JobMessage::new(JobBody::Poll {
                job_id: job_id.clone(),
                after_seq,
            });
            reply = self
                .exchange(
                    provider,
                    poll,
                    left.min(self.step_timeout() + Duration::from_secs(1)),
                )
                .await;
        }
    }

    pub(super) async fn price_of(&self, rec: &JobRecord) -> Result<Money, ClientError> {
        let qid = rec.quote_id.clone().unwrap_or_default();
        let q = self.db(move |s| Ok(s.quotes().get(&qid)?)).await?;
        Ok(q.map(|q| Money {
            amount: q.price,
            currency: q.currency,
        })
        .unwrap_or(Money {
            amount: 0,
            currency: String::new(),
        }))
    }

    pub(super) async fn outcome(&self, rec: &JobRecord) -> Result<JobOutcome, ClientError> {
        let corrupt = |reason: &str| ClientError::Corrupt {
            job_id: rec.id.clone(),
            reason: reason.into(),
        };
        let stored = rec
            .result
            .as_ref()
            .ok_or_else(|| corrupt("no stored result"))?;
        let field = |name: &str| {
            stored
                .get(name)
                .and_then(|v| v.as_str())
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| corrupt(&format!("result field `{name}` missing")))
        };
        let output = Encoded::<WireOutput>::from_bytes(field("output_cbor")?)
            .map_err(|e| corrupt(&e.to_string()))?;
        let signed: SignedResult =
            decode(&field("signed_cbor")?).map_err(|e| corrupt(&e.to_string()))?;
        let provider = signed
            .verify_output(&output)
            .map_err(|e| corrupt(&e.to_string()))?;
        let proof = match stored
            .get("proof")
            .and_then(|p| p.get("attachment_cbor"))
            .and_then(|v| v.as_str())
        {
            Some(h) => Some(
                hex::decode(h)
                    .ok()
                    .and_then(|b| Encoded::<ProofAttachment>::from_bytes(b).ok())
                    .ok_or_else(|| corrupt("stored proof unreadable"))?,
            ),
            None => None,
        };
        Ok(JobOutcome {
            job_id: rec.id.clone(),
            output: output.into_value(),
            signed,
            provider,
            price: self.price_of(rec).await?,
            attempts: rec.attempts.max(0) as u32,
            proof,
            verification: None,
        })
    }

    /// Tells the provider the result was accepted, in the background. Best
    /// effort: a lost receipt costs the provider a record, not the client
    /// its result.
    pub(super) fn send_receipt(
        &self,
        rec: &JobRecord,
        outcome: &JobOutcome,
        escrow_status: Option<String>,
    ) {
        let body = ReceiptBody {
            job_id: outcome.signed.payload.job_id.clone(),
            output_hash: outcome.signed.payload.output_hash.clone(),
            client: self.net.peer_id().to_string(),
            provider: outcome.provider.to_string(),
            accepted: true,
            timestamp_ms: now_ms(),
            escrow_status,
        };
        let receipt = match SignedReceipt::sign(body, &self.key) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job = %rec.id, error = %e, "cannot sign receipt");
                return;
            }
        };
        let msg = JobMessage::new(JobBody::Receipt(receipt));
        let (net, peer, bound, job) = (
            self.net.clone(),
            outcome.provider,
            self.step_timeout(),
            rec.id.clone(),
        );
        tokio::spawn(async move {
            match tokio::time::timeout(bound, net.send_job(peer, msg)).await {
                Ok(Ok(reply)) if matches!(reply.body, JobBody::Ack { .. }) => {}
                other => {
                    tracing::debug!(%job, reply = ?other.map(|r| r.map(|m| m.body)), "receipt not acknowledged")
                }
            }
        });
    }
}
