//! The embedded service registry.
//!
//! A [`RegistrySnapshot`] is a pure function of the validated config (ServiceEntries) and the
//! instances registered at run time. [`EmbeddedRegistry`] owns the run-time registrations: it
//! hands out ids, keeps each instance alive for its TTL, renews on heartbeat, and announces every
//! change on a watch channel. It never talks to a proxy.

use graymesh_model::istio::{Location, Resolution};
use graymesh_model::{host, ConfigSet};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

pub type Labels = BTreeMap<String, String>;

// === Snapshot types ===

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    /// Parse `region/zone/subzone` (any suffix may be missing).
    pub fn parse(text: &str) -> Self {
        let mut parts = text.splitn(3, '/').map(str::to_string);
        Self {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            subzone: parts.next().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub number: u32,
    pub name: String,
    /// Upper-case protocol as declared (HTTP, HTTP2, GRPC, TCP, ...), `HTTP` when unknown.
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// `se:<namespace>/<name>/<index>` for ServiceEntry endpoints, the registration id otherwise.
    pub id: String,
    pub address: String,
    /// Service port number ⇒ the port this instance listens on for it.
    pub ports: BTreeMap<u32, u32>,
    pub labels: Labels,
    pub locality: Locality,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Fully qualified host, the key everything downstream uses.
    pub host: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub external: bool,
    /// Namespaces that see this service (ServiceEntry `exportTo`); empty means all.
    pub export_to: Vec<String>,
    pub instances: Vec<Instance>,
}

impl Service {
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }
}

/// Every known service by fully qualified host.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RegistrySnapshot {
    pub services: BTreeMap<String, Service>,
}

impl RegistrySnapshot {
    /// Merge the ServiceEntries of `config` with run-time `registrations`.
    pub fn build(config: &ConfigSet, registrations: &[Registration]) -> Self {
        let mut snapshot = Self::default();
        for se in &config.service_entries {
            snapshot.add_service_entry(se);
        }
        for reg in registrations {
            snapshot.add_registration(reg);
        }
        snapshot
    }

    pub fn instance_count(&self) -> usize {
        self.services.values().map(|s| s.instances.len()).sum()
    }

    fn add_service_entry(
        &mut self,
        se: &graymesh_model::Resource<graymesh_model::istio::ServiceEntry>,
    ) {
        let spec = &se.spec;
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .map(|p| ServicePort {
                number: p.number,
                name: p.name.clone(),
                protocol: p
                    .protocol
                    .clone()
                    .unwrap_or_else(|| "HTTP".into())
                    .to_uppercase(),
            })
            .collect();
        let instances: Vec<Instance> = spec
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| Instance {
                id: format!("se:{}/{}/{i}", se.meta.namespace, se.meta.name),
                address: ep.address.clone(),
                ports: spec
                    .ports
                    .iter()
                    .map(|p| {
                        let target = ep
                            .ports
                            .get(&p.name)
                            .copied()
                            .or(p.target_port)
                            .unwrap_or(p.number);
                        (p.number, target)
                    })
                    .collect(),
                labels: ep.labels.clone(),
                locality: ep
                    .locality
                    .as_deref()
                    .map(Locality::parse)
                    .unwrap_or_default(),
                weight: ep.weight.unwrap_or(1).max(1),
            })
            .collect();
        for h in &spec.hosts {
            // ServiceEntry hosts are taken exactly as written.
            let service = self.services.entry(h.clone()).or_insert_with(|| Service {
                host: h.clone(),
                namespace: se.meta.namespace.clone(),
                ports: Vec::new(),
                resolution: spec.resolution.unwrap_or(Resolution::Static),
                external: spec.location == Some(Location::MeshExternal),
                export_to: spec.export_to.clone(),
                instances: Vec::new(),
            });
            merge_ports(&mut service.ports, &ports);
            service.instances.extend(instances.iter().cloned());
        }
    }

    fn add_registration(&mut self, reg: &Registration) {
        let fqdn = if self.services.contains_key(&reg.service) {
            reg.service.clone()
        } else {
            host::service_fqdn(&reg.service, &reg.namespace)
        };
        let ports: Vec<ServicePort> = reg
            .ports
            .iter()
            .map(|p| ServicePort {
                number: p.port,
                name: p.name.clone().unwrap_or_else(|| format!("port-{}", p.port)),
                protocol: p
                    .protocol
                    .clone()
                    .unwrap_or_else(|| "HTTP".into())
                    .to_uppercase(),
            })
            .collect();
        let service = self
            .services
            .entry(fqdn.clone())
            .or_insert_with(|| Service {
                host: fqdn,
                namespace: reg.namespace.clone(),
                ports: Vec::new(),
                resolution: Resolution::Static,
                external: false,
                export_to: Vec::new(),
                instances: Vec::new(),
            });
        merge_ports(&mut service.ports, &ports);
        service.instances.push(Instance {
            id: reg.id.clone(),
            address: reg.address.clone(),
            ports: reg
                .ports
                .iter()
                .map(|p| (p.port, p.target_port.unwrap_or(p.port)))
                .collect(),
            labels: reg.labels.clone(),
            locality: reg
                .locality
                .as_deref()
                .map(Locality::parse)
                .unwrap_or_default(),
            weight: reg.weight.unwrap_or(1).max(1),
        });
    }
}

