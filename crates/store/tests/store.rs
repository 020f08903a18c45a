//! Integration tests of `userexport-store`.
//!
//! Every test body is written once as `async fn body(store: Store)` and runs twice (see
//! [`store_tests!`]): on a fresh SQLite file in a temporary directory, and on a throwaway Postgres
//! database created from `USEREXPORT_TEST_DATABASE_URL` and dropped afterwards (see [`harness`]).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use userexport_domain::{ExportTask, ProjectId, TaskId, User, UserFilter, UserId};
use userexport_store::{Store, StoreError};

/// Generates, for each named body `async fn name(store: Store)` of the calling module, the tests
/// `sqlite::name` and `postgres::name`.
macro_rules! store_tests {
    ($($name:ident),+ $(,)?) => {
        /// The bodies of the enclosing module on a fresh SQLite file.
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::harness::on_sqlite(super::$name).await;
                }
            )+
        }

        /// The bodies of the enclosing module on a throwaway Postgres database.
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::harness::on_postgres(concat!(module_path!(), "::", stringify!($name)), super::$name).await;
                }
            )+
        }
    };
}

/// Fresh databases per test and their cleanup.
mod harness {
    use std::future::Future;
    use std::net::{TcpStream, ToSocketAddrs};
    use std::panic::resume_unwind;
    use std::time::Duration;

    use sea_orm::ConnectionTrait;
    use userexport_store::{Backend, Store};

    /// Admin URL used when `USEREXPORT_TEST_DATABASE_URL` is not set.
    const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// Pool size of a test store: room for the concurrency tests, yet many tests may run at once.
    const POOL_SIZE: u32 = 6;

    /// Whether a missing service must fail the test (`USEREXPORT_TEST_REQUIRE_SERVICES=1`).
    fn services_required() -> bool {
        std::env::var("USEREXPORT_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
    }

    /// Runs `body` on a migrated store backed by a new SQLite file in a temporary directory.
    pub async fn on_sqlite<F, Fut>(body: F)
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = ()>,
    {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("userexport.db").display());
        let store = Store::connect_with(&url, POOL_SIZE).await.expect("open the SQLite store");
        assert_eq!(store.backend(), Backend::Sqlite);
        store.migrate().await.expect("migrate the SQLite store");
        body(store).await;
    }

    /// Connects to the admin database. A TCP probe first makes an absent server fail fast (the pool
    /// would retry until its acquire timeout).
    async fn connect_admin(admin_url: &str) -> Result<Store, String> {
        let url = url::Url::parse(admin_url).map_err(|e| format!("invalid URL: {e}"))?;
        let host = url.host_str().unwrap_or("localhost").to_owned();
        let port = url.port().unwrap_or(5432);
        let probe = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} has no address"));
            for addr in (host.as_str(), port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            Err(last)
        });
        probe.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        Store::connect_with(admin_url, 1).await.map_err(|e| e.to_string())
    }

    /// Runs `body` on a migrated store backed by a new Postgres database `userexport_test_<hex>`,
    /// which is dropped afterwards even when `body` panics (the panic is then resumed). Skips, or
    /// fails when services are required, if Postgres cannot be reached.
    pub async fn on_postgres<F, Fut>(test: &str, body: F)
    where
        F: FnOnce(Store) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let admin_url = std::env::var("USEREXPORT_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let admin = match connect_admin(&admin_url).await {
            Ok(admin) => admin,
            Err(e) if services_required() => {
                panic!("USEREXPORT_TEST_REQUIRE_SERVICES=1 but Postgres at {admin_url} is unreachable: {e}")
            }
            Err(e) => {
                eprintln!("skipping {test}: Postgres at {admin_url} is unreachable ({e})");
                return;
            }
        };
        let name = format!("userexport_test_{:016x}", rand::random::<u64>());
        let mut url = url::Url::parse(&admin_url).expect("USEREXPORT_TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        let url = url.to_string();

        admin
            .connection()
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        // The body runs as its own task, so a panic surfaces here as a JoinError and cleanup still runs.
        let outcome = tokio::spawn(async move {
            let store = Store::connect_with(&url, POOL_SIZE).await.expect("connect to the test database");
            assert_eq!(store.backend(), Backend::Postgres);
            store.migrate().await.expect("migrate the Postgres store");
            body(store).await;
        })
        .await;
        let dropped =
            admin.connection().execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            Err(e) => panic!("{test}: the test task did not finish: {e}"),
        }
        if let Err(e) = dropped {
            panic!("DROP DATABASE {name}: {e}");
        }
    }
}

/// Small builders shared by the bodies.
mod fixtures {
    use super::*;
    use userexport_domain::{Dialect, ExportFormat, ExportSpec, TestUsers, fake};

    /// The current time at the microsecond precision both backends store, so values built by the
    /// tests compare equal to what is read back.
    pub fn now() -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }

    /// A filter that sees every user, test users included.
    pub fn everyone() -> UserFilter {
        UserFilter { test_users: TestUsers::Include, ..Default::default() }
    }

    /// Users `range` of the fake population `seed`.
    pub fn fake_users(seed: u64, range: std::ops::Range<u64>) -> Vec<User> {
        range.map(|i| fake::user(seed, i)).collect()
    }

    /// The ids of `users`, in order.
    pub fn ids(users: &[User]) -> Vec<UserId> {
        users.iter().map(|u| u.id.clone()).collect()
    }

    /// The users of `users` that `filter` matches (the reference semantics), in order.
    pub fn matching(users: &[User], filter: &UserFilter) -> Vec<UserId> {
        users.iter().filter(|u| filter.matches(u)).map(|u| u.id.clone()).collect()
    }

    /// A new project's id.
    pub async fn project(store: &Store) -> ProjectId {
        store.create_project("test project").await.expect("create a project").0.id
    }

    /// A pending task as the API builds it (`userexport_api::service::new_task`).
    pub fn new_task(project: &ProjectId, now: DateTime<Utc>) -> ExportTask {
        let spec = ExportSpec::builder(ExportFormat::Csv).build().expect("a valid spec");
        ExportTask::new_pending(project.clone(), Dialect::Native, spec, serde_json::json!({ "format": "csv" }), now)
    }

    /// Inserts a new pending task of `project` and returns it as stored.
    pub async fn pending(store: &Store, project: &ProjectId) -> ExportTask {
        let (task, created) = store.insert_task(&new_task(project, now()), None).await.expect("insert a task");
        assert!(created);
        task
    }

    /// Reads a task back (unscoped), which must exist.
    pub async fn reload(store: &Store, id: &TaskId) -> ExportTask {
        store.load_task(id).await.expect("load a task").expect("the task exists")
    }

    /// Walks [`Store::users_page`] from the start with page size `limit`; checks the page bounds.
    pub async fn all_pages(store: &Store, project: &ProjectId, filter: &UserFilter, limit: u64) -> Vec<UserId> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = store.users_page(project, filter, after, limit).await.expect("read a page");
            assert!(page.len() as u64 <= limit, "page of {} users with limit {limit}", page.len());
            out.extend(page.iter().map(|u| u.id.clone()));
            match next {
                Some(next) => {
                    assert!(after.is_none_or(|a| next > a), "the cursor moves forward");
                    after = Some(next);
                }
                None => return out,
            }
        }
    }

    /// Collects [`Store::stream_user_pages`]; checks that pages are full except the last.
    pub async fn streamed(store: &Store, project: &ProjectId, filter: &UserFilter, page_size: u64) -> Vec<UserId> {
        use futures_util::TryStreamExt;
        let pages: Vec<Vec<User>> = store
            .stream_user_pages(project.clone(), filter.clone(), page_size)
            .try_collect()
            .await
            .expect("stream the users");
        if let Some((last, full)) = pages.split_last() {
            assert!(!last.is_empty() && last.len() as u64 <= page_size);
            assert!(full.iter().all(|p| p.len() as u64 == page_size), "only the last page may be short");
        }
        pages.iter().flatten().map(|u| u.id.clone()).collect()
    }

    /// Asserts that `result` is [`StoreError::Duplicate`] naming `value`.
    pub fn assert_duplicate<T: std::fmt::Debug>(result: Result<T, StoreError>, value: &str) {
        match result {
            Err(StoreError::Duplicate(v)) => assert_eq!(v, value),
            other => panic!("expected Duplicate({value}), got {other:?}"),
        }
    }

    /// Asserts that `items` has no repeated element.
    pub fn assert_unique<T: std::hash::Hash + Eq + std::fmt::Debug>(items: &[T]) {
        let mut seen = HashSet::new();
        for item in items {
            assert!(seen.insert(item), "{item:?} appears twice");
        }
    }
}

/// Projects, management keys and signing keys.
mod projects {
    use super::*;
    use userexport_domain::SigningKeyId;

