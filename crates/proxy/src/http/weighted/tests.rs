//! The sticky weighted pick: pinned hash values, stickiness, monotonic growth of the last
//! cluster's cohort, and the random pick without a key.

use super::*;
use crate::table::{HashKey, HeaderOps};
use crate::upstream::balance::hash_of;
use crate::upstream::stable_hash::{fnv1a_64, mix64};

fn cluster(name: &str, weight: u64) -> WeightedCluster {
    WeightedCluster {
        name: name.to_string(),
        destination: crate::metrics::Destination::of_cluster(name),
        weight,
        request_ops: HeaderOps::default(),
        response_ops: HeaderOps::default(),
    }
}

/// A route to `(name, weight)` clusters, hashing on `x-user-id`.
fn route(clusters: &[(&str, u64)]) -> Forward {
    let clusters: Vec<WeightedCluster> = clusters
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|(n, w)| cluster(n, *w))
        .collect();
    Forward {
        total_weight: clusters.iter().map(|c| c.weight).sum(),
        clusters,
        timeout: None,
        retry: None,
        path_rewrite: None,
        host_rewrite: None,
        mirrors: Vec::new(),
        hash: vec![HashKey::header("x-user-id")],
    }
}

fn canary(v2: u64) -> Forward {
    route(&[("v1", 100 - v2), ("v2", v2)])
}

fn user(i: usize) -> u64 {
    hash_of(format!("user-{i}").as_bytes())
}

