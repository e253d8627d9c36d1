//! `graymesh apply`, `get` and `delete`: the config through pilot's admin API (`--server`), which
//! validates and writes, so they work the same whether pilot keeps its config in a directory or
//! in etcd.

use crate::cli_http::{get_json, send_json, DEFAULT_SERVER};
use crate::kinds::{self, Resource};
use anyhow::Context as _;
use clap::Args;
use graymesh_sources::dir_store::config_files;
use hyper::Method;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Files or directories of Istio objects (YAML or JSON); repeat for several.
    #[arg(short = 'f', long = "filename", required = true)]
    pub paths: Vec<PathBuf>,
    /// Apply only if the object is still at this resourceVersion (one object only).
    #[arg(long)]
    pub resource_version: Option<String>,
    #[arg(long, env = "GRAYMESH_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// virtualservices, destinationrules, serviceentries, gateways, services, endpoints.
    pub kind: String,
    /// One object (config kinds) or one service (services, endpoints).
    pub name: Option<String>,
    /// Namespace; all namespaces when not given.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json", "yaml"])]
    pub output: String,
    #[arg(long, env = "GRAYMESH_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// virtualservice, destinationrule, serviceentry or gateway (any of their names).
    pub kind: String,
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Delete only if the object is still at this resourceVersion.
    #[arg(long)]
    pub resource_version: Option<String>,
    #[arg(long, env = "GRAYMESH_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
}

// === apply ===

pub async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let mut objects = read_objects(&args.paths)?;
    if let Some(version) = &args.resource_version {
        let [object] = &mut objects[..] else {
            anyhow::bail!(
                "--resource-version applies to one object; {} were given",
                objects.len()
            );
        };
        object["metadata"]["resourceVersion"] = json!(version);
    }
    let body = serde_json::to_vec(&objects)?;
    let (status, answer) = send_json(&args.server, Method::POST, "/v1/config", Some(body)).await?;
    if !status.is_success() {
        return Err(refused(status, &answer, "nothing was applied"));
    }
    for applied in answer["objects"].as_array().into_iter().flatten() {
        println!(
            "{} {}",
            short_name(&applied["object"]),
            str_of(&applied["action"])
        );
    }
    Ok(())
}

/// Parse every file first, so errors name files and nothing is sent when any is wrong.
fn read_objects(paths: &[PathBuf]) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let files =
            config_files(path).with_context(|| format!("cannot read {}", path.display()))?;
        for file in files {
            let name = file.display().to_string();
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {name}"))?;
            match graymesh_model::parse_str(&name, &text) {
                Ok(parsed) => objects.extend(parsed.iter().map(|o| o.to_json())),
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    if !errors.is_empty() {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::bail!(
            "{} error(s); nothing was sent:\n{}",
            errors.len(),
            lines.join("\n")
        );
    }
    if objects.is_empty() {
        anyhow::bail!("no objects found in the given files");
    }
    Ok(objects)
}

// === get ===

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let resource = kinds::parse(&args.kind).map_err(anyhow::Error::msg)?;
    let items = match resource {
        Resource::Config(kind) => config_items(&args, kind).await?,
        Resource::Services | Resource::Endpoints => registry_items(&args, resource).await?,
    };
    match args.output.as_str() {
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&as_document(&args, items))?
        ),
        "yaml" => print!("{}", serde_norway::to_string(&as_document(&args, items))?),
        _ => print_table(resource, &items),
    }
    Ok(())
}

async fn config_items(args: &GetArgs, kind: graymesh_model::Kind) -> anyhow::Result<Vec<Value>> {
    let plural = kinds::plural(kind);
    if let Some(name) = &args.name {
        let ns = args.namespace.as_deref().unwrap_or("default");
        let path = format!("/v1/config/{plural}/{ns}/{name}");
        let (status, answer) = send_json(&args.server, Method::GET, &path, None).await?;
        if !status.is_success() {
            return Err(refused(status, &answer, "not found"));
        }
        return Ok(vec![answer]);
    }
    let query = args.namespace.as_ref().map(|ns| format!("?namespace={ns}"));
    let path = format!("/v1/config/{plural}{}", query.unwrap_or_default());
    let answer = get_json(&args.server, &path).await?;
    for skipped in answer["skipped"].as_array().into_iter().flatten() {
        eprintln!("warning: not served: {}", str_of(skipped));
    }
    Ok(answer["items"].as_array().cloned().unwrap_or_default())
}

