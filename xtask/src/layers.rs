//! The crate layering of DESIGN.md, checked over `cargo metadata`.
//!
//! Each crate under `crates/` sits on a layer. Its normal and build dependencies may
//! name only `chorus-*` crates on a strictly lower layer; dev-dependencies are exempt
//! (tests may reach anywhere). Crates sharing a layer may not depend on each other.

use std::collections::BTreeSet;

use crate::workspace::{DepKind, Package};

/// DESIGN.md's layering, lowest first. Keep in step with DESIGN.md.
pub(crate) const LAYERS: &[&[&str]] = &[
    &["chorus-framing"],
    &["chorus-crypto"],
    &["chorus-nat", "chorus-hostcache"],
    &["chorus-index"],
    &["chorus-media"],
    &["chorus-mixer"],
    &["chorus-node"],
    &["chorus-gateway"],
];

/// The layer of `name` in `layers`, lowest 0.
fn layer(layers: &[&[&str]], name: &str) -> Option<usize> {
    layers.iter().position(|level| level.contains(&name))
}

/// Whether `name` is one of ours: the facade or a `chorus-*` crate.
fn is_chorus(name: &str) -> bool {
    name == "chorus" || name.starts_with("chorus-")
}

/// Every layering violation among `crates` (the members under `crates/`), one message
/// each, sorted; empty when the layering holds.
pub(crate) fn violations(layers: &[&[&str]], crates: &[&Package]) -> Vec<String> {
    let mut found = BTreeSet::new();
    for krate in crates {
        let Some(own) = layer(layers, &krate.name) else {
            found.insert(format!(
                "crate `{}` is not in DESIGN.md's layering: add it there \
                 (and to LAYERS in xtask/src/layers.rs), or rename it",
                krate.name
            ));
            continue;
        };
        let checked = krate.deps.iter().filter(|d| d.kind != DepKind::Dev);
        for dep in checked.filter(|d| is_chorus(&d.name)) {
            let table = match dep.kind {
                DepKind::Build => "build-dependencies",
                _ => "dependencies",
            };
            let why = match layer(layers, &dep.name) {
                None => "which is not in DESIGN.md's layering".to_owned(),
                Some(theirs) if theirs == own => "which stands on the same layer".to_owned(),
                Some(theirs) if theirs > own => "which stands above it".to_owned(),
                Some(_) => continue,
            };
            found.insert(format!(
                "`{}` has `{}` in [{table}], {why}",
                krate.name, dep.name
            ));
        }
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::Dep;

    fn krate(name: &str, deps: &[(&str, DepKind)]) -> Package {
        let deps = deps
            .iter()
            .map(|&(name, kind)| Dep {
                name: name.into(),
                kind,
            })
            .collect();
        Package {
            name: name.into(),
            deps,
            ..Package::default()
        }
    }

    fn check(crates: &[Package]) -> Vec<String> {
        violations(LAYERS, &crates.iter().collect::<Vec<_>>())
    }

    use DepKind::{Build, Dev, Normal};

    #[test]
    fn lower_layers_and_foreign_crates_are_allowed() {
        let crates = [
            krate(
                "chorus-framing",
                &[("bytes", Normal), ("tokio-util", Normal)],
            ),
            krate(
                "chorus-crypto",
                &[("chorus-framing", Normal), ("ring", Normal)],
            ),
            krate(
                "chorus-nat",
                &[("chorus-crypto", Normal), ("chorus-framing", Build)],
            ),
            krate("chorus-hostcache", &[("chorus-framing", Normal)]),
            krate(
                "chorus-index",
                &[("chorus-nat", Normal), ("chorus-hostcache", Normal)],
            ),
            krate(
                "chorus-gateway",
                &[("chorus-node", Normal), ("chorus-framing", Normal)],
            ),
        ];
        assert_eq!(check(&crates), Vec::<String>::new());
    }

    #[test]
    fn dev_dependencies_are_exempt() {
        let crates = [krate(
            "chorus-framing",
            &[
                ("chorus-node", Dev),
                ("chorus-framing", Dev),
                ("chorus", Dev),
            ],
        )];
        assert!(check(&crates).is_empty());
    }

    #[test]
    fn upward_dependencies_are_rejected() {
        let crates = [krate("chorus-crypto", &[("chorus-media", Normal)])];
        assert_eq!(
            check(&crates),
            ["`chorus-crypto` has `chorus-media` in [dependencies], which stands above it"]
        );
    }

    #[test]
    fn build_dependencies_are_checked() {
        let crates = [krate("chorus-index", &[("chorus-mixer", Build)])];
        assert_eq!(
            check(&crates),
            ["`chorus-index` has `chorus-mixer` in [build-dependencies], which stands above it"]
        );
    }

    #[test]
    fn crates_on_one_layer_may_not_depend_on_each_other() {
        let crates = [
            krate("chorus-nat", &[("chorus-hostcache", Normal)]),
            krate("chorus-hostcache", &[("chorus-nat", Build)]),
            krate("chorus-media", &[("chorus-media", Normal)]),
        ];
        assert_eq!(check(&crates).len(), 3);
        assert!(check(&crates)[0].ends_with("which stands on the same layer"));
    }

    #[test]
    fn unknown_crates_are_rejected() {
        let crates = [
            krate("chorus-video", &[]),
            krate(
                "chorus-node",
                &[("chorus-video", Normal), ("chorus", Normal)],
            ),
        ];
        assert_eq!(
            check(&crates),
            [
                "`chorus-node` has `chorus-video` in [dependencies], which is not in DESIGN.md's layering",
                "`chorus-node` has `chorus` in [dependencies], which is not in DESIGN.md's layering",
                "crate `chorus-video` is not in DESIGN.md's layering: add it there \
                 (and to LAYERS in xtask/src/layers.rs), or rename it",
            ]
        );
    }

    #[test]
    fn layers_match_design_md_order() {
        assert_eq!(layer(LAYERS, "chorus-framing"), Some(0));
        assert_eq!(
            layer(LAYERS, "chorus-nat"),
            layer(LAYERS, "chorus-hostcache")
        );
        assert_eq!(layer(LAYERS, "chorus-gateway"), Some(LAYERS.len() - 1));
        assert_eq!(layer(LAYERS, "chorus"), None);
    }
}
