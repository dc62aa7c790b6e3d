//! The shipped deployment files hold together: the Kubernetes manifests
//! parse, every name one object refers to exists, the probes and the grace
//! period fit sluice, the embedded config validates; the compose file's
//! config validates too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn objects() -> Vec<Yaml> {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/sluice.yaml")).unwrap();
    YamlLoader::load_from_str(&text).expect("deploy/kubernetes/sluice.yaml is not YAML")
}

fn named(objects: &[Yaml], kind: &str) -> HashSet<String> {
    objects
        .iter()
        .filter(|o| o["kind"].as_str() == Some(kind))
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn kubernetes_manifests_parse_and_every_reference_exists() {
    let objects = objects();
    let kinds: HashSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "Service",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Job",
    ] {
        assert!(kinds.contains(kind), "no {kind}");
    }
    let (config_maps, secrets, deployments) = (
        named(&objects, "ConfigMap"),
        named(&objects, "Secret"),
        named(&objects, "Deployment"),
    );
    let deployment = objects
        .iter()
        .find(|o| o["kind"].as_str() == Some("Deployment"))
        .unwrap();
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    let container = &pod["spec"]["containers"][0];
    // Volumes refer to existing ConfigMaps and Secrets, mounts to volumes.
    let mut volumes = HashSet::new();
    for v in pod["spec"]["volumes"].as_vec().unwrap() {
        volumes.insert(v["name"].as_str().unwrap().to_owned());
        if let Some(cm) = v["configMap"]["name"].as_str() {
            assert!(config_maps.contains(cm), "volume uses missing ConfigMap {cm}");
        }
        if let Some(s) = v["secret"]["secretName"].as_str() {
            assert!(secrets.contains(s), "volume uses missing Secret {s}");
        }
    }
    for m in container["volumeMounts"].as_vec().unwrap() {
        assert!(
            volumes.contains(m["name"].as_str().unwrap()),
            "mount of a missing volume"
        );
    }
    for e in container["env"].as_vec().unwrap() {
        if let Some(s) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
            assert!(secrets.contains(s), "env uses missing Secret {s}");
        }
    }
    // Probes on sluice's endpoints, through a named container port.
    let ports: HashSet<&str> = container["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/health/live")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/health/ready")
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = container[probe]["httpGet"]["port"].as_str().unwrap();
        assert!(ports.contains(port), "{probe} uses a missing port {port}");
    }
    assert!(!container["resources"]["requests"].is_badvalue());
    // The grace period outlives sluice's drain (default 30 s).
    assert!(pod["spec"]["terminationGracePeriodSeconds"].as_i64().unwrap() > 30);
    // Service, PDB and NetworkPolicy select the pods; the HPA scales the Deployment.
    let matches = |selector: &Yaml| {
        selector
            .as_hash()
            .unwrap()
            .iter()
            .all(|(k, v)| labels[k.as_str().unwrap()] == *v)
    };
    for o in &objects {
        let kind = o["kind"].as_str().unwrap();
        match kind {
            "Service" => {
                assert!(matches(&o["spec"]["selector"]));
                for p in o["spec"]["ports"].as_vec().unwrap() {
                    let target = p["targetPort"].as_str().unwrap();
                    assert!(ports.contains(target), "Service targets missing port {target}");
                }
            }
            "PodDisruptionBudget" => assert!(matches(&o["spec"]["selector"]["matchLabels"])),
            "NetworkPolicy" => assert!(matches(&o["spec"]["podSelector"]["matchLabels"])),
            "HorizontalPodAutoscaler" => {
                let target = o["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
                assert!(deployments.contains(target), "HPA scales missing {target}");
            }
            // The migration Job runs a real `sluice migrate up` on the
            // store Secret the replicas use.
            "Job" => {
                let job = &o["spec"]["template"]["spec"]["containers"][0];
                let mut args = vec!["sluice".to_owned()];
                args.extend(
                    job["args"]
                        .as_vec()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_owned()),
                );
                assert_eq!(args[1..3], ["migrate", "up"], "{args:?}");
                #[derive(clap::Parser)]
                struct Sluice {
                    #[command(subcommand)]
                    migrate: Migrate,
                }
                #[derive(clap::Subcommand)]
                enum Migrate {
                    Migrate(sluice::migrate_cmd::MigrateArgs),
                }
                if let Err(e) = <Sluice as clap::Parser>::try_parse_from(&args) {
                    panic!("the migration Job's args do not parse: {e}");
                }
                for e in job["env"].as_vec().unwrap() {
                    let secret = e["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap();
                    assert!(secrets.contains(secret), "Job uses missing Secret {secret}");
                }
            }
            _ => {}
        }
    }
    // The config in the ConfigMap validates.
    let config_map = objects
        .iter()
        .find(|o| o["kind"].as_str() == Some("ConfigMap"))
        .unwrap();
    let toml = config_map["data"]["sluice.toml"].as_str().unwrap();
    sluice_config::Config::from_toml(toml).unwrap_or_else(|e| panic!("ConfigMap's sluice.toml: {e}"));
}

