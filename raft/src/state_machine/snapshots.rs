//! Snapshots in and out. A build stores only the head (the blocks are already in the
//! state's journal); an install takes a received stream into the spare block journal,
//! checks it whole, and only then makes it the state (docs/durability.md, "Snapshots and backups").
//! Restoring a backup is the same install under new members.

use super::*;

impl StateMachineStore {
    /// An empty journal for a snapshot to arrive in: the one the state does not use.
    pub(super) fn begin_incoming(&self) -> Result<(Incoming, usize), StorageError> {
        let slot = 1 - self.shared.active.load(Ordering::Acquire);
        // A receipt still writing into it, or a stream still reading it from before the
        // last install, must stop.
        let expected = self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let journal = self.shared.journals[slot].clone();
        journal.truncate(0).map_err(write_err)?;
        let sink = snapshot::JournalAt { journal, generation: self.shared.generation.clone(), expected };
        Ok((Incoming::new(Some(sink)), slot))
    }

    /// Installs a snapshot received into journal `slot` as the whole state. `expected` is
    /// what openraft's meta says it is (checked against its header); with `restore_as`
    /// instead, the snapshot becomes the state of a new cluster of those members, at its
    /// index in term 0 ([`crate::backup::restore`]).
    ///
    /// Everything that can refuse the snapshot runs first, writing nothing but the spare
    /// journal: the stream is whole, its header matches, its state is built from it and
    /// checked whole (`check_invariants`: a snapshot from elsewhere is not taken on trust).
    /// Then one flushed batch writes the meta naming the new journal (`installing`) and the
    /// snapshot's head; from there a restart finishes the install.
    pub(super) fn install_incoming(
        &mut self,
        incoming: Incoming,
        slot: usize,
        expected: Option<&SnapshotMeta<crate::NodeId, openraft::BasicNode>>,
        restore_as: Option<openraft::Membership<crate::NodeId, openraft::BasicNode>>,
    ) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let received = incoming.received();
        let sink = incoming.sink().cloned();
        let checked = self.check_incoming(incoming, slot, expected, restore_as);
        let (header, state) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                // Refused: its blocks go, unless another receipt owns the journal by now.
                if let Some(sink) = sink.filter(|sink| sink.current()) {
                    sink.journal.truncate(0).map_err(write_err)?;
                }
                return Err(error);
            }
        };
        let checked_ms = started.elapsed().as_millis() as u64;
        let snapshot_id = match expected {
            Some(meta) => meta.snapshot_id.clone(),
            None => format!("restored-{}-{}", header.last_applied.map_or(0, |l| l.index), state.hash_hex()),
        };
        let meta = self.stage_install(&header, slot, snapshot_id)?;
        self.finish_install(meta, state)?;
        tracing::info!(
            bytes = received,
            blocks = header.blocks,
            votes = header.state.votes_recorded,
            checked_ms,
            installed_ms = started.elapsed().as_millis() as u64,
            "snapshot installed"
        );
        Ok(())
    }

    /// The received stream made whole and checked: its header, and the state it describes.
    pub(super) fn check_incoming(
        &self,
        incoming: Incoming,
        slot: usize,
        expected: Option<&SnapshotMeta<crate::NodeId, openraft::BasicNode>>,
        restore_as: Option<openraft::Membership<crate::NodeId, openraft::BasicNode>>,
    ) -> Result<(snapshot::Header, State), StorageError> {
        let mut header = incoming.finish().map_err(|e| read_err(corrupt(&e)))?;
        if let Some(meta) = expected {
            if (header.last_applied, &header.membership) != (meta.last_log_id, &meta.last_membership) {
                return Err(read_err(corrupt(&format!(
                    "the snapshot's header is at {:?}, its meta at {:?}",
                    header.last_applied, meta.last_log_id
                ))));
            }
        }
        if let Some(membership) = restore_as {
            // Term 0 is below every term the new cluster will elect, so its first entries
            // sort after the restored point whoever leads.
            let index = header.last_applied.map_or(0, |l| l.index);
            let log_id = LogId::new(openraft::CommittedLeaderId::new(0, 0), index);
            // Alarms name members of the old cluster, whose disks are not the new one's.
            header.state.alarms.clear();
            header.last_applied = Some(log_id);
            header.membership = StoredMembership::new(Some(log_id), membership);
        }
        let started = std::time::Instant::now();
        let state = self.state_from_header(header.state.clone(), slot, header.blocks)?;
        let loaded = started.elapsed();
        state.check_invariants().map_err(|e| read_err(corrupt(&e)))?;
        tracing::info!(
            load_ms = loaded.as_millis() as u64,
            check_ms = (started.elapsed() - loaded).as_millis() as u64,
            "received state indexed and checked"
        );
        Ok((header, state))
    }

    /// Decides the install: one flushed batch with the meta naming journal `slot`
    /// (`installing`) and the snapshot's head as the current snapshot.
    pub(super) fn stage_install(
        &self,
        header: &snapshot::Header,
        slot: usize,
        snapshot_id: String,
    ) -> Result<SmMeta, StorageError> {
        let state = &header.state;
        let head = snapshot::head_bytes(&HeaderRef {
            state,
            last_applied: &header.last_applied,
            membership: &header.membership,
            blocks: header.blocks,
        })
        .map_err(|e| write_err(std::io::Error::other(e)))?;
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: header.last_applied,
                last_membership: header.membership.clone(),
                snapshot_id,
            },
            head,
            blocks: header.blocks,
        };
        let meta = SmMeta::of(state, header.last_applied, &header.membership, true, header.blocks, slot);
        // What applies left unwritten belongs to the state being replaced, and must not
        // be written over this meta (a backup's capture or a shutdown would).
        *self.shared.unpersisted() = Unpersisted { installing: true, ..Unpersisted::default() };
        let mut batch = WriteBatch::new();
        batch.put(META.to_vec(), codec::encode(&meta).map_err(write_err)?);
        stored.put(&mut batch)?;
        self.space.write(batch).map_err(write_err)?;
        self.space.flush().map_err(write_err)?;
        self.shared.last_snapshot_bytes.store(stored.len(&self.shared.journals[slot]), Ordering::Relaxed);
        Ok(meta)
    }

    /// The rest of an install, once the meta names the new journal (`installing`): the
    /// polls and accounts of `state` (built from the snapshot) replace the keyspace's,
    /// `state` becomes the applied one, and the old journal is cleared.
    pub(super) fn finish_install(&mut self, mut meta: SmMeta, state: State) -> Result<(), StorageError> {
        for prefix in [POLL_PREFIX, USER_PREFIX] {
            delete_range(&*self.space, prefix, Some(&prefix_end(prefix))).map_err(write_err)?;
        }
        let mut batch = WriteBatch::new();
        for (poll_id, poll) in &state.polls {
            batch.put(poll_key(poll_id), codec::encode(&PollRecord::of(poll)).map_err(write_err)?);
        }
        for (username, user) in &state.users {
            batch.put(user_key(username), codec::encode(user).map_err(write_err)?);
        }
        self.space.write(batch).map_err(write_err)?;
        meta.installing = false;
        self.write_meta_flushed(&meta)?;
        let index = meta.last_applied.map_or(0, |l| l.index);
        self.replace_applied(
            Applied { state, last_applied: meta.last_applied, membership: meta.membership.clone() },
            meta.journal,
        );
        // The old state's blocks: no stream reads them any more (the generation moved on).
        self.shared.journals[1 - meta.journal].truncate(0).map_err(write_err)?;
        if let Some(listener) = self.shared.listener() {
            listener.state_replaced(index);
        }
        Ok(())
    }

    /// Makes a snapshot stream (a backup's body, which `feed` writes in pieces) this state
    /// machine's state and its current snapshot, at its index in term 0 under `membership`
    /// ([`crate::backup::restore`]).
    pub(crate) fn restore(
        &mut self,
        feed: impl FnOnce(&mut Incoming) -> Result<(), String>,
        membership: openraft::Membership<crate::NodeId, openraft::BasicNode>,
    ) -> Result<(), String> {
        let (mut incoming, slot) = self.begin_incoming().map_err(|e| e.to_string())?;
        feed(&mut incoming)?;
        self.install_incoming(incoming, slot, None, Some(membership)).map_err(|e| e.to_string())
    }
}

