//! Writes to the etcd config store: one transaction per apply or delete.
//!
//! The current objects are read (one linearizable get of the prefix at revision R), the write is
//! planned against them (`store::plan_apply`: expected versions, the whole resulting set
//! validated), and the transaction commits only if nothing it was planned on changed after R:
//! every key under the prefix has mod revision < R + 1 (catches puts, also by hand), and so has
//! the write marker [`WRITE_MARKER`] that every pilot write also puts (catches deletes through
//! any pilot: a deleted key leaves no mod revision to compare). If the guard fails, another
//! writer got in between: plan again on what is there now, a bounded number of times. Only a
//! delete made by hand (etcdctl) between read and commit goes unseen.
//!
//! etcd refuses transactions of more than `--max-txn-ops` operations (128 unless configured), so
//! an apply changing more objects than that is refused up front with a clear error.

use super::EtcdStore;
use crate::etcd::bounded;
use crate::etcd::keys::{config_key, CONFIG_PREFIX, WRITE_MARKER};
use crate::store::{plan_apply, plan_delete, Applied, ObjectKey, Stored, WriteError};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use graymesh_model::Object;
use std::time::Duration;

const ATTEMPTS: usize = 3;
/// etcd's default `--max-txn-ops`; one operation of each transaction is the write marker.
const MAX_TXN_OPS: usize = 128;
/// How long a write waits for its own change to reach the served config before answering.
const READ_YOUR_WRITE: Duration = Duration::from_secs(5);

impl EtcdStore {
    pub async fn apply(&self, objects: Vec<Object>) -> Result<Applied, WriteError> {
        for _ in 0..ATTEMPTS {
            let (current, revision) = self.read_current().await?;
            let plan = plan_apply(&current, objects.clone())?;
            if plan.writes.is_empty() {
                return Ok(plan.applied);
            }
            if plan.writes.len() >= MAX_TXN_OPS {
                return Err(WriteError::TooLarge(format!(
                    "{} objects would change, but one etcd transaction holds at most {} \
                     (etcd's --max-txn-ops default); apply them in smaller sets",
                    plan.writes.len(),
                    MAX_TXN_OPS - 1
                )));
            }
            let mut puts = Vec::new();
            for object in &plan.writes {
                let key = config_key(&object.meta.namespace, object.kind(), &object.meta.name);
                puts.push(TxnOp::put(key, object.to_json().to_string(), None));
            }
            if self.commit(revision, Vec::new(), puts).await? {
                return Ok(plan.applied);
            }
        }
        Err(busy())
    }

    pub async fn delete(
        &self,
        target: &ObjectKey,
        version: Option<&str>,
    ) -> Result<(), WriteError> {
        for _ in 0..ATTEMPTS {
            let (current, revision) = self.read_current().await?;
            plan_delete(&current, target, version)?;
            let key = config_key(&target.namespace, target.kind, &target.name);
            // The key itself must still exist: the prefix compare cannot see a concurrent delete.
            let exists = Compare::version(key.clone(), CompareOp::Greater, 0);
            if self
                .commit(revision, vec![exists], vec![TxnOp::delete(key, None)])
                .await?
            {
                return Ok(());
            }
        }
        Err(busy())
    }

    /// The valid objects stored now with their mod revisions, and the revision of the read.
    async fn read_current(&self) -> Result<(Vec<Stored>, i64), WriteError> {
        let mut client = self.client();
        let get = client.get(CONFIG_PREFIX, Some(GetOptions::new().with_prefix()));
        let response = bounded(get).await.map_err(|e| self.lost(e))?;
        // etcd answered: a write refused earlier (time-out) must not leave us "not ready".
        self.set_connected(true);
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let current = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                let object = super::values::parse_value(&key, kv.value(), kv.mod_revision());
                // Broken values are skipped here as they are when serving.
                object.ok().map(|object| Stored {
                    object,
                    version: kv.mod_revision().to_string(),
                })
            })
            .collect();
        Ok((current, revision))
    }

    /// Run `ops` if nothing under the prefix changed after `revision` and `extra` holds. False
    /// when the compare failed; on success, waits until the served config includes the write.
    async fn commit(
        &self,
        revision: i64,
        mut extra: Vec<Compare>,
        mut ops: Vec<TxnOp>,
    ) -> Result<bool, WriteError> {
        let unchanged =
            Compare::mod_revision(CONFIG_PREFIX, CompareOp::Less, revision + 1).with_prefix();
        let no_pilot_wrote = Compare::mod_revision(WRITE_MARKER, CompareOp::Less, revision + 1);
        extra.extend([unchanged, no_pilot_wrote]);
        ops.push(TxnOp::put(WRITE_MARKER, revision.to_string(), None));
        let txn = Txn::new().when(extra).and_then(ops);
        let mut client = self.client();
        let response = bounded(client.txn(txn)).await.map_err(|e| self.lost(e))?;
        if !response.succeeded() {
            return Ok(false);
        }
        let written = response.header().map(|h| h.revision()).unwrap_or(0);
        if !self.caught_up(written, READ_YOUR_WRITE).await {
            tracing::warn!(
                written,
                "etcd write committed but not yet seen by this pilot's watch"
            );
        }
        Ok(true)
    }

    fn lost(&self, message: String) -> WriteError {
        self.set_connected(false);
        WriteError::Unavailable(format!("etcd {}: {message}", self.endpoints.join(",")))
    }
}

fn busy() -> WriteError {
    WriteError::Conflict(format!(
        "the config in etcd kept changing while this write was planned ({ATTEMPTS} attempts); try again"
    ))
}