    /// The key returned by `create_project` (and by `create_management_key`) verifies for its own
    /// project only; anything else is refused.
    async fn management_keys_verify_for_their_project_only(store: Store) {
        let (a, key_a) = store.create_project("alpha").await.unwrap();
        let (b, key_b) = store.create_project("beta").await.unwrap();
        assert_eq!(a.name, "alpha");
        assert_ne!(a.id, b.id);
        assert_ne!(key_a, key_b);

        assert!(store.verify_management_key(&a.id, &key_a).await.unwrap());
        assert!(store.verify_management_key(&b.id, &key_b).await.unwrap());
        assert!(!store.verify_management_key(&a.id, &key_b).await.unwrap(), "another project's key");
        assert!(!store.verify_management_key(&b.id, &key_a).await.unwrap(), "another project's key");
        assert!(!store.verify_management_key(&a.id, "").await.unwrap());
        assert!(!store.verify_management_key(&a.id, &key_a[..key_a.len() - 1]).await.unwrap(), "a prefix");
        assert!(!store.verify_management_key(&a.id, &format!("{key_a}x")).await.unwrap(), "an extension");
        assert!(!store.verify_management_key(&ProjectId::generate(), &key_a).await.unwrap(), "unknown project");

        let second = store.create_management_key(&a.id).await.unwrap();
        assert_ne!(second, key_a);
        assert!(store.verify_management_key(&a.id, &second).await.unwrap());
        assert!(store.verify_management_key(&a.id, &key_a).await.unwrap(), "older keys stay valid");
        assert!(!store.verify_management_key(&b.id, &second).await.unwrap());
    }

    /// Projects read back as created; the listing holds all of them, oldest first.
    async fn projects_are_listed_oldest_first(store: Store) {
        assert!(store.list_projects().await.unwrap().is_empty());
        let mut created = Vec::new();
        for name in ["one", "two", "three"] {
            created.push(store.create_project(name).await.unwrap().0);
        }
        for p in &created {
            assert_eq!(store.get_project(&p.id).await.unwrap().as_ref(), Some(p));
        }
        assert_eq!(store.list_projects().await.unwrap(), created);
        assert_eq!(store.get_project(&ProjectId::generate()).await.unwrap(), None);
    }

    /// Signing keys are stored per project, listed oldest first, and re-adding a kid replaces its JWK.
    async fn signing_keys_are_added_and_listed(store: Store) {
        let a = fixtures::project(&store).await;
        let b = fixtures::project(&store).await;
        assert!(store.signing_keys(&a).await.unwrap().is_empty());

        let (k1, k2) = (SigningKeyId::generate(), SigningKeyId::generate());
        let jwk1 = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "one", "kid": k1.as_str()});
        let jwk2 = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "two", "y": "zwei"});
        store.add_signing_key(&a, &k1, &jwk1).await.unwrap();
        store.add_signing_key(&a, &k2, &jwk2).await.unwrap();
        assert_eq!(store.signing_keys(&a).await.unwrap(), vec![(k1.clone(), jwk1), (k2.clone(), jwk2.clone())]);
        assert!(store.signing_keys(&b).await.unwrap().is_empty(), "keys belong to their project");

        let rotated = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "rotated"});
        store.add_signing_key(&a, &k1, &rotated).await.unwrap();
        let keys: HashSet<(String, String)> = store
            .signing_keys(&a)
            .await
            .unwrap()
            .into_iter()
            .map(|(kid, jwk)| (kid.to_string(), jwk.to_string()))
            .collect();
        let want: HashSet<(String, String)> =
            [(k1.to_string(), rotated.to_string()), (k2.to_string(), jwk2.to_string())].into();
        assert_eq!(keys, want);

        // The same kid may exist in another project independently.
        store.add_signing_key(&b, &k1, &jwk2).await.unwrap();
        assert_eq!(store.signing_keys(&b).await.unwrap(), vec![(k1, jwk2)]);
        assert_eq!(store.signing_keys(&a).await.unwrap().len(), 2);
    }

    store_tests!(
        management_keys_verify_for_their_project_only,
        projects_are_listed_oldest_first,
        signing_keys_are_added_and_listed,
    );
}

/// Users: inserts, lookups, counts, keyset pages and snapshot streams.
mod users {
    use super::*;
    use fixtures::{all_pages, assert_duplicate, assert_unique, everyone, fake_users, ids, matching, streamed};
    use futures_util::StreamExt;
    use serde_json::json;
    use userexport_domain::{Address, TestUsers, UserStatus, fake};

    /// Labelled filters covering exact (SQL) and Rust-evaluated predicates over `users`.
    pub(super) fn filters(users: &[User]) -> Vec<(&'static str, UserFilter)> {
        let f = UserFilter::default;
        vec![
            ("default (no test users)", f()),
            ("everyone", everyone()),
            ("test users only", UserFilter { test_users: TestUsers::Only, ..f() }),
            ("statuses", UserFilter { statuses: vec![UserStatus::Disabled, UserStatus::Invited], ..f() }),
            (
                "user ids",
                UserFilter { user_ids: vec![users[3].id.to_string(), users[70].id.to_string()], ..everyone() },
            ),
            (
                "emails, any case",
                UserFilter {
                    emails: vec![users[5].email.clone().unwrap().to_ascii_uppercase(), users[9].email.clone().unwrap()],
                    ..f()
                },
            ),
            ("phones", UserFilter { phones: users.iter().filter_map(|u| u.phone.clone()).take(4).collect(), ..f() }),
            (
                "login ids",
                UserFilter {
                    login_ids: users.iter().skip(20).step_by(15).map(|u| u.login_ids[0].clone()).collect(),
                    ..f()
                },
            ),
            (
                "created window, inclusive",
                UserFilter { created_from: Some(users[50].created_at), created_to: Some(users[150].created_at), ..f() },
            ),
            (
                "modified window",
                UserFilter {
                    modified_from: Some(fake::epoch() + TimeDelta::days(3)),
                    modified_to: Some(fake::epoch() + TimeDelta::days(20)),
                    ..everyone()
                },
            ),
            ("tenant", UserFilter { tenant_ids: vec!["T-acme".into()], ..f() }),
            ("role", UserFilter { role_names: vec!["admin".into()], ..f() }),
            ("text", UserFilter { text: Some("smith".into()), ..f() }),
            (
                "custom attribute",
                UserFilter { custom_attributes: json!({"plan": ["pro", "team"]}).as_object().unwrap().clone(), ..f() },
            ),
            ("sso only", UserFilter { sso_only: true, ..everyone() }),
            (
                "exact and Rust-side combined",
                UserFilter { statuses: vec![UserStatus::Enabled], tenant_ids: vec!["T-globex".into()], ..f() },
            ),
            ("matches nobody", UserFilter { user_ids: vec![UserId::generate().to_string()], ..everyone() }),
        ]
    }

    /// A batch that repeats a user id or login id, inside itself or against stored users, inserts
    /// nothing and names the duplicate; the project then still accepts a clean batch.
    async fn insert_users_is_all_or_nothing(store: Store) {
        let p = fixtures::project(&store).await;
        let stored = fake_users(11, 0..5);
        assert_eq!(store.insert_users(&p, &stored).await.unwrap(), 5);
        assert_eq!(store.insert_users(&p, &[]).await.unwrap(), 0);

        // A user id twice in the batch.
        let u5 = fake::user(11, 5);
        assert_duplicate(store.insert_users(&p, &[u5.clone(), fake::user(11, 6), u5.clone()]).await, u5.id.as_str());

        // A login id twice in the batch.
        let u7 = fake::user(11, 7);
        let mut shares_login = fake::user(11, 8);
        shares_login.login_ids.push(u7.login_ids[0].clone());
        assert_duplicate(store.insert_users(&p, &[u7.clone(), shares_login]).await, &u7.login_ids[0]);

        // A user id that is already stored (the database refuses it).
        let mut stored_id = fake::user(11, 9);
        stored_id.id = stored[2].id.clone();
        assert_duplicate(
            store.insert_users(&p, &[fake::user(11, 10), fake::user(11, 11), stored_id]).await,
            stored[2].id.as_str(),
        );

        // A login id that is already stored.
        let mut stored_login = fake::user(11, 12);
        stored_login.login_ids = vec!["fresh@example.com".into(), stored[3].login_ids[0].clone()];
        assert_duplicate(store.insert_users(&p, &[fake::user(11, 13), stored_login]).await, &stored[3].login_ids[0]);

        // Nothing of the failed batches was written.
        assert_eq!(store.count_users(&p, &everyone()).await.unwrap(), 5);
        for u in fake_users(11, 5..14) {
            assert_eq!(store.get_user(&p, &u.id).await.unwrap(), None, "user {} of a failed batch", u.id);
            for login in &u.login_ids {
                assert_eq!(store.find_user_by_login_id(&p, login).await.unwrap(), None);
            }
        }
        assert_eq!(store.find_user_by_login_id(&p, "fresh@example.com").await.unwrap(), None);
        assert_eq!(all_pages(&store, &p, &everyone(), 100).await, ids(&stored));

        // The project still takes a clean batch, which lands after the stored users.
        let more = fake_users(11, 5..14);
        assert_eq!(store.insert_users(&p, &more).await.unwrap(), 9);
        let all: Vec<User> = stored.into_iter().chain(more).collect();
        assert_eq!(all_pages(&store, &p, &everyone(), 100).await, ids(&all));
    }

