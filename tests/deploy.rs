//! The files in `deploy/` without a container engine: every YAML document parses, every
//! `USEREXPORT_*` variable named there is one the binary reads, the Kubernetes objects the issue
//! promises exist with probes on the real endpoints, and the Dockerfile runs as non-root.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Args;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every `USEREXPORT_*` environment variable the binary reads (from the clap definitions).
fn known_env_vars() -> BTreeSet<String> {
    let cmd = userexport::config::ConfigArgs::augment_args(clap::Command::new("userexport"));
    cmd.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect()
}

/// `USEREXPORT_*` names mentioned anywhere in `text`.
fn env_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(pos) = rest.find("USEREXPORT_") {
        let tail = &rest[pos..];
        let end =
            tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        // `USEREXPORT_*` in prose is a wildcard, not a name.
        if end > "USEREXPORT_".len() {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

fn yaml_files() -> Vec<PathBuf> {
    let mut files = vec![deploy_dir().join("docker-compose.yml")];
    let k8s = deploy_dir().join("kubernetes");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&k8s)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    files.extend(manifests);
    files
}

fn load(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()))
}

#[test]
fn every_yaml_file_parses_and_names_only_real_settings() {
    let known = known_env_vars();
    assert!(known.contains("USEREXPORT_DATABASE_URL") && known.len() > 15, "{known:?}");
    let mut files = yaml_files();
    files.push(deploy_dir().join("Dockerfile"));
    files.push(deploy_dir().join("README.md"));
    for path in files {
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            assert!(!load(&path).is_empty(), "{} holds no YAML document", path.display());
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for name in env_names(&text) {
            assert!(known.contains(&name), "{} names {name}, which the binary does not read", path.display());
        }
    }
}

/// All Kubernetes objects by `kind/name`.
fn k8s_objects() -> Vec<Yaml> {
    yaml_files()
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("kubernetes")))
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .flat_map(|p| load(p))
        .collect()
}

fn find<'a>(objects: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

#[test]
fn kubernetes_manifests_have_the_promised_objects() {
    let objects = k8s_objects();
    for (kind, name) in [
        ("Deployment", "userexport-api"),
        ("Deployment", "userexport-worker"),
        ("Job", "userexport-migrate"),
        ("Service", "userexport-api"),
        ("PodDisruptionBudget", "userexport-api"),
        ("PodDisruptionBudget", "userexport-worker"),
        ("HorizontalPodAutoscaler", "userexport-api"),
        ("HorizontalPodAutoscaler", "userexport-worker"),
        ("ConfigMap", "userexport-config"),
        ("Secret", "userexport-secrets"),
    ] {
        find(&objects, kind, name);
    }
    let api = &find(&objects, "Deployment", "userexport-api")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(api["args"][0].as_str(), Some("serve"));
    assert_eq!(api["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(api["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    let worker = &find(&objects, "Deployment", "userexport-worker")["spec"]["template"]["spec"];
    assert_eq!(worker["containers"][0]["args"][0].as_str(), Some("worker"));
    // Workers serve their own metrics: the ConfigMap sets the address, the pod exposes the port,
    // Prometheus is told to scrape it, and liveness checks the same server.
    let config = &find(&objects, "ConfigMap", "userexport-config")["data"];
    let metrics_bind: std::net::SocketAddr =
        config["USEREXPORT_WORKER_METRICS_BIND"].as_str().expect("worker metrics address").parse().unwrap();
    let port = i64::from(metrics_bind.port());
    let container = &worker["containers"][0];
    let ports = container["ports"].as_vec().expect("worker ports");
    let metrics_port = ports.iter().find(|p| p["containerPort"].as_i64() == Some(port)).expect("metrics port");
    let annotations = &find(&objects, "Deployment", "userexport-worker")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some(port.to_string().as_str()));
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], metrics_port["name"]);
    for d in ["userexport-api", "userexport-worker"] {
        let c = &find(&objects, "Deployment", d)["spec"]["template"]["spec"]["containers"][0];
        assert!(!c["resources"]["requests"]["cpu"].is_badvalue(), "{d} has no CPU request");
        assert!(!c["resources"]["requests"]["memory"].is_badvalue(), "{d} has no memory request");
    }
    // The worker's grace period outlasts its lease, so a stopping worker can release its tasks.
    let grace = worker["terminationGracePeriodSeconds"].as_i64().unwrap();
    let lease = find(&objects, "ConfigMap", "userexport-config")["data"]["USEREXPORT_LEASE"].as_str().unwrap();
    let lease = userexport::config::parse_duration(lease).unwrap();
    assert!(grace as u64 > lease.as_secs(), "grace {grace}s <= lease {lease:?}");
    let hpa = &find(&objects, "HorizontalPodAutoscaler", "userexport-worker")["spec"]["metrics"][0];
    assert_eq!(hpa["external"]["metric"]["name"].as_str(), Some("userexport_queue_depth"));
    assert_eq!(userexport_api::ops::QUEUE_DEPTH, "userexport_queue_depth");
    // kustomization lists every manifest except the example secret.
    let kustomization = &load(&deploy_dir().join("kubernetes/kustomization.yaml"))[0];
    let listed: BTreeSet<&str> = kustomization["resources"].as_vec().unwrap().iter().filter_map(Yaml::as_str).collect();
    for path in yaml_files().iter().filter(|p| p.parent().is_some_and(|d| d.ends_with("kubernetes"))) {
        let name = path.file_name().unwrap().to_str().unwrap();
        if name != "kustomization.yaml" && name != "secret.example.yaml" {
            assert!(listed.contains(name), "kustomization.yaml does not list {name}");
        }
    }
}

#[test]
fn compose_file_runs_every_role_against_shared_services() {
    let compose = &load(&deploy_dir().join("docker-compose.yml"))[0];
    let services = &compose["services"];
    for s in ["postgres", "redis", "minio", "migrate", "api", "worker"] {
        assert!(!services[s].is_badvalue(), "compose has no {s} service");
    }
    for (service, role) in [("migrate", "migrate"), ("api", "serve"), ("worker", "worker")] {
        assert_eq!(services[service]["command"][0].as_str(), Some(role));
    }
    let worker_env = &services["worker"]["environment"];
    assert_eq!(worker_env["USEREXPORT_WORKER_METRICS_BIND"].as_str(), Some("0.0.0.0:9090"), "{worker_env:?}");
    // `docker compose config` validates the file when a Docker client with the compose plugin is
    // installed (this machine may have neither; the checks above do not depend on it).
    let docker = |args: &[&str]| {
        std::process::Command::new("docker").args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().ok()
    };
    if docker(&["compose", "version"]).is_some_and(|o| o.status.success()) {
        let out = docker(&["compose", "-f", "deploy/docker-compose.yml", "config", "--quiet"]).unwrap();
        assert!(out.status.success(), "docker compose config: {}", String::from_utf8_lossy(&out.stderr));
    } else {
        eprintln!("docker compose is not installed; the compose file was checked by parsing only");
    }
}

#[test]
fn dockerfile_builds_the_binary_and_runs_as_non_root() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    assert!(text.contains("cargo build --release --locked --bin userexport"));
    assert!(text.lines().any(|l| l.starts_with("USER ") && !l.contains("root")), "no non-root USER");
    assert!(text.contains(r#"ENTRYPOINT ["userexport"]"#));
    assert!(text.matches("FROM ").count() >= 2, "not a multi-stage build");
}
