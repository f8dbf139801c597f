//! Member health: with several endpoints, members that do not answer are taken out of the
//! client's balancer until they answer again.
//!
//! The etcd client spreads requests over every member at random. A member that is frozen (a
//! stalled VM, a full disk) keeps its connections open and answers nothing, so a third of the
//! requests, watches and keep-alives would hang on it until their timeouts; a member cut off
//! from its peers answers, but has no leader. A probe task asks each member for its status,
//! on its own connection with the client's options and a short deadline: once when the client
//! starts, every probe interval, and soon after a request had to be hedged or failed with a
//! transient error such as "no leader" (see [`super::requests`]; such rounds are at least one
//! probe deadline apart). A member that does
//! not answer in time, or answers without a leader, is removed from the balancer: new requests
//! and streams go to the others. Streams already open on it outlive the removal (until their
//! connection's keep-alive ping fails), so each watch is then asked to prove it is alive (see
//! [`super::watch`]); one that does not ends, and the discovery cache lists and watches again,
//! on a healthy member. Lease keep-alives reopen on their own timeout. A member is added back
//! as soon as a probe finds it healthy. The last member in the balancer is never removed: with none
//! healthy, requests keep trying every one.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use futures_util::future::join_all;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn, Instrument};

/// The probe task of a client with several members; dropping it stops the task.
pub(crate) struct MemberHealth {
    wake: Arc<Notify>,
    /// Counts the members taken out of the balancer.
    removals: watch::Receiver<u64>,
    _task: AbortOnDropHandle<()>,
}

/// What the probe task knows of one member.
struct Member {
    url: String,
    /// Its own connection for probes, made on first use and dropped when a probe fails.
    probe: Option<Client>,
    in_balancer: bool,
}

impl MemberHealth {
    /// Starts probing `urls` (as the client knows them) every `interval`, each probe bounded by
    /// `deadline`; `None` for a single member, which has nothing to fail over to.
    pub(crate) fn start(
        client: Client,
        urls: &[String],
        options: ConnectOptions,
        interval: Duration,
        deadline: Duration,
    ) -> Option<Self> {
        if urls.len() < 2 {
            return None;
        }
        let members = urls
            .iter()
            .map(|url| Member {
                url: url.clone(),
                probe: None,
                in_balancer: true,
            })
            .collect();
        let wake = Arc::new(Notify::new());
        let (removed, removals) = watch::channel(0);
        let probes = Probes {
            client,
            options,
            deadline,
            removed,
        };
        let task = tokio::spawn(
            probes
                .run(members, interval, wake.clone())
                .instrument(tracing::debug_span!("etcd_member_health")),
        );
        Some(Self {
            wake,
            removals,
            _task: AbortOnDropHandle::new(task),
        })
    }

    /// Changes each time a member is taken out of the balancer: a watch on it may be stuck.
    pub(crate) fn removals(&self) -> watch::Receiver<u64> {
        self.removals.clone()
    }

    /// Probes every member soon: a request went unanswered or failed.
    pub(crate) fn suspect(&self) {
        self.wake.notify_one();
    }
}

/// The probe task's means.
struct Probes {
    client: Client,
    options: ConnectOptions,
    deadline: Duration,
    removed: watch::Sender<u64>,
}

impl Probes {
    async fn run(self, mut members: Vec<Member>, interval: Duration, wake: Arc<Notify>) {
        // The first round runs at once: a client that connects while a member is down or
        // leaderless should not spend its first interval sending requests there.
        let mut last_round: Option<Instant> = None;
        loop {
            if let Some(last) = last_round {
                tokio::select! {
                    () = tokio::time::sleep_until(last + interval) => {}
                    () = wake.notified() => {
                        // Suspicions come with every failed request; one round per probe
                        // deadline answers them all.
                        tokio::time::sleep_until(last + self.deadline).await;
                    }
                }
            }
            last_round = Some(Instant::now());
            let healthy = join_all(members.iter_mut().map(|m| probe(m, &self.options, self.deadline))).await;
            let mut balanced = members.iter().filter(|m| m.in_balancer).count();
            for (member, healthy) in members.iter_mut().zip(healthy) {
                member.in_balancer = match (member.in_balancer, healthy) {
                    (false, true) if self.add(&member.url).await => {
                        balanced += 1;
                        true
                    }
                    // Never empty the balancer: with no member healthy, the last ones stay tried.
                    (true, false) if balanced > 1 && self.remove(&member.url).await => {
                        balanced -= 1;
                        false
                    }
                    (in_balancer, _) => in_balancer,
                };
            }
        }
    }

    /// Puts `url` back into the balancer; whether it is.
    async fn add(&self, url: &str) -> bool {
        match self.client.add_endpoint(url).await {
            Ok(()) => {
                info!(member = %url, "etcd member answers again; back in the balancer");
                true
            }
            Err(e) => {
                warn!(member = %url, error = %e, "cannot add the etcd member back");
                false
            }
        }
    }

    /// Takes `url` out of the balancer; whether it is.
    async fn remove(&self, url: &str) -> bool {
        match self.client.remove_endpoint(url).await {
            Ok(()) => {
                warn!(member = %url, "etcd member does not answer or has no leader; out of the balancer");
                self.removed.send_modify(|n| *n += 1);
                true
            }
            Err(e) => {
                warn!(member = %url, error = %e, "cannot take the etcd member out of the balancer");
                false
            }
        }
    }
}

/// Whether `member` reports a leader within `deadline`.
async fn probe(member: &mut Member, options: &ConnectOptions, deadline: Duration) -> bool {
    let url = member.url.clone();
    let existing = member.probe.take();
    let outcome = tokio::time::timeout(deadline, async move {
        let mut client = match existing {
            Some(client) => client,
            None => Client::connect([url.as_str()], Some(options.clone())).await?,
        };
        let status = client.status().await?;
        Ok::<_, etcd_client::Error>((client, status.leader() != 0))
    })
    .await;
    match outcome {
        Ok(Ok((client, has_leader))) => {
            member.probe = Some(client);
            if !has_leader {
                debug!(member = %member.url, "etcd member has no leader");
            }
            has_leader
        }
        Ok(Err(e)) => {
            debug!(member = %member.url, error = %e, "etcd member probe failed");
            false
        }
        Err(_) => {
            debug!(member = %member.url, "etcd member probe timed out");
            false
        }
    }
}
