//! The Applications the benchmark applies: `reviews` with components `reviews-v1` and
//! `reviews-v2`, the old one listed first and carrying the `canary-traffic` trait. Each is
//! annotated with its round, so applying the next one changes the Application's content and the
//! controller starts a new rollout once the previous one ended.

/// `v1` or `v2`.
pub type Version = &'static str;

/// A 50/50 weight step, then a manual gate: where a user would run `graymesh rollout rollback`.
pub fn half_then_gate(round: usize) -> String {
    let steps = "    - name: half
      type: canary-rollout-weight
      properties: {traffic: [{revision: reviews-v1, weight: 50}, {revision: reviews-v2, weight: 50}]}
    - name: gate
      type: suspend
";
    application(round, "v1", "v2", steps)
}

/// A full shift from `old` to `new`: weight steps 90/10, 80/20 … 0/100, then promote. With
/// `hold_ms`, each weight step is followed by a `suspend` gate that resumes itself after that
/// long (the controller looks every 200 ms), so the load runs at every split; without, the
/// controller takes the next step as soon as the last one is in the store.
pub fn full_shift(round: usize, old: Version, new: Version, hold_ms: u64) -> String {
    let mut steps = String::new();
    for w in (10..=100).step_by(10) {
        steps.push_str(&format!(
            "    - name: new-{w}
      type: canary-rollout-weight
      properties: {{traffic: [{{revision: reviews-{old}, weight: {}}}, {{revision: reviews-{new}, weight: {w}}}]}}
",
            100 - w
        ));
        if hold_ms > 0 {
            steps.push_str(&format!(
                "    - name: hold-{w}
      type: suspend
      properties: {{timeout: {hold_ms}ms, defaultAction: resume}}
"
            ));
        }
    }
    steps.push_str("    - name: done\n      type: promote\n");
    application(round, old, new, &steps)
}

fn application(round: usize, old: Version, new: Version, steps: &str) -> String {
    format!(
        "apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: reviews
  annotations: {{bench.graymesh.io/round: '{round}'}}
spec:
  components:
  - name: reviews-{old}
    type: webservice
    properties: {{host: reviews, port: 9080, version: {old}}}
    traits:
    - type: canary-traffic
      properties:
        versions: {{oldVersion: reviews-{old}, newVersion: reviews-{new}}}
  - name: reviews-{new}
    type: webservice
    properties: {{host: reviews, port: 9080, version: {new}}}
  workflow:
    steps:
{steps}"
    )
}
