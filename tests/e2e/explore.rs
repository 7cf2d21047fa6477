//! `Scenario::explore`: a device author's `cargo test` runs a machine under
//! many random schedules and fails with the seed that breaks it.

use vmm_testkit::{Scenario, json};

#[test]
fn the_default_machine_keeps_its_expectations_under_random_schedules() {
    let manifest = include_str!("../../system.ini");
    assert!(manifest.contains("[expect]"));
    assert_eq!(Scenario::new(manifest).explore(0..20), 20);
}

#[test]
fn an_order_bug_fails_with_its_seed_and_replay() {
    let scenario = Scenario::new("[386Enh]\ndevice = [\"fixture-orderbug\"]\n");
    // The default order (LIFO) hides it.
    scenario.run().assert_ok();
    assert_eq!(scenario.run().violations(), 0);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario.explore(0..20)))
        .expect_err("random order finds the bug");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.starts_with("seed "), "{message}");
    assert!(message.contains("violation FXORDER_MIDDLE_NOT_SECOND in FXORDER"), "{message}");
    let seed: u64 = message["seed ".len()..].split_whitespace().next().unwrap().parse().unwrap();
    assert!(message.contains(&format!(".set(\"machine.seed={seed}\")")), "{message}");
    // The replay fails the same way.
    let replay = scenario.clone().set("machine.order=random").set(&format!("machine.seed={seed}")).run();
    let v = replay.trace().matching(json!({"kind": "violation"}));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["code"], "FXORDER_MIDDLE_NOT_SECOND");
}
