//! docs/admin-api.yaml against the types the server answers with and
//! `sluice ctl` reads (`sluice-api`): every schema names exactly the fields
//! its type carries, so the document cannot drift from the wire.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sluice_api as api;

/// Top-level property names of each schema under `components: schemas:`
/// (the document's own two-space YAML layout; `allOf` schemas have none).
fn documented_properties() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-api.yaml")).unwrap();
    let mut schemas = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_properties = false;
    for line in doc.lines().skip_while(|l| *l != "  schemas:").skip(1) {
        if let Some(name) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with(' ')
        {
            current = Some(name.to_owned());
            in_properties = false;
            continue;
        }
        if line == "      properties:" {
            in_properties = true;
            schemas.entry(current.clone().unwrap()).or_insert_with(BTreeSet::new);
            continue;
        }
        if line.starts_with("      ") && !line.starts_with("       ") {
            in_properties = false;
        }
        if in_properties
            && let Some(rest) = line.strip_prefix("        ")
            && !rest.starts_with(' ')
            && let Some((name, _)) = rest.split_once(':')
        {
            schemas
                .get_mut(current.as_ref().unwrap())
                .unwrap()
                .insert(name.to_owned());
        }
    }
    schemas
}

fn fields<T: Serialize>(value: &T) -> BTreeSet<String> {
    serde_json::to_value(value)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn every_schema_names_the_fields_its_type_carries() {
    // A pool's window is left out where none is measured: give it one.
    let pool = api::Pool {
        window: Some(api::Window::default()),
        routes: vec![api::RouteWindow::default()],
        ..Default::default()
    };
    let cases = [
        ("Status", fields(&api::Status::default())),
        ("Routing", fields(&api::Routing::default())),
        ("Pool", fields(&pool)),
        ("Backend", fields(&api::Backend::default())),
        ("Window", fields(&api::Window::default())),
        ("Drained", fields(&api::Drained::default())),
        ("Readiness", fields(&api::Readiness::default())),
        ("Deployment", fields(&api::Deployment::default())),
        ("AuditEntry", fields(&api::AuditEntry::default())),
        ("RolloutRecord", fields(&api::RolloutRecord::default())),
        ("TableEvent", fields(&api::TableEvent::default())),
        ("Rollout", fields(&api::Rollout::default())),
        ("HookRun", fields(&api::HookRun::default())),
        ("Error", fields(&api::ErrorBody::default())),
        ("AccessLines", fields(&api::AccessLines::default())),
        ("StatsHistory", fields(&api::StatsHistory::default())),
        ("PoolHistory", fields(&api::PoolHistory::default())),
        ("StatsPoint", fields(&api::StatsPoint::default())),
        (
            "AccessLine",
            fields(&api::AccessLine {
                grpc_status: Some(0),
                ..Default::default()
            }),
        ),
    ];
    let documented = documented_properties();
    assert!(documented.len() >= cases.len(), "parsed only {documented:?}");
    for (schema, carried) in cases {
        assert_eq!(
            documented.get(schema),
            Some(&carried),
            "schema {schema} and its type differ"
        );
    }
    // One pool with the generation, flattened.
    let detail = fields(&api::PoolDetail {
        pool: pool.clone(),
        generation: 1,
    });
    let mut expected = fields(&pool);
    expected.insert("generation".to_owned());
    assert_eq!(detail, expected);
}