    /// `get_user` and `find_user_by_login_id` return exactly the inserted `User`, including values
    /// that stress the storage encodings (COPY escapes, the `\N` null marker, JSON columns).
    async fn users_round_trip_every_field(store: Store) {
        let p = fixtures::project(&store).await;
        let mut users = fake_users(21, 0..80);
        let mut edge = fake::user(21, 1000);
        edge.name = Some("back\\slash \\N tab\t cr\r nl\n end".into());
        edge.nickname = Some("\\N".into());
        edge.username = Some(String::new());
        edge.phone = None;
        edge.middle_name = None;
        edge.last_login_at = None;
        edge.website = Some("https://example.com/?a=1&b=\"2\"".into());
        edge.address = Some(Address { formatted: Some("a\\b\nc\td".into()), ..Default::default() });
        edge.custom_attributes = json!({"nested": {"k": [1, "two", null, true]}, "unicode": "Zoë 李 🎉", "empty": {}})
            .as_object()
            .unwrap()
            .clone();
        edge.sso_app_ids = vec!["app-1".into(), "app-2".into()];
        edge.test = true;
        edge.status = UserStatus::Expired;
        edge.logins_count = i64::MAX;
        edge.login_ids.push("login\twith\\escapes".into());
        users.push(edge);
        assert!(users.iter().any(|u| u.name.as_deref().is_some_and(|n| n.contains('\n'))));
        assert!(users.iter().any(|u| u.address.is_some()));

        assert_eq!(store.insert_users(&p, &users).await.unwrap(), users.len() as u64);
        for u in &users {
            assert_eq!(store.get_user(&p, &u.id).await.unwrap().as_ref(), Some(u));
            for login in &u.login_ids {
                assert_eq!(store.find_user_by_login_id(&p, login).await.unwrap().as_ref(), Some(u), "{login}");
            }
        }
        assert_eq!(store.get_user(&p, &UserId::generate()).await.unwrap(), None);
        assert_eq!(store.find_user_by_login_id(&p, "nobody@example.com").await.unwrap(), None);
        // Login ids match exactly, not case-insensitively.
        let upper = users[0].login_ids[0].to_ascii_uppercase();
        assert_eq!(store.find_user_by_login_id(&p, &upper).await.unwrap(), None);
        // Pages carry the full users too.
        let (page, _) = store.users_page(&p, &everyone(), None, 1000).await.unwrap();
        assert_eq!(page, users);
    }

    /// `count_users` agrees with `UserFilter::matches` for exact and Rust-evaluated filters.
    async fn count_users_applies_the_filter(store: Store) {
        let p = fixtures::project(&store).await;
        let users = fake_users(31, 0..400);
        store.insert_users(&p, &users).await.unwrap();
        let real = users.iter().filter(|u| !u.test).count() as u64;
        assert!(real < 400, "the population holds test users");
        assert_eq!(store.count_users(&p, &UserFilter::default()).await.unwrap(), real);
        assert_eq!(store.count_users(&p, &everyone()).await.unwrap(), 400);
        for (label, filter) in filters(&users) {
            let want = matching(&users, &filter).len() as u64;
            assert!(want > 0 || label == "matches nobody", "filter `{label}` should select someone");
            assert_eq!(store.count_users(&p, &filter).await.unwrap(), want, "filter `{label}`");
            assert_eq!(store.count_users_beside_export(&p, &filter).await.unwrap(), want, "filter `{label}`");
        }
        assert_eq!(store.count_users(&ProjectId::generate(), &everyone()).await.unwrap(), 0);
        assert_eq!(store.count_users_beside_export(&p, &UserFilter::default()).await.unwrap(), real);
    }

    /// Every migration can be undone and done again, with the users still there and counted.
    async fn migrations_go_down_and_up_again(store: Store) {
        use userexport_migrations::MigratorTrait;
        let p = fixtures::project(&store).await;
        let users = fake_users(32, 0..50);
        store.insert_users(&p, &users).await.unwrap();
        let real = users.iter().filter(|u| !u.test).count() as u64;
        let all = userexport_migrations::Migrator::migrations().len() as u32;
        // Down to the first migration (which holds the tables), then up again.
        userexport_migrations::Migrator::down(store.connection(), Some(all - 1)).await.unwrap();
        userexport_migrations::Migrator::up(store.connection(), None).await.unwrap();
        assert_eq!(store.count_users_beside_export(&p, &UserFilter::default()).await.unwrap(), real);
        let (page, _) = store.users_page(&p, &everyone(), None, 1000).await.unwrap();
        assert_eq!(page, users);
    }

    /// Keyset pages return every matching user exactly once, in insertion order, for any page size;
    /// `stream_user_pages` yields the same users.
    async fn pages_and_streams_visit_every_user_once(store: Store) {
        let p = fixtures::project(&store).await;
        let users = fake_users(41, 0..300);
        // Two batches, so insertion order spans more than one insert.
        store.insert_users(&p, &users[..120]).await.unwrap();
        store.insert_users(&p, &users[120..]).await.unwrap();

        for (label, filter) in filters(&users) {
            let want = matching(&users, &filter);
            for limit in [7, 1000] {
                let got = all_pages(&store, &p, &filter, limit).await;
                assert_unique(&got);
                assert_eq!(got, want, "users_page, filter `{label}`, limit {limit}");
            }
            for page_size in [7, 1000] {
                let got = streamed(&store, &p, &filter, page_size).await;
                assert_eq!(got, want, "stream_user_pages, filter `{label}`, page size {page_size}");
            }
        }

        // A limit of 0 reads nothing and keeps the cursor.
        assert_eq!(store.users_page(&p, &everyone(), Some(5), 0).await.unwrap(), (Vec::new(), Some(5)));
        // A cursor from the middle continues right after it.
        let (first, cursor) = store.users_page(&p, &everyone(), None, 10).await.unwrap();
        assert_eq!(ids(&first), ids(&users[..10]));
        let (next, _) = store.users_page(&p, &everyone(), cursor, 10).await.unwrap();
        assert_eq!(ids(&next), ids(&users[10..20]));
        // Pages of one user, and a page size of 0 treated as 1.
        assert_eq!(streamed(&store, &p, &everyone(), 1).await, ids(&users));
        let single: Vec<Vec<User>> =
            store.stream_user_pages(p.clone(), everyone(), 0).map(|page| page.unwrap()).take(3).collect().await;
        assert!(single.iter().all(|page| page.len() == 1));
    }

    /// Users of one project never appear in another; ids and login ids are unique per project only.
    async fn projects_are_isolated(store: Store) {
        let a = fixtures::project(&store).await;
        let b = fixtures::project(&store).await;
        let shared = fake_users(51, 0..20);
        let only_a = fake_users(51, 20..45);
        // Fake phone numbers depend on the index only, so B's own users use other indexes.
        let only_b = fake_users(52, 100..115);
        let users_a: Vec<User> = shared.iter().chain(&only_a).cloned().collect();
        let users_b: Vec<User> = shared.iter().chain(&only_b).cloned().collect();
        // Interleave the inserts so both projects' rows mix in the tables.
        store.insert_users(&a, &shared).await.unwrap();
        store.insert_users(&b, &shared).await.unwrap();
        store.insert_users(&b, &only_b).await.unwrap();
        store.insert_users(&a, &only_a).await.unwrap();

        for (p, mine, theirs) in [(&a, &users_a, &only_b), (&b, &users_b, &only_a)] {
            assert_eq!(store.count_users(p, &everyone()).await.unwrap(), mine.len() as u64);
            assert_eq!(all_pages(&store, p, &everyone(), 9).await, ids(mine));
            assert_eq!(streamed(&store, p, &everyone(), 9).await, ids(mine));
            let tenant = UserFilter { tenant_ids: vec!["T-acme".into()], ..everyone() };
            assert_eq!(all_pages(&store, p, &tenant, 9).await, matching(mine, &tenant));
            for u in theirs {
                assert_eq!(store.get_user(p, &u.id).await.unwrap(), None);
                assert_eq!(store.find_user_by_login_id(p, &u.login_ids[0]).await.unwrap(), None);
            }
            // Filters naming the other project's users find nothing here.
            let named = UserFilter {
                user_ids: theirs.iter().map(|u| u.id.to_string()).collect(),
                login_ids: theirs.iter().map(|u| u.login_ids[0].clone()).collect(),
                ..everyone()
            };
            assert_eq!(store.count_users(p, &named).await.unwrap(), 0);
            let by_login =
                UserFilter { login_ids: theirs.iter().map(|u| u.login_ids[0].clone()).collect(), ..everyone() };
            assert_eq!(store.count_users(p, &by_login).await.unwrap(), 0);
        }
        // A shared login id resolves to the user of the asking project.
        let login = &shared[0].login_ids[0];
        assert_eq!(store.find_user_by_login_id(&a, login).await.unwrap().as_ref(), Some(&shared[0]));
        assert_eq!(store.find_user_by_login_id(&b, login).await.unwrap().as_ref(), Some(&shared[0]));
    }

