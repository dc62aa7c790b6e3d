//! The store on both engines: migrations up, down and up again with an
//! identical catalog, dry runs that change nothing, tamper detection, and
//! routing state and audit round trips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg;

use sluice_store::migrate::{Migration, MigrationSet, Migrator};
use sluice_store::{
    AuditEntry, AuditQuery, DeploymentRecord, Engine, MatchRecord, PoolRecord, RoutingRecord, StepState, Store,
    StoreError,
};
use sqlx::Row;

/// The schema as the engine's catalog describes it, as comparable text.
async fn catalog(store: &Store) -> Vec<String> {
    let sql = match store.engine() {
        Engine::Sqlite => {
            "SELECT type || ' ' || name || ': ' || COALESCE(sql, '') AS d FROM sqlite_master
             WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        }
        Engine::Postgres => {
            "SELECT 'column ' || table_name || '.' || column_name || ': ' || data_type || ' ' || is_nullable
                 || ' ' || COALESCE(column_default, '') AS d
             FROM information_schema.columns WHERE table_schema = current_schema()
             UNION ALL
             SELECT 'index ' || indexname || ': ' || indexdef AS d FROM pg_indexes WHERE schemaname = current_schema()
             ORDER BY d"
        }
    };
    sqlx::query(sql)
        .fetch_all(store.db())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>("d").unwrap())
        .collect()
}

async fn tables(store: &Store) -> Vec<String> {
    catalog(store)
        .await
        .into_iter()
        .filter(|d| d.starts_with("table ") || d.starts_with("column "))
        .map(|d| d.split([':', '.']).next().unwrap_or_default().to_owned())
        .collect()
}

fn audit(actor: &str, action: &str) -> AuditEntry {
    AuditEntry {
        actor: actor.into(),
        action: action.into(),
        target: "routing".into(),
        before: Some("{}".into()),
        after: Some("{\"blue\":100}".into()),
        result: "ok".into(),
        ..Default::default()
    }
}

async fn migrations_round_trip(url: &str) {
    let store = Store::connect(url).await.unwrap();
    let set = MigrationSet::builtin(store.engine());
    let m = Migrator::new(&store, &set);
    let empty = catalog(&store).await;

    // Dry run: the plan lists every step and the database is untouched.
    let plan = m.plan_up(None).await.unwrap();
    let all: Vec<i64> = (1..=set.latest()).collect();
    assert_eq!(plan.iter().map(|s| s.version).collect::<Vec<_>>(), all);
    assert_eq!(catalog(&store).await, empty, "a dry run changed the schema");

    assert_eq!(m.up(None).await.unwrap(), all);
    let first = catalog(&store).await;
    let applied = m.applied().await.unwrap();
    assert_eq!(applied.iter().map(|a| a.version).collect::<Vec<_>>(), all);
    assert!(
        applied
            .iter()
            .all(|a| a.applied_at.ends_with('Z') && a.duration_ms >= 0)
    );
    assert!(m.up(None).await.unwrap().is_empty(), "up twice applies nothing");

    // Data in a table the latest → 1 → latest round trip does not drop survives it.
    store.append_audit(&audit("ci", "weights.set")).await.unwrap();
    let above_one: Vec<i64> = all[1..].iter().rev().copied().collect();
    let plan_down = m.plan_down(1).await.unwrap();
    assert_eq!(plan_down.iter().map(|s| s.version).collect::<Vec<_>>(), above_one);
    assert_eq!(catalog(&store).await, first, "a down dry run changed the schema");
    assert_eq!(m.down(1).await.unwrap(), above_one);
    assert_eq!(m.up(None).await.unwrap(), all[1..]);
    let rows = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].entry.actor, "ci");
    assert_eq!(catalog(&store).await, first);

    // All the way down leaves only the tracking table, and back up is identical.
    assert_eq!(m.down(0).await.unwrap(), all.iter().rev().copied().collect::<Vec<_>>());
    let left = tables(&store).await;
    assert!(
        left.iter().all(|t| t.contains("sluice_schema_migrations")),
        "tables left after down to 0: {left:?}"
    );
    assert!(m.applied().await.unwrap().is_empty());
    m.up(None).await.unwrap();
    assert_eq!(catalog(&store).await, first, "schema differs after down 0 / up");
    store.check_schema().await.unwrap();
    store.close().await;
}

async fn tampering_and_newer_schemas_are_refused(url: &str) {
    let store = Store::connect(url).await.unwrap();
    store.migrate_up().await.unwrap();
    let mut edited = MigrationSet::builtin(store.engine());
    edited.migrations[1].up.push_str("\n-- edited after it ran\n");
    let err = Migrator::new(&store, &edited).up(None).await.unwrap_err();
    assert!(matches!(err, StoreError::ChecksumMismatch(2)), "{err}");
    let status = Migrator::new(&store, &edited).status().await.unwrap();
    assert!(matches!(status[1].state, StepState::Modified { .. }));

    let mut older = MigrationSet::builtin(store.engine());
    older.migrations.truncate(1);
    let err = Migrator::new(&store, &older).verified_version().await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { applied: 2, known: 1 }),
        "{err}"
    );

    let mut newer = MigrationSet::builtin(store.engine());
    let latest = newer.latest();
    newer.migrations.push(Migration {
        version: latest + 1,
        description: "future".into(),
        up: "CREATE TABLE future_thing (id BIGINT PRIMARY KEY);".into(),
        down: "DROP TABLE future_thing;".into(),
    });
    assert_eq!(Migrator::new(&store, &newer).verified_version().await.unwrap(), latest);
    store.close().await;
}

