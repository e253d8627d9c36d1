//! The controller's decisions over time, without a store: what is due, what each step, check
//! and command leads to.

use super::*;
use graymesh_model::parse_documents;
use graymesh_model::RolloutPhase;

const APP: &str = "
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {name: reviews}
spec:
  components:
  - name: reviews
    type: webservice
    properties: {host: reviews, port: 9080, version: v1}
    traits:
    - type: canary-traffic
      properties:
        versions: {oldVersion: reviews, newVersion: reviews-v2}
  - name: reviews-v2
    type: webservice
    properties: {host: reviews, port: 9080, version: v2}
  workflow:
    steps:
    - name: five
      type: canary-rollout-weight
      properties: {traffic: [{revision: reviews, weight: 95}, {revision: reviews-v2, weight: 5}]}
    - name: check
      type: analysis
      properties: {interval: 10s, checks: 2, minRequests: 10, maxFailures: 2, successRate: {min: 99}}
    - name: gate
      type: suspend
      properties: {timeout: 1m, defaultAction: rollback}
    - name: done
      type: promote
";

fn app() -> Application {
    parse_documents("app.yaml", APP)
        .unwrap()
        .applications
        .remove(0)
}

/// Go where `next` says, as the controller would.
fn step_on(
    app: &Application,
    status: Option<&RolloutStatus>,
    now: u64,
) -> (RolloutStatus, RolloutState) {
    match next(app, "1", status, now) {
        Next::Enter { index, reason } => enter(app, "1", status, index, &reason, now),
        other => panic!("expected a step, got {other:?}"),
    }
}

#[test]
fn a_new_application_starts_at_its_first_step_and_a_weight_step_moves_on() {
    let app = app();
    let (status, state) = step_on(&app, None, 1_000);
    assert_eq!(state, RolloutState::Step(0));
    assert_eq!(
        (status.phase, status.step, status.step_started_ms),
        (RolloutPhase::Progressing, 0, 1_000)
    );
    assert_eq!(status.decisions[0].action, "start");
    assert_eq!(status.application_version, "1");
    let (status, state) = step_on(&app, Some(&status), 1_200);
    assert_eq!(state, RolloutState::Step(1));
    assert_eq!(status.analysis, Some(Default::default()));
    assert_eq!(status.decisions[1].action, "advance");
    assert_eq!(
        status.decisions[1].reason,
        "step \"five\" applied; now at step \"check\""
    );
}

#[test]
fn an_analysis_check_is_due_an_interval_after_the_step_began_and_after_each_check() {
    let app = app();
    let (s, _) = step_on(&app, None, 0);
    let (s, _) = step_on(&app, Some(&s), 100);
    assert_eq!(next(&app, "1", Some(&s), 10_099), Next::Wait);
    assert_eq!(next(&app, "1", Some(&s), 10_100), Next::Check);
    let (s, outcome) = record_check(&app, &s, &Verdict::Pass("fine".into()), 10_100);
    assert_eq!(outcome, None, "two passes are needed");
    assert_eq!(next(&app, "1", Some(&s), 20_099), Next::Wait);
    let (s, outcome) = record_check(&app, &s, &Verdict::Hold("3 requests < 10".into()), 20_100);
    assert_eq!(outcome, None, "a hold counts for nothing");
    assert_eq!(
        s.analysis.as_ref().map(|a| (a.passed, a.failed, a.held)),
        Some((1, 0, 1))
    );
    assert_eq!(
        s.analysis.as_ref().unwrap().last_verdict,
        "hold: 3 requests < 10"
    );
    let (s, outcome) = record_check(&app, &s, &Verdict::Pass("fine".into()), 30_100);
    let (index, reason) = outcome.unwrap();
    assert_eq!(
        (index, reason.as_str()),
        (2, "analysis passed 2 checks (fine)")
    );
    let (s, state) = enter(&app, "1", Some(&s), index, &reason, 30_100);
    assert_eq!((state, s.analysis.clone()), (RolloutState::Step(2), None));
}

