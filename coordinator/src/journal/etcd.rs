//! The journal in the home etcd (`etcdops serve`): one key per operation under
//! `<prefix>journal/ops/<ID>`, the record as JSON with its schema version (the
//! same encoding as the redb file). Every write is one etcd transaction whose
//! first `Compare` is the serve leader's election key with the create revision
//! of its term ([`LeaderGuard`]): once the lease behind it expired (a paused
//! or cut-off leader) or the leader resigned, the key is gone or newer and the
//! write is refused with [`JournalError::NotLeader`] — a deposed leader
//! journals nothing. A store without a guard only reads (`etcdops op
//! list|show`); its writes are refused with [`JournalError::ReadOnly`].
//!
//! People change the journal through the leader: `etcdops op resume|abort|prune`
//! with the home journal put a request ([`OpRequest`]) under
//! `<prefix>journal/requests/<ID>` (unguarded, create-only: the only key a
//! non-leader writes), and the serve leader takes it (a guarded delete) and
//! carries it out under its term. A request nobody took is withdrawn by the
//! person who put it.
//!
//! The journal's API is synchronous (the executor calls it between steps, as
//! it calls the redb file); this store runs etcd-client on a small runtime of
//! its own and each call blocks on it from a scoped thread, so it works from
//! any thread, inside a tokio runtime or not.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse};

use serde::{Deserialize, Serialize};

use super::{JournalError, OperationRecord, SCHEMA_VERSION, now_unix};
use crate::fleet::home::HomeEtcd;

/// How long one call to the home etcd may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The leader's election key and the create revision of its term: the
/// condition of every journal write of the serve leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderGuard {
    /// The election key (etcd's `LeaderKey.key`).
    pub key: Vec<u8>,
    /// Its create revision (etcd's `LeaderKey.rev`): the term.
    pub rev: i64,
}

/// The journal in the home etcd.
pub struct EtcdStore {
    location: PathBuf,
    ops_prefix: String,
    requests_prefix: String,
    client: Client,
    guard: Option<LeaderGuard>,
    runtime: Bridge,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("location", &self.location)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

/// A runtime of the store's own, shut down without blocking when dropped
/// (the last clone of a journal may go inside an async task).
struct Bridge(Option<tokio::runtime::Runtime>);

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// etcd-client's options for the home etcd: its TLS files, call and connect timeouts.
pub fn connect_options(home: &HomeEtcd) -> Result<ConnectOptions, std::io::Error> {
    let mut options = ConnectOptions::new()
        .with_timeout(CALL_TIMEOUT)
        .with_connect_timeout(Duration::from_secs(5));
    if let Some(tls) = &home.tls {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("[home.tls] file {}: {e}", path.display()))
            })
        };
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)?))
            .identity(etcd_client::Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
        options = options.with_tls(tls);
    }
    Ok(options)
}