async fn failing_step_is_rolled_back(url: &str) {
    let store = Store::connect(url).await.unwrap();
    store.migrate_up().await.unwrap();
    let mut set = MigrationSet::builtin(store.engine());
    let latest = set.latest();
    set.migrations.push(Migration {
        version: latest + 1,
        description: "half broken".into(),
        up: "CREATE TABLE half_done (id BIGINT PRIMARY KEY); INSERT INTO no_such_table VALUES (1);".into(),
        down: "DROP TABLE half_done;".into(),
    });
    let before = catalog(&store).await;
    let err = Migrator::new(&store, &set).up(None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Step { version, .. } if version == latest + 1),
        "{err}"
    );
    assert_eq!(
        catalog(&store).await,
        before,
        "a failed step left part of itself behind"
    );
    assert_eq!(Migrator::new(&store, &set).verified_version().await.unwrap(), latest);
    store.close().await;
}

/// `blue` in hundredths of a percent; green has the rest.
fn record(generation: i64, blue: i64) -> RoutingRecord {
    RoutingRecord {
        generation,
        pools: vec![
            PoolRecord {
                name: "blue".into(),
                version: "v1".into(),
                weight_hundredths: blue,
                protocol: "http1".into(),
                backends: vec!["127.0.0.1:9001".into(), "127.0.0.1:9002".into()],
                matches: Vec::new(),
            },
            PoolRecord {
                name: "green".into(),
                version: "v2".into(),
                weight_hundredths: 10_000 - blue,
                protocol: "http2".into(),
                backends: vec!["127.0.0.1:9011".into()],
                matches: vec![
                    MatchRecord {
                        kind: "header".into(),
                        name: "x-beta".into(),
                        value: "1".into(),
                    },
                    MatchRecord {
                        kind: "cookie".into(),
                        name: "beta".into(),
                        value: "yes".into(),
                    },
                ],
            },
        ],
        updated_by: "ci".into(),
        updated_at: sluice_store::now(),
    }
}

async fn routing_and_audit_round_trip(url: &str) {
    let store = Store::connect(url).await.unwrap();
    store.migrate_up().await.unwrap();
    assert_eq!(store.load_routing().await.unwrap(), None);

    let deploy = DeploymentRecord::immediate("green", Some("v1"), "v2");
    store
        .save_routing(None, &record(1, 10_000), &audit("config-file", "routing.init"), &[])
        .await
        .unwrap();
    store
        .save_routing(
            Some(1),
            &record(2, 9_990),
            &audit("ci", "weights.set"),
            std::slice::from_ref(&deploy),
        )
        .await
        .unwrap();
    let loaded = store.load_routing().await.unwrap().unwrap();
    assert_eq!(loaded.generation, 2);
    assert_eq!(loaded.pools, record(2, 9_990).pools);
    assert_eq!(loaded.updated_by, "ci");

    // A writer that computed its change from an old generation loses.
    let err = store
        .save_routing(Some(1), &record(3, 5_000), &audit("other", "weights.set"), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { stored: 2, expected: 1 }), "{err}");
    let loaded = store.load_routing().await.unwrap().unwrap();
    assert_eq!(loaded.generation, 2);
    assert_eq!(loaded.pools, record(2, 9_990).pools);

    let history = store.deployments(10).await.unwrap();
    assert_eq!(history, vec![deploy]);

    let all = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|a| a.entry.actor.as_str()).collect::<Vec<_>>(),
        ["ci", "config-file"]
    );
    let by_actor = store
        .audit(&AuditQuery {
            actor: Some("ci".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_actor.len(), 1);
    let by_action = store
        .audit(&AuditQuery {
            action: Some("routing.init".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_action.len(), 1);
    let future = store
        .audit(&AuditQuery {
            since: Some("2999-01-01T00:00:00Z".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(future.is_empty());
    let limited = store
        .audit(&AuditQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    store.close().await;
}

async fn all_scenarios(url_for: impl AsyncFn(&str) -> String) {
    migrations_round_trip(&url_for("round_trip").await).await;
    tampering_and_newer_schemas_are_refused(&url_for("tampering").await).await;
    failing_step_is_rolled_back(&url_for("failing").await).await;
    routing_and_audit_round_trip(&url_for("routing").await).await;
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_owned();
    all_scenarios(async |name: &str| format!("sqlite://{}", base.join(format!("{name}.db")).display())).await;
}

#[tokio::test]
async fn postgres_store() {
    let server = pg::PgServer::start();
    all_scenarios(async |name: &str| server.database(name).await).await;
}
