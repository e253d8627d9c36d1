use super::*;
use graymesh_model::parse_str;

const DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
"#;

fn vs(subset: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"#
    )
}

fn one(text: &str) -> Object {
    parse_str("test.yaml", text).unwrap().remove(0)
}

fn stored(text: &str, version: &str) -> Stored {
    Stored {
        object: one(text),
        version: version.into(),
    }
}

#[test]
fn apply_plans_created_configured_unchanged() {
    let current = [stored(DR, "5")];
    let plan = plan_apply(&current, vec![one(DR), one(&vs("v1"))]).unwrap();
    let actions: Vec<Action> = plan.applied.objects.iter().map(|o| o.action).collect();
    assert_eq!(actions, [Action::Unchanged, Action::Created]);
    assert_eq!(plan.writes.len(), 1, "unchanged objects are not written");
    assert_eq!(plan.writes[0].kind(), Kind::VirtualService);
}

#[test]
fn apply_validates_the_resulting_set_as_a_whole() {
    // The VirtualService is fine alone, but names a subset the stored rule does not have.
    let current = [stored(DR, "5")];
    let err = plan_apply(&current, vec![one(&vs("v9"))]).unwrap_err();
    let WriteError::Invalid(errors) = err else {
        panic!("expected Invalid, got {err:?}")
    };
    assert!(errors[0].to_string().contains("v9"), "{errors:?}");
}

#[test]
fn apply_checks_expected_resource_versions() {
    let current = [stored(DR, "5")];
    let mut stale = one(DR);
    stale.meta.resource_version = Some("4".into());
    let err = plan_apply(&current, vec![stale]).unwrap_err().to_string();
    assert!(
        err.contains("DestinationRule default/reviews: resourceVersion 4"),
        "{err}"
    );
    assert!(err.contains("at 5 now"), "{err}");
    let mut fresh = one(DR);
    fresh.meta.resource_version = Some("5".into());
    assert!(plan_apply(&current, vec![fresh]).is_ok());
}

#[test]
fn delete_refuses_to_leave_a_dangling_reference() {
    let current = [stored(DR, "5"), stored(&vs("v1"), "6")];
    let dr = ObjectKey::of(&current[0].object);
    let err = plan_delete(&current, &dr, None).unwrap_err();
    assert!(matches!(err, WriteError::Invalid(_)), "{err:?}");
    let vs_key = ObjectKey::of(&current[1].object);
    assert!(plan_delete(&current, &vs_key, Some("6")).is_ok());
    assert!(matches!(
        plan_delete(&current, &vs_key, Some("1")),
        Err(WriteError::Conflict(_))
    ));
    let missing = ObjectKey {
        name: "nope".into(),
        ..vs_key
    };
    assert!(matches!(
        plan_delete(&current, &missing, None),
        Err(WriteError::NotFound(_))
    ));
}

#[test]
fn content_version_follows_content_only() {
    let a = one(DR);
    let mut b = one(DR);
    b.meta.resource_version = Some("77".into());
    assert_eq!(content_version(&a), content_version(&b));
    assert_ne!(content_version(&a), content_version(&one(&vs("v1"))));
}
