//! `examples/demo` run as a user would (`cargo run --example demo`): every scenario completes and
//! shows what the README promises.

mod support;

use std::time::Duration;

use support::programs::run_to_end;
use support::redis_server::RedisServer;

fn stdout_of(args: &[&str]) -> String {
    let output = run_to_end("demo", args, Duration::from_secs(120));
    assert!(output.status.success(), "demo {args:?} failed: {output:?}");
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// The shared-sessions scenario: three reads, each showing every item added on any backend.
fn assert_every_read_sees_the_whole_cart(out: &str) -> Vec<&str> {
    let reads: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("alice reads on"))
        .collect();
    assert_eq!(reads.len(), 3, "{out}");
    assert!(
        reads
            .iter()
            .all(|l| l.ends_with("cart = apple,bread,cheese")),
        "{reads:?}"
    );
    reads
}

#[test]
fn every_scenario_runs_and_shows_stickiness_scaling_and_failover_without_errors() {
    let out = stdout_of(&[]);
    for section in [
        "== cookie affinity",
        "== IP hash",
        "== consistent hashing on X-User",
        "effect of virtual nodes",
        "== shared sessions",
        "== scaling",
        "== failover",
    ] {
        assert!(out.contains(section), "missing {section:?} in:\n{out}");
    }
    // Cookie: each user's first response pins it, the next three are sticky on the same backend.
    for user in ["alice", "bob", "charlie"] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(user))
            .unwrap();
        let hits: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(hits.len(), 4, "{line}");
        let backend = &hits[0][..1];
        assert_eq!(hits[0], format!("{backend}(new)"), "{line}");
        for hit in &hits[1..] {
            assert_eq!(*hit, format!("{backend}(sticky)"), "{line}");
        }
    }
    // IP hash: every address hits one backend four times.
    for line in out
        .lines()
        .filter(|l| l.trim_start().starts_with("127.0.0.2"))
    {
        let hits: Vec<&str> = line.split_whitespace().skip(1).collect();
        assert_eq!(hits.len(), 4, "{line}");
        assert!(hits.iter().all(|h| *h == hits[0]), "{line}");
    }
    // Shared sessions: every backend reads the whole cart.
    let reads = assert_every_read_sees_the_whole_cart(&out);
    let readers: std::collections::BTreeSet<&str> = reads
        .iter()
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(
        readers.len(),
        3,
        "round robin should read on a, b and c: {reads:?}"
    );
    // Scaling: only moves to the new backend, and removal moves only the removed backend's users.
    assert!(out.contains(", all to d: true"), "{out}");
    assert!(out.contains("users of other backends moved: 0"), "{out}");
    // Failover: nobody saw an error and nobody is left on the dead backend.
    assert!(out.contains("client-visible errors: 0"), "{out}");
    assert!(out.contains("was on a, now on"), "{out}");
    assert!(!out.contains("now on a"), "{out}");
}

#[test]
fn sessions_scenario_runs_against_redis() {
    let redis = RedisServer::start();
    let out = stdout_of(&["--scenario", "sessions", "--store", &redis.url()]);
    assert!(out.contains("the cart lives in the redis://"), "{out}");
    assert!(
        !out.contains("== cookie affinity"),
        "only the chosen scenario runs: {out}"
    );
    assert_every_read_sees_the_whole_cart(&out);
}

#[test]
fn bad_flags_give_a_clear_message_and_exit_2() {
    for (args, expected) in [
        (&["--scenario", "nope"][..], "--scenario"),
        (&["--store", "mongodb://x"][..], "--store"),
        (&["--what"][..], "--what"),
    ] {
        let output = run_to_end("demo", args, Duration::from_secs(30));
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(expected) && stderr.contains("usage:"),
            "{stderr}"
        );
    }
}