    /// Users inserted while a stream is being read neither repeat nor reorder the streamed users; the
    /// stream reads one snapshot, so they are not seen at all.
    async fn streams_read_one_snapshot(store: Store) {
        let p = fixtures::project(&store).await;
        let before = fake_users(61, 0..120);
        let late = fake_users(61, 120..170);
        store.insert_users(&p, &before).await.unwrap();

        let mut stream = store.stream_user_pages(p.clone(), everyone(), 10);
        let mut got = ids(&stream.next().await.expect("a first page").unwrap());
        assert_eq!(got.len(), 10);
        assert_eq!(store.insert_users(&p, &late).await.unwrap(), 50);
        while let Some(page) = stream.next().await {
            got.extend(ids(&page.unwrap()));
        }
        assert_unique(&got);
        assert_eq!(got, ids(&before), "the stream sees the users of its snapshot only");

        // A new stream sees everything.
        let all: Vec<User> = before.into_iter().chain(late).collect();
        assert_eq!(streamed(&store, &p, &everyone(), 10).await, ids(&all));

        // Dropping a stream early ends it without blocking writers.
        let mut stream = store.stream_user_pages(p.clone(), everyone(), 5);
        assert_eq!(stream.next().await.unwrap().unwrap().len(), 5);
        drop(stream);
        store.insert_users(&p, &fake_users(61, 170..175)).await.unwrap();
        assert_eq!(store.count_users(&p, &everyone()).await.unwrap(), 175);
    }

    store_tests!(
        insert_users_is_all_or_nothing,
        users_round_trip_every_field,
        count_users_applies_the_filter,
        migrations_go_down_and_up_again,
        pages_and_streams_visit_every_user_once,
        projects_are_isolated,
        streams_read_one_snapshot,
    );
}

/// Numbered-page search on keyset cursors, and in-place user updates.
mod search {
    use super::*;
    use fixtures::{assert_unique, everyone, fake_users, ids};
    use std::cmp::Ordering;
    use userexport_domain::{SortField, UserSort, UserStatus};

    /// The reference order: `sort` keys, then insertion order (a stable sort of `users`).
    fn reference(users: &[User], filter: &UserFilter, sort: &[UserSort]) -> Vec<UserId> {
        let mut hits: Vec<&User> = users.iter().filter(|u| filter.matches(u)).collect();
        hits.sort_by(|a, b| {
            sort.iter()
                .map(|s| {
                    let o = s.field.value(a).cmp(&s.field.value(b));
                    if s.desc { o.reverse() } else { o }
                })
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        });
        hits.into_iter().map(|u| u.id.clone()).collect()
    }

    fn sorts() -> Vec<Vec<UserSort>> {
        let s = |field, desc| UserSort { field, desc };
        let mut all = vec![vec![]];
        all.extend(SortField::ALL.iter().map(|&f| vec![s(f, false)]));
        all.push(vec![s(SortField::Status, true), s(SortField::DisplayName, false)]);
        all.push(vec![s(SortField::CreatedTime, true), s(SortField::Email, true), s(SortField::UserId, false)]);
        all
    }

    /// Pages `0..` of `limit` users until an empty one; checks `total` on each.
    async fn page_through(
        store: &Store,
        p: &ProjectId,
        filter: &UserFilter,
        sort: &[UserSort],
        limit: u64,
        total: u64,
    ) -> Vec<UserId> {
        let mut out = Vec::new();
        for page in 0.. {
            let got = store.search_users(p, filter, sort, page * limit, limit).await.expect("search");
            assert_eq!(got.total, total);
            assert!(got.users.len() as u64 <= limit);
            if got.users.is_empty() {
                return out;
            }
            out.extend(ids(&got.users));
        }
        unreachable!()
    }

    /// Every filter × every sort: paging forward returns exactly the reference order, `total`
    /// counts all matches, and offsets and cold jumps land where the reference says.
    async fn search_pages_follow_the_reference_order(store: Store) {
        let p = fixtures::project(&store).await;
        let mut users = fake_users(71, 0..200);
        // Ties and empty values, so insertion order must break them.
        for u in users.iter_mut().step_by(3) {
            u.name = None;
            u.email = Some("same@example.com".into());
        }
        store.insert_users(&p, &users[..70]).await.unwrap();
        store.insert_users(&p, &users[70..]).await.unwrap();
        // Every filter in insertion order and one multi-key order; every order with three filters
        // (everyone, SQL-exact, Rust-evaluated).
        let filters = super::users::filters(&users);
        let all_sorts = sorts();
        let mut cases: Vec<(&str, &UserFilter, &[UserSort])> = Vec::new();
        for (label, filter) in &filters {
            cases.push((label, filter, &all_sorts[0]));
            cases.push((label, filter, &all_sorts[all_sorts.len() - 1]));
        }
        let some = ["default (no test users)", "statuses", "tenant"];
        for (label, filter) in filters.iter().filter(|(l, _)| some.contains(l)) {
            for sort in &all_sorts[1..all_sorts.len() - 1] {
                cases.push((label, filter, sort));
            }
        }
        assert_eq!(cases.len(), 2 * filters.len() + 3 * (all_sorts.len() - 2));
        for (label, filter, sort) in cases {
            let want = reference(&users, filter, sort);
            let got = page_through(&store, &p, filter, sort, 13, want.len() as u64).await;
            assert_unique(&got);
            assert_eq!(got, want, "filter `{label}`, sort {sort:?}");
        }
        let sort = vec![UserSort { field: SortField::Email, desc: true }];
        let want = reference(&users, &everyone(), &sort);
        // A row offset inside a page, and a cold jump to a deep page of a new page size.
        let got = store.search_users(&p, &everyone(), &sort, 12, 7).await.unwrap();
        assert_eq!(ids(&got.users), want[12..19]);
        let got = store.search_users(&p, &everyone(), &sort, 9 * 11, 11).await.unwrap();
        assert_eq!(ids(&got.users), want[99..110]);
        // The pages walked over on the way are now known; page 5 comes from a remembered start.
        let got = store.search_users(&p, &everyone(), &sort, 5 * 11, 11).await.unwrap();
        assert_eq!(ids(&got.users), want[55..66]);
        // Past the end, and an empty project.
        let got = store.search_users(&p, &everyone(), &sort, 200, 10).await.unwrap();
        assert!(got.users.is_empty());
        assert_eq!(got.total, 200);
        let empty = store.search_users(&ProjectId::generate(), &everyone(), &[], 0, 10).await.unwrap();
        assert_eq!((empty.users.len(), empty.total), (0, 0));
    }

    /// Paging while users are created and changed neither repeats nor skips a user that existed
    /// throughout; each served page remembers where the next one starts.
    async fn search_paging_is_stable_under_writes(store: Store) {
        let p = fixtures::project(&store).await;
        let users = fake_users(72, 0..100);
        store.insert_users(&p, &users).await.unwrap();
        let sort = [UserSort { field: SortField::CreatedTime, desc: false }];
        let limit = 10;
        let mut seen = Vec::new();
        for page in 0..100 {
            let got = store.search_users(&p, &everyone(), &sort, page * limit, limit).await.unwrap();
            if got.users.is_empty() {
                break;
            }
            seen.extend(ids(&got.users));
            // Writes between pages: new users and a renamed one.
            store.insert_users(&p, &fake_users(72, 1000 + page * 3..1003 + page * 3)).await.unwrap();
            let id = users[(page as usize * 7) % 100].id.to_string();
            store.update_user(&p, &id, |u| u.name = Some(format!("renamed {page}"))).await.unwrap();
        }
        assert_unique(&seen);
        let seen: HashSet<UserId> = seen.into_iter().collect();
        assert!(users.iter().all(|u| seen.contains(&u.id)), "a user that existed throughout was skipped");
        // Page starts were remembered; purging forgets them.
        let purged = store.purge_search_cursors(Utc::now() + TimeDelta::seconds(1)).await.unwrap();
        assert!(purged >= 10, "{purged} page starts remembered");
        assert_eq!(store.purge_search_cursors(Utc::now() + TimeDelta::seconds(1)).await.unwrap(), 0);
    }

