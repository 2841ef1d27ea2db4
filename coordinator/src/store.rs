//! The coordinator's durable job store (SQLite).
//!
//! Jobs survive coordinator restarts: every job is one row holding the prost-encoded
//! [`parley_proto::Job`] plus a few indexed columns (insertion order, state, submission time).
//! The database runs in WAL mode with `synchronous=FULL`, so a write that returned `Ok` is on
//! disk. On start-up the coordinator calls [`JobStore::fail_unfinished`]: a job that was in
//! flight when the coordinator stopped cannot resume (its node streams are gone), so it is
//! marked failed with a reason the analyst sees.
//!
//! Guarantees: the encoded `Job` is the source of truth; the `state` column mirrors it for
//! queries. Job ids are unique. [`JobStore::list`] returns jobs in reverse insertion order.
//!
//! Not guaranteed: concurrent use of one store file by two coordinators (SQLite locking keeps
//! the file consistent, but the recovery step would fail the other coordinator's jobs).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use parley_proto::{Job, JobState};
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use crate::CoordError;

/// Schema version written to `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 4;

/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema of version 1.
const SCHEMA_V1: &str = "
CREATE TABLE jobs (
    id              TEXT    PRIMARY KEY NOT NULL,
    seq             INTEGER NOT NULL UNIQUE,
    state           INTEGER NOT NULL,
    submitted_at_ms INTEGER NOT NULL,
    body            BLOB    NOT NULL
) STRICT;
CREATE INDEX jobs_by_state ON jobs (state);
";

/// Version 2 adds the budget-ledger heads nodes report (newest per node and dataset).
const SCHEMA_V2: &str = "
CREATE TABLE ledger_heads (
    node            TEXT    NOT NULL,
    dataset         TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    hash            BLOB    NOT NULL,
    signature       BLOB    NOT NULL,
    at_ms           INTEGER NOT NULL,
    recorded_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (node, dataset)
) STRICT;
";

/// Version 3 keeps every head each node reported, append-only, so that an audit can require
/// all of them in a ledger export (a rewrite that only keeps the newest head consistent is
/// caught). Existing newest heads are carried over.
const SCHEMA_V3: &str = "
CREATE TABLE ledger_head_history (
    node            TEXT    NOT NULL,
    dataset         TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    hash            BLOB    NOT NULL,
    signature       BLOB    NOT NULL,
    at_ms           INTEGER NOT NULL,
    recorded_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (node, dataset, seq)
) STRICT;
CREATE TRIGGER ledger_head_history_no_update BEFORE UPDATE ON ledger_head_history
BEGIN
    SELECT RAISE(ABORT, 'recorded ledger heads are append-only: UPDATE refused');
END;
CREATE TRIGGER ledger_head_history_no_delete BEFORE DELETE ON ledger_head_history
BEGIN
    SELECT RAISE(ABORT, 'recorded ledger heads are append-only: DELETE refused');
END;
INSERT INTO ledger_head_history SELECT node, dataset, seq, hash, signature, at_ms, recorded_at_ms
    FROM ledger_heads;
";

/// Version 4 records each head's ledger row format (what its signature covers); heads
/// recorded before are of format-1 rows.
const SCHEMA_V4: &str = "
ALTER TABLE ledger_heads ADD COLUMN row_format INTEGER NOT NULL DEFAULT 1;
ALTER TABLE ledger_head_history ADD COLUMN row_format INTEGER NOT NULL DEFAULT 1;
";

/// A ledger head as recorded, with who reported it and when.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHead {
    /// Reporting node.
    pub node: String,
    /// The head.
    pub head: parley_proto::LedgerHead,
    /// When it was recorded, Unix milliseconds.
    pub recorded_at_ms: i64,
}

/// What recording a head did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadUpdate {
    /// Newer than the recorded head (or the first): stored.
    Advanced,
    /// Same as the recorded head: nothing to do.
    Unchanged,
    /// Older than, or conflicting with, the recorded head: kept the recorded one. A node that
    /// reports this has lost or rewritten ledger rows; its next audit will fail.
    Rejected,
}

