//! Stores for tests, on each engine: SQLite always; PostgreSQL when `WORKER_TEST_DATABASE_URL`
//! names a server (each test in a schema of its own, dropped at the end, so tests run in
//! parallel). Without it the PostgreSQL half of every conformance test passes with a note on
//! stderr saying it was skipped.
//!
//! [`conformance!`] defines a test once per engine: `NAME::sqlite` and `NAME::postgres`.

use std::io::Write;
use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Durability, Location, Store};

/// The environment variable naming the PostgreSQL server for tests (a `postgres://` URL).
pub const PG_ENV: &str = "WORKER_TEST_DATABASE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server for tests, if one was named. Says once on stderr when there is none.
pub fn postgres_url() -> Option<String> {
    static SAID: Once = Once::new();
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Written to the process's stderr itself: the test harness swallows `eprintln!`.
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "note: {PG_ENV} is not set: the PostgreSQL half of the store conformance \
                     tests is skipped (they pass without running)"
                );
            });
            None
        }
    }
}

/// A store of its own for one test: an SQLite file in `dir`, or a fresh PostgreSQL schema
/// (dropped with this value).
pub struct TestStore {
    pub location: Location,
    schema: Option<(String, String)>,
}

impl TestStore {
    /// `None` when the engine is PostgreSQL and no server was named.
    pub fn new(engine: Engine, dir: &Path) -> Option<TestStore> {
        match engine {
            Engine::Sqlite => Some(TestStore {
                location: Location::Sqlite(dir.join("worker.db")),
                schema: None,
            }),
            Engine::Postgres => {
                let url = postgres_url()?;
                static COUNTER: AtomicU32 = AtomicU32::new(0);
                let schema = format!(
                    "t_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    fastrand::u32(..)
                );
                super::postgres::execute_batch(&url, &format!("CREATE SCHEMA {schema}"))
                    .unwrap_or_else(|e| panic!("{PG_ENV}: cannot create a schema: {e}"));
                // Spelled out: tokio-postgres decodes `%20` in a URL, not `+`.
                let sep = if url.contains('?') { '&' } else { '?' };
                let with_schema = format!("{url}{sep}options=-c%20search_path%3D{schema}");
                Some(TestStore {
                    location: Location::Postgres(with_schema),
                    schema: Some((url, schema)),
                })
            }
        }
    }

    /// A new connection to this store.
    pub fn open(&self) -> Store {
        Store::open_at(&self.location, Durability::Normal)
            .unwrap_or_else(|e| panic!("cannot open the test store: {e}"))
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some((url, schema)) = &self.schema {
            let _ = super::postgres::execute_batch(url, &format!("DROP SCHEMA {schema} CASCADE"));
        }
    }
}

/// A store of its own for one test, and the directory it lives in (a PostgreSQL schema is
/// dropped once the store is closed: the fields drop in this order).
pub struct Fresh {
    pub store: Store,
    _test_store: TestStore,
    _dir: tempfile::TempDir,
}

impl Fresh {
    /// A new store on `engine` (which must be available: [`conformance!`] sees to it).
    pub fn new(engine: Engine) -> Fresh {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let test_store = TestStore::new(engine, dir.path()).expect("the engine is available");
        Fresh {
            store: test_store.open(),
            _test_store: test_store,
            _dir: dir,
        }
    }
}

/// Defines each test once per engine, as a module with the tests `sqlite` and `postgres`; the
/// body gets the engine as the named argument.
///
/// ```ignore
/// conformance! {
///     fn claims_in_priority_order(engine) { let mut w = world(engine, &[..]); .. }
/// }
/// ```
macro_rules! conformance {
    ($( $(#[doc = $doc:literal])* fn $name:ident($engine:ident) $body:block )*) => {$(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($engine: $crate::store::testing::Engine) $body

            #[test]
            fn sqlite() {
                body($crate::store::testing::Engine::Sqlite)
            }

            #[test]
            fn postgres() {
                if $crate::store::testing::postgres_url().is_some() {
                    body($crate::store::testing::Engine::Postgres)
                }
            }
        }
    )*};
}

pub(crate) use conformance;