    /// `update_user` finds users by login id or user id, keeps ids, bumps `updated_at`.
    async fn update_user_changes_one_user(store: Store) {
        let p = fixtures::project(&store).await;
        let users = fake_users(73, 0..3);
        store.insert_users(&p, &users).await.unwrap();
        let login = users[1].login_ids[0].clone();
        // Search totals are remembered, and forgotten when users change.
        let disabled = UserFilter { statuses: vec![UserStatus::Disabled], ..everyone() };
        let total = |store: Store, p: ProjectId, f: UserFilter| async move {
            store.search_users(&p, &f, &[], 0, 10).await.unwrap().total
        };
        let before = total(store.clone(), p.clone(), disabled.clone()).await;
        assert_eq!(before, store.count_users(&p, &disabled).await.unwrap());
        let updated = store
            .update_user(&p, &login, |u| {
                u.status = UserStatus::Disabled;
                u.roles = vec!["auditor".into()];
                u.login_ids = vec!["hijack".into()];
                u.id = UserId::generate();
            })
            .await
            .unwrap()
            .expect("found by login id");
        assert_eq!((updated.id.clone(), updated.login_ids.clone()), (users[1].id.clone(), users[1].login_ids.clone()));
        assert_eq!(updated.status, UserStatus::Disabled);
        let after = total(store.clone(), p.clone(), disabled.clone()).await;
        assert_eq!(after, store.count_users(&p, &disabled).await.unwrap());
        assert_eq!(after, before + u64::from(users[1].status != UserStatus::Disabled));
        store.insert_users(&p, &fake_users(73, 3..6)).await.unwrap();
        assert_eq!(total(store.clone(), p.clone(), everyone()).await, 6);
        assert!(updated.updated_at >= users[1].updated_at);
        assert_eq!(store.get_user(&p, &users[1].id).await.unwrap(), Some(updated.clone()));
        assert_eq!(store.find_user_by_login_id(&p, "hijack").await.unwrap(), None);
        let by_id = store.update_user(&p, users[2].id.as_str(), |u| u.roles.clear()).await.unwrap().unwrap();
        assert!(by_id.roles.is_empty());
        assert_eq!(store.update_user(&p, "nobody", |_| {}).await.unwrap(), None);
        assert_eq!(store.update_user(&ProjectId::generate(), &login, |_| {}).await.unwrap(), None);
        // The other users are untouched.
        assert_eq!(store.get_user(&p, &users[0].id).await.unwrap().as_ref(), Some(&users[0]));
    }

    store_tests!(
        search_pages_follow_the_reference_order,
        search_paging_is_stable_under_writes,
        update_user_changes_one_user
    );
}

/// Export tasks: creation with idempotency, lookups, listing and the lease state machine.
mod tasks {
    use super::*;
    use fixtures::{assert_unique, new_task, now, pending, reload};
    use futures_util::future::join_all;
    use userexport_domain::{Code, ErrorObject, TaskStatus};
    use userexport_store::{Claim, Completion, Heartbeat, Progress, TaskQuery};

    /// A lease that does not lapse during a test.
    const LONG: Duration = Duration::from_secs(600);

    /// Claims `id` for `worker`, which must succeed; returns the claimed task.
    async fn claim(store: &Store, id: &TaskId, worker: &str, lease: Duration) -> ExportTask {
        match store.claim_task(id, worker, lease).await.unwrap() {
            Claim::Claimed(t) => t,
            other => panic!("{worker} could not claim {id}: {other:?}"),
        }
    }

    /// A completion whose file expires at `expires_at`.
    fn completion(expires_at: DateTime<Utc>) -> Completion {
        Completion {
            object_key: "exports/p/file.csv".into(),
            download_url: "https://downloads.example.com/file.csv?sig=abc".into(),
            download_url_expires_at: now() + TimeDelta::hours(1),
            rows_written: 42,
            bytes_written: 4_242,
            rows_total: None,
            expires_at,
        }
    }

    /// Inserts a task and drives it to `completed` with `expires_at`.
    async fn completed(store: &Store, project: &ProjectId, expires_at: DateTime<Utc>) -> ExportTask {
        let t = pending(store, project).await;
        claim(store, &t.id, "w-done", LONG).await;
        assert!(store.complete_task(&t.id, "w-done", &completion(expires_at)).await.unwrap());
        reload(store, &t.id).await
    }

    fn error() -> ErrorObject {
        ErrorObject::new(Code::ExportFailed, "the object store refused the upload")
    }

    fn task_ids(tasks: &[ExportTask]) -> Vec<TaskId> {
        tasks.iter().map(|t| t.id.clone()).collect()
    }

    /// A new task reads back unchanged by id, alias and (unscoped) id, and only in its own project.
    async fn tasks_are_scoped_by_project(store: Store) {
        let p = fixtures::project(&store).await;
        let q = fixtures::project(&store).await;
        let t = new_task(&p, now());
        let (stored, created) = store.insert_task(&t, None).await.unwrap();
        assert!(created);
        assert_eq!(stored, t);

        assert_eq!(store.get_task(&p, &t.id).await.unwrap().as_ref(), Some(&t));
        assert_eq!(store.get_task(&q, &t.id).await.unwrap(), None, "another project");
        assert_eq!(store.get_task_by_alias(&p, &t.job_alias).await.unwrap().as_ref(), Some(&t));
        assert_eq!(store.get_task_by_alias(&q, &t.job_alias).await.unwrap(), None, "another project");
        assert_eq!(store.load_task(&t.id).await.unwrap().as_ref(), Some(&t));
        assert_eq!(store.get_task(&p, &TaskId::generate()).await.unwrap(), None);
        assert_eq!(store.load_task(&TaskId::generate()).await.unwrap(), None);

        // Without an idempotency key the same task id cannot be inserted twice.
        assert!(store.insert_task(&t, None).await.is_err());
        assert_eq!(store.list_tasks(&p, &TaskQuery { limit: 10, ..Default::default() }).await.unwrap(), vec![t]);
    }

