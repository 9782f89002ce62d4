use super::*;

fn small() -> SimConfig {
    SimConfig {
        nodes: 300,
        users: 100,
        lookups: 200,
        duration: Duration::from_secs(120),
        ..SimConfig::default()
    }
}

#[test]
fn small_network_finds_users_and_is_reproducible() {
    let a = run(&small());
    assert!(a.success_rate() > 0.97, "{a}");
    let b = run(&small());
    assert_eq!(
        (a.found, a.hops.clone(), a.messages.clone()),
        (b.found, b.hops, b.messages)
    );
}

#[test]
fn disjoint_paths_survive_malicious_nodes() {
    let c = SimConfig {
        malicious: 0.1,
        ..small()
    };
    let r = run(&c);
    assert!(r.success_rate() > 0.95, "{r}");
}

#[test]
fn searches_by_display_name_word_find_the_user() {
    let c = SimConfig {
        searches: 100,
        lookups: 0,
        ..small()
    };
    let r = run(&c);
    assert!(r.searches >= 95, "{r}");
    assert!(r.searches_found as f64 >= 0.95 * r.searches as f64, "{r}");
}

#[test]
fn sim_verifier_rejects_forgeries() {
    let v = SimVerifier::new(3);
    let cert = v.node_cert(7);
    assert!(v.verify_node(&cert, UNIX_EPOCH).is_ok());
    let mut bad = cert.to_vec();
    bad[0] ^= 1;
    assert_eq!(
        v.verify_node(&bad, UNIX_EPOCH),
        Err(Violation::BadNodeCertificate)
    );
    let mut r = crate::record::tests::sample();
    v.sign(&mut r);
    assert!(v.verify_record(&r, UNIX_EPOCH).is_ok());
    r.version += 1;
    assert_eq!(
        v.verify_record(&r, UNIX_EPOCH),
        Err(Violation::BadSignature)
    );
}
