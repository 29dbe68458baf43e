//! A scenario runs only on the shape its file states: `[stack]`'s brokers and profile,
//! and what follows from them (the topic's replication factor, `min.insync.replicas`,
//! unclean leader election). A stack of another shape is refused before any load, with
//! both shapes and the commands that fix it; it is never grown halfway (brokers added,
//! the topic left at replication factor 1 on `kafka#1`, a "kill the partition leader"
//! that takes every partition's only replica). Consumers are not shape: `up` adds them
//! to a warm stack.
//!
//! The comparison is pure ([`check`]); the running shape is read by
//! [`crate::runtime::Stack::shape`].

use crate::runtime::{Cluster, Profile, RunningShape};

/// How the scenario meets the stack, which decides the fix the refusal suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meeting {
    /// A stack of the project exists (running, or stopped with its data).
    Existing,
    /// `--attach`: the running stack, as it is.
    Attached,
    /// This run brought the stack up, from data an earlier stack left.
    BroughtUp,
}

/// `Ok` when `running` is the shape `stated` (figures the stack could not say are not
/// held against it); otherwise the refusal, naming both shapes and the fix.
pub fn check(
    file: &str,
    project: &str,
    stated: &Cluster,
    running: &RunningShape,
    meeting: Meeting,
) -> Result<(), String> {
    let diffs = stated.differences(running);
    if diffs.is_empty() {
        return Ok(());
    }
    let down = format!("wiberctl stack down --volumes --project {project}");
    let profile = match stated.profile {
        Profile::Safe => String::new(),
        Profile::Unsafe => " --profile unsafe".to_string(),
    };
    let fix = match meeting {
        Meeting::Existing => format!(
            "take it down with `{down}` and run the scenario again (it brings the stack up \
             as the file states), or run it again with --fresh (the same in one step)"
        ),
        Meeting::Attached => format!(
            "bring up a stack of that shape (`{down}`, then `wiberctl stack up --brokers {}{profile} \
             --project {project}`) and attach again, or run without --attach and with --fresh",
            stated.brokers
        ),
        Meeting::BroughtUp => format!(
            "its data was left by an earlier stack of another shape: run the scenario again \
             with --fresh, or after `{down}`"
        ),
    };
    Err(format!(
        "the stack of project {project:?} is not of the shape {file} states: it has {} ({}), \
         the file states {}. A scenario runs only on the shape its file states (a stack grown \
         halfway keeps its topic's replication, and a fault on one broker can take every \
         partition's only replica): {fix}",
        running.describe(),
        diffs.join("; "),
        stated.describe(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_safe() -> Cluster {
        Cluster {
            brokers: 3,
            profile: Profile::Safe,
        }
    }

    fn running(brokers: u32, rf: Option<u32>, min: Option<u32>) -> RunningShape {
        RunningShape {
            brokers,
            topic: "wiber.messages".into(),
            replication: rf,
            replication_unknown: rf.is_none().then(|| "no broker answered".into()),
            min_insync: min,
            unclean_election: Some(false),
        }
    }

    const FILE: &str = "scenarios/kill-partition-leader.toml";

    #[test]
    fn the_stated_shape_passes() {
        let c = three_safe();
        assert_eq!(
            check(
                FILE,
                "wiber",
                &c,
                &running(3, Some(3), Some(2)),
                Meeting::Existing
            ),
            Ok(())
        );
        // What the stack cannot say is not held against it (a stopped stack's topic).
        assert_eq!(
            check(
                FILE,
                "wiber",
                &c,
                &running(3, None, None),
                Meeting::Existing
            ),
            Ok(())
        );
        assert_eq!(
            check(
                FILE,
                "wiber",
                &Cluster::default(),
                &running(1, Some(1), Some(1)),
                Meeting::Attached
            ),
            Ok(())
        );
    }

    #[test]
    fn one_broker_under_a_three_broker_file_is_refused_with_both_shapes_and_the_fix() {
        let e = check(
            FILE,
            "wiber",
            &three_safe(),
            &running(1, Some(1), Some(1)),
            Meeting::Existing,
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "the stack of project \"wiber\" is not of the shape scenarios/kill-partition-leader.toml states: \
                 it has 1 broker, topic wiber.messages at replication factor 1, min.insync.replicas 1 \
                 (1 broker instead of 3; topic wiber.messages at replication factor 1 instead of 3; \
                 min.insync.replicas 1 instead of 2), the file states 3 brokers, replication factor 3, \
                 min.insync.replicas 2 (safe profile)."
            ),
            "{e}"
        );
        assert!(
            e.contains("`wiberctl stack down --volumes --project wiber`"),
            "{e}"
        );
        assert!(e.contains("--fresh"), "{e}");
    }

    /// Three broker instances whose topic kept replication factor 1 (a stack grown by an
    /// older wiberctl): another shape, though the brokers count right.
    #[test]
    fn a_stack_grown_halfway_is_another_shape() {
        let e = check(
            FILE,
            "ci",
            &three_safe(),
            &running(3, Some(1), Some(2)),
            Meeting::Existing,
        )
        .unwrap_err();
        assert!(
            e.contains("(topic wiber.messages at replication factor 1 instead of 3)"),
            "{e}"
        );
        assert!(!e.contains("broker instead"), "{e}");
    }

    #[test]
    fn the_profile_is_shape_and_the_fix_fits_how_the_stack_was_met() {
        let unsafe3 = Cluster {
            brokers: 3,
            profile: Profile::Unsafe,
        };
        let e = check(
            "isolate-leader-unsafe.toml",
            "p",
            &unsafe3,
            &running(3, Some(3), Some(2)),
            Meeting::Attached,
        )
        .unwrap_err();
        assert!(e.contains("min.insync.replicas 2 instead of 1"), "{e}");
        assert!(
            e.contains("unclean leader election off (the safe profile)"),
            "{e}"
        );
        assert!(
            e.contains("`wiberctl stack up --brokers 3 --profile unsafe --project p`"),
            "{e}"
        );
        assert!(e.contains("run without --attach and with --fresh"), "{e}");
        // More brokers than the file states is another shape too.
        let e = check(
            "smoke.toml",
            "p",
            &Cluster::default(),
            &running(3, Some(3), Some(2)),
            Meeting::BroughtUp,
        )
        .unwrap_err();
        assert!(e.contains("3 brokers instead of 1"), "{e}");
        assert!(e.contains("left by an earlier stack"), "{e}");
    }
}
