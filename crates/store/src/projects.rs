//! Projects, management keys and signing keys.

use chrono::{SubsecRound, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use sea_orm::{ActiveValue, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use userexport_domain::{Project, ProjectId, SigningKeyId};

use crate::entity::{management_keys, projects, signing_keys};
use crate::{Store, StoreError, convert};

/// Length of the random part of a management key.
const KEY_RANDOM_LEN: usize = 40;

/// A fresh management key: `K` + 40 random base62 characters.
fn generate_key() -> String {
    let random: String = rand::rng().sample_iter(Alphanumeric).take(KEY_RANDOM_LEN).map(char::from).collect();
    format!("K{random}")
}

/// Hex SHA-256 of a key, the only form ever stored.
fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Store {
    /// Creates a project and its first management key. The plaintext key is returned once and never
    /// stored.
    pub async fn create_project(&self, name: &str) -> Result<(Project, String), StoreError> {
        // Microsecond precision, what every backend stores, so the returned project equals the stored one.
        let created_at = Utc::now().trunc_subsecs(6);
        let project = Project { id: ProjectId::generate(), name: name.to_owned(), created_at };
        let key = generate_key();
        let txn = self.begin_write().await?;
        let row = projects::Model {
            id: project.id.as_str().to_owned(),
            name: project.name.clone(),
            created_at: project.created_at,
        };
        projects::Entity::insert(row.into_active_model()).exec_without_returning(&txn).await?;
        insert_key_hash(&txn, &project.id, &key).await?;
        txn.commit().await?;
        Ok((project, key))
    }

    /// The project with this id.
    pub async fn get_project(&self, id: &ProjectId) -> Result<Option<Project>, StoreError> {
        projects::Entity::find_by_id(id.as_str()).one(&self.db).await?.map(convert::project).transpose()
    }

    /// All projects, oldest first.
    pub async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
        projects::Entity::find()
            .order_by_asc(projects::Column::CreatedAt)
            .order_by_asc(projects::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(convert::project)
            .collect()
    }

    /// Adds a management key to a project; returns the plaintext key (shown once).
    pub async fn create_management_key(&self, project: &ProjectId) -> Result<String, StoreError> {
        let key = generate_key();
        insert_key_hash(&self.db, project, &key).await?;
        Ok(key)
    }

    /// Whether `key` is a management key of `project`. Hashes the candidate and compares it with every
    /// stored hash of the project in constant time.
    pub async fn verify_management_key(&self, project: &ProjectId, key: &str) -> Result<bool, StoreError> {
        let candidate = hash_key(key);
        let stored = management_keys::Entity::find()
            .filter(management_keys::Column::ProjectId.eq(project.as_str()))
            .all(&self.db)
            .await?;
        let mut ok = subtle::Choice::from(0u8);
        for row in &stored {
            ok |= row.key_hash.as_bytes().ct_eq(candidate.as_bytes());
        }
        Ok(bool::from(ok))
    }

    /// Registers (or replaces) the public JWK of signing key `kid`.
    pub async fn add_signing_key(
        &self,
        project: &ProjectId,
        kid: &SigningKeyId,
        public_jwk: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let jwk = convert::to_json("public_jwk", public_jwk)?;
        let txn = self.begin_write().await?;
        signing_keys::Entity::delete_many()
            .filter(signing_keys::Column::ProjectId.eq(project.as_str()))
            .filter(signing_keys::Column::Kid.eq(kid.as_str()))
            .exec(&txn)
            .await?;
        let row = signing_keys::Model {
            project_id: project.as_str().to_owned(),
            kid: kid.as_str().to_owned(),
            public_jwk: jwk,
            created_at: Utc::now(),
        };
        signing_keys::Entity::insert(row.into_active_model()).exec_without_returning(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// The project's signing keys as `(kid, public JWK)`, oldest first.
    pub async fn signing_keys(
        &self,
        project: &ProjectId,
    ) -> Result<Vec<(SigningKeyId, serde_json::Value)>, StoreError> {
        signing_keys::Entity::find()
            .filter(signing_keys::Column::ProjectId.eq(project.as_str()))
            .order_by_asc(signing_keys::Column::CreatedAt)
            .order_by_asc(signing_keys::Column::Kid)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| {
                Ok((convert::signing_key_id(&m.kid)?, convert::from_json("signing_keys.public_jwk", &m.public_jwk)?))
            })
            .collect()
    }
}

async fn insert_key_hash<C: sea_orm::ConnectionTrait>(
    db: &C,
    project: &ProjectId,
    key: &str,
) -> Result<(), StoreError> {
    let row = management_keys::ActiveModel {
        id: ActiveValue::NotSet,
        project_id: ActiveValue::Set(project.as_str().to_owned()),
        key_hash: ActiveValue::Set(hash_key(key)),
        created_at: ActiveValue::Set(Utc::now()),
    };
    management_keys::Entity::insert(row).exec_without_returning(db).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape_and_hash() {
        let k = generate_key();
        assert_eq!(k.len(), 41);
        assert!(k.starts_with('K'));
        assert!(k[1..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(generate_key(), k);
        let h = hash_key("abc");
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