/// Services (and their instances, for `endpoints`) as translation sees them.
async fn registry_items(args: &GetArgs, resource: Resource) -> anyhow::Result<Vec<Value>> {
    let registry = get_json(&args.server, "/debug/registryz").await?;
    let services = registry["services"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let wanted = |s: &Value| {
        let host = str_of(&s["host"]);
        args.namespace
            .as_ref()
            .is_none_or(|ns| str_of(&s["namespace"]) == *ns)
            && args
                .name
                .as_ref()
                .is_none_or(|n| host == *n || host.split('.').next() == Some(n.as_str()))
    };
    let services = services.into_values().filter(wanted);
    if resource == Resource::Services {
        return Ok(services.collect());
    }
    let mut endpoints = Vec::new();
    for service in services {
        for instance in service["instances"].as_array().into_iter().flatten() {
            let mut instance = instance.clone();
            instance["service"] = service["host"].clone();
            endpoints.push(instance);
        }
    }
    Ok(endpoints)
}

/// One object alone when a name was asked for; a List otherwise (`apply -f` reads both).
fn as_document(args: &GetArgs, mut items: Vec<Value>) -> Value {
    if args.name.is_some() && items.len() == 1 {
        return items.remove(0);
    }
    json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

fn print_table(resource: Resource, items: &[Value]) {
    let rows: Vec<[String; 4]> = match resource {
        Resource::Config(_) => items.iter().map(config_row).collect(),
        Resource::Services => items.iter().map(service_row).collect(),
        Resource::Endpoints => items.iter().map(endpoint_row).collect(),
    };
    let header = match resource {
        Resource::Config(_) => ["NAMESPACE", "NAME", "HOSTS", "RESOURCE-VERSION"],
        Resource::Services => ["NAMESPACE", "HOST", "PORTS", "INSTANCES"],
        Resource::Endpoints => ["SERVICE", "ID", "ADDRESS", "LABELS"],
    };
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    let line = |r: [&str; 4]| {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
    if rows.is_empty() {
        println!("(none)");
    }
}

fn config_row(o: &Value) -> [String; 4] {
    let spec = &o["spec"];
    let hosts = match &spec["hosts"] {
        Value::Array(hosts) => hosts.iter().map(str_of).collect::<Vec<_>>().join(","),
        _ => str_of(&spec["host"]),
    };
    [
        str_of(&o["metadata"]["namespace"]),
        str_of(&o["metadata"]["name"]),
        hosts,
        str_of(&o["metadata"]["resourceVersion"]),
    ]
}

fn service_row(s: &Value) -> [String; 4] {
    let ports: Vec<String> = s["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}/{}", p["number"], str_of(&p["protocol"])))
        .collect();
    let instances = s["instances"].as_array().map_or(0, Vec::len);
    [
        str_of(&s["namespace"]),
        str_of(&s["host"]),
        ports.join(","),
        instances.to_string(),
    ]
}

fn endpoint_row(i: &Value) -> [String; 4] {
    let ports: Vec<String> = i["ports"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, target)| target.to_string())
        .collect();
    let labels: Vec<String> = i["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", str_of(v)))
        .collect();
    let address = format!("{}:{}", str_of(&i["address"]), ports.join(","));
    [
        str_of(&i["service"]),
        str_of(&i["id"]),
        address,
        labels.join(","),
    ]
}

// === delete ===

pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let kind = kinds::parse_config(&args.kind).map_err(anyhow::Error::msg)?;
    let mut path = format!(
        "/v1/config/{}/{}/{}",
        kinds::plural(kind),
        args.namespace,
        args.name
    );
    if let Some(version) = &args.resource_version {
        path.push_str(&format!("?resourceVersion={version}"));
    }
    let (status, answer) = send_json(&args.server, Method::DELETE, &path, None).await?;
    if !status.is_success() {
        return Err(refused(status, &answer, "nothing was deleted"));
    }
    println!("{} deleted", short_name(&answer["object"]));
    Ok(())
}

// === helpers ===

/// pilot's refusal with each of its errors on a line.
fn refused(status: hyper::StatusCode, answer: &Value, outcome: &str) -> anyhow::Error {
    let errors: Vec<String> = answer["errors"]
        .as_array()
        .map(|e| e.iter().map(|e| format!("  {}", str_of(e))).collect())
        .unwrap_or_else(|| vec![format!("  {}", str_of(&answer["error"]))]);
    anyhow::anyhow!(
        "pilot refused ({status}); {outcome}:\n{}",
        errors.join("\n")
    )
}

/// `VirtualService default/reviews` ⇒ `virtualservice/reviews`, the way kubectl prints it.
fn short_name(object: &Value) -> String {
    let text = str_of(object);
    match text.split_once(' ') {
        Some((kind, rest)) => {
            let name = rest.rsplit('/').next().unwrap_or(rest);
            format!("{}/{name}", kind.to_lowercase())
        }
        None => text,
    }
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