impl EtcdStore {
    /// The journal of `home`, written under `guard` (the serve leader) or read-only (`None`).
    /// The connection is made lazily: an unreachable etcd shows on the first call.
    pub fn connect(home: &HomeEtcd, guard: Option<LeaderGuard>) -> Result<EtcdStore, JournalError> {
        let location = PathBuf::from(format!(
            "etcd:{}{}journal/",
            home.endpoints.join(","),
            home.prefix
        ));
        let connect_err = |source: etcd_client::Error| JournalError::Etcd {
            path: location.clone(),
            action: "connect to the home etcd",
            source: Box::new(source),
        };
        let options = connect_options(home).map_err(|e| connect_err(etcd_client::Error::IoError(e)))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcdops-journal")
            .enable_all()
            .build()
            .map_err(|e| connect_err(etcd_client::Error::IoError(e)))?;
        let endpoints = home.endpoints.clone();
        let client = std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(Client::connect(endpoints, Some(options))))
                .join()
        })
        .map_err(|_| {
            connect_err(etcd_client::Error::InvalidArgs(
                "the connect thread panicked".into(),
            ))
        })?
        .map_err(connect_err)?;
        Ok(EtcdStore {
            ops_prefix: format!("{}journal/ops/", home.prefix),
            requests_prefix: format!("{}journal/requests/", home.prefix),
            location,
            client,
            guard,
            runtime: Bridge(Some(runtime)),
        })
    }

    /// The same store writing under `guard`.
    pub fn with_guard(mut self, guard: LeaderGuard) -> EtcdStore {
        self.guard = Some(guard);
        self
    }

    pub fn location(&self) -> &Path {
        &self.location
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.ops_prefix)
    }

    /// Runs `f` on the store's runtime and waits for it (from a scoped thread, so that this
    /// works inside another runtime too).
    fn call<T: Send>(
        &self,
        action: &'static str,
        f: impl Future<Output = Result<T, etcd_client::Error>> + Send,
    ) -> Result<T, JournalError> {
        let Some(rt) = &self.runtime.0 else {
            return Err(self.etcd_err(action, etcd_client::Error::InvalidArgs("closed".into())));
        };
        let joined = std::thread::scope(|s| s.spawn(|| rt.block_on(f)).join());
        match joined {
            Ok(result) => result.map_err(|e| self.etcd_err(action, e)),
            Err(_) => Err(self.etcd_err(
                action,
                etcd_client::Error::InvalidArgs("the journal call panicked".into()),
            )),
        }
    }

    fn etcd_err(&self, action: &'static str, source: etcd_client::Error) -> JournalError {
        JournalError::Etcd {
            path: self.location.clone(),
            action,
            source: Box::new(source),
        }
    }

    /// The guard of a write, or `ReadOnly`.
    fn guard(&self, action: &'static str) -> Result<&LeaderGuard, JournalError> {
        self.guard.as_ref().ok_or_else(|| JournalError::ReadOnly {
            path: self.location.clone(),
            action,
        })
    }

    fn not_leader(&self, action: &'static str, guard: &LeaderGuard) -> JournalError {
        JournalError::NotLeader {
            path: self.location.clone(),
            action,
            key: String::from_utf8_lossy(&guard.key).into_owned(),
            rev: guard.rev,
        }
    }

    /// Runs `ops` if the guard holds and `compares` do; otherwise tells whether the guard
    /// failed (`NotLeader`) or the other compares did (`Ok(None)`).
    fn guarded(
        &self,
        action: &'static str,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<Option<Vec<TxnOpResponse>>, JournalError> {
        let guard = self.guard(action)?.clone();
        let mut when = vec![Compare::create_revision(
            guard.key.clone(),
            CompareOp::Equal,
            guard.rev,
        )];
        when.extend(compares);
        let txn = Txn::new()
            .when(when)
            .and_then(ops)
            .or_else(vec![TxnOp::get(guard.key.clone(), None)]);
        let mut kv = self.client.kv_client();
        let resp = self.call(action, async move { kv.txn(txn).await })?;
        if resp.succeeded() {
            return Ok(Some(resp.op_responses()));
        }
        let term_holds = resp.op_responses().into_iter().any(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().iter().any(|kv| kv.create_revision() == guard.rev),
            _ => false,
        });
        if term_holds {
            Ok(None)
        } else {
            Err(self.not_leader(action, &guard))
        }
    }

    /// The record as stored: its JSON object with `"schema"` added.
    fn encode(&self, op: &OperationRecord) -> Result<String, JournalError> {
        let encode_err = |source| JournalError::Encode {
            path: self.location.clone(),
            id: op.id.clone(),
            source,
        };
        let mut value = serde_json::to_value(op).map_err(encode_err)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("schema".to_string(), SCHEMA_VERSION.into());
        }
        serde_json::to_string(&value).map_err(encode_err)
    }

    fn decode(&self, id: &str, bytes: &[u8]) -> Result<OperationRecord, JournalError> {
        let decode_err = |source| JournalError::Decode {
            path: self.location.clone(),
            id: id.to_string(),
            source,
        };
        let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(decode_err)?;
        let schema = value
            .as_object_mut()
            .and_then(|o| o.remove("schema"))
            .and_then(|s| s.as_u64())
            .unwrap_or(0);
        if schema != SCHEMA_VERSION {
            // Only v2 etcdops ever wrote this store: anything else is newer (or damaged).
            return Err(JournalError::NewerSchema {
                path: self.location.clone(),
                what: format!("operation {id}"),
                found: schema,
                supported: SCHEMA_VERSION,
            });
        }
        serde_json::from_value(value).map_err(decode_err)
    }

    pub(super) fn create(&self, op: &OperationRecord) -> Result<(), JournalError> {
        const ACTION: &str = "record a new operation";
        let key = self.key(&op.id);
        let text = self.encode(op)?;
        let done = self.guarded(
            ACTION,
            vec![Compare::version(key.clone(), CompareOp::Equal, 0)],
            vec![TxnOp::put(key, text, None)],
        )?;
        match done {
            Some(_) => Ok(()),
            None => Err(JournalError::Exists {
                path: self.location.clone(),
                id: op.id.clone(),
            }),
        }
    }

    pub(super) fn delete(&self, ids: &[String]) -> Result<usize, JournalError> {
        const ACTION: &str = "delete operations";
        let ops = ids.iter().map(|id| TxnOp::delete(self.key(id), None)).collect();
        let responses = self
            .guarded(ACTION, vec![], ops)?
            .ok_or_else(|| self.etcd_err(ACTION, etcd_client::Error::InvalidArgs("refused".into())))?;
        Ok(responses
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Delete(d) => usize::try_from(d.deleted()).unwrap_or(0),
                _ => 0,
            })
            .sum())
    }

    pub(super) fn get(&self, id: &str) -> Result<Option<OperationRecord>, JournalError> {
        Ok(self.read_one(id, "read an operation")?.map(|(op, _)| op))
    }

    /// The record and its mod revision.
    fn read_one(
        &self,
        id: &str,
        action: &'static str,
    ) -> Result<Option<(OperationRecord, i64)>, JournalError> {
        let mut kv = self.client.kv_client();
        let key = self.key(id);
        let resp = self.call(action, async move { kv.get(key, None).await })?;
        resp.kvs()
            .first()
            .map(|kv| Ok((self.decode(id, kv.value())?, kv.mod_revision())))
            .transpose()
    }

    /// Every record whose ID starts with `prefix`, by ID.
    fn scan(&self, prefix: &str, action: &'static str) -> Result<Vec<OperationRecord>, JournalError> {
        let mut kv = self.client.kv_client();
        let key = self.key(prefix);
        let resp = self.call(action, async move {
            kv.get(key, Some(GetOptions::new().with_prefix())).await
        })?;
        resp.kvs()
            .iter()
            .map(|kv| {
                let id = String::from_utf8_lossy(kv.key())
                    .strip_prefix(&self.ops_prefix)
                    .unwrap_or_default()
                    .to_string();
                self.decode(&id, kv.value())
            })
            .collect()
    }

    pub(super) fn find(&self, id_or_prefix: &str) -> Result<OperationRecord, JournalError> {
        let not_found = || JournalError::NotFound {
            path: self.location.clone(),
            id: id_or_prefix.to_string(),
        };
        if id_or_prefix.is_empty() {
            return Err(not_found());
        }
        let mut matches = self.scan(id_or_prefix, "look up an operation")?;
        if let Some(i) = matches.iter().position(|op| op.id == id_or_prefix) {
            return Ok(matches.swap_remove(i));
        }
        match matches.len() {
            0 => Err(not_found()),
            1 => Ok(matches.remove(0)),
            _ => Err(JournalError::Ambiguous {
                path: self.location.clone(),
                prefix: id_or_prefix.to_string(),
                candidates: matches.into_iter().map(|op| op.id).collect(),
            }),
        }
    }

    pub(super) fn list(&self) -> Result<Vec<OperationRecord>, JournalError> {
        self.scan("", "list operations")
    }

    /// Read, change, write back if nobody wrote the record meanwhile (its mod revision) and
    /// the leader's term holds. One writer (the leader) means no concurrent change; one is an
    /// error, never a silent overwrite.
    pub(super) fn modify(
        &self,
        id: &str,
        change: impl FnOnce(&mut OperationRecord) -> Result<(), JournalError>,
    ) -> Result<OperationRecord, JournalError> {
        const ACTION: &str = "update an operation";
        self.guard(ACTION)?;
        let (mut op, mod_revision) = self.read_one(id, ACTION)?.ok_or_else(|| JournalError::NotFound {
            path: self.location.clone(),
            id: id.to_string(),
        })?;
        change(&mut op)?;
        op.id = id.to_string();
        op.updated_at_unix = now_unix();
        let key = self.key(id);
        let text = self.encode(&op)?;
        let done = self.guarded(
            ACTION,
            vec![Compare::mod_revision(key.clone(), CompareOp::Equal, mod_revision)],
            vec![TxnOp::put(key, text, None)],
        )?;
        match done {
            Some(_) => Ok(op),
            None => Err(JournalError::Conflict {
                path: self.location.clone(),
                id: id.to_string(),
            }),
        }
    }
}

