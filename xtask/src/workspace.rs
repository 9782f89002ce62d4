//! What xtask needs to know about the workspace, read from `cargo metadata`.

use std::path::{Path, PathBuf};

use crate::cmd::{self, Result};
use crate::json::{self, Value};

/// How a package depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DepKind {
    /// `[dependencies]`
    Normal,
    /// `[build-dependencies]`
    Build,
    /// `[dev-dependencies]`
    Dev,
}

/// One declared dependency (as written in the manifest, not resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dep {
    /// The package name depended upon (not a `rename`).
    pub(crate) name: String,
    /// Which table declares it.
    pub(crate) kind: DepKind,
}

/// One workspace member.
#[derive(Debug, Clone, Default)]
pub(crate) struct Package {
    /// Package name.
    pub(crate) name: String,
    /// Package version.
    pub(crate) version: String,
    /// Directory holding its `Cargo.toml`.
    pub(crate) dir: PathBuf,
    /// Its cargo features, `default` included.
    pub(crate) features: Vec<String>,
    /// Its declared dependencies.
    pub(crate) deps: Vec<Dep>,
    /// The features docs.rs builds it with (`[package.metadata.docs.rs] features`).
    pub(crate) docs_rs_features: Vec<String>,
    /// Whether it may be published (`publish` is not `false`).
    pub(crate) publish: bool,
    /// Its `rust-version` (MSRV), if it states one.
    pub(crate) rust_version: Option<String>,
}

/// The workspace members, from `cargo metadata --format-version 1 --no-deps`.
#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    /// The workspace root directory.
    pub(crate) root: PathBuf,
    /// All members, in cargo's order.
    pub(crate) packages: Vec<Package>,
}

impl Workspace {
    /// Runs `cargo metadata` and reads the members.
    pub(crate) fn load() -> Result<Self> {
        let mut cmd = cmd::cargo();
        cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
        let out = cmd::output(&mut cmd)?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed ({}):\n{}",
                cmd::describe(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
        Self::parse(&text)
    }

    /// Reads the output of `cargo metadata --format-version 1 --no-deps`.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let doc = json::parse(text)?;
        let root = doc
            .get("workspace_root")
            .and_then(Value::as_str)
            .ok_or("cargo metadata: no workspace_root")?;
        let packages = doc
            .get("packages")
            .ok_or("cargo metadata: no packages")?
            .items()
            .iter()
            .map(package)
            .collect::<Result<_>>()?;
        Ok(Self {
            root: root.into(),
            packages,
        })
    }

    /// The MSRV every publishable package states (one value, or an error).
    pub(crate) fn rust_version(&self) -> Result<String> {
        let mut versions = self
            .packages
            .iter()
            .filter(|p| p.publish)
            .map(|p| (p.name.as_str(), p.rust_version.as_deref()));
        let Some((_, Some(first))) = versions.next() else {
            return Err("a publishable package states no rust-version".into());
        };
        match versions.find(|(_, v)| *v != Some(first)) {
            Some((name, v)) => Err(format!(
                "`{name}` states rust-version {v:?}, others {first}: use the workspace's"
            )),
            None => Ok(first.to_owned()),
        }
    }

    /// The library crates: members whose directory is directly under `crates/`.
    pub(crate) fn crates(&self) -> impl Iterator<Item = &Package> {
        let crates_dir = self.root.join("crates");
        self.packages
            .iter()
            .filter(move |p| p.dir.parent() == Some(crates_dir.as_path()))
    }
}

fn package(p: &Value) -> Result<Package> {
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("cargo metadata: a package without `{key}`"))
    };
    let manifest = text(p, "manifest_path")?;
    let deps = p
        .get("dependencies")
        .map_or(&[][..], Value::items)
        .iter()
        .map(|d| {
            let kind = match d.get("kind").and_then(Value::as_str) {
                None => DepKind::Normal,
                Some("build") => DepKind::Build,
                Some("dev") => DepKind::Dev,
                Some(other) => return Err(format!("cargo metadata: dependency kind {other:?}")),
            };
            Ok(Dep {
                name: text(d, "name")?,
                kind,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Package {
        name: text(p, "name")?,
        version: text(p, "version")?,
        dir: Path::new(&manifest)
            .parent()
            .unwrap_or(Path::new(""))
            .into(),
        features: p
            .get("features")
            .map_or_else(Vec::new, |f| f.keys().map(str::to_owned).collect()),
        deps,
        docs_rs_features: p
            .get("metadata")
            .and_then(|m| m.get("docs.rs")?.get("features"))
            .map_or(&[][..], Value::items)
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        rust_version: p
            .get("rust_version")
            .and_then(Value::as_str)
            .map(str::to_owned),
        // cargo metadata: `null` = publishable anywhere, `[]` = `publish = false`.
        publish: p
            .get("publish")
            .is_none_or(|v| matches!(v, Value::Null) || !v.items().is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: &str = r#"{
      "packages": [
        {"name": "chorus-framing", "version": "0.1.0", "manifest_path": "/w/crates/chorus-framing/Cargo.toml",
         "features": {"default": ["tokio"], "tokio": ["dep:tokio-util"]},
         "dependencies": [
           {"name": "bytes", "kind": null, "rename": null},
           {"name": "proptest", "kind": "dev"},
           {"name": "cc", "kind": "build"}],
         "targets": [{"name": "chorus_framing", "kind": ["lib"]}],
         "publish": null, "metadata": {"docs.rs": {"features": ["tokio", "sim"]}},
         "rust_version": "1.89"},
        {"name": "xtask", "version": "0.1.0", "manifest_path": "/w/xtask/Cargo.toml", "features": {},
         "publish": [], "metadata": null,
         "dependencies": [], "targets": [{"name": "xtask", "kind": ["bin"]}]},
        {"name": "chorus", "version": "0.1.0", "manifest_path": "/w/Cargo.toml", "features": {},
         "dependencies": [{"name": "chorus-framing", "kind": null, "rename": "framing"}],
         "targets": [{"name": "chorus", "kind": ["lib"]},
                     {"name": "demo", "kind": ["example"]}],
         "rust_version": "1.89"}
      ],
      "workspace_root": "/w", "version": 1
    }"#;

    #[test]
    fn reads_members_and_crates() {
        let ws = Workspace::parse(METADATA).unwrap();
        let crates: Vec<_> = ws.crates().map(|p| p.name.as_str()).collect();
        assert_eq!(crates, ["chorus-framing"]);
        let framing = &ws.packages[0];
        assert_eq!(framing.features, ["default", "tokio"]);
        assert_eq!(framing.docs_rs_features, ["tokio", "sim"]);
        assert!(framing.publish);
        assert!(!ws.packages[1].publish, "publish = false");
        assert_eq!(framing.rust_version.as_deref(), Some("1.89"));
        assert_eq!(ws.rust_version().unwrap(), "1.89", "xtask is not published");
        assert_eq!(
            framing.deps.iter().map(|d| d.kind).collect::<Vec<_>>(),
            [DepKind::Normal, DepKind::Dev, DepKind::Build]
        );
        let facade = ws.packages.iter().find(|p| p.dir == ws.root).unwrap();
        assert_eq!(facade.name, "chorus");
        assert_eq!(facade.deps[0].name, "chorus-framing");
    }
}