#[test]
fn fnv1a_64_gives_the_published_values() {
    // Test vectors of the FNV reference suite.
    assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    // SplitMix64's first output from seed 0 is the finalizer applied to its golden gamma.
    assert_eq!(mix64(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
}

#[test]
fn a_users_place_is_pinned() {
    // Changing these moves users between versions in a running mesh, where proxies of two
    // builds must agree: a new hash needs a migration plan, not a new expected value.
    assert_eq!(hash_of(b"user-1"), 0xf84b_a2aa_754a_4bd4);
    assert_eq!(hash_of(b"alice"), 0x508b_2abb_65a0_3907);
    let places: Vec<u64> = ["user-1", "user-2", "user-3", "alice", "bob"]
        .iter()
        .map(|k| point(hash_of(k.as_bytes()), 100))
        .collect();
    assert_eq!(places, vec![76, 31, 48, 77, 43]);
    // alice (77) is on v2 from 23% on, and not before.
    assert_eq!(pick(&canary(22), Some(hash_of(b"alice"))).name, "v1");
    assert_eq!(pick(&canary(23), Some(hash_of(b"alice"))).name, "v2");
}

#[test]
fn a_point_is_the_same_fraction_of_any_total() {
    for i in 0..1000 {
        let k = user(i);
        assert!(point(k, 100) < 100);
        assert_eq!(point(k, 1000) / 10, point(k, 100), "user-{i}");
        assert_eq!(point(k, 1), 0);
    }
}

#[test]
fn a_key_always_gets_the_same_cluster() {
    let f = canary(30);
    for i in 0..200 {
        let first = pick(&f, Some(user(i))).name.clone();
        for _ in 0..20 {
            assert_eq!(pick(&f, Some(user(i))).name, first, "user-{i}");
        }
    }
}

#[test]
fn the_canary_cohort_only_grows_from_5_to_100_percent() {
    let keys: Vec<u64> = (0..1000).map(user).collect();
    let mut on_v2 = vec![false; keys.len()];
    for weight in [5u64, 20, 50, 100] {
        let f = canary(weight);
        let mut count = 0u64;
        for (i, k) in keys.iter().enumerate() {
            let now = pick(&f, Some(*k)).name == "v2";
            assert!(now || !on_v2[i], "user-{i} went back to v1 at {weight}%");
            on_v2[i] = now;
            count += u64::from(now);
        }
        let share = count as f64 / keys.len() as f64 * 100.0;
        assert!(
            (share - weight as f64).abs() <= 3.0,
            "{share:.1}% on v2 at weight {weight}"
        );
    }
    assert!(on_v2.iter().all(|v| *v), "everyone is on v2 at 100%");
}

#[test]
fn the_cohort_grows_whatever_the_weights_add_up_to() {
    // 1/20, then 2/10, then 1/2: the total changes, the share only grows.
    let levels = [
        [("v1", 19), ("v2", 1)],
        [("v1", 8), ("v2", 2)],
        [("v1", 1), ("v2", 1)],
    ];
    let mut on_v2 = vec![false; 1000];
    for level in levels {
        let f = route(&level);
        for (i, was) in on_v2.iter_mut().enumerate() {
            let now = pick(&f, Some(user(i))).name == "v2";
            assert!(now || !*was, "user-{i} went back to v1 at {level:?}");
            *was = now;
        }
    }
}

#[test]
fn clusters_are_walked_in_the_listed_order() {
    // Three clusters of 20, 30, 50: a point below 20 is the first's, below 50 the second's.
    let f = route(&[("a", 20), ("b", 30), ("c", 50)]);
    for i in 0..500 {
        let k = user(i);
        let expected = match point(k, 100) {
            0..20 => "a",
            20..50 => "b",
            _ => "c",
        };
        assert_eq!(pick(&f, Some(k)).name, expected, "user-{i}");
    }
}

#[test]
fn without_a_key_the_pick_is_random_by_weight() {
    let f = canary(20);
    let v2 = (0..1000).filter(|_| pick(&f, None).name == "v2").count();
    assert!((150..=250).contains(&v2), "{v2} of 1000 on v2");
    let lone = route(&[("only", 7)]);
    assert_eq!(pick(&lone, Some(user(1))).name, "only");
}

fn request(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

#[test]
fn the_key_is_the_first_one_the_request_carries() {
    use crate::http::select::hash_key;
    use crate::upstream::balance::hash_ip;
    let keys = [
        HashKey::header("x-user-id"),
        HashKey::Cookie {
            name: "session".into(),
            generate: None,
        },
        HashKey::Query("uid".into()),
    ];
    let peer: std::net::SocketAddr = ([10, 1, 2, 3], 5555).into();
    let all = request(
        "/p?x=1&uid=42",
        &[("x-user-id", "u1"), ("cookie", "a=1; session=s-9; b=2")],
    );
    assert_eq!(hash_key(&keys, &all, peer), Some(hash_of(b"u1")));
    let cookie = request("/p?uid=42", &[("cookie", "a=1; session=s-9; b=2")]);
    assert_eq!(hash_key(&keys, &cookie, peer), Some(hash_of(b"s-9")));
    let query = request("/p?x=1&uid=42", &[("cookie", "sessions=no")]);
    assert_eq!(hash_key(&keys, &query, peer), Some(hash_of(b"42")));
    let none = request("/p?uidx=1", &[]);
    assert_eq!(hash_key(&keys, &none, peer), None);
    // The source address is hashed by its octets, and is always there.
    let by_ip = [HashKey::SourceIp];
    assert_eq!(hash_key(&by_ip, &none, peer), Some(hash_ip(peer.ip())));
    assert_eq!(hash_ip(peer.ip()), fnv1a_64(&[10, 1, 2, 3]));
}

#[test]
fn listing_the_versions_the_other_way_round_deals_the_cohorts_anew() {
    // Why the release model keeps one order: the same 50/50 weights, listed v1-v2 then v2-v1,
    // put the same users on opposite versions.
    let (forward, backward) = (canary(50), route(&[("v2", 50), ("v1", 50)]));
    let moved = (0..1000)
        .filter(|i| pick(&forward, Some(user(*i))).name != pick(&backward, Some(user(*i))).name)
        .count();
    assert_eq!(moved, 1000);
}

#[test]
fn several_lines_of_the_key_header_are_hashed_together_in_sorted_order() {
    use crate::http::select::hash_key;
    use crate::upstream::balance::hash_of_values;
    let keys = [HashKey::header("x-user-id")];
    let peer: std::net::SocketAddr = ([10, 1, 2, 3], 5555).into();
    let one = request("/", &[("x-user-id", "u1")]);
    assert_eq!(hash_key(&keys, &one, peer), Some(hash_of(b"u1")));
    let (ab, ba) = (
        request("/", &[("x-user-id", "a"), ("x-user-id", "b")]),
        request("/", &[("x-user-id", "b"), ("x-user-id", "a")]),
    );
    let both = hash_of_values([&b"a"[..], b"b"]);
    assert_eq!(hash_key(&keys, &ab, peer), Some(both));
    assert_eq!(hash_key(&keys, &ba, peer), Some(both));
    assert_ne!(both, hash_of(b"ab"));
    assert_ne!(
        hash_of_values([&b"ab"[..], b"c"]),
        hash_of_values([&b"a"[..], b"bc"])
    );
}

#[test]
fn a_baggage_member_key_is_the_hash_of_its_value() {
    use crate::http::select::hash_key;
    use crate::table::RegexRewrite;
    use crate::upstream::balance::hash_of_values;
    let rewrite = graymesh_xds::translate::baggage_member_rewrite("user-id");
    let keys = [HashKey::Header {
        name: "baggage".into(),
        rewrite: Some(Box::new(RegexRewrite::compile(&rewrite).unwrap())),
    }];
    let peer: std::net::SocketAddr = ([10, 1, 2, 3], 5555).into();
    let with = |values: &[&str]| {
        let headers: Vec<(&str, &str)> = values.iter().map(|v| ("baggage", *v)).collect();
        hash_key(&keys, &request("/", &headers), peer)
    };
    // Alice is Alice, whatever else her baggage says: she keeps her version.
    assert_eq!(with(&["user-id=alice"]), Some(hash_of(b"alice")));
    assert_eq!(
        with(&["tenant=acme, user-id=alice;p=1"]),
        Some(hash_of(b"alice"))
    );
    assert_eq!(with(&["xuser-id=bob"]), Some(hash_of(b"xuser-id=bob")));
    assert_eq!(with(&[]), None);
    // Two baggage lines: Envoy hashes both, each rewritten, sorted.
    let expected = hash_of_values([&b"alice"[..], b"tenant=acme"]);
    assert_eq!(with(&["tenant=acme", "user-id=alice"]), Some(expected));
}