/// States of a job that has not ended.
const UNFINISHED: [JobState; 3] = [JobState::Submitted, JobState::Accepted, JobState::Running];

/// The durable job store. Cheap to share: wrap it in an `Arc`; it is `Send + Sync` and each
/// call holds the connection lock only for its own statements.
pub struct JobStore {
    /// The connection. Invariant: schema version [`SCHEMA_VERSION`], pragmas set by `open`.
    conn: Mutex<Connection>,
    /// Where the store lives (for error messages).
    location: String,
}

impl std::fmt::Debug for JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl JobStore {
    /// Opens (creating if needed) the job store at `path`, creating missing parent directories,
    /// and brings its schema up to date.
    pub fn open(path: &Path) -> Result<JobStore, CoordError> {
        let location = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| CoordError::StoreDir {
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        let open_err = |e: rusqlite::Error| CoordError::StoreOpen {
            path: location.clone(),
            message: e.to_string(),
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CoordError::StoreOpen {
                path: location,
                message: format!("SQLite refused WAL mode (journal_mode is '{mode}')"),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        Self::init(conn, location)
    }

    /// Opens a fresh store that lives in memory only (for tests).
    pub fn open_in_memory() -> Result<JobStore, CoordError> {
        let location = ":memory:".to_string();
        let conn = Connection::open_in_memory().map_err(|e| CoordError::StoreOpen {
            path: location.clone(),
            message: e.to_string(),
        })?;
        Self::init(conn, location)
    }

    /// Creates or checks the schema.
    fn init(mut conn: Connection, location: String) -> Result<JobStore, CoordError> {
        let open_err = |e: rusqlite::Error| CoordError::StoreOpen {
            path: location.clone(),
            message: e.to_string(),
        };
        let tx = conn.transaction().map_err(open_err)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(open_err)?;
        match version {
            0..=3 => {
                let steps = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4];
                for step in &steps[usize::try_from(version).unwrap_or(0)..] {
                    tx.execute_batch(step).map_err(open_err)?;
                }
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(open_err)?;
            }
            SCHEMA_VERSION => {}
            found if found > SCHEMA_VERSION => {
                return Err(CoordError::StoreVersion {
                    path: location,
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            found => {
                return Err(CoordError::StoreOpen {
                    path: location,
                    message: format!("unknown schema version {found}"),
                });
            }
        }
        tx.commit().map_err(open_err)?;
        Ok(JobStore {
            conn: Mutex::new(conn),
            location,
        })
    }

    /// Locks the connection. A panic while the lock was held cannot leave a half-done write
    /// behind (open transactions roll back when dropped), so a poisoned lock is still usable.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores a new job. Fails with [`CoordError::DuplicateJob`] if its id is taken.
    pub fn insert(&self, job: &Job) -> Result<(), CoordError> {
        let submitted_at = job
            .history
            .iter()
            .find(|c| c.state() == JobState::Submitted)
            .or_else(|| job.history.first())
            .map_or_else(now_ms, |c| c.at_ms);
        let conn = self.conn();
        let result = conn.execute(
            "INSERT INTO jobs (id, seq, state, submitted_at_ms, body)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?2, ?3, ?4)",
            params![job.id, job.state, submitted_at, job.encode_to_vec()],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(CoordError::DuplicateJob { id: job.id.clone() })
            }
            Err(e) => Err(store_err(format!("insert job '{}'", job.id), e)),
        }
    }

    /// Replaces a stored job (state, history, result...). Fails with
    /// [`CoordError::UnknownJob`] if no job has its id.
    pub fn update(&self, job: &Job) -> Result<(), CoordError> {
        let conn = self.conn();
        update_row(&conn, job)
    }

    /// Records a node's ledger head if it is newer than the recorded one (higher sequence
    /// number). A lower sequence number, or the same one with another hash, is not stored.
    pub fn record_head(
        &self,
        node: &str,
        head: &parley_proto::LedgerHead,
        now_ms: i64,
    ) -> Result<HeadUpdate, CoordError> {
        let mut conn = self.conn();
        let action = || format!("record ledger head of '{node}'");
        let tx = conn.transaction().map_err(|e| store_err(action(), e))?;
        let current: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, hash FROM ledger_heads WHERE node = ?1 AND dataset = ?2",
                params![node, head.dataset],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| store_err(action(), e))?;
        let seq = i64::try_from(head.seq).unwrap_or(i64::MAX);
        let update = match current {
            Some((s, h)) if s == seq && h == head.hash => HeadUpdate::Unchanged,
            Some((s, _)) if s >= seq => HeadUpdate::Rejected,
            _ => HeadUpdate::Advanced,
        };
        if update == HeadUpdate::Advanced {
            tx.execute(
                "INSERT INTO ledger_heads
                     (node, dataset, seq, hash, signature, at_ms, recorded_at_ms, row_format)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (node, dataset) DO UPDATE SET seq = ?3, hash = ?4, signature = ?5,
                     at_ms = ?6, recorded_at_ms = ?7, row_format = ?8",
                params![
                    node,
                    head.dataset,
                    seq,
                    head.hash,
                    head.signature,
                    head.at_ms,
                    now_ms,
                    head.row_format.max(1)
                ],
            )
            .map_err(|e| store_err(action(), e))?;
            tx.execute(
                "INSERT OR IGNORE INTO ledger_head_history
                     (node, dataset, seq, hash, signature, at_ms, recorded_at_ms, row_format)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    node,
                    head.dataset,
                    seq,
                    head.hash,
                    head.signature,
                    head.at_ms,
                    now_ms,
                    head.row_format.max(1)
                ],
            )
            .map_err(|e| store_err(action(), e))?;
        }
        tx.commit().map_err(|e| store_err(action(), e))?;
        Ok(update)
    }

    /// The newest recorded heads, optionally only of one node and/or dataset (empty = all),
    /// ordered by node then dataset.
    pub fn heads(&self, node: &str, dataset: &str) -> Result<Vec<StoredHead>, CoordError> {
        self.read_heads(
            "SELECT node, dataset, seq, hash, signature, at_ms, recorded_at_ms, row_format
             FROM ledger_heads
             WHERE (?1 = '' OR node = ?1) AND (?2 = '' OR dataset = ?2)
             ORDER BY node, dataset",
            node,
            dataset,
        )
    }

    /// Every head recorded for one node's dataset, oldest first.
    pub fn head_history(&self, node: &str, dataset: &str) -> Result<Vec<StoredHead>, CoordError> {
        self.read_heads(
            "SELECT node, dataset, seq, hash, signature, at_ms, recorded_at_ms, row_format
             FROM ledger_head_history WHERE node = ?1 AND dataset = ?2 ORDER BY seq",
            node,
            dataset,
        )
    }

    fn read_heads(
        &self,
        sql: &str,
        node: &str,
        dataset: &str,
    ) -> Result<Vec<StoredHead>, CoordError> {
        let conn = self.conn();
        let action = || "read ledger heads".to_string();
        let mut stmt = conn.prepare(sql).map_err(|e| store_err(action(), e))?;
        let rows = stmt
            .query_map(params![node, dataset], |row| {
                let seq: i64 = row.get(2)?;
                Ok(StoredHead {
                    node: row.get(0)?,
                    head: parley_proto::LedgerHead {
                        dataset: row.get(1)?,
                        seq: u64::try_from(seq).unwrap_or(0),
                        hash: row.get(3)?,
                        signature: row.get(4)?,
                        at_ms: row.get(5)?,
                        row_format: row.get(7)?,
                    },
                    recorded_at_ms: row.get(6)?,
                })
            })
            .map_err(|e| store_err(action(), e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| store_err(action(), e))
    }

    /// Returns the job with this id, if stored.
    pub fn get(&self, id: &str) -> Result<Option<Job>, CoordError> {
        let conn = self.conn();
        let body: Option<Vec<u8>> = conn
            .query_row("SELECT body FROM jobs WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| store_err(format!("read job '{id}'"), e))?;
        body.map(|b| decode(id, &b)).transpose()
    }

    /// Returns at most `limit` jobs, newest (last inserted) first.
    pub fn list(&self, limit: usize) -> Result<Vec<Job>, CoordError> {
        self.list_where(limit, |_| true)
    }

    /// The `limit` most recent jobs that `keep` accepts, newest first (read in pages, so a
    /// filter that keeps few jobs still returns up to `limit`).
    pub fn list_where(
        &self,
        limit: usize,
        keep: impl Fn(&Job) -> bool,
    ) -> Result<Vec<Job>, CoordError> {
        const PAGE: i64 = 500;
        let conn = self.conn();
        let mut out = Vec::new();
        let mut offset = 0i64;
        while out.len() < limit {
            let rows = query_rows(
                &conn,
                "SELECT id, body FROM jobs ORDER BY seq DESC LIMIT ?1 OFFSET ?2",
                [PAGE, offset],
            )
            .map_err(|e| store_err("list jobs".to_string(), e))?;
            let last_page = (rows.len() as i64) < PAGE;
            for (id, body) in rows {
                if out.len() == limit {
                    break;
                }
                let job = decode(&id, &body)?;
                if keep(&job) {
                    out.push(job);
                }
            }
            if last_page {
                break;
            }
            offset += PAGE;
        }
        Ok(out)
    }

    /// Start-up recovery: marks every job that had not ended (submitted, accepted or running)
    /// as failed, with `reason` recorded in its history at `now_ms`. Returns the ids of the
    /// jobs it failed, oldest first. All or nothing: one transaction.
    /// Deletes ended jobs submitted before `before_ms` (if given), then all but the newest
    /// `keep` ended jobs (if given); unfinished jobs and ledger heads are never touched.
    /// Returns how many jobs were deleted.
    pub fn prune(&self, before_ms: Option<i64>, keep: Option<u64>) -> Result<u64, CoordError> {
        let mut conn = self.conn();
        let action = || "delete old jobs".to_string();
        let tx = conn.transaction().map_err(|e| store_err(action(), e))?;
        let [a, b, c] = UNFINISHED.map(|s| s as i32);
        let mut deleted = 0;
        if let Some(before) = before_ms {
            deleted += tx
                .execute(
                    "DELETE FROM jobs WHERE state NOT IN (?1, ?2, ?3) AND submitted_at_ms < ?4",
                    params![a, b, c, before],
                )
                .map_err(|e| store_err(action(), e))?;
        }
        if let Some(keep) = keep {
            deleted += tx
                .execute(
                    "DELETE FROM jobs WHERE state NOT IN (?1, ?2, ?3) AND seq NOT IN
                         (SELECT seq FROM jobs WHERE state NOT IN (?1, ?2, ?3)
                          ORDER BY seq DESC LIMIT ?4)",
                    params![a, b, c, i64::try_from(keep).unwrap_or(i64::MAX)],
                )
                .map_err(|e| store_err(action(), e))?;
        }
        tx.commit().map_err(|e| store_err(action(), e))?;
        Ok(deleted as u64)
    }

    pub fn fail_unfinished(&self, reason: &str, now_ms: i64) -> Result<Vec<String>, CoordError> {
        let mut conn = self.conn();
        let action = || "fail unfinished jobs".to_string();
        let tx = conn.transaction().map_err(|e| store_err(action(), e))?;
        let states = UNFINISHED.map(|s| s as i32);
        let rows = query_rows(
            &tx,
            "SELECT id, body FROM jobs WHERE state IN (?1, ?2, ?3) ORDER BY seq ASC",
            states,
        )
        .map_err(|e| store_err(action(), e))?;
        let mut failed = Vec::with_capacity(rows.len());
        for (id, body) in rows {
            let mut job = decode(&id, &body)?;
            if parley_jobs::lifecycle::is_terminal(job.state()) {
                // The state column disagreed with the body; the body is the source of truth.
                continue;
            }
            transition(&mut job, JobState::Failed, reason, now_ms);
            update_row(&tx, &job)?;
            failed.push(id);
        }
        tx.commit().map_err(|e| store_err(action(), e))?;
        Ok(failed)
    }
}

/// Runs a query returning `(id, body)` rows.
fn query_rows<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> Result<Vec<(String, Vec<u8>)>, rusqlite::Error> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// Rewrites one stored job.
fn update_row(conn: &Connection, job: &Job) -> Result<(), CoordError> {
    let changed = conn
        .execute(
            "UPDATE jobs SET state = ?2, body = ?3 WHERE id = ?1",
            params![job.id, job.state, job.encode_to_vec()],
        )
        .map_err(|e| store_err(format!("update job '{}'", job.id), e))?;
    if changed == 0 {
        return Err(CoordError::UnknownJob { id: job.id.clone() });
    }
    Ok(())
}

/// Decodes a stored job body.
fn decode(id: &str, body: &[u8]) -> Result<Job, CoordError> {
    Job::decode(body).map_err(|e| CoordError::StoreCorrupt {
        id: id.to_string(),
        message: e.to_string(),
    })
}

/// Wraps an SQLite error.
fn store_err(action: String, e: rusqlite::Error) -> CoordError {
    CoordError::Store {
        action,
        message: e.to_string(),
    }
}

/// A fresh random job id: `job-` followed by 16 lowercase hex digits (64 random bits).
pub fn new_job_id() -> String {
    format!("job-{:016x}", rand::random::<u64>())
}

/// The current Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Moves `job` to `state` at `now_ms` through [`parley_jobs::lifecycle::transition`]. The
/// coordinator only ever asks for allowed moves; one that is not is a bug, logged and ignored
/// (the job keeps its state).
pub fn transition(job: &mut Job, state: JobState, note: &str, now_ms: i64) {
    if let Err(e) = parley_jobs::lifecycle::transition(job, state, note, now_ms) {
        tracing::error!(job = %job.id, error = %e, "illegal job state change ignored");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use parley_proto::{JobKind, JobResult, JobSpec, PsiMode, PsiParams, PsiResult};

    fn job(id: &str, at: i64) -> Job {
        let mut job = Job {
            id: id.to_string(),
            spec: Some(JobSpec {
                label: format!("label of {id}"),
                kind: JobKind::Psi as i32,
                participants: vec![],
                params: Some(parley_proto::job_spec::Params::Psi(PsiParams {
                    mode: PsiMode::Match as i32,
                    min_intersection: 10,
                    ..Default::default()
                })),
            }),
            submitted_by: "alice".to_string(),
            ..Job::default()
        };
        transition(&mut job, JobState::Submitted, "", at);
        job
    }

    #[test]
    fn retention_deletes_only_ended_jobs_and_keeps_heads() {
        let store = JobStore::open_in_memory().unwrap();
        // job-0 (old) is still unfinished; job-1..4 ended; job-5 is new and unfinished.
        store.insert(&job("job-0", 500)).unwrap();
        for i in 1..=4 {
            let mut j = job(&format!("job-{i}"), i * 1000);
            store.insert(&j).unwrap();
            transition(&mut j, JobState::Refused, "no", i * 1000 + 1);
            store.update(&j).unwrap();
        }
        store.insert(&job("job-5", 5000)).unwrap();
        store.record_head("brand", &head(0, 1, 10), 11).unwrap();
        let ids = |s: &JobStore| -> Vec<String> {
            let mut v: Vec<String> = s.list(100).unwrap().into_iter().map(|j| j.id).collect();
            v.sort();
            v
        };
        assert_eq!(store.prune(Some(2500), None).unwrap(), 2);
        assert_eq!(ids(&store), ["job-0", "job-3", "job-4", "job-5"]);
        assert_eq!(store.prune(None, Some(1)).unwrap(), 1);
        assert_eq!(ids(&store), ["job-0", "job-4", "job-5"]);
        assert_eq!(store.prune(Some(i64::MAX), None).unwrap(), 1);
        assert_eq!(ids(&store), ["job-0", "job-5"]);
        assert_eq!(store.head_history("brand", "crm").unwrap().len(), 1);
        assert_eq!(store.prune(None, None).unwrap(), 0);
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<JobStore>();
    }

    #[test]
    fn round_trip_insert_update_get() {
        let store = JobStore::open_in_memory().unwrap();
        let mut j = job("job-1", 1000);
        store.insert(&j).unwrap();
        assert_eq!(store.get("job-1").unwrap(), Some(j.clone()));
        assert_eq!(store.get("job-missing").unwrap(), None);

        transition(&mut j, JobState::Accepted, "", 1001);
        transition(&mut j, JobState::Running, "", 1002);
        transition(&mut j, JobState::Succeeded, "", 1003);
        j.result = Some(JobResult::from(PsiResult {
            mode: PsiMode::Match as i32,
            intersection_records: 42,
            ..PsiResult::default()
        }));
        store.update(&j).unwrap();
        let back = store.get("job-1").unwrap().unwrap();
        assert_eq!(back, j);
        assert_eq!(back.state(), JobState::Succeeded);
        assert_eq!(back.history.len(), 4);
    }

    #[test]
    fn duplicate_insert_and_missing_update_are_errors() {
        let store = JobStore::open_in_memory().unwrap();
        store.insert(&job("job-1", 1)).unwrap();
        assert!(matches!(
            store.insert(&job("job-1", 2)),
            Err(CoordError::DuplicateJob { id }) if id == "job-1"
        ));
        assert!(matches!(
            store.update(&job("job-2", 2)),
            Err(CoordError::UnknownJob { id }) if id == "job-2"
        ));
    }

    #[test]
    fn list_is_newest_first_and_limited() {
        let store = JobStore::open_in_memory().unwrap();
        // Insertion order decides, not timestamps or ids.
        for (id, at) in [("job-c", 5), ("job-a", 3), ("job-b", 4)] {
            store.insert(&job(id, at)).unwrap();
        }
        let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(ids(store.list(10).unwrap()), ["job-b", "job-a", "job-c"]);
        assert_eq!(ids(store.list(2).unwrap()), ["job-b", "job-a"]);
        assert!(store.list(0).unwrap().is_empty());
    }

    #[test]
    fn transition_sets_reason_for_unsuccessful_ends() {
        let mut j = job("job-1", 1);
        transition(&mut j, JobState::Accepted, "all accepted", 2);
        assert_eq!(j.reason, "");
        transition(
            &mut j,
            JobState::Refused,
            "publisher: dataset not shared",
            3,
        );
        assert_eq!(j.state(), JobState::Refused);
        assert_eq!(j.reason, "publisher: dataset not shared");
        let last = j.history.last().unwrap();
        assert_eq!(
            (last.state(), last.at_ms, last.note.as_str()),
            (JobState::Refused, 3, "publisher: dataset not shared")
        );
    }

    #[test]
    fn new_job_ids_have_the_documented_shape() {
        let a = new_job_id();
        let b = new_job_id();
        assert_ne!(a, b);
        let hex = a.strip_prefix("job-").unwrap();
        assert_eq!(hex.len(), 16);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert!(now_ms() > 1_600_000_000_000);
    }

    #[test]
    fn fail_unfinished_fails_only_jobs_in_flight() {
        let store = JobStore::open_in_memory().unwrap();
        let submitted = job("job-s", 1);
        let mut running = job("job-r", 2);
        transition(&mut running, JobState::Accepted, "", 3);
        transition(&mut running, JobState::Running, "", 4);
        let mut done = job("job-d", 5);
        transition(&mut done, JobState::Accepted, "", 5);
        transition(&mut done, JobState::Running, "", 5);
        transition(&mut done, JobState::Succeeded, "", 6);
        let mut refused = job("job-x", 7);
        transition(&mut refused, JobState::Refused, "no", 8);
        for j in [&submitted, &running, &done, &refused] {
            store.insert(j).unwrap();
        }

        let failed = store.fail_unfinished("coordinator restarted", 100).unwrap();
        assert_eq!(failed, ["job-s", "job-r"]);
        for id in ["job-s", "job-r"] {
            let j = store.get(id).unwrap().unwrap();
            assert_eq!(j.state(), JobState::Failed);
            assert_eq!(j.reason, "coordinator restarted");
            let last = j.history.last().unwrap();
            assert_eq!((last.state(), last.at_ms), (JobState::Failed, 100));
        }
        assert_eq!(store.get("job-d").unwrap().unwrap(), done);
        assert_eq!(store.get("job-x").unwrap().unwrap(), refused);
        // Nothing left to recover.
        assert!(store.fail_unfinished("again", 200).unwrap().is_empty());
    }

    #[test]
    fn file_store_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/jobs.sqlite");
        {
            let store = JobStore::open(&path).unwrap();
            store.insert(&job("job-1", 1)).unwrap();
            store.insert(&job("job-2", 2)).unwrap();
        }
        let store = JobStore::open(&path).unwrap();
        let ids: Vec<_> = store.list(10).unwrap().into_iter().map(|j| j.id).collect();
        assert_eq!(ids, ["job-2", "job-1"]);
        assert_eq!(
            store.fail_unfinished("coordinator restarted", 9).unwrap(),
            ["job-1", "job-2"]
        );
        // New inserts keep counting after the restart.
        store.insert(&job("job-0", 3)).unwrap();
        assert_eq!(store.list(1).unwrap()[0].id, "job-0");
    }

    fn head(seq: u64, tag: u8, at_ms: i64) -> parley_proto::LedgerHead {
        parley_proto::LedgerHead {
            dataset: "crm".into(),
            seq,
            hash: vec![tag; 32],
            signature: vec![1; 64],
            at_ms,
            row_format: 2,
        }
    }

    #[test]
    fn every_advancing_head_is_kept_append_only() {
        let store = JobStore::open_in_memory().unwrap();
        for seq in 0..3 {
            let got = store
                .record_head("brand", &head(seq, seq as u8, 10), 20)
                .unwrap();
            assert_eq!(got, HeadUpdate::Advanced);
        }
        // A rewrite of seq 1 is refused and the history keeps the original.
        let got = store.record_head("brand", &head(1, 9, 10), 20).unwrap();
        assert_eq!(got, HeadUpdate::Rejected);
        let newest = store.heads("brand", "crm").unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].head.seq, 2);
        let history = store.head_history("brand", "crm").unwrap();
        let seqs: Vec<_> = history
            .iter()
            .map(|h| (h.head.seq, h.head.hash[0]))
            .collect();
        assert_eq!(seqs, [(0, 0), (1, 1), (2, 2)]);
        let err = store
            .conn()
            .execute("DELETE FROM ledger_head_history", [])
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }

    #[test]
    fn a_version_2_store_gets_its_heads_carried_into_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.execute_batch(SCHEMA_V2).unwrap();
            conn.execute(
                "INSERT INTO ledger_heads VALUES ('brand', 'crm', 4, x'00', x'00', 5, 6)",
                [],
            )
            .unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
        }
        let store = JobStore::open(&path).unwrap();
        let history = store.head_history("brand", "crm").unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!((history[0].head.seq, history[0].recorded_at_ms), (4, 6));
        // Heads recorded before row formats were are of format-1 rows.
        assert_eq!(history[0].head.row_format, 1);
        assert_eq!(store.heads("brand", "crm").unwrap()[0].head.row_format, 1);
        // New heads keep their format.
        store.record_head("brand", &head(5, 9, 7), 8).unwrap();
        assert_eq!(
            store.head_history("brand", "crm").unwrap()[1]
                .head
                .row_format,
            2
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.sqlite");
        drop(JobStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = JobStore::open(&path).unwrap_err();
        assert!(
            matches!(err, CoordError::StoreVersion { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn damaged_body_is_reported() {
        let store = JobStore::open_in_memory().unwrap();
        store.insert(&job("job-1", 1)).unwrap();
        store
            .conn()
            .execute("UPDATE jobs SET body = x'ffffffff' WHERE id = 'job-1'", [])
            .unwrap();
        assert!(matches!(
            store.get("job-1"),
            Err(CoordError::StoreCorrupt { id, .. }) if id == "job-1"
        ));
    }
}
