//! The release controller: runs every Application's workflow by writing, for each step, the
//! VirtualService and DestinationRule it implies together with the Application's `Rollout` (its
//! progress) in one store write.
//!
//! It owns nothing but what it writes: all of its state is the Rollout in the store, so a pilot
//! restarted mid-rollout, or another replica that becomes leader, carries on at the same step
//! without running one twice (a step's objects and the Rollout saying "at this step" land
//! together or not at all). Only the leader runs the loop; user commands ([`run_command`]) may be
//! taken by any pilot, fenced by the Rollout's resource version. It never changes the world but
//! through the store.

mod step;
#[cfg(test)]
mod tests;

pub use step::{command, enter, next, record_check, Command, Next, PROMOTE, ROLLBACK};

use crate::analysis::{judge, MetricsSource, Verdict, VersionRef};
use crate::{generate, RolloutState, APPLICATION_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use graymesh_model::oam::{Application, Component, StepAction};
use graymesh_model::rollout::ROLLOUT_API_VERSION;
use graymesh_model::{Object, ObjectMeta, Origin, RolloutStatus, Spec};
use graymesh_sources::{ConfigStore, WriteError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How often due steps are looked for when nothing in the store changes.
pub const DEFAULT_TICK: Duration = Duration::from_millis(200);

/// `(namespace, name)` of an Application (and of its Rollout).
pub type AppKey = (String, String);

/// The controller, and what the admin API reads of it.
#[derive(Clone)]
pub struct Controller {
    store: ConfigStore,
    metrics: Arc<dyn MetricsSource>,
    tick: Duration,
    /// The last write that failed per Application (e.g. a hand-written DestinationRule for the
    /// same host), shown by `rollout status` until a write succeeds.
    errors: Arc<Mutex<BTreeMap<AppKey, String>>>,
    /// Whether this pilot's loop runs workflows now (it leads).
    leading: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

/// An Application as the store holds it, with its Rollout.
#[derive(Debug, Clone)]
pub struct Release {
    pub app: Application,
    pub app_version: String,
    pub rollout: Option<RolloutStatus>,
    pub rollout_version: Option<String>,
}

impl Controller {
    pub fn new(store: ConfigStore, metrics: Arc<dyn MetricsSource>) -> Self {
        Self {
            store,
            metrics,
            tick: DEFAULT_TICK,
            errors: Arc::default(),
            leading: Arc::default(),
        }
    }

    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    pub fn store(&self) -> &ConfigStore {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<dyn MetricsSource> {
        &self.metrics
    }

    /// Whether this pilot runs workflows now (the leader, or the only pilot).
    pub fn is_leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The last failed write for an Application, if the latest attempt failed.
    pub fn error(&self, key: &AppKey) -> Option<String> {
        lock(&self.errors).get(key).cloned()
    }

    /// Run workflows while `leader` is true (always, for a single pilot), until the store's
    /// channel closes.
    pub async fn run(self, mut leader: watch::Receiver<bool>) {
        let mut config = self.store.subscribe();
        // A closed leadership channel keeps its last value (a fixed "always leader", say).
        let mut leader_open = true;
        loop {
            let leading = *leader.borrow_and_update();
            if self
                .leading
                .swap(leading, std::sync::atomic::Ordering::SeqCst)
                != leading
            {
                tracing::info!(leading, "release controller leadership");
            }
            if leading {
                self.reconcile_all().await;
            }
            tokio::select! {
                r = config.changed() => if r.is_err() { return },
                r = leader.changed(), if leader_open => leader_open = r.is_ok(),
                _ = tokio::time::sleep(self.tick) => {}
            }
        }
    }

    /// One pass over every Application: take what is due.
    pub async fn reconcile_all(&self) {
        // Only what a release is made of: Applications, Rollouts and the objects graymesh
        // generated (the rest of the mesh's config is not looked at on every tick).
        let objects = self.store.objects_matching(|o| {
            matches!(o.spec, Spec::Application(_) | Spec::Rollout(_)) || generated(o)
        });
        for release in releases(&objects) {
            self.reconcile(&release).await;
        }
        self.collect_orphans(&objects).await;
    }

    /// The generated objects and the Rollout of an Application that was deleted go too: the
    /// VirtualService first (nothing routes to the subsets any more), then the DestinationRule,
    /// then the Rollout, each a valid config on its own.
    async fn collect_orphans(&self, objects: &[Object]) {
        let apps: std::collections::BTreeSet<(&str, &str)> = objects
            .iter()
            .filter(|o| matches!(o.spec, Spec::Application(_)))
            .map(|o| (o.meta.namespace.as_str(), o.meta.name.as_str()))
            .collect();
        let owner = |o: &Object| -> Option<String> {
            match &o.spec {
                _ if !generated(o) => None,
                Spec::Rollout(_) => Some(format!("{}/{}", o.meta.namespace, o.meta.name)),
                _ => o.meta.annotations.get(APPLICATION_ANNOTATION).cloned(),
            }
        };
        let mut orphans: Vec<&Object> = objects
            .iter()
            .filter(|o| {
                owner(o).is_some_and(|app| {
                    let (ns, name) = app.split_once('/').unwrap_or(("", ""));
                    !apps.contains(&(ns, name))
                })
            })
            .collect();
        orphans.sort_by_key(|o| match o.spec {
            Spec::VirtualService(_) => 0,
            Spec::DestinationRule(_) => 1,
            _ => 2,
        });
        for orphan in orphans {
            let key = graymesh_sources::ObjectKey::of(orphan);
            match self
                .store
                .delete(&key, orphan.meta.resource_version.as_deref())
                .await
            {
                Ok(()) => tracing::info!(object = %key, "deleted: its Application is gone"),
                Err(e) => {
                    tracing::warn!(object = %key, "not deleted although its Application is gone: {e}")
                }
            }
        }
    }

    async fn reconcile(&self, release: &Release) {
        let now = now_ms();
        let status = release.rollout.as_ref();
        let outcome = match next(&release.app, &release.app_version, status, now) {
            Next::Wait => return,
            Next::Enter { index, reason } => {
                let (status, state) = enter(
                    &release.app,
                    &release.app_version,
                    status,
                    index,
                    &reason,
                    now,
                );
                write(&self.store, release, status, state).await
            }
            Next::Check => {
                let Some(status) = status else { return };
                let verdict = self.check(&release.app, status).await;
                let (mut checked, outcome) = record_check(&release.app, status, &verdict, now);
                let state = match outcome {
                    Some((index, reason)) => {
                        let entered = enter(
                            &release.app,
                            &release.app_version,
                            Some(&checked),
                            index,
                            &reason,
                            now,
                        );
                        checked = entered.0;
                        entered.1
                    }
                    None => RolloutState::Step(checked.step),
                };
                write(&self.store, release, checked, state).await
            }
        };
        self.remember(release, outcome);
    }

    /// The verdict of one analysis check of the step the rollout is at.
    async fn check(&self, app: &Application, status: &RolloutStatus) -> Verdict {
        let Some(StepAction::Analysis(step)) =
            app.spec.workflow.get(status.step).map(|s| &s.action)
        else {
            return Verdict::Hold("not at an analysis step".to_string());
        };
        let Some((old, new)) = versions(app) else {
            return Verdict::Hold("the Application names no old and new version".to_string());
        };
        let window = step.interval.as_std();
        let (old, new) = (version_ref(app, old), version_ref(app, new));
        let (baseline, canary) = tokio::join!(
            self.metrics.window(&old, window),
            self.metrics.window(&new, window)
        );
        match (baseline, canary) {
            (Ok(baseline), Ok(canary)) => judge(step, &baseline, &canary),
            (Err(e), _) | (_, Err(e)) => Verdict::Hold(format!("metrics unavailable: {e}")),
        }
    }

    fn remember(&self, release: &Release, outcome: Result<(), String>) {
        let key = (
            release.app.meta.namespace.clone(),
            release.app.meta.name.clone(),
        );
        let mut errors = lock(&self.errors);
        match outcome {
            Ok(()) => {
                errors.remove(&key);
            }
            Err(e) => {
                if errors.get(&key) != Some(&e) {
                    tracing::warn!(application = %release.app.display_name(), "rollout step not written: {e}");
                }
                errors.insert(key, e);
            }
        }
    }
}

/// Why a user's command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    NotFound(String),
    /// The command does not apply to the rollout as it is (e.g. resume at no gate).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Store(String),
}

/// Carry out a user's command on the rollout of `namespace/name`: one store write (the objects
/// of the new state and the Rollout together). Retried when another writer got in first.
pub async fn run_command(
    store: &ConfigStore,
    namespace: &str,
    name: &str,
    command: Command,
) -> Result<RolloutStatus, CommandError> {
    for _ in 0..3 {
        let release = find(store, namespace, name)?;
        let Some(status) = release.rollout.as_ref() else {
            return Err(CommandError::Refused(format!(
                "{} has no rollout yet (the controller starts it shortly after the Application is applied)",
                release.app.display_name()
            )));
        };
        let (next, state) = step::command(
            &release.app,
            &release.app_version,
            status,
            command,
            now_ms(),
        )
        .map_err(CommandError::Refused)?;
        match write(store, &release, next.clone(), state).await {
            Ok(()) => return Ok(next),
            Err(e) if e.starts_with(CONFLICT) => continue,
            Err(e) => return Err(CommandError::Store(e)),
        }
    }
    Err(CommandError::Store(format!(
        "Application {namespace}/{name}: the rollout kept changing while the command was written; try again"
    )))
}

/// Whether graymesh's release machinery wrote `object` (its `managed-by` label).
fn generated(object: &Object) -> bool {
    object.meta.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

/// The Application `namespace/name` and its Rollout, as stored now.
pub fn find(store: &ConfigStore, namespace: &str, name: &str) -> Result<Release, CommandError> {
    releases(&store.objects())
        .into_iter()
        .find(|r| r.app.meta.namespace == namespace && r.app.meta.name == name)
        .ok_or_else(|| {
            CommandError::NotFound(format!("Application {namespace}/{name} does not exist"))
        })
}

/// Every Application in `objects` with its Rollout (same namespace and name).
pub fn releases(objects: &[Object]) -> Vec<Release> {
    let mut rollouts: BTreeMap<AppKey, (RolloutStatus, Option<String>)> = BTreeMap::new();
    for o in objects {
        if let Spec::Rollout(status) = &o.spec {
            let key = (o.meta.namespace.clone(), o.meta.name.clone());
            rollouts.insert(key, (status.clone(), o.meta.resource_version.clone()));
        }
    }
    objects
        .iter()
        .filter_map(|o| match &o.spec {
            Spec::Application(spec) => {
                let key = (o.meta.namespace.clone(), o.meta.name.clone());
                let (rollout, rollout_version) = rollouts.remove(&key).unzip();
                Some(Release {
                    app: Application {
                        meta: o.meta.clone(),
                        spec: spec.clone(),
                        origin: o.origin.clone(),
                    },
                    app_version: o.meta.resource_version.clone().unwrap_or_default(),
                    rollout,
                    rollout_version: rollout_version.flatten(),
                })
            }
            _ => None,
        })
        .collect()
}

const CONFLICT: &str = "conflict: ";

/// Write `status` and the objects `state` implies, in one store write.
async fn write(
    store: &ConfigStore,
    release: &Release,
    status: RolloutStatus,
    state: RolloutState,
) -> Result<(), String> {
    let generated = generate(&release.app, state).map_err(|e| e.to_string())?;
    let rollout = rollout_object(&release.app, status, release.rollout_version.clone());
    let objects = vec![
        generated.virtual_service,
        generated.destination_rule,
        rollout,
    ];
    match store.apply(objects).await {
        Ok(_) => Ok(()),
        Err(WriteError::Conflict(e)) => Err(format!("{CONFLICT}{e}")),
        Err(WriteError::Invalid(errors)) => Err(format!(
            "the generated objects are refused by the store: {}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The Rollout object of `app`, expected at `version` in the store (none: it must be new).
pub fn rollout_object(app: &Application, status: RolloutStatus, version: Option<String>) -> Object {
    Object {
        api_version: ROLLOUT_API_VERSION.to_string(),
        meta: ObjectMeta {
            name: app.meta.name.clone(),
            namespace: app.meta.namespace.clone(),
            labels: BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())]),
            annotations: BTreeMap::new(),
            resource_version: version,
        },
        spec: Spec::Rollout(status),
        origin: Origin {
            file: format!("rollout {}/{}", app.meta.namespace, app.meta.name),
            document: 0,
        },
    }
}

/// The old and the new version's components.
pub fn versions(app: &Application) -> Option<(&Component, &Component)> {
    let (_, canary) = app.canary_traffic()?;
    Some((
        app.component(&canary.versions.old_version)?,
        app.component(&canary.versions.new_version)?,
    ))
}

/// How the metrics name a component's version.
pub fn version_ref(app: &Application, component: &Component) -> VersionRef {
    VersionRef {
        namespace: app.meta.namespace.clone(),
        host: component.properties.host.clone(),
        version: component.properties.version.clone(),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
