//! A replicated stage's disagreement, settled. A session step cannot be
//! replayed by a referee (its cache came from earlier steps), so both
//! providers run the stage's whole session so far once more as one
//! self-contained job: a fresh session at `pos` 0, ended after it. Those
//! two signed results are an ordinary job's, and a referee rules on them
//! as on any replicas' ([`JobClient::dispute`]); the provider it rules
//! cheated gets a signed `cheated` attestation naming the evidence and a
//! reputation failure, and leaves the stage. When the two self-contained
//! runs agree instead, the provider whose session step does not match its
//! own run is the liar: it leaves the stage with a failure in this
//! client's peer table, and nothing is attested. A third party could not
//! check it: a signed step does not bind the session's earlier inputs, so
//! a client splicing two lives of one session id could frame an honest
//! provider (binding a digest chain of the session's inputs would fix it).

use super::step::{concat, keep_last_rows, known_rows, outputs_agree, Run};
use super::{session_id, ClientError, JobOutcome, Stage};
use crate::jobs::client::verify::{agree, evidence_file_hash};
use crate::p2p::protocol::{WireInput, WireOutput};
use crate::p2p::verification::JobSpec;
use crate::p2p::AttestedOutcome;
use libp2p::PeerId;
use std::path::PathBuf;

/// A replicated stage's disagreement and how it was settled.
#[derive(Debug, Clone)]
pub struct StageDispute {
    /// The stage's span id.
    pub span_id: String,
    /// The generation step (0: the prompt's prefill).
    pub step: u32,
    /// The provider found lying; the stage went on without it.
    pub cheat: PeerId,
    /// The referee that ruled and its evidence (`infernet verify
    /// evidence`); `None` when the two self-contained runs agreed and the
    /// cheat's session step contradicted its own run.
    pub ruling: Option<(PeerId, PathBuf)>,
}

/// Which of a replicated stage's two providers lied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Liar {
    Primary,
    Replica,
}