#[test]
fn failed_checks_up_to_max_failures_roll_back() {
    let app = app();
    let (s, _) = step_on(&app, None, 0);
    let (s, _) = step_on(&app, Some(&s), 0);
    let (s, outcome) = record_check(
        &app,
        &s,
        &Verdict::Fail("success rate 50% < min 99%".into()),
        10_000,
    );
    assert_eq!(outcome, None);
    let (s, outcome) = record_check(
        &app,
        &s,
        &Verdict::Fail("success rate 48% < min 99%".into()),
        20_000,
    );
    let (index, reason) = outcome.unwrap();
    assert_eq!(index, ROLLBACK);
    assert_eq!(
        reason,
        "analysis failed 2 of 2 allowed checks (success rate 48% < min 99%)"
    );
    let (s, state) = enter(&app, "1", Some(&s), index, &reason, 20_000);
    assert_eq!(
        (state, s.phase),
        (RolloutState::RolledBack, RolloutPhase::RolledBack)
    );
    assert_eq!(s.decisions.last().unwrap().action, "rollback");
    assert_eq!(
        next(&app, "1", Some(&s), 99_000),
        Next::Wait,
        "an ended rollout stays ended"
    );
}

#[test]
fn a_gate_waits_for_resume_and_takes_its_default_action_at_its_timeout() {
    let app = app();
    let (s, _) = enter(&app, "1", None, 2, "test", 0);
    assert_eq!(next(&app, "1", Some(&s), 59_999), Next::Wait);
    let Next::Enter { index, reason } = next(&app, "1", Some(&s), 60_000) else {
        panic!("the gate should time out");
    };
    assert_eq!(
        (index, reason.as_str()),
        (ROLLBACK, "gate \"gate\" timed out after 60s: rollback")
    );
    // resumed in time instead: the promote step ends the rollout
    let (s, state) = command(&app, "1", &s, Command::Resume, 30_000).unwrap();
    assert_eq!(
        (state, s.phase),
        (RolloutState::Promoted, RolloutPhase::Promoted)
    );
    assert_eq!(
        s.decisions.last().unwrap().reason,
        "gate \"gate\" passed by a user"
    );
}

#[test]
fn commands_pause_resume_promote_and_roll_back_or_say_why_not() {
    let app = app();
    let (s, _) = step_on(&app, None, 0);
    let err = command(&app, "1", &s, Command::Resume, 1).unwrap_err();
    assert_eq!(err, "Application default/reviews is not paused and not at a gate: it is at step 0 \"five\" (canary-rollout-weight)");
    let (paused, state) = command(&app, "1", &s, Command::Pause, 1).unwrap();
    assert_eq!((paused.paused, state), (true, RolloutState::Step(0)));
    assert_eq!(
        next(&app, "1", Some(&paused), 999_999),
        Next::Wait,
        "paused: nothing advances"
    );
    let (resumed, _) = command(&app, "1", &paused, Command::Resume, 2).unwrap();
    assert!(!resumed.paused);
    let (back, state) = command(&app, "1", &resumed, Command::Rollback, 3).unwrap();
    assert_eq!(
        (back.phase, state),
        (RolloutPhase::RolledBack, RolloutState::RolledBack)
    );
    assert_eq!(
        command(&app, "1", &back, Command::Promote, 4).unwrap_err(),
        "the rollout of Application default/reviews was rolled back; nothing to promote"
    );
    let (promoted, state) = command(&app, "1", &s, Command::Promote, 5).unwrap();
    assert_eq!(
        (promoted.phase, state),
        (RolloutPhase::Promoted, RolloutState::Promoted)
    );
}

#[test]
fn an_application_changed_after_the_end_starts_again_and_mid_rollout_keeps_its_step() {
    let app = app();
    let (s, _) = enter(&app, "1", None, 1, "test", 0);
    let Next::Enter { index, .. } = next(&app, "2", Some(&s), 1) else {
        panic!()
    };
    assert_eq!(index, 1, "mid-rollout: same step");
    let (ended, _) = command(&app, "1", &s, Command::Promote, 2).unwrap();
    assert_eq!(next(&app, "1", Some(&ended), 3), Next::Wait);
    let Next::Enter { index, .. } = next(&app, "2", Some(&ended), 3) else {
        panic!()
    };
    let (again, state) = enter(&app, "2", Some(&ended), index, "new", 3);
    assert_eq!(
        (again.phase, state, again.application_version.as_str()),
        (RolloutPhase::Progressing, RolloutState::Step(0), "2")
    );
}
