//! The fault schedule's actions, applied to a running simulation from outside it.

use super::*;

/// Applies fault actions to the simulation from outside it.
pub(super) struct Chaos {
    nodes: u64,
    client_hosts: usize,
    crashed: BTreeSet<u64>,
    /// Nodes whose store has a crash point armed, not yet reached.
    armed: BTreeMap<u64, CrashPoint>,
    /// Nodes running with an injected storage fault, until crashed.
    failing: BTreeSet<u64>,
    /// What the last `CrashWithLeader` crashed: the leader, then the others.
    leader_first: Option<(u64, Vec<u64>)>,
    clocks: Vec<SimClock>,
    dbs: Vec<MemDb>,
    apps: Apps,
}

impl Chaos {
    pub(super) fn new(nodes: u64, client_hosts: usize, clocks: Vec<SimClock>, dbs: Vec<MemDb>, apps: Apps) -> Self {
        Self {
            nodes,
            client_hosts,
            crashed: BTreeSet::new(),
            armed: BTreeMap::new(),
            failing: BTreeSet::new(),
            leader_first: None,
            clocks,
            dbs,
            apps,
        }
    }

    fn others(&self, node: u64) -> Vec<String> {
        (1..=self.nodes).filter(|n| *n != node).map(host_name).collect()
    }

    fn everyone_else(&self, node: u64) -> Vec<String> {
        let mut hosts = self.others(node);
        hosts.extend((0..self.client_hosts).map(|c| format!("client{c}")));
        hosts.extend(["setup".to_string(), "checker".to_string()]);
        hosts
    }

