//! Schematic storage over the content store: write-once objects `schematics/<id>` holding the
//! canonical YAML. Content addressing makes writes idempotent, and the conditional put keeps
//! concurrent creators (many Lambdas) from racing: the first write wins, later ones are no-ops.
//!
//! Reads are checked against the address (the stored bytes must hash to the ID they are stored
//! under: anything else is corrupt, not served), then remembered by the process ([`Memo`]): a
//! schematic never changes for its ID, so a warm request does not ask the store again.

use std::sync::Arc;

use bytes::Bytes;
use factory_core::schematic::{Schematic, SchematicError, SchematicId};
use factory_store::{ContentStore, Memo, PutCondition, PutOutcome, StoreError};

/// Content type of stored schematics (and of `GET /schematics/{id}`).
pub const SCHEMATIC_CONTENT_TYPE: &str = "application/yaml";

/// Why a stored schematic could not be read back. Always a server-side fault.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// What is stored under the key is not a schematic (damaged or written by something else).
    #[error("stored schematic {id} is corrupt: {reason}")]
    Corrupt { id: SchematicId, reason: String },
}

/// Whether [`SchematicRepo::put`] wrote the schematic or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutResult {
    Created,
    AlreadyExisted,
}

/// Schematics by ID. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SchematicRepo {
    store: Arc<dyn ContentStore>,
    /// Checked schematics by ID (shared by clones).
    read: Arc<Memo<SchematicId, Arc<Stored>>>,
}

/// A stored schematic as read and checked.
#[derive(Debug)]
struct Stored {
    canonical: String,
    /// The parse, or why it failed (`GET /schematics/{id}` serves the bytes either way).
    schematic: Result<Schematic, String>,
}

/// Schematics a process keeps in memory (each a few hundred bytes to a few KiB).
const MEMO_ENTRIES: usize = 4096;

impl SchematicRepo {
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Self {
            store,
            read: Arc::new(Memo::new(MEMO_ENTRIES)),
        }
    }

    /// The object key of a schematic.
    pub fn key(id: &SchematicId) -> String {
        format!("schematics/{id}")
    }

    /// Stores a (validated) schematic under its ID; storing it again is not an error.
    pub async fn put(&self, schematic: &Schematic) -> Result<(SchematicId, String, PutResult), StoreError> {
        let canonical = schematic.canonical_yaml();
        let id = schematic.id();
        let outcome = self
            .store
            .put(
                &Self::key(&id),
                Bytes::from(canonical.clone()),
                Some(SCHEMATIC_CONTENT_TYPE),
                PutCondition::IfAbsent,
            )
            .await?;
        let result = match outcome {
            PutOutcome::Written(_) => PutResult::Created,
            // Same ID = same bytes: whoever wrote first stored exactly what we would have.
            PutOutcome::ConditionFailed => PutResult::AlreadyExisted,
        };
        Ok((id, canonical, result))
    }

    /// The stored canonical YAML, `None` when no such schematic exists.
    pub async fn get_canonical(&self, id: &SchematicId) -> Result<Option<String>, RepoError> {
        Ok(self.read(id).await?.map(|stored| stored.canonical.clone()))
    }

    /// The stored schematic, parsed (for routes that build from it).
    pub async fn get(&self, id: &SchematicId) -> Result<Option<Schematic>, RepoError> {
        let Some(stored) = self.read(id).await? else {
            return Ok(None);
        };
        match &stored.schematic {
            Ok(schematic) => Ok(Some(schematic.clone())),
            Err(reason) => Err(RepoError::Corrupt {
                id: id.clone(),
                reason: reason.clone(),
            }),
        }
    }

    /// From memory, else from the store: checked against its address and parsed, then kept.
    /// Absence is not remembered (the schematic may be created a moment later).
    async fn read(&self, id: &SchematicId) -> Result<Option<Arc<Stored>>, RepoError> {
        if let Some(stored) = self.read.get(id) {
            return Ok(Some(stored));
        }
        let Some((_, bytes)) = self.store.get(&Self::key(id)).await? else {
            return Ok(None);
        };
        let corrupt = |reason: String| RepoError::Corrupt {
            id: id.clone(),
            reason,
        };
        let canonical = String::from_utf8(bytes.to_vec()).map_err(|e| corrupt(e.to_string()))?;
        let actual = SchematicId::of_canonical(&canonical);
        if &actual != id {
            return Err(corrupt(format!("its content hashes to {actual}")));
        }
        let schematic = Schematic::parse(canonical.as_bytes()).map_err(|e: SchematicError| e.to_string());
        let stored = Arc::new(Stored { canonical, schematic });
        self.read.insert(id.clone(), Arc::clone(&stored));
        Ok(Some(stored))
    }
}