impl StoredSnapshot {
    /// The stream's length, with its blocks in `journal`.
    pub(super) fn len(&self, journal: &Arc<dyn Journal>) -> u64 {
        snapshot::stream_len(self.head.len(), self.blocks, &**journal)
    }
}

pub struct SnapshotBuilder {
    pub(super) shared: Arc<SmShared>,
    pub(super) space: Arc<dyn Keyspace>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Held throughout: an install must not replace the journal or the current
        // snapshot between the capture and the write below.
        let _writing = self.shared.snapshot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let captured = self.shared.capture()?;
        // openraft purges the log up to this snapshot once we return: the state it covers
        // (its meta, counting the blocks, already synced) must be durable first.
        let snapshot_id = match captured.last_applied {
            Some(log_id) => format!("{}-{}-{}", log_id.leader_id, log_id.index, captured.state_hash),
            None => "empty".to_string(),
        };
        let meta =
            SnapshotMeta { last_log_id: captured.last_applied, last_membership: captured.membership, snapshot_id };
        let stream = captured.stream;
        if let Some(newer) =
            StoredSnapshot::read(&*self.space)?.filter(|current| current.meta.last_log_id >= meta.last_log_id)
        {
            // A snapshot at least as new is already current (built or installed): keep it.
            self.space.flush().map_err(write_err)?;
            let stream = Outgoing::new(Arc::new(newer.head), self.shared.block_source(), newer.blocks);
            return Ok(openraft::Snapshot { meta: newer.meta, snapshot: Box::new(SnapshotStream::Outgoing(stream)) });
        }
        let stored = StoredSnapshot { meta: meta.clone(), head: stream.head().to_vec(), blocks: stream.blocks() };
        let mut batch = WriteBatch::new();
        stored.put(&mut batch)?;
        self.space.write(batch).map_err(write_err)?;
        self.space.flush().map_err(write_err)?;
        self.shared.snapshots_built.fetch_add(1, Ordering::Relaxed);
        self.shared.last_snapshot_bytes.store(stream.len(), Ordering::Relaxed);
        Ok(openraft::Snapshot { meta, snapshot: Box::new(SnapshotStream::Outgoing(stream)) })
    }
}