/// The serve leader's record of the slot each job last ran for, kept beside the journal
/// (`<prefix>journal/serve-state`) so a new leader knows what the last one ran.
impl EtcdStore {
    fn state_key(&self) -> String {
        format!("{}serve-state", self.ops_prefix.trim_end_matches("ops/"))
    }

    /// The shared serve state as written (JSON), if any.
    pub fn serve_state(&self) -> Result<Option<Vec<u8>>, JournalError> {
        let mut kv = self.client.kv_client();
        let key = self.state_key();
        let resp = self.call("read the serve state", async move { kv.get(key, None).await })?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Writes the shared serve state (guarded: only the leader).
    pub fn set_serve_state(&self, text: &[u8]) -> Result<(), JournalError> {
        const ACTION: &str = "write the serve state";
        let key = self.state_key();
        self.guarded(ACTION, vec![], vec![TxnOp::put(key, text.to_vec(), None)])?
            .ok_or_else(|| self.etcd_err(ACTION, etcd_client::Error::InvalidArgs("refused".into())))?;
        Ok(())
    }
}

/// What a person asks the serve leader to do to the home journal (it alone writes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OpRequest {
    /// Carry on a failed or paused operation (`etcdops op resume`).
    Resume { operation: String },
    /// Mark an operation aborted, freeing the fence it may hold (`etcdops op abort`).
    Abort { operation: String },
    /// Delete ended operations (`etcdops op prune`).
    Prune { operations: Vec<String> },
}

