//! The swarm's side of the event loop: connections, identify/ping/mDNS,
//! Kademlia provider queries, gossiped adverts and attestations, and
//! `/infernet/job/2` requests and responses.

use super::EventLoop;
use crate::p2p::advert::{verify_advert_bytes, AdvertRejection};
use crate::p2p::behaviour::{BehaviourEvent, KAD_PROTOCOL};
use crate::p2p::codec::Frame;
use crate::p2p::handle::NetworkEvent;
use crate::p2p::protocol::{
    now_ms, ErrorCode, JobBody, JobMessage, KNOWN_PROTOCOL_VERSIONS, PROTOCOL_VERSION,
};
use crate::p2p::NetworkError;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{gossipsub, identify, kad, mdns, ping, Multiaddr, PeerId, StreamProtocol};

impl EventLoop {
    pub(super) fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address.clone());
                }
                self.emit(NetworkEvent::Listening(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if let Some((_, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                if endpoint.is_dialer() {
                    self.remember(peer_id, endpoint.get_remote_address().clone());
                }
                if num_established.get() == 1 {
                    tracing::debug!(%peer_id, "connected");
                    self.emit(NetworkEvent::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::debug!(%peer_id, cause = ?cause, "disconnected");
                self.latency.remove(&peer_id);
                self.gossip_rate.remove(&peer_id);
                self.emit(NetworkEvent::PeerDisconnected(peer_id));
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let Some((addr, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetworkError::Dial {
                        addr: addr.to_string(),
                        reason: error.to_string(),
                    }));
                } else {
                    tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection failed");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                let kad_proto = StreamProtocol::new(KAD_PROTOCOL);
                let speaks_kad = info.protocols.contains(&kad_proto);
                for addr in &info.listen_addrs {
                    if speaks_kad {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                    self.remember(peer_id, addr.clone());
                }
                self.emit(NetworkEvent::PeerIdentified {
                    peer: peer_id,
                    listen_addrs: info.listen_addrs,
                    agent: info.agent_version,
                });
            }
            BehaviourEvent::Identify(_) => {}
            BehaviourEvent::Limits(never) => match never {},
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                self.latency.insert(peer, rtt);
                self.emit(NetworkEvent::PeerLatency { peer, rtt });
            }
            BehaviourEvent::Ping(_) => {}
            BehaviourEvent::Kad(ev) => self.on_kad_event(ev),
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip_message(propagation_source, message_id, message),
            BehaviourEvent::Gossipsub(_) => {}
            BehaviourEvent::Job(ev) => self.on_job_event(false, ev),
            BehaviourEvent::Verify(ev) => self.on_job_event(true, ev),
            BehaviourEvent::Mdns(mdns::Event::Discovered(list)) => {
                for (peer, addr) in list {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    self.remember(peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(vec![addr])
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        let _ = self.swarm.dial(opts);
                    }
                }
            }
            BehaviourEvent::Mdns(_) => {}
        }
    }

    fn on_kad_event(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::RoutingUpdated {
                peer,
                is_new_peer,
                addresses,
                ..
            } => {
                for a in addresses.iter() {
                    self.remember(peer, a.clone());
                }
                if is_new_peer {
                    self.provide_dirty = true;
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(res),
                step,
                ..
            } => {
                let Some(q) = self.pending_providers.get_mut(&id) else {
                    return;
                };
                let done = match res {
                    Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                        q.found.extend(providers);
                        step.last
                    }
                    Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => true,
                    Err(e) => {
                        tracing::debug!(model = %q.model, error = %e, "provider query ended");
                        true
                    }
                };
                if done {
                    if let Some(q) = self.pending_providers.remove(&id) {
                        self.finish_providers(q);
                    }
                }
            }
            kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::StartProviding(Err(e)),
                ..
            } => {
                tracing::debug!(error = %e, "provider record publication incomplete");
            }
            _ => {}
        }
    }

    fn on_gossip_message(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let attestation = message.topic == self.attestation_topic.hash();
        let unread = if message.topic != self.topic.hash() && !attestation {
            true
        } else if !self.gossip_allowed(source) {
            // Over its rate: not even read (verifying costs a signature check).
            self.metrics.gossip_rate_limited();
            true
        } else {
            false
        };
        if unread {
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(
                    &id,
                    &source,
                    gossipsub::MessageAcceptance::Ignore,
                );
            return;
        }
        if attestation {
            return self.on_attestation(source, id, message);
        }
        let max_skew = self.config.advert_max_skew.as_millis() as u64;
        let verdict = verify_advert_bytes(&message.data, now_ms(), max_skew);
        let acceptance = match &verdict {
            Ok(_) => gossipsub::MessageAcceptance::Accept,
            Err(AdvertRejection::Stale { .. } | AdvertRejection::UnknownProtocol(_)) => {
                gossipsub::MessageAcceptance::Ignore
            }
            Err(_) => gossipsub::MessageAcceptance::Reject,
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        self.metrics.count_advert(verdict.as_ref().map(|_| ()));
        match verdict {
            Ok((signed, peer)) => {
                let advert = signed.payload.into_value();
                let newer = self
                    .adverts
                    .get(&peer)
                    .is_none_or(|old| old.timestamp_ms <= advert.timestamp_ms);
                if !newer {
                    return;
                }
                for a in &advert.addrs {
                    if let Ok(addr) = a.parse::<Multiaddr>() {
                        self.remember(peer, addr);
                    }
                }
                self.bound_known_peers(&peer);
                self.adverts.insert(peer, advert.clone());
                self.emit(NetworkEvent::AdvertReceived(advert));
            }
            Err(reason) => {
                tracing::warn!(from = %source, %reason, "advert dropped");
                self.emit(NetworkEvent::AdvertRejected {
                    from: source,
                    reason,
                });
            }
        }
    }

    /// A message on the attestation topic (its forwarder within its gossip
    /// rate): through the gate, then announced; the verdict goes back to
    /// gossipsub so only accepted ones are forwarded.
    fn on_attestation(
        &mut self,
        source: PeerId,
        id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let verdict = self
            .attestations
            .check(&message.data, message.source, now_ms());
        let acceptance = match &verdict {
            Ok(_) => gossipsub::MessageAcceptance::Accept,
            Err(e) if e.is_invalid() => gossipsub::MessageAcceptance::Reject,
            Err(_) => gossipsub::MessageAcceptance::Ignore,
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &source, acceptance);
        self.metrics.count_attestation(verdict.as_ref().map(|_| ()));
        match verdict {
            Ok(signed) => self.emit(NetworkEvent::AttestationReceived(Box::new(signed))),
            Err(reason) => {
                tracing::debug!(from = %source, %reason, "attestation dropped");
                self.emit(NetworkEvent::AttestationRejected {
                    from: source,
                    reason,
                });
            }
        }
    }

    /// Answers a request with an `Error` instead of running it.
    fn refuse(
        &mut self,
        channel: ResponseChannel<JobMessage>,
        job_id: Option<&str>,
        code: ErrorCode,
        message: impl Into<String>,
    ) {
        let reply = JobMessage::error(job_id.map(String::from), code, message);
        let _ = self.swarm.behaviour_mut().job.send_response(channel, reply);
    }

    /// Logs, counts and announces a job stream closed on `reason`.
    fn inbound_failure(&mut self, peer: PeerId, reason: String) {
        tracing::warn!(%peer, %reason, "job stream closed");
        self.metrics.job_inbound_failure();
        self.emit(NetworkEvent::InboundJobFailure { peer, reason });
    }

    /// Events of `/infernet/job/2`, or of `/infernet/verify/1` when
    /// `verify`: the same messages, bounds and handler; each body kind is
    /// accepted on its own protocol only.
    fn on_job_event(&mut self, verify: bool, ev: request_response::Event<Frame, JobMessage>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request: Frame::Invalid(reason),
                        channel,
                        ..
                    },
                ..
            } => {
                self.inbound_failure(peer, reason.clone());
                self.refuse(channel, None, ErrorCode::InvalidRequest, reason);
            }
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request: Frame::Message(request),
                        channel,
                        ..
                    },
                ..
            } => {
                let request = *request;
                // Bounded before anything is logged, echoed or run.
                if let Err(reason) = request.validate() {
                    self.metrics.job_rejected();
                    tracing::warn!(%peer, %reason, "job request refused at the edge");
                    self.refuse(channel, None, ErrorCode::InvalidRequest, reason);
                    return;
                }
                if request.body.is_verification() != verify {
                    let reason = match verify {
                        true => "this message belongs on /infernet/job/2",
                        false => "this message belongs on /infernet/verify/1",
                    };
                    self.metrics.job_rejected();
                    self.refuse(channel, request.job_id(), ErrorCode::InvalidRequest, reason);
                    return;
                }
                if let JobBody::Receipt(receipt) = &request.body {
                    let check = match receipt.verify() {
                        Ok(signer) if signer == peer => Ok(()),
                        Ok(signer) => Err(format!("receipt signed by {signer}, not by the sender")),
                        Err(e) => Err(format!("unsigned or badly signed receipt: {e}")),
                    };
                    if let Err(reason) = check {
                        self.inbound_failure(peer, reason.clone());
                        self.refuse(channel, request.job_id(), ErrorCode::BadSignature, reason);
                        return;
                    }
                }
                if !KNOWN_PROTOCOL_VERSIONS.contains(&request.version) {
                    tracing::warn!(%peer, version = request.version, "job request with unsupported version");
                    self.metrics.job_rejected();
                    self.refuse(
                        channel,
                        request.job_id(),
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "protocol version {} not supported; this node speaks {PROTOCOL_VERSION}",
                            request.version
                        ),
                    );
                    return;
                }
                let Some(handler) = self.handler.clone() else {
                    self.metrics.job_rejected();
                    self.refuse(
                        channel,
                        request.job_id(),
                        ErrorCode::NotAProvider,
                        "this node does not serve jobs",
                    );
                    return;
                };
                let Some(permit) = self.admit_request(peer) else {
                    self.metrics.job_rejected();
                    self.refuse(
                        channel,
                        request.job_id(),
                        ErrorCode::Busy,
                        "too many requests in flight here (from you or everyone): retry later",
                    );
                    return;
                };
                let tx = self.response_tx.clone();
                let limit = self.config.handler_timeout;
                let metrics = self.metrics.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let job_id = request.job_id().map(String::from);
                    let reply = match tokio::time::timeout(limit, (handler.0)(peer, request)).await
                    {
                        Ok(reply) => reply,
                        Err(_) => {
                            tracing::warn!(%peer, job = ?job_id, "job handler timed out");
                            JobMessage::error(
                                job_id,
                                ErrorCode::Timeout,
                                format!("handler exceeded {limit:?}"),
                            )
                        }
                    };
                    metrics.job_served();
                    let _ = tx.send((channel, reply)).await;
                });
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let key = super::RequestKey {
                    verify,
                    id: request_id,
                };
                let Some((_, reply)) = self.pending_requests.remove(&key) else {
                    return;
                };
                self.send_queued(peer);
                // A provider's answer is bounded like a request before the
                // client logs or stores any of it.
                if let Err(reason) = response.validate() {
                    let _ = reply.send(Err(NetworkError::Request {
                        peer: peer.to_string(),
                        reason: format!("invalid answer: {reason}"),
                    }));
                    return;
                }
                let checked = match &response.body {
                    // On `/infernet/verify/1` an arbiter hands over a
                    // provider's result: signed by that provider, whom the
                    // asker checks.
                    JobBody::Result { output, signed, .. } => match signed.verify_output(output) {
                        Ok(signer) if signer == peer || verify => Ok(response),
                        Ok(signer) => Err(NetworkError::BadSignature {
                            peer: peer.to_string(),
                            reason: format!("result signed by {signer}, not by the provider"),
                        }),
                        Err(e) => Err(NetworkError::BadSignature {
                            peer: peer.to_string(),
                            reason: e.to_string(),
                        }),
                    },
                    _ => Ok(response),
                };
                if let Err(e) = &checked {
                    tracing::warn!(%peer, error = %e, "job result rejected");
                }
                let _ = reply.send(checked);
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let key = super::RequestKey {
                    verify,
                    id: request_id,
                };
                if let Some((_, reply)) = self.pending_requests.remove(&key) {
                    self.send_queued(peer);
                    let _ = reply.send(Err(NetworkError::Request {
                        peer: peer.to_string(),
                        reason: error.to_string(),
                    }));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                self.inbound_failure(peer, error.to_string())
            }
            Event::ResponseSent { .. } => {}
        }
    }
}