fn merge_ports(into: &mut Vec<ServicePort>, ports: &[ServicePort]) {
    for p in ports {
        if !into.iter().any(|q| q.number == p.number) {
            into.push(p.clone());
        }
    }
    into.sort_by_key(|p| p.number);
}

// === Run-time registrations ===

/// What a sidecar (or any program) registers: one instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Assigned by the registry when empty.
    #[serde(default)]
    pub id: String,
    /// Short name (`reviews`, expanded in `namespace`) or a host declared by a ServiceEntry.
    pub service: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub address: String,
    pub ports: Vec<RegistrationPort>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub locality: Option<String>,
    #[serde(default)]
    pub weight: Option<u32>,
    /// Seconds without a heartbeat after which the instance is dropped.
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationPort {
    /// The service port clients use.
    pub port: u32,
    /// Where this instance listens for it (defaults to `port`).
    #[serde(default)]
    pub target_port: Option<u32>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
}

fn default_namespace() -> String {
    graymesh_model::object::DEFAULT_NAMESPACE.to_string()
}

fn default_ttl() -> u64 {
    10
}

impl Registration {
    /// Check what a registration says before accepting it; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.service.trim().is_empty() {
            return Err("service: must not be empty".into());
        }
        if self.address.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("address: {:?} is not an IP address", self.address));
        }
        if self.ports.is_empty() {
            return Err("ports: at least one port is required".into());
        }
        for (i, p) in self.ports.iter().enumerate() {
            for (field, value) in [("port", Some(p.port)), ("target_port", p.target_port)] {
                if let Some(v) = value {
                    if !(1..=65535).contains(&v) {
                        return Err(format!("ports[{i}].{field}: {v} is not in 1..=65535"));
                    }
                }
            }
        }
        if !(1..=3600).contains(&self.ttl_seconds) {
            return Err(format!(
                "ttl_seconds: {} is not in 1..=3600",
                self.ttl_seconds
            ));
        }
        if self.weight == Some(0) {
            return Err("weight: must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Lease {
    registration: Registration,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Leases {
    by_id: BTreeMap<String, Lease>,
    next_id: u64,
}

/// Instances registered at run time, each alive until its TTL passes without a heartbeat.
#[derive(Debug, Clone)]
pub struct EmbeddedRegistry {
    leases: Arc<Mutex<Leases>>,
    changes: watch::Sender<Arc<Vec<Registration>>>,
}

impl Default for EmbeddedRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedRegistry {
    pub fn new() -> Self {
        let (changes, _) = watch::channel(Arc::new(Vec::new()));
        Self {
            leases: Arc::default(),
            changes,
        }
    }

    /// The current registrations, and every later change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<Registration>>> {
        self.changes.subscribe()
    }

    /// Register (or re-register under the same id) an instance. Returns its id.
    pub fn register(&self, mut registration: Registration) -> Result<String, String> {
        registration.validate()?;
        let mut leases = self.lock();
        if registration.id.is_empty() {
            leases.next_id += 1;
            registration.id = format!("{}-{}", registration.service, leases.next_id);
        }
        let id = registration.id.clone();
        let expires = Instant::now() + Duration::from_secs(registration.ttl_seconds);
        leases.by_id.insert(
            id.clone(),
            Lease {
                registration,
                expires,
            },
        );
        self.publish(&leases);
        Ok(id)
    }

    /// Extend an instance's life by its TTL. False when the id is unknown (expired or never seen).
    pub fn heartbeat(&self, id: &str) -> bool {
        let mut leases = self.lock();
        match leases.by_id.get_mut(id) {
            Some(lease) => {
                lease.expires =
                    Instant::now() + Duration::from_secs(lease.registration.ttl_seconds);
                true
            }
            None => false,
        }
    }

    pub fn deregister(&self, id: &str) -> bool {
        let mut leases = self.lock();
        let removed = leases.by_id.remove(id).is_some();
        if removed {
            self.publish(&leases);
        }
        removed
    }

    pub fn list(&self) -> Vec<Registration> {
        self.lock()
            .by_id
            .values()
            .map(|l| l.registration.clone())
            .collect()
    }

    /// Drop every instance whose TTL has passed; returns how many were dropped.
    pub fn expire(&self) -> usize {
        let now = Instant::now();
        let mut leases = self.lock();
        let before = leases.by_id.len();
        leases.by_id.retain(|_, lease| lease.expires > now);
        let dropped = before - leases.by_id.len();
        if dropped > 0 {
            self.publish(&leases);
        }
        dropped
    }

    /// Run [`Self::expire`] every `period` until the registry's last handle is dropped.
    pub async fn run_expiry(self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let dropped = self.expire();
            if dropped > 0 {
                tracing::info!(dropped, "registry: instances expired without heartbeat");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        // A poisoned lock only means another thread panicked mid-update of a plain map; the map
        // itself is still consistent, so keep serving.
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, leases: &Leases) {
        let all = leases
            .by_id
            .values()
            .map(|l| l.registration.clone())
            .collect();
        self.changes.send_replace(Arc::new(all));
    }
}

#[cfg(test)]
mod tests;
