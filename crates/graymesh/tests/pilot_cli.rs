//! The `graymesh` binary as a user runs it: `validate`, `pilot` with its admin API and
//! registration API, and `proxy-status`. Waits are bounded polls on the observable outcome.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: panicking on the unexpected is the point

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_graymesh");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("graymesh-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

use graymesh_testkit::free_port;

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Minimal HTTP/1.1 client: returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = http(port, "GET", path, "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Poll `check` every 50 ms until it holds or `limit` passes.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Pilot {
    child: Child,
    http: u16,
}

impl Pilot {
    /// Start pilot and wait for /ready. The admin port is picked before pilot binds it, so a
    /// parallel test may take it in between: pilot then exits at once, and we try fresh ports.
    fn start(dir: &Path) -> Self {
        for _ in 0..3 {
            let http = free_port();
            let mut child = Command::new(BIN)
                .args(["pilot", "--config-dir", dir.to_str().unwrap()])
                .args([
                    "--xds-addr",
                    "127.0.0.1:0",
                    "--http-addr",
                    &format!("127.0.0.1:{http}"),
                ])
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if child.try_wait().unwrap().is_some() {
                    break; // exited during start-up: its port was taken
                }
                if ready_status(http) == Some(200) {
                    return Self { child, http };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("pilot did not become ready in 3 attempts");
    }
}

/// `/ready`'s status, or `None` while nothing answers (not yet listening, or gone).
fn ready_status(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.get(9..12)?.parse().ok()
}

impl Drop for Pilot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn validate_accepts_the_example_and_names_file_object_field_on_errors() {
    let ok = run(&["validate", "-f", examples().to_str().unwrap()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("valid: 14 objects"));

    let dir = temp_dir("validate");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - {destination: {host: r}, weight: 60}\n    - {destination: {host: r}, weight: 30}\n",
    )
    .unwrap();
    let out = run(&["validate", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "error: {}: VirtualService default/r: spec.http[0].route: weights sum to 90, must be 100",
        bad.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn validate_accepts_the_release_example_and_rejects_broken_applications() {
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/release");
    let ok = run(&["validate", "-f", release.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "valid: Application default/reviews: 8 steps; each step, promoted and rolled back translate to a valid VirtualService and DestinationRule\n"
    );

    // Istio objects and Applications validated together: one line each.
    let services = examples().join("services.yaml");
    let both = run(&[
        "validate",
        "-f",
        services.to_str().unwrap(),
        "-f",
        release.to_str().unwrap(),
    ]);
    assert!(
        both.status.success(),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
    let stdout = String::from_utf8_lossy(&both.stdout);
    assert!(
        stdout.starts_with("valid: 4 objects (4 ServiceEntry)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nvalid: Application default/reviews: 8 steps"),
        "{stdout}"
    );
    // bookinfo routes reviews by hand: the release would compete with it, as pilot would say
    let clash = run(&[
        "validate",
        "-f",
        examples().to_str().unwrap(),
        "-f",
        release.to_str().unwrap(),
    ]);
    assert_eq!(clash.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&clash.stderr);
    assert!(
        stderr.contains("DestinationRule default/reviews in "),
        "{stderr}"
    );
    assert!(stderr.contains("competes with them: delete it"), "{stderr}");

    let example = std::fs::read_to_string(release.join("reviews-canary.yaml")).unwrap();
    let dir = temp_dir("validate-release");
    let broken = [
        (
            "weight: 5\n",
            "weight: 15\n",
            "Application default/reviews: spec.workflow.steps[1].properties.traffic: weights sum to 110, must be 100",
        ),
        (
            "revision: reviews-v2\n          weight: 20",
            "revision: reviews-v3\n          weight: 20",
            "Application default/reviews: spec.workflow.steps[3].properties.traffic[1].revision: \"reviews-v3\" is not a version being released; use the trait's oldVersion \"reviews\" or newVersion \"reviews-v2\"",
        ),
        (
            "matchRule: exact\n          name: beta\n          value: \"1\"",
            "matchRule: regex\n          name: beta\n          value: \"[1\"",
            "Application default/reviews: spec.workflow.steps[3].properties.cookie.value: invalid regex \"[1\" (RE2 syntax): unclosed character class",
        ),
        (
            "minRequests: 500",
            "minRequests: 500\n        canaryWeight: 5",
            "Application default/reviews: spec.workflow.steps[6].properties.canaryWeight: unknown field `canaryWeight`, expected one of `interval`, `checks`, `minRequests`, `maxFailures`, `successRate`, `latencyP99`, `grpcErrorRate`",
        ),
    ];
    for (from, to, expected) in broken {
        assert!(example.contains(from), "{from:?} is not in the example");
        let file = dir.join("app.yaml");
        std::fs::write(&file, example.replacen(from, to, 1)).unwrap();
        let out = run(&["validate", "-f", dir.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = format!(
            "error: {}: {expected}\n1 error(s); nothing would be applied\n",
            file.display()
        );
        assert_eq!(stderr, expected);
    }
}

#[test]
fn pilot_refuses_to_start_on_invalid_config() {
    let dir = temp_dir("refuse");
    std::fs::write(
        dir.join("x.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: Bogus\nmetadata: {name: x}\nspec: {}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "pilot",
            "--config-dir",
            dir.to_str().unwrap(),
            "--xds-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is invalid; not starting") && stderr.contains("Bogus"),
        "{stderr}"
    );
}

#[test]
fn registration_api_feeds_translation_and_expires_without_heartbeat() {
    let dir = temp_dir("registry");
    std::fs::copy(examples().join("services.yaml"), dir.join("services.yaml")).unwrap();
    let pilot = Pilot::start(&dir);
    let body = r#"{"service": "shipping", "address": "127.0.0.1", "ports": [{"port": 7070, "target_port": 17070}], "labels": {"version": "v1"}, "ttl_seconds": 1}"#;
    let (status, answer) = http(pilot.http, "POST", "/v1/registry/instances", body);
    assert_eq!(status, 201, "{answer}");
    let id = serde_json::from_str::<serde_json::Value>(&answer).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let cluster = "outbound|7070||shipping.default.svc.cluster.local";
    let has_endpoint = |port: u16| {
        let dump = json(port, "/debug/config_dump?kind=proxyless");
        dump["endpoints"].as_array().unwrap().iter().any(|e| {
            e["cluster_name"] == cluster
                && e["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                    ["port_value"]
                    == 17070
        })
    };
    eventually(
        Duration::from_secs(5),
        "registered instance in config_dump",
        || has_endpoint(pilot.http),
    );
    let listeners = json(pilot.http, "/debug/config_dump?kind=proxyless")["listeners"].clone();
    assert!(
        listeners
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "shipping:7070"),
        "short-name listener"
    );

    assert_eq!(
        http(
            pilot.http,
            "PUT",
            &format!("/v1/registry/instances/{id}/heartbeat"),
            ""
        )
        .0,
        204
    );
    // No more heartbeats: gone within TTL + expiry period + debounce.
    eventually(Duration::from_secs(4), "instance expiry", || {
        !has_endpoint(pilot.http)
    });
    assert_eq!(
        http(
            pilot.http,
            "PUT",
            &format!("/v1/registry/instances/{id}/heartbeat"),
            ""
        )
        .0,
        404
    );

    let (status, answer) = http(
        pilot.http,
        "POST",
        "/v1/registry/instances",
        r#"{"service": "s", "address": "nope", "ports": [{"port": 1}]}"#,
    );
    assert_eq!(status, 400);
    assert!(
        answer.contains(r#"address: \"nope\" is not an IP address"#),
        "{answer}"
    );
    let (status, answer) = http(
        pilot.http,
        "POST",
        "/v1/registry/instances",
        r#"{"service": "s", "adress": "127.0.0.1"}"#,
    );
    assert_eq!(status, 400);
    assert!(answer.contains("unknown field `adress`"), "{answer}");

    let (status, _) = http(
        pilot.http,
        "POST",
        "/v1/registry/instances",
        &body.replace("\"ttl_seconds\": 1", "\"ttl_seconds\": 30"),
    );
    assert_eq!(status, 201);
    let id = json(pilot.http, "/v1/registry/instances")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        http(
            pilot.http,
            "DELETE",
            &format!("/v1/registry/instances/{id}"),
            ""
        )
        .0,
        204
    );
    assert_eq!(
        http(
            pilot.http,
            "DELETE",
            &format!("/v1/registry/instances/{id}"),
            ""
        )
        .0,
        404
    );
}

#[test]
fn rejected_edit_keeps_last_good_config_and_is_reported() {
    let dir = temp_dir("edit");
    for f in [
        "services.yaml",
        "destination-rules.yaml",
        "virtual-services.yaml",
    ] {
        std::fs::copy(examples().join(f), dir.join(f)).unwrap();
    }
    let pilot = Pilot::start(&dir);
    let before = json(pilot.http, "/debug/configz");
    assert_eq!(before["errors"].as_array().unwrap().len(), 0);
    let vs = std::fs::read_to_string(dir.join("virtual-services.yaml")).unwrap();
    std::fs::write(
        dir.join("virtual-services.yaml"),
        vs.replace("weight: 90", "weight: 95"),
    )
    .unwrap();
    eventually(
        Duration::from_secs(5),
        "the rejected edit to be reported",
        || {
            json(pilot.http, "/debug/configz")["errors"].as_array().unwrap().iter().any(|e| {
            e.as_str().unwrap().contains("VirtualService default/reviews: spec.http[1].route: weights sum to 105, must be 100")
        })
        },
    );
    let after = json(pilot.http, "/debug/configz");
    assert_eq!(
        after["version"], before["version"],
        "nothing of the bad edit applied"
    );
    assert_eq!(after["objects"], before["objects"]);
    let metrics = http(pilot.http, "GET", "/metrics", "").1;
    assert!(metrics.contains("graymesh_config_errors 1"), "{metrics}");
    assert!(
        metrics.contains("graymesh_config_objects{kind=\"VirtualService\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("graymesh_xds_connected_clients 0"),
        "{metrics}"
    );

    std::fs::write(
        dir.join("virtual-services.yaml"),
        vs.replace("weight: 90", "weight: 80")
            .replace("weight: 10", "weight: 20"),
    )
    .unwrap();
    eventually(Duration::from_secs(5), "the fixed edit to apply", || {
        let c = json(pilot.http, "/debug/configz");
        c["errors"].as_array().unwrap().is_empty() && c["version"] != before["version"]
    });

    let out = run(&[
        "proxy-status",
        "--server",
        &format!("http://127.0.0.1:{}", pilot.http),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("(no xDS clients connected)"));
}

#[test]
fn proxy_status_reports_an_unreachable_pilot_clearly() {
    let port = free_port();
    let out = run(&[
        "proxy-status",
        "--server",
        &format!("http://127.0.0.1:{port}"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach pilot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