    /// Same key and hash replays the first task (`created = false`); another hash conflicts; keys are
    /// per project; concurrent replays create exactly one task.
    async fn idempotency_keys_replay_or_conflict(store: Store) {
        let p = fixtures::project(&store).await;
        let q = fixtures::project(&store).await;
        let first = new_task(&p, now());
        let (stored, created) = store.insert_task(&first, Some(("key-1", "hash-a"))).await.unwrap();
        assert!(created);
        assert_eq!(stored, first);

        let replay = new_task(&p, now());
        let (existing, created) = store.insert_task(&replay, Some(("key-1", "hash-a"))).await.unwrap();
        assert!(!created);
        assert_eq!(existing, first);
        assert_eq!(store.load_task(&replay.id).await.unwrap(), None, "a replay stores nothing");

        let other = new_task(&p, now());
        match store.insert_task(&other, Some(("key-1", "hash-b"))).await {
            Err(StoreError::IdempotencyConflict) => {}
            r => panic!("expected IdempotencyConflict, got {r:?}"),
        }
        assert_eq!(store.load_task(&other.id).await.unwrap(), None, "a conflict stores nothing");

        // A replay returns the task as it is now, not as it was inserted.
        store.request_cancel(&p, &first.id).await.unwrap();
        let (now_cancelled, created) =
            store.insert_task(&new_task(&p, now()), Some(("key-1", "hash-a"))).await.unwrap();
        assert!(!created);
        assert_eq!(now_cancelled.id, first.id);
        assert_eq!(now_cancelled.status, TaskStatus::Cancelled);

        // The same key in another project is another key.
        let elsewhere = new_task(&q, now());
        let (stored, created) = store.insert_task(&elsewhere, Some(("key-1", "hash-b"))).await.unwrap();
        assert!(created);
        assert_eq!(stored, elsewhere);

        // Concurrent requests with one new key: one creates, all get the same task.
        let candidates: Vec<ExportTask> = (0..8).map(|_| new_task(&p, now())).collect();
        let results = join_all(candidates.iter().cloned().map(|t| {
            let store = store.clone();
            tokio::spawn(async move { store.insert_task(&t, Some(("key-2", "hash-c"))).await.unwrap() })
        }))
        .await;
        let results: Vec<(ExportTask, bool)> = results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1, "exactly one request creates");
        let winner = &results.iter().find(|(_, created)| *created).unwrap().0;
        assert!(results.iter().all(|(t, _)| t == winner));
        let listed = store.list_tasks(&p, &TaskQuery { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(task_ids(&listed), vec![winner.id.clone(), first.id.clone()]);
    }

    /// Claims are compare-and-set: a pending task is claimed once; a live lease makes others `Busy`; a
    /// lapsed lease can be taken over (attempts 2, `started_at` kept); finished tasks are `Finished`.
    async fn claim_is_compare_and_set(store: Store) {
        let p = fixtures::project(&store).await;
        let t = pending(&store, &p).await;
        let before = Utc::now();

        let c1 = claim(&store, &t.id, "w1", LONG).await;
        assert_eq!(c1.status, TaskStatus::Processing);
        assert_eq!(c1.attempts, 1);
        assert_eq!(c1.lease_owner.as_deref(), Some("w1"));
        let lease = c1.lease_expires_at.expect("a lease");
        assert!(lease > before + TimeDelta::seconds(590), "the lease lasts as asked");
        let started = c1.started_at.expect("started_at is set");
        assert!(started >= before.trunc_subsecs(6));
        assert_eq!((c1.created_at, c1.request.clone()), (t.created_at, t.request.clone()));

        match store.claim_task(&t.id, "w2", LONG).await.unwrap() {
            Claim::Busy(busy) => assert_eq!(busy, c1),
            other => panic!("expected Busy, got {other:?}"),
        }
        // The owner claiming again while its lease is live is busy too (no double attempt).
        assert!(matches!(store.claim_task(&t.id, "w1", LONG).await.unwrap(), Claim::Busy(_)));
        assert_eq!(reload(&store, &t.id).await.attempts, 1);

        // The owner's lease lapses (a heartbeat renews it for zero seconds) and another worker takes over.
        let hb = store.heartbeat(&t.id, "w1", Duration::ZERO, Progress::default()).await.unwrap();
        assert!(hb.still_owner);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c2 = claim(&store, &t.id, "w2", LONG).await;
        assert_eq!(c2.attempts, 2);
        assert_eq!(c2.lease_owner.as_deref(), Some("w2"));
        assert_eq!(c2.started_at, Some(started), "started_at keeps the first claim");
        let hb = store.heartbeat(&t.id, "w1", LONG, Progress::default()).await.unwrap();
        assert_eq!(hb, Heartbeat { still_owner: false, cancel_requested: false }, "w1 lost the lease");

        // Finished and unknown tasks.
        assert!(store.complete_task(&t.id, "w2", &completion(now() + TimeDelta::days(1))).await.unwrap());
        assert!(matches!(store.claim_task(&t.id, "w3", LONG).await.unwrap(),
            Claim::Finished(f) if f.status == TaskStatus::Completed));
        assert_eq!(store.claim_task(&TaskId::generate(), "w3", LONG).await.unwrap(), Claim::NotFound);

        // Many workers racing for one pending task: exactly one wins.
        let raced = pending(&store, &p).await;
        let claims = join_all((0..8).map(|i| {
            let (store, id) = (store.clone(), raced.id.clone());
            tokio::spawn(async move { store.claim_task(&id, &format!("racer-{i}"), LONG).await.unwrap() })
        }))
        .await;
        let claims: Vec<Claim> = claims.into_iter().map(|c| c.unwrap()).collect();
        assert_eq!(claims.iter().filter(|c| matches!(c, Claim::Claimed(_))).count(), 1);
        assert!(claims.iter().all(|c| matches!(c, Claim::Claimed(_) | Claim::Busy(_))));
        assert_eq!(reload(&store, &raced.id).await.attempts, 1);
    }

    /// Heartbeats and upload records need the lease: the owner renews it and records progress, anyone
    /// else changes nothing.
    async fn heartbeats_and_uploads_need_the_lease(store: Store) {
        let p = fixtures::project(&store).await;
        let t = pending(&store, &p).await;
        let hb = store.heartbeat(&t.id, "w1", LONG, Progress::default()).await.unwrap();
        assert!(!hb.still_owner, "a pending task has no owner");

        let claimed = claim(&store, &t.id, "w1", Duration::from_secs(30)).await;
        let progress = Progress { rows_written: 10, bytes_written: 1_000, rows_total: Some(50) };
        let hb = store.heartbeat(&t.id, "w2", LONG, progress).await.unwrap();
        assert_eq!(hb, Heartbeat { still_owner: false, cancel_requested: false });
        assert_eq!(reload(&store, &t.id).await, claimed, "a non-owner's heartbeat writes nothing");

        let hb = store.heartbeat(&t.id, "w1", LONG, progress).await.unwrap();
        assert_eq!(hb, Heartbeat { still_owner: true, cancel_requested: false });
        let beat = reload(&store, &t.id).await;
        assert_eq!((beat.rows_written, beat.bytes_written, beat.rows_total), (10, 1_000, Some(50)));
        assert!(beat.lease_expires_at > claimed.lease_expires_at, "the lease was renewed");
        assert!(beat.updated_at >= claimed.updated_at);

        // rows_total: None keeps the stored total.
        let more = Progress { rows_written: 20, bytes_written: 2_000, rows_total: None };
        assert!(store.heartbeat(&t.id, "w1", LONG, more).await.unwrap().still_owner);
        let beat = reload(&store, &t.id).await;
        assert_eq!((beat.rows_written, beat.bytes_written, beat.rows_total), (20, 2_000, Some(50)));

        assert!(!store.set_upload(&t.id, "w2", "exports/x.csv", Some("upload-1")).await.unwrap());
        assert_eq!(reload(&store, &t.id).await.object_key, None);
        assert!(store.set_upload(&t.id, "w1", "exports/x.csv", Some("upload-1")).await.unwrap());
        let up = reload(&store, &t.id).await;
        assert_eq!((up.object_key.as_deref(), up.upload_id.as_deref()), (Some("exports/x.csv"), Some("upload-1")));
        assert!(store.set_upload(&t.id, "w1", "exports/y.csv", None).await.unwrap());
        let up = reload(&store, &t.id).await;
        assert_eq!((up.object_key.as_deref(), up.upload_id.as_deref()), (Some("exports/y.csv"), None));
    }

    /// The owner completes a task with its result; the lease and upload id are cleared. Non-owners and
    /// repeated completions change nothing.
    async fn complete_task_records_the_result(store: Store) {
        let p = fixtures::project(&store).await;
        let t = pending(&store, &p).await;
        let done = completion(now() + TimeDelta::days(7));
        assert!(!store.complete_task(&t.id, "w1", &done).await.unwrap(), "a pending task has no owner");

        let claimed = claim(&store, &t.id, "w1", LONG).await;
        let progress = Progress { rows_written: 40, bytes_written: 4_000, rows_total: Some(42) };
        store.heartbeat(&t.id, "w1", LONG, progress).await.unwrap();
        assert!(store.set_upload(&t.id, "w1", &done.object_key, Some("upload-9")).await.unwrap());
        let before = reload(&store, &t.id).await;

        assert!(!store.complete_task(&t.id, "w2", &done).await.unwrap());
        assert_eq!(reload(&store, &t.id).await, before, "a non-owner's completion writes nothing");

        let finished_after = Utc::now().trunc_subsecs(6);
        assert!(store.complete_task(&t.id, "w1", &done).await.unwrap());
        let c = reload(&store, &t.id).await;
        let want = ExportTask {
            status: TaskStatus::Completed,
            object_key: Some(done.object_key.clone()),
            download_url: Some(done.download_url.clone()),
            download_url_expires_at: Some(done.download_url_expires_at),
            rows_written: done.rows_written,
            bytes_written: done.bytes_written,
            expires_at: Some(done.expires_at),
            lease_owner: None,
            lease_expires_at: None,
            upload_id: None,
            finished_at: c.finished_at,
            updated_at: c.updated_at,
            ..before.clone()
        };
        assert_eq!(c, want);
        assert_eq!((c.attempts, c.rows_total, c.started_at), (1, Some(42), claimed.started_at));
        let finished = c.finished_at.expect("finished_at is set");
        assert!(finished >= finished_after && finished >= c.started_at.unwrap());
        assert_eq!(c.updated_at, finished);
        assert_eq!(c.percentage_done(), 100);

        assert!(!store.complete_task(&t.id, "w1", &done).await.unwrap(), "already completed");
        assert!(!store.fail_task(&t.id, Some("w1"), &error()).await.unwrap());
        assert!(!store.fail_task(&t.id, None, &error()).await.unwrap());
        assert_eq!(reload(&store, &t.id).await, c);
    }

    /// A completion with a total (counted while the export streamed) stores it; without one the
    /// total of the last heartbeat stays.
    async fn complete_task_stores_a_late_total(store: Store) {
        let p = fixtures::project(&store).await;
        let t = pending(&store, &p).await;
        claim(&store, &t.id, "w1", LONG).await;
        assert_eq!(reload(&store, &t.id).await.rows_total, None);
        let done = Completion { rows_total: Some(42), ..completion(now() + TimeDelta::days(7)) };
        assert!(store.complete_task(&t.id, "w1", &done).await.unwrap());
        assert_eq!(reload(&store, &t.id).await.rows_total, Some(42));
    }

    /// `fail_task` with a worker needs its lease; without one it fails pending or processing tasks.
    /// The error is stored, the task expires after the retention, the upload id is kept.
    async fn fail_task_stores_the_error(store: Store) {
        let p = fixtures::project(&store).await;

        // A pending task, failed by the system.
        let t = pending(&store, &p).await;
        assert!(!store.fail_task(&t.id, Some("w1"), &error()).await.unwrap(), "no worker owns it");
        assert!(store.fail_task(&t.id, None, &error()).await.unwrap());
        let f = reload(&store, &t.id).await;
        assert_eq!(f.status, TaskStatus::Failed);
        assert_eq!(f.error, Some(error()));
        let finished = f.finished_at.expect("finished_at is set");
        assert_eq!(f.expires_at, Some(finished + TimeDelta::hours(24)), "default retention");
        assert!(!store.fail_task(&t.id, None, &error()).await.unwrap(), "already failed");

        // A processing task, failed by its worker, with a custom retention.
        let store = store.with_retention(Duration::from_secs(90));
        let t = pending(&store, &p).await;
        claim(&store, &t.id, "w1", LONG).await;
        assert!(store.set_upload(&t.id, "w1", "exports/partial.csv", Some("upload-7")).await.unwrap());
        let before = reload(&store, &t.id).await;
        assert!(!store.fail_task(&t.id, Some("w2"), &error()).await.unwrap());
        assert_eq!(reload(&store, &t.id).await, before, "a non-owner's failure writes nothing");
        assert!(store.fail_task(&t.id, Some("w1"), &error()).await.unwrap());
        let f = reload(&store, &t.id).await;
        assert_eq!(f.status, TaskStatus::Failed);
        assert_eq!(f.error, Some(error()));
        assert_eq!((f.lease_owner, f.lease_expires_at), (None, None));
        assert_eq!(f.upload_id.as_deref(), Some("upload-7"), "kept for the sweeper");
        assert_eq!(f.expires_at, Some(f.finished_at.unwrap() + TimeDelta::seconds(90)));
        assert!(!store.heartbeat(&t.id, "w1", LONG, Progress::default()).await.unwrap().still_owner);

        // A processing task, failed by the system regardless of the owner.
        let t = pending(&store, &p).await;
        claim(&store, &t.id, "w1", LONG).await;
        assert!(store.fail_task(&t.id, None, &error()).await.unwrap());
        assert_eq!(reload(&store, &t.id).await.status, TaskStatus::Failed);
    }

    /// `release_task` hands the owner's task back to `pending`; the next claim is a new attempt.
    async fn release_task_returns_to_pending(store: Store) {
        let p = fixtures::project(&store).await;
        let t = pending(&store, &p).await;
        assert!(!store.release_task(&t.id, "w1").await.unwrap(), "pending tasks are not released");

        let c = claim(&store, &t.id, "w1", LONG).await;
        assert!(!store.release_task(&t.id, "w2").await.unwrap());
        assert_eq!(reload(&store, &t.id).await, c);
        assert!(store.release_task(&t.id, "w1").await.unwrap());
        let r = reload(&store, &t.id).await;
        assert_eq!(r.status, TaskStatus::Pending);
        assert_eq!((r.lease_owner.as_deref(), r.lease_expires_at), (None, None));
        assert_eq!((r.attempts, r.started_at), (1, c.started_at));
        assert!(!store.release_task(&t.id, "w1").await.unwrap(), "released already");
        assert!(!store.heartbeat(&t.id, "w1", LONG, Progress::default()).await.unwrap().still_owner);

        let again = claim(&store, &t.id, "w2", LONG).await;
        assert_eq!(again.attempts, 2);
        assert_eq!(again.started_at, c.started_at);
    }

    /// `request_cancel`: pending → cancelled at once; processing → flag for the worker, which then
    /// acknowledges with `mark_cancelled`; finished → unchanged; other project → `None`.
    async fn request_cancel_depends_on_the_state(store: Store) {
        let p = fixtures::project(&store).await;
        let q = fixtures::project(&store).await;

        // Pending: cancelled at once.
        let t = pending(&store, &p).await;
        assert_eq!(store.request_cancel(&q, &t.id).await.unwrap(), None, "another project");
        assert_eq!(reload(&store, &t.id).await, t);
        let c = store.request_cancel(&p, &t.id).await.unwrap().expect("found");
        assert_eq!(c.status, TaskStatus::Cancelled);
        assert!(c.cancel_requested);
        let finished = c.finished_at.expect("finished_at is set");
        assert_eq!(c.expires_at, Some(finished + TimeDelta::hours(24)));
        assert_eq!(reload(&store, &t.id).await, c);
        assert!(matches!(store.claim_task(&t.id, "w1", LONG).await.unwrap(), Claim::Finished(_)));

        // Processing: flagged; the worker learns it from its heartbeat and acknowledges.
        let t = pending(&store, &p).await;
        claim(&store, &t.id, "w1", LONG).await;
        let flagged = store.request_cancel(&p, &t.id).await.unwrap().expect("found");
        assert_eq!(flagged.status, TaskStatus::Processing);
        assert!(flagged.cancel_requested);
        assert_eq!((flagged.finished_at, flagged.expires_at), (None, None));
        assert_eq!(flagged.lease_owner.as_deref(), Some("w1"));
        let hb = store.heartbeat(&t.id, "w1", LONG, Progress::default()).await.unwrap();
        assert_eq!(hb, Heartbeat { still_owner: true, cancel_requested: true });
        assert_eq!(store.request_cancel(&p, &t.id).await.unwrap().unwrap().status, TaskStatus::Processing);
        assert!(!store.mark_cancelled(&t.id, "w2").await.unwrap());
        assert!(store.mark_cancelled(&t.id, "w1").await.unwrap());
        let c = reload(&store, &t.id).await;
        assert_eq!(c.status, TaskStatus::Cancelled);
        assert_eq!((c.lease_owner.as_deref(), c.lease_expires_at), (None, None));
        assert_eq!(c.expires_at, Some(c.finished_at.expect("finished_at is set") + TimeDelta::hours(24)));
        assert!(!store.mark_cancelled(&t.id, "w1").await.unwrap(), "already cancelled");

        // Finished tasks are unchanged (the caller answers 409).
        let done = completed(&store, &p, now() + TimeDelta::days(1)).await;
        assert_eq!(store.request_cancel(&p, &done.id).await.unwrap(), Some(done.clone()));
        assert_eq!(reload(&store, &done.id).await, done);
        assert_eq!(store.request_cancel(&p, &TaskId::generate()).await.unwrap(), None);

        // mark_cancelled needs a processing task owned by the worker.
        let t = pending(&store, &p).await;
        assert!(!store.mark_cancelled(&t.id, "w1").await.unwrap());
        assert_eq!(reload(&store, &t.id).await.status, TaskStatus::Pending);
    }

    /// Finished tasks whose `expires_at` has passed are due, soonest first; `mark_expired` turns them
    /// `expired` and drops the download URL, and refuses unfinished or already expired tasks.
    async fn expiry_sweep(store: Store) {
        let store = store.with_retention(Duration::ZERO);
        let p = fixtures::project(&store).await;
        let past = completed(&store, &p, now() - TimeDelta::minutes(1)).await;
        let future = completed(&store, &p, now() + TimeDelta::hours(1)).await;
        let failed = pending(&store, &p).await;
        assert!(store.fail_task(&failed.id, None, &error()).await.unwrap());
        let waiting = pending(&store, &p).await;
        let running = pending(&store, &p).await;
        claim(&store, &running.id, "w1", LONG).await;
        let cancelled = pending(&store, &p).await;
        store.request_cancel(&p, &cancelled.id).await.unwrap();

        let due = store.tasks_due_for_expiry(Utc::now(), 10).await.unwrap();
        assert_eq!(task_ids(&due), vec![past.id.clone(), failed.id.clone(), cancelled.id.clone()]);
        assert_eq!(task_ids(&store.tasks_due_for_expiry(Utc::now(), 1).await.unwrap()), vec![past.id.clone()]);
        assert!(
            store.tasks_due_for_expiry(past.expires_at.unwrap() - TimeDelta::seconds(1), 10).await.unwrap().is_empty()
        );
        // The bound is inclusive.
        let at = store.tasks_due_for_expiry(past.expires_at.unwrap(), 10).await.unwrap();
        assert_eq!(task_ids(&at), vec![past.id.clone()]);

        assert!(store.mark_expired(&past.id).await.unwrap());
        let e = reload(&store, &past.id).await;
        assert_eq!(e.status, TaskStatus::Expired);
        assert_eq!((e.download_url, e.download_url_expires_at, e.upload_id), (None, None, None));
        assert_eq!(e.object_key, past.object_key, "the key stays for the record");
        assert!(!store.mark_expired(&past.id).await.unwrap(), "already expired");
        assert!(!store.mark_expired(&waiting.id).await.unwrap());
        assert!(!store.mark_expired(&running.id).await.unwrap());
        assert!(!store.mark_expired(&TaskId::generate()).await.unwrap());
        assert_eq!(reload(&store, &running.id).await.status, TaskStatus::Processing);

        let due = store.tasks_due_for_expiry(Utc::now(), 10).await.unwrap();
        assert_eq!(task_ids(&due), vec![failed.id.clone(), cancelled.id.clone()]);
        let later = store.tasks_due_for_expiry(Utc::now() + TimeDelta::hours(2), 10).await.unwrap();
        assert_eq!(task_ids(&later), vec![failed.id, cancelled.id, future.id]);
    }

    /// Stale tasks: pending ones not updated since the cutoff and processing ones whose lease lapsed,
    /// oldest first; live leases and finished tasks are not stale.
    async fn stale_tasks_finds_lost_work(store: Store) {
        let p = fixtures::project(&store).await;
        let start = Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let queued = pending(&store, &p).await;
        let lapsed = pending(&store, &p).await;
        claim(&store, &lapsed.id, "w1", Duration::ZERO).await;
        let live = pending(&store, &p).await;
        claim(&store, &live.id, "w2", LONG).await;
        completed(&store, &p, now() + TimeDelta::days(1)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cutoff = Utc::now();

        let stale = store.stale_tasks(cutoff, Utc::now(), 10).await.unwrap();
        assert_eq!(task_ids(&stale), vec![queued.id.clone(), lapsed.id.clone()]);
        assert_eq!(task_ids(&store.stale_tasks(cutoff, Utc::now(), 1).await.unwrap()), vec![queued.id.clone()]);
        // Pending tasks updated after the cutoff are not stale yet.
        assert_eq!(task_ids(&store.stale_tasks(start, Utc::now(), 10).await.unwrap()), vec![lapsed.id.clone()]);
        // Leases that had not lapsed at `now` are not stale.
        assert_eq!(task_ids(&store.stale_tasks(cutoff, start, 10).await.unwrap()), vec![queued.id.clone()]);
        // The live lease becomes stale once `now` passes it.
        let far = Utc::now() + TimeDelta::hours(1);
        assert_eq!(
            task_ids(&store.stale_tasks(cutoff, far, 10).await.unwrap()),
            vec![queued.id.clone(), lapsed.id.clone(), live.id.clone()]
        );
        // A claim of the lapsed task makes it live again.
        claim(&store, &lapsed.id, "w3", LONG).await;
        assert_eq!(task_ids(&store.stale_tasks(cutoff, Utc::now(), 10).await.unwrap()), vec![queued.id]);
    }

    /// A re-enqueued task is not reported again while a backlog keeps it waiting: a pending one until
    /// the grace period passes its re-enqueue, a lapsed lease until a new claim of it lapses.
    async fn requeued_tasks_are_not_resent_every_round(store: Store) {
        let p = fixtures::project(&store).await;
        let queued = pending(&store, &p).await;
        let lapsed = pending(&store, &p).await;
        claim(&store, &lapsed.id, "w1", Duration::ZERO).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cutoff = Utc::now();
        let stale = store.stale_tasks(cutoff, Utc::now(), 10).await.unwrap();
        assert_eq!(task_ids(&stale), vec![queued.id.clone(), lapsed.id.clone()]);

        tokio::time::sleep(Duration::from_millis(5)).await;
        let requeued_at = Utc::now();
        for t in &stale {
            store.mark_requeued(&t.id, requeued_at).await.unwrap();
        }
        // The next rounds (same grace cutoff, or one older than the re-enqueue) skip both.
        assert!(store.stale_tasks(cutoff, Utc::now(), 10).await.unwrap().is_empty());
        assert!(store.stale_tasks(requeued_at - TimeDelta::milliseconds(1), Utc::now(), 10).await.unwrap().is_empty());
        // Once the grace period has passed the re-enqueue, both are due again.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let later = Utc::now();
        assert_eq!(
            task_ids(&store.stale_tasks(later, later, 10).await.unwrap()),
            vec![queued.id.clone(), lapsed.id.clone()]
        );
        // A new claim that lapses again is reported at once, whatever the grace period.
        claim(&store, &lapsed.id, "w2", Duration::ZERO).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(task_ids(&store.stale_tasks(cutoff, Utc::now(), 10).await.unwrap()), vec![lapsed.id]);
    }

    /// `list_tasks` lists the project's tasks newest first; the `before` cursor pages through them
    /// without duplicates; status and creation-time filters apply; unknown cursors are `NotFound`.
    async fn list_tasks_pages_newest_first(store: Store) {
        let p = fixtures::project(&store).await;
        let q = fixtures::project(&store).await;
        let base = now();
        let mut tasks = Vec::new();
        let mut foreign = Vec::new();
        for i in 0..23 {
            let (t, _) = store.insert_task(&new_task(&p, base + TimeDelta::seconds(i)), None).await.unwrap();
            tasks.push(t);
            if i % 4 == 0 {
                foreign.push(store.insert_task(&new_task(&q, base + TimeDelta::seconds(i)), None).await.unwrap().0);
            }
        }
        for t in tasks.iter().step_by(3) {
            store.request_cancel(&p, &t.id).await.unwrap();
        }
        let newest_first: Vec<TaskId> = tasks.iter().rev().map(|t| t.id.clone()).collect();

        // Keyset pages of 5.
        for statuses in [vec![], vec![TaskStatus::Cancelled], vec![TaskStatus::Pending, TaskStatus::Cancelled]] {
            let want: Vec<TaskId> = tasks
                .iter()
                .rev()
                .enumerate()
                .filter(|(i, _)| statuses.is_empty() || statuses.contains(&TaskStatus::Pending) || (22 - i) % 3 == 0)
                .map(|(_, t)| t.id.clone())
                .collect();
            let mut got = Vec::new();
            let mut before = None;
            loop {
                let query =
                    TaskQuery { statuses: statuses.clone(), before: before.clone(), limit: 5, ..Default::default() };
                let page = store.list_tasks(&p, &query).await.unwrap();
                assert!(page.len() <= 5);
                assert!(
                    page.iter().all(|t| t.project_id == p && (statuses.is_empty() || statuses.contains(&t.status)))
                );
                got.extend(task_ids(&page));
                match page.last() {
                    Some(last) if page.len() == 5 => before = Some(last.id.clone()),
                    _ => break,
                }
            }
            assert_unique(&got);
            assert_eq!(got, want, "statuses {statuses:?}");
        }
        let all = store.list_tasks(&p, &TaskQuery { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(task_ids(&all), newest_first);
        let cancelled = store
            .list_tasks(&p, &TaskQuery { statuses: vec![TaskStatus::Cancelled], limit: 100, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(cancelled.len(), 8);
        let processing = TaskQuery { statuses: vec![TaskStatus::Processing], limit: 100, ..Default::default() };
        assert!(store.list_tasks(&p, &processing).await.unwrap().is_empty());

        // Creation-time window, inclusive at both ends.
        let window = TaskQuery {
            created_from: Some(base + TimeDelta::seconds(5)),
            created_to: Some(base + TimeDelta::seconds(9)),
            limit: 100,
            ..Default::default()
        };
        let got = store.list_tasks(&p, &window).await.unwrap();
        assert_eq!(task_ids(&got), tasks[5..=9].iter().rev().map(|t| t.id.clone()).collect::<Vec<_>>());

        // The other project sees its own tasks only.
        let theirs = store.list_tasks(&q, &TaskQuery { limit: 100, ..Default::default() }).await.unwrap();
        assert_eq!(task_ids(&theirs), foreign.iter().rev().map(|t| t.id.clone()).collect::<Vec<_>>());

        // Cursors must name a task of the project.
        for before in [TaskId::generate(), foreign[0].id.clone()] {
            let query = TaskQuery { before: Some(before), limit: 5, ..Default::default() };
            assert!(matches!(store.list_tasks(&p, &query).await, Err(StoreError::NotFound)));
        }
        assert!(store.list_tasks(&p, &TaskQuery { limit: 0, ..Default::default() }).await.unwrap().is_empty());
        let oldest = TaskQuery { before: Some(tasks[0].id.clone()), limit: 5, ..Default::default() };
        assert!(store.list_tasks(&p, &oldest).await.unwrap().is_empty());
    }

    store_tests!(
        tasks_are_scoped_by_project,
        idempotency_keys_replay_or_conflict,
        claim_is_compare_and_set,
        heartbeats_and_uploads_need_the_lease,
        complete_task_records_the_result,
        complete_task_stores_a_late_total,
        fail_task_stores_the_error,
        release_task_returns_to_pending,
        request_cancel_depends_on_the_state,
        expiry_sweep,
        stale_tasks_finds_lost_work,
        requeued_tasks_are_not_resent_every_round,
        list_tasks_pages_newest_first,
    );
}