impl OpRequest {
    /// The request's key under `journal/requests/`: one resume or abort per operation at a
    /// time; prunes by when they were asked.
    pub fn id(&self, now_unix: i64) -> String {
        match self {
            OpRequest::Resume { operation } => format!("resume-{operation}"),
            OpRequest::Abort { operation } => format!("abort-{operation}"),
            OpRequest::Prune { .. } => format!("prune-{now_unix}"),
        }
    }
}

/// A request as stored: what, who asked (`journal::holder`, and the certificate the
/// CLI calls agents with), when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRecord {
    #[serde(skip)]
    pub id: String,
    pub request: OpRequest,
    pub by: String,
    #[serde(default)]
    pub operator: Option<etcdops_certs::CertDetails>,
    pub at_unix: i64,
}

/// A key under `journal/requests/` that is not a request this etcdops reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRequest {
    pub id: String,
    pub reason: String,
}

impl EtcdStore {
    fn request_key(&self, id: &str) -> String {
        format!("{}{id}", self.requests_prefix)
    }

    /// Puts `request` for the leader (no guard: anyone who may read the journal may ask).
    /// `Ok(false)`: the same request is already waiting.
    pub fn ask(&self, request: &RequestRecord) -> Result<bool, JournalError> {
        const ACTION: &str = "ask the serve leader";
        let key = self.request_key(&request.id);
        let text = serde_json::to_string(request).map_err(|source| JournalError::Encode {
            path: self.location.clone(),
            id: request.id.clone(),
            source,
        })?;
        let txn = Txn::new()
            .when(vec![Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key, text, None)]);
        let mut kv = self.client.kv_client();
        let resp = self.call(ACTION, async move { kv.txn(txn).await })?;
        Ok(resp.succeeded())
    }

    /// Whether request `id` still waits.
    pub fn waiting(&self, id: &str) -> Result<bool, JournalError> {
        let mut kv = self.client.kv_client();
        let key = self.request_key(id);
        let resp = self.call("read a request", async move {
            kv.get(key, Some(GetOptions::new().with_count_only())).await
        })?;
        Ok(resp.count() > 0)
    }

    /// Withdraws request `id` (no guard); `Ok(false)`: it was gone (the leader took it).
    pub fn withdraw(&self, id: &str) -> Result<bool, JournalError> {
        let mut kv = self.client.kv_client();
        let key = self.request_key(id);
        let resp = self.call("withdraw a request", async move { kv.delete(key, None).await })?;
        Ok(resp.deleted() > 0)
    }

    /// The waiting requests, oldest key first; those that do not decode apart.
    pub fn requests(&self) -> Result<(Vec<RequestRecord>, Vec<UnreadableRequest>), JournalError> {
        let mut kv = self.client.kv_client();
        let key = self.requests_prefix.clone();
        let resp = self.call("list requests", async move {
            kv.get(key, Some(GetOptions::new().with_prefix())).await
        })?;
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for kv in resp.kvs() {
            let id = String::from_utf8_lossy(kv.key())
                .strip_prefix(&self.requests_prefix)
                .unwrap_or_default()
                .to_string();
            match serde_json::from_slice::<RequestRecord>(kv.value()) {
                Ok(mut r) => {
                    r.id = id;
                    good.push(r);
                }
                Err(e) => bad.push(UnreadableRequest {
                    id,
                    reason: e.to_string(),
                }),
            }
        }
        Ok((good, bad))
    }

    /// The leader takes request `id` (a guarded delete); `Ok(false)`: withdrawn meanwhile.
    pub fn take(&self, id: &str) -> Result<bool, JournalError> {
        const ACTION: &str = "take a request";
        let key = self.request_key(id);
        let done = self.guarded(
            ACTION,
            vec![Compare::version(key.clone(), CompareOp::Greater, 0)],
            vec![TxnOp::delete(key, None)],
        )?;
        Ok(done.is_some())
    }
}
