//! `Scenario::explore`: a device author's `cargo test` runs a machine under
//! many random schedules and fails with the seed that breaks it.

use vmm_testkit::{Scenario, Schedule, Strategy, json};

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

#[test]
fn both_strategies_find_the_order_bug_shrink_it_and_replay_the_shrunk_schedule() {
    let scenario = Scenario::new("[386Enh]\ndevice = [\"fixture-orderbug\"]\n");
    for strategy in [Strategy::Random, Strategy::pct(3)] {
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario.explore_with(strategy, 0..20)))
            .expect_err("the strategy finds the bug");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("violation FXORDER_MIDDLE_NOT_SECOND in FXORDER"), "{message}");
        let seed: u64 = message["seed ".len()..].split_whitespace().next().unwrap().parse().unwrap();
        assert!(message.contains(&format!("vmm run MANIFEST --order {} --seed {seed}", strategy.name())), "{message}");
        // One choice away from the default order is all the bug needs.
        assert!(message.contains("-> 1 and 0;"), "{message}");
        let text = &message[message.find("vmm-schedule 1").expect("the shrunk schedule")..];
        let shrunk = Schedule::parse(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!((shrunk.sizes(), shrunk.seed), ((1, 0), seed));
        let replay = scenario.clone().replay(shrunk).run();
        let v = replay.trace().matching(json!({"kind": "violation"}));
        assert_eq!(v.len(), 1, "{strategy:?}");
        assert_eq!(v[0]["code"], "FXORDER_MIDDLE_NOT_SECOND");
        assert_eq!(replay.trace().records()[0]["order"], strategy.name());
    }
}

#[test]
fn a_recorded_schedule_replays_its_run_record_for_record() {
    // VPOSTD with an interrupt source (POSTIRQ), POSTAPP and two DOS VMs
    // posting: events of several devices and VMs ready at once, injected
    // interrupts. The recorded decisions, replayed in place of the
    // strategy, make the same run.
    let base = crate::vpostd::with_postirq(
        "[machine]\ninject_rate = 0.3\n[POSTIRQ]\nBudget = 10\nFlushAt = 900\n\
         [windows]\nload = [\"POSTAPP queue=3 busy=15 quiet\"]\n\
         [[vm]]\nname = \"DOS1\"\nprogram = \"POSTDOS\"\nargs = \"count=10 interval=30\"\n\
         [[vm]]\nname = \"DOS2\"\nprogram = \"POSTDOS\"\nargs = \"count=10 interval=0\"\nat = \"40ms\"\n",
    );
    let (mut chose, mut injected) = (false, false);
    for (strategy, seed) in [("random", 1), ("random", 2), ("random", 3), ("pct", 1), ("pct", 2), ("pct", 3)] {
        let explored = base.clone().set(&format!("machine.order={strategy}")).set(&format!("machine.seed={seed}"));
        let run = explored.clone().recording().run();
        run.assert_ok();
        let schedule = run.schedule();
        chose |= schedule.sizes().0 > 0;
        // A decision names its event by the `seq` of its `event_scheduled`
        // record.
        for d in schedule.decisions.iter().filter(|d| d.kind == vmm_host::explore::DecisionKind::Event) {
            run.trace().expect(json!({"kind": "event_scheduled", "seq": d.value}));
        }
        injected |= schedule.sizes().1 > 0;
        // Through the text form, as a file carries it.
        let parsed = Schedule::parse(&schedule.to_text()).unwrap();
        let replay = base.clone().replay(parsed).recording().run();
        replay.assert_ok();
        assert_eq!(replay.trace().records(), run.trace().records(), "{strategy} seed {seed}");
        assert_eq!(replay.schedule().decisions, schedule.decisions);
        // Recording changes nothing: the same seed runs the same way.
        assert_eq!(explored.run().trace().records(), run.trace().records(), "{strategy} seed {seed}");
    }
    assert!(chose && injected, "the runs choose among ready events and inject interrupts");
}

#[test]
fn pct_keeps_the_default_machine_s_expectations() {
    let manifest = include_str!("../../system.ini");
    assert_eq!(Scenario::new(manifest).explore_with(Strategy::pct(3), 0..20), 20);
}

#[test]
fn pct_finds_a_depth_two_bug_far_more_often_than_random_order() {
    // FXTORN's reader must run exactly between two of the writer's twelve
    // steps: random order hits that one run in 2048, pct with depth 2 one
    // run in 24 (see the fixture's docs).
    let scenario = Scenario::new("[386Enh]\ndevice = [\"fixture-tornread\"]\n").without_trace();
    for order in ["lifo", "fifo"] {
        assert_eq!(scenario.clone().set(&format!("machine.order={order}")).run().violations(), 0, "{order}");
    }
    let failing = |strategy: &str| {
        (0..300u64)
            .filter(|seed| {
                let run = scenario
                    .clone()
                    .set(&format!("machine.order={strategy}"))
                    .set(&format!("machine.seed={seed}"))
                    .set("machine.pct_depth=2")
                    .set("machine.pct_steps=12")
                    .run();
                run.assert_ok();
                run.violations() > 0
            })
            .count()
    };
    let (random, pct) = (failing("random"), failing("pct"));
    assert!(random <= 2, "random order finds it in {random} of 300 runs");
    assert!(pct >= 6, "pct finds it in {pct} of 300 runs");
    // Shrunk: the writer first (not the newest event), then the reader at
    // the writer's eleventh choice; nothing else.
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Scenario::new("[386Enh]\ndevice = [\"fixture-tornread\"]\n").explore_with(Strategy::pct(2), 0..300)
    }))
    .expect_err("pct finds the bug");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("violation FXTORN_TORN_READ in FXTORN"), "{message}");
    let text = &message[message.find("vmm-schedule 1").expect("the shrunk schedule")..];
    let shrunk = Schedule::parse(text).unwrap();
    let steps: Vec<u64> = shrunk.decisions.iter().map(|d| d.step).collect();
    assert_eq!(steps, [0, 10], "{text}");
}
