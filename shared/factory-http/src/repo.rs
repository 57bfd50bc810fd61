//! Schematic storage over the content store: write-once objects `schematics/<id>` holding the
//! canonical YAML. Content addressing makes writes idempotent, and the conditional put keeps
//! concurrent creators (many Lambdas) from racing: the first write wins, later ones are no-ops.

use std::sync::Arc;

use bytes::Bytes;
use factory_core::schematic::{Schematic, SchematicError, SchematicId};
use factory_store::{ContentStore, PutCondition, PutOutcome, StoreError};

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
}

impl SchematicRepo {
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Self { store }
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
        let Some((_, bytes)) = self.store.get(&Self::key(id)).await? else {
            return Ok(None);
        };
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|e| RepoError::Corrupt {
                id: id.clone(),
                reason: e.to_string(),
            })
    }

    /// The stored schematic, parsed (for routes that build from it).
    pub async fn get(&self, id: &SchematicId) -> Result<Option<Schematic>, RepoError> {
        let Some(canonical) = self.get_canonical(id).await? else {
            return Ok(None);
        };
        Schematic::parse(canonical.as_bytes())
            .map(Some)
            .map_err(|e: SchematicError| RepoError::Corrupt {
                id: id.clone(),
                reason: e.to_string(),
            })
    }
}