impl Run<'_> {
    /// Settles a disagreement at this step between `stage` (output `ours`)
    /// and its `replica` (`theirs`): names the liar and records it, or
    /// says why it cannot be settled (the generation then stops).
    pub(super) async fn settle(
        &mut self,
        stage: &mut Stage,
        replica: &mut Stage,
        (ours, theirs): (&WireOutput, &WireOutput),
        head: bool,
    ) -> Result<Liar, ClientError> {
        let step = self.step;
        let (a, b) = (stage.hop.provider, replica.hop.provider);
        let span = stage.hop.span_id.clone();
        let unsettled = |why: String| {
            ClientError::Verification(format!(
                "stage {span} disagrees with its replica at step {step}: provider {a} and provider {b} returned different outputs, and {why}; the generation is stopped"
            ))
        };
        // The session so far as one input (this step's included).
        let Some(all) = concat(&stage.sent) else {
            return Err(unsettled(
                "a session begun with a text prompt cannot be re-run as one job".into(),
            ));
        };
        let rows = stage.sent.last().map_or(0, known_rows);
        let session = session_id();
        let mut runs = Vec::new();
        for s in [&mut *stage, &mut *replica] {
            match self.self_contained(s, &session, all.clone()).await {
                Ok(o) => runs.push(o),
                Err(e) => return Err(unsettled(format!("re-running its session failed: {e}"))),
            }
        }
        if agree(&runs[0].signed, &runs[1].signed) {
            // The same self-contained run: the session step that does not
            // match it is the lie.
            let mut run = runs[0].output.clone();
            if let (WireOutput::Logits(t), false) = (&mut run, head) {
                keep_last_rows(t, rows);
            }
            let liar =
                match (outputs_agree(ours, &run), outputs_agree(theirs, &run)) {
                    (false, true) => Liar::Primary,
                    (true, false) => Liar::Replica,
                    _ => return Err(unsettled(
                        "their self-contained runs agree with each other but not with either step"
                            .into(),
                    )),
                };
            let cheat = if liar == Liar::Primary { a } else { b };
            tracing::warn!(stage = %span, step, %cheat, "a session step contradicts its provider's own self-contained run");
            self.mark_down(cheat).await?;
            self.disputes.push(super::StageDispute {
                span_id: span.clone(),
                step,
                cheat,
                ruling: None,
            });
            return Ok(liar);
        }
        // Different self-contained runs: a referee rules, as on replicas.
        let Some(referee) = self.client.referee_for(&[a, b]) else {
            return Err(unsettled(
                "no referee is configured that is neither of them: configure `[verify] referees` with the peer id of a node started with `[verify] referee = true` serving this span".into(),
            ));
        };
        let params =
            super::super::stored_request(&self.client.inner.record(&runs[0].job_id).await?)?.params;
        let spec = JobSpec {
            model: span.clone(),
            input: all,
            params,
        };
        let (evidence, slashes) = self
            .client
            .dispute(
                referee,
                spec,
                runs[0].signed.clone(),
                runs[1].signed.clone(),
            )
            .await
            .map_err(|e| unsettled(format!("the dispute failed: {e}")))?;
        let path = self
            .client
            .save_evidence(&runs[0].job_id, &evidence)
            .await?;
        let liar = match evidence.ruling.cheated.as_slice() {
            [one] if *one == a.to_string() => Liar::Primary,
            [one] if *one == b.to_string() => Liar::Replica,
            [] => {
                return Err(unsettled(format!(
                    "referee {referee} ruled their self-contained runs differ by float noise (evidence {})",
                    path.display()
                )))
            }
            _ => {
                return Err(unsettled(format!(
                    "referee {referee} ruled both cheated (evidence {})",
                    path.display()
                )))
            }
        };
        let hash = evidence_file_hash(&path).await.ok_or_else(|| {
            ClientError::Verification(format!("cannot read back {}", path.display()))
        })?;
        for (run, lied) in runs
            .iter()
            .zip([liar == Liar::Primary, liar == Liar::Replica])
        {
            let (outcome, evidence) = match lied {
                true => (AttestedOutcome::Cheated, Some(hash.clone())),
                false => (AttestedOutcome::Verified, None),
            };
            self.client
                .inner
                .attest(run.provider, &run.job_id, outcome, evidence)
                .await;
        }
        let cheat = if liar == Liar::Primary { a } else { b };
        self.mark_down(cheat).await?;
        tracing::warn!(stage = %span, step, %cheat, %referee, evidence = %path.display(), slashes = slashes.len(), "a referee ruled a stage's provider cheated");
        self.disputes.push(super::StageDispute {
            span_id: span,
            step,
            cheat,
            ruling: Some((referee, path)),
        });
        Ok(liar)
    }

    /// `stage`'s span run on its provider over `input` as one job of its
    /// own (session `session` from `pos` 0, ended after it), paid within
    /// the budget like a step.
    async fn self_contained(
        &mut self,
        stage: &mut Stage,
        session: &str,
        input: WireInput,
    ) -> Result<JobOutcome, ClientError> {
        let mut opts = self.step_options(stage, true);
        opts.params = vec![
            ("session".into(), session.into()),
            ("pos".into(), "0".into()),
            ("session_end".into(), "true".into()),
        ];
        self.check_budget(&opts)?;
        let outcome = self.client.submit(&stage.hop.span_id, input, &opts).await?;
        self.paid(stage, &outcome);
        Ok(outcome)
    }

    /// One failure of `cheat` in this client's peer table (`infernet peers`).
    async fn mark_down(&self, cheat: PeerId) -> Result<(), ClientError> {
        let peer = cheat.to_string();
        self.client
            .inner
            .db(move |s| Ok(s.peers().record_outcome(&peer, false)?))
            .await
            .map(|_| ())
    }
}
