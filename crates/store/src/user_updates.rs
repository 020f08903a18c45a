//! Changing one user in place (status, roles, …) under a row lock.

use chrono::{SubsecRound, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect};
use userexport_domain::{ProjectId, User};

use crate::entity::{user_login_ids, users};
use crate::{Backend, Store, StoreError, convert};

impl Store {
    /// Finds the user of `project` whose login id — or else user id — is `id`, lets `change` edit it,
    /// and stores the result with `updated_at` set to now, in one transaction holding the row lock.
    /// The user id and login ids are kept whatever `change` does. Returns the stored user, or `None`
    /// when no user has that id.
    pub async fn update_user(
        &self,
        project: &ProjectId,
        id: &str,
        change: impl FnOnce(&mut User),
    ) -> Result<Option<User>, StoreError> {
        let txn = self.begin_write().await?;
        let seq =
            match user_login_ids::Entity::find_by_id((project.as_str().to_owned(), id.to_owned())).one(&txn).await? {
                Some(link) => Some(link.user_seq),
                None => users::Entity::find()
                    .filter(users::Column::ProjectId.eq(project.as_str()))
                    .filter(users::Column::UserId.eq(id))
                    .one(&txn)
                    .await?
                    .map(|m| m.seq),
            };
        let Some(seq) = seq else { return Ok(None) };
        let mut q = users::Entity::find_by_id(seq);
        if self.backend == Backend::Postgres {
            q = q.lock_exclusive();
        }
        let Some(row) = q.one(&txn).await? else { return Ok(None) };
        let before = convert::user(row)?;
        let mut user = before.clone();
        change(&mut user);
        user.id = before.id;
        user.login_ids = before.login_ids;
        user.updated_at = Ord::max(Utc::now().trunc_subsecs(6), before.updated_at);
        let model = convert::user_model(project, seq, &user)?;
        model.into_active_model().reset_all().update(&txn).await?;
        txn.commit().await?;
        self.forget_search_totals(project).await?;
        Ok(Some(user))
    }
}