    pub(super) fn leader(&self) -> Option<u64> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.iter()
            .filter(|(id, _)| !self.crashed.contains(id))
            .find_map(|(_, app)| app.node.metrics().current_leader)
            .filter(|leader| !self.crashed.contains(leader))
    }

    fn crash(&mut self, sim: &mut turmoil::Sim<'_>, node: u64) {
        // Its restart finds the disk working again (`MemDb::crash`).
        self.failing.remove(&node);
        if self.crashed.insert(node) {
            sim.crash(host_name(node));
            self.apps.lock().unwrap_or_else(|p| p.into_inner()).remove(&node);
        }
    }

    /// Crashes the nodes whose store reached its armed crash point in the last step,
    /// before they run again; says which.
    pub(super) fn crash_tripped(&mut self, sim: &mut turmoil::Sim<'_>) -> Vec<String> {
        let tripped: Vec<(u64, CrashPoint)> = self
            .armed
            .iter()
            .map(|(node, point)| (*node, *point))
            .filter(|(node, _)| self.dbs[*node as usize - 1].tripped())
            .collect();
        tripped
            .into_iter()
            .map(|(node, point)| {
                self.armed.remove(&node);
                self.crash(sim, node);
                match point {
                    CrashPoint::InFlush => format!("node{node} crashed inside a flush"),
                    CrashPoint::AfterWrite(keyspace) => format!("node{node} crashed right after a write to {keyspace}"),
                }
            })
            .collect()
    }

    fn repair_network(&self, sim: &mut turmoil::Sim<'_>) {
        for a in 1..=self.nodes {
            for b in self.everyone_else(a) {
                sim.repair(host_name(a), b.as_str());
                sim.release(host_name(a), b.as_str());
                sim.set_link_fail_rate(host_name(a), b.as_str(), 0.0);
                sim.set_link_max_message_latency(host_name(a), b.as_str(), crate::LINK_LATENCY_MAX);
            }
        }
    }

    /// Applies `action`; returns what it did, resolved (e.g. which node led).
    pub(super) fn apply(&mut self, sim: &mut turmoil::Sim<'_>, action: &Action) -> String {
        match action {
            Action::IsolateLeader => self.isolate_leader(sim),
            Action::Split(..)
            | Action::OneWay { .. }
            | Action::Hold(..)
            | Action::Release(..)
            | Action::Latency { .. }
            | Action::Loss { .. }
            | Action::Pause(_)
            | Action::Resume(_)
            | Action::RepairNetwork => {
                self.disturb_network(sim, action);
                action.to_string()
            }
            Action::CrashAt { node, .. } | Action::Inject { node, .. } | Action::CrashTorn(node)
                if self.crashed.contains(node) =>
            {
                format!("{action}: it is down, nothing done")
            }
            Action::CrashAt { node, point } => {
                self.dbs[*node as usize - 1].arm(*point);
                self.armed.insert(*node, *point);
                action.to_string()
            }
            Action::Inject { node, fault } => {
                self.dbs[*node as usize - 1].inject(*fault);
                self.failing.insert(*node);
                action.to_string()
            }
            Action::CrashTorn(node) => {
                self.arm_torn_write(*node);
                action.to_string()
            }
            Action::Crash(nodes) => {
                for node in nodes {
                    self.crash(sim, *node);
                }
                action.to_string()
            }
            Action::CrashWithLeader => self.crash_with_leader(sim, action),
            Action::RestartOldLeader => self.restart_old_leader(sim, action),
            Action::RestartWithoutOldLeader => self.restart_without_old_leader(sim),
            Action::Restart(nodes) => self.restart(sim, action, nodes),
            Action::Skew { node, ms } => {
                self.clocks[*node as usize - 1].skew_ms.store(*ms, Ordering::Relaxed);
                action.to_string()
            }
            Action::HealAll => {
                self.heal_all(sim);
                action.to_string()
            }
        }
    }

    fn isolate_leader(&self, sim: &mut turmoil::Sim<'_>) -> String {
        let Some(leader) = self.leader() else {
            return "isolate the leader: none known, nothing done".to_string();
        };
        for other in self.others(leader) {
            sim.partition(host_name(leader), other.as_str());
        }
        format!("isolate the leader, node{leader}")
    }

    /// The faults that only touch links; nodes run on as they are.
    fn disturb_network(&self, sim: &mut turmoil::Sim<'_>, action: &Action) {
        match action {
            Action::Split(a, b) => {
                for x in a {
                    for y in b {
                        sim.partition(host_name(*x), host_name(*y));
                    }
                }
            }
            Action::OneWay { from, to } => sim.partition_oneway(host_name(*from), host_name(*to)),
            Action::Hold(a, b) => sim.hold(host_name(*a), host_name(*b)),
            Action::Release(a, b) => sim.release(host_name(*a), host_name(*b)),
            Action::Latency { a, b, max_ms } => {
                sim.set_link_max_message_latency(host_name(*a), host_name(*b), Duration::from_millis(*max_ms))
            }
            Action::Loss { a, b, percent } => {
                sim.set_link_fail_rate(host_name(*a), host_name(*b), f64::from(*percent) / 100.0)
            }
            Action::Pause(node) => {
                for other in self.everyone_else(*node) {
                    sim.hold(host_name(*node), other.as_str());
                }
            }
            Action::Resume(node) => {
                for other in self.everyone_else(*node) {
                    sim.release(host_name(*node), other.as_str());
                }
            }
            Action::RepairNetwork => self.repair_network(sim),
            _ => unreachable!("{action} is not a network fault"),
        }
    }

    /// Struck inside the next flush, as a power loss during an fsync: some of what the
    /// flush covered reached the disk (`MemDb::crash`).
    fn arm_torn_write(&mut self, node: u64) {
        let db = &self.dbs[node as usize - 1];
        db.arm(CrashPoint::InFlush);
        db.arm_torn_write();
        self.armed.insert(node, CrashPoint::InFlush);
    }

    /// Crashes the leader, then every other node that is up, remembering which was which
    /// for the restarts that follow.
    fn crash_with_leader(&mut self, sim: &mut turmoil::Sim<'_>, action: &Action) -> String {
        let Some(leader) = self.leader() else {
            return format!("{action}: no leader known, nothing done");
        };
        let others: Vec<u64> = (1..=self.nodes).filter(|n| *n != leader && !self.crashed.contains(n)).collect();
        self.crash(sim, leader);
        for node in &others {
            self.crash(sim, *node);
        }
        self.leader_first = Some((leader, others.clone()));
        format!("crash every node, the leader node{leader} and {others:?}")
    }

    fn restart_old_leader(&mut self, sim: &mut turmoil::Sim<'_>, action: &Action) -> String {
        match &self.leader_first {
            Some((leader, _)) if self.crashed.remove(leader) => {
                sim.bounce(host_name(*leader));
                format!("restart the old leader node{leader} alone")
            }
            _ => format!("{action}: nothing to restart"),
        }
    }

    fn restart_without_old_leader(&mut self, sim: &mut turmoil::Sim<'_>) -> String {
        let others = self.leader_first.take().map(|(_, others)| others).unwrap_or_default();
        for node in &others {
            if self.crashed.remove(node) {
                sim.bounce(host_name(*node));
            }
        }
        format!("restart {others:?}")
    }

    /// Restarts `nodes`; one whose crash point was never reached is still up, and only
    /// disarmed.
    fn restart(&mut self, sim: &mut turmoil::Sim<'_>, action: &Action, nodes: &[u64]) -> String {
        let mut what = action.to_string();
        for node in nodes {
            if self.armed.remove(node).is_some() {
                self.dbs[*node as usize - 1].disarm();
                what += &format!(" (node{node} never reached its crash point)");
            }
            if self.crashed.remove(node) {
                sim.bounce(host_name(*node));
            }
        }
        what
    }

    /// Disarms the crash points, repairs the network, restarts the nodes with failing
    /// stores and the crashed ones, and sets the clocks right.
    fn heal_all(&mut self, sim: &mut turmoil::Sim<'_>) {
        for node in std::mem::take(&mut self.armed).into_keys() {
            self.dbs[node as usize - 1].disarm();
        }
        self.repair_network(sim);
        for node in std::mem::take(&mut self.failing) {
            self.crash(sim, node);
        }
        for node in std::mem::take(&mut self.crashed) {
            sim.bounce(host_name(node));
        }
        for clock in &self.clocks {
            clock.skew_ms.store(0, Ordering::Relaxed);
        }
    }
}
