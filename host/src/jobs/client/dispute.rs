//! Asking a referee to settle a disagreement between two results of one
//! job over `/infernet/verify/1`, and checking the evidence it returns.

use super::{ClientError, JobClient};
use crate::p2p::protocol::SignedResult;
use crate::p2p::PeerId;
use crate::verify::evidence::{Evidence, JobSpec};

impl JobClient {
    /// Sends both results of `job` to `referee`, which bisects the two
    /// providers' traces and rules; the evidence it returns is checked here
    /// before it is believed.
    pub async fn dispute(
        &self,
        referee: PeerId,
        job: JobSpec,
        a: SignedResult,
        b: SignedResult,
    ) -> Result<Evidence, ClientError> {
        let _ = (referee, job, a, b);
        Err(ClientError::Verification(
            "disputes over /infernet/verify/1 are being wired in".into(),
        ))
    }
}