#[test]
fn the_compose_config_validates_and_names_the_compose_services() {
    let text = std::fs::read_to_string(root().join("docker/sluice.toml")).unwrap();
    let config = sluice_config::Config::from_toml(&text).unwrap();
    let compose = std::fs::read_to_string(root().join("docker/compose.yaml")).unwrap();
    let compose = &YamlLoader::load_from_str(&compose).unwrap()[0];
    for pool in &config.pools {
        for backend in &pool.backends {
            let host = backend.split(':').next().unwrap();
            assert!(!compose["services"][host].is_badvalue(), "no compose service {host}");
        }
    }
    let dockerfile = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("USER sluice"));
}

#[test]
fn the_grpc_example_validates_and_its_pools_name_its_services() {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/grpc.yaml")).unwrap();
    let objects = YamlLoader::load_from_str(&text).expect("deploy/kubernetes/grpc.yaml is not YAML");
    let config_map = objects
        .iter()
        .find(|o| o["kind"].as_str() == Some("ConfigMap"))
        .unwrap();
    let config = sluice_config::Config::from_toml(config_map["data"]["sluice.toml"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("grpc.yaml's sluice.toml: {e}"));
    let services = named(&objects, "Service");
    for pool in &config.pools {
        assert_eq!(pool.protocol, sluice_config::UpstreamProtocol::Http2, "{}", pool.name);
        assert_eq!(pool.health.mode, sluice_config::HealthMode::Grpc, "{}", pool.name);
        for backend in &pool.backends {
            let service = backend.split('.').next().unwrap();
            assert!(
                services.contains(service),
                "pool {} names no Service {service}",
                pool.name
            );
        }
    }
    // The kubelet probes the pods with the same protocol.
    for deployment in objects.iter().filter(|o| o["kind"].as_str() == Some("Deployment")) {
        let probe = &deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"];
        assert_eq!(probe["grpc"]["port"].as_i64(), Some(50051));
    }
}

#[test]
fn the_discovery_example_names_headless_services() {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/discovery.yaml")).unwrap();
    let objects = YamlLoader::load_from_str(&text).expect("deploy/kubernetes/discovery.yaml is not YAML");
    let config_map = objects
        .iter()
        .find(|o| o["kind"].as_str() == Some("ConfigMap"))
        .unwrap();
    let config = sluice_config::Config::from_toml(config_map["data"]["sluice.toml"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("discovery.yaml's sluice.toml: {e}"));
    for pool in &config.pools {
        for backend in &pool.backends {
            assert!(
                sluice_config::BackendTarget::parse(backend).is_ok_and(|t| t.is_name()),
                "{backend} is not a name"
            );
            let service = backend.split('.').next().unwrap();
            let headless = objects.iter().any(|o| {
                o["kind"].as_str() == Some("Service")
                    && o["metadata"]["name"].as_str() == Some(service)
                    && o["spec"]["clusterIP"].as_str() == Some("None")
            });
            assert!(headless, "pool {} names no headless Service {service}", pool.name);
        }
    }
}
