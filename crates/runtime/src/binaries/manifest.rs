//! The pinned releases of llama.cpp and stable-diffusion.cpp, as data (`releases.json`, embedded
//! at build time), and the choice of which build variants to try on this machine.

use crate::{Result, RuntimeError};
use ipc::system::{Backend, GpuInfo, GpuVendor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The environment variable that points downloads at a mirror serving the same file names.
pub const ENV_MIRROR: &str = "GENAI_RELEASE_MIRROR";

pub use ipc::runtimes::{RuntimeKind, Variant};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub variant: Variant,
    pub order: u32,
    pub file: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Dependency>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeRelease {
    pub runtime: RuntimeKind,
    pub version: String,
    pub base_url: String,
    /// Names the executable may have in the archive, preferred first.
    pub executables: Vec<String>,
    pub platforms: BTreeMap<String, Vec<Asset>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    pub runtimes: Vec<RuntimeRelease>,
}

/// Points the app at another manifest (a JSON file of the same shape as `releases.json`): for
/// tests and for people who host their own builds. The pinned SHA-256 values still decide.
pub const ENV_MANIFEST: &str = "GENAI_RELEASE_MANIFEST";

impl ReleaseManifest {
    /// The manifest built into the app.
    pub fn embedded() -> Self {
        serde_json::from_str(include_str!("releases.json"))
            .expect("releases.json is valid (tested)")
    }

    pub fn parse(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| RuntimeError::InvalidInput(format!("release manifest: {e}")))
    }

    /// The manifest named by `GENAI_RELEASE_MANIFEST`, else the embedded one.
    pub fn from_env() -> Result<Self> {
        match std::env::var_os(ENV_MANIFEST) {
            Some(path) if !path.is_empty() => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| RuntimeError::io("reading", path, e))?;
                Self::parse(&text)
            }
            _ => Ok(Self::embedded()),
        }
    }

    /// A manifest with one release for one platform (tests and single-build mirrors).
    pub fn single(
        kind: RuntimeKind,
        version: &str,
        platform: &str,
        executables: &[&str],
        assets: Vec<Asset>,
    ) -> Self {
        Self {
            runtimes: vec![RuntimeRelease {
                runtime: kind,
                version: version.to_owned(),
                base_url: "http://127.0.0.1:9/no-base-url-set/".to_owned(),
                executables: executables.iter().map(|e| (*e).to_owned()).collect(),
                platforms: BTreeMap::from([(platform.to_owned(), assets)]),
            }],
        }
    }

    pub fn release(&self, kind: RuntimeKind) -> Option<&RuntimeRelease> {
        self.runtimes.iter().find(|r| r.runtime == kind)
    }
}

impl RuntimeRelease {
    /// Where a file of this release is downloaded from: the mirror when one is set, else the
    /// release's own base URL.
    pub fn url(&self, file: &str, mirror: Option<&str>) -> String {
        let base = mirror.filter(|m| !m.trim().is_empty()).unwrap_or(&self.base_url);
        format!("{}/{file}", base.trim_end_matches('/'))
    }
}

/// This machine's platform key in the manifest, or `None` where no build is published.
pub fn platform_key(os: &str, arch: &str) -> Option<&'static str> {
    match (os, arch) {
        ("linux", "x86_64") => Some("linux-x64"),
        ("windows", "x86_64") => Some("win32-x64"),
        ("macos", "aarch64") => Some("darwin-arm64"),
        ("macos", "x86_64") => Some("darwin-x64"),
        _ => None,
    }
}

/// The variants to try here, best first: CUDA only with an NVIDIA GPU whose driver answers,
/// Vulkan only with a GPU that can run it, Metal on Apple silicon, the CPU build always last.
pub fn candidates<'a>(
    release: &'a RuntimeRelease,
    platform: &str,
    gpus: &[GpuInfo],
) -> Result<Vec<&'a Asset>> {
    let assets = release.platforms.get(platform).ok_or_else(|| {
        RuntimeError::Unsupported(format!(
            "{:?} {} has no build for {platform}",
            release.runtime, release.version
        ))
    })?;
    let cuda = gpus.iter().any(|g| g.backend == Backend::Cuda);
    let vulkan = gpus
        .iter()
        .any(|g| matches!(g.vendor, GpuVendor::Nvidia | GpuVendor::Amd | GpuVendor::Intel));
    let mut out: Vec<&Asset> = assets
        .iter()
        .filter(|a| match a.variant {
            Variant::Cuda => cuda,
            Variant::Vulkan => vulkan,
            Variant::Metal | Variant::Cpu => true,
            Variant::Custom => false,
        })
        .collect();
    out.sort_by_key(|a| (a.variant == Variant::Cpu, a.order));
    if out.is_empty() {
        return Err(RuntimeError::Unsupported(format!(
            "no {:?} build fits this machine",
            release.runtime
        )));
    }
    Ok(out)
}

/// llama.cpp build tags compared as numbers: `b10001` is newer than `b9860` (text order says
/// the opposite). Tags without a number compare as text, after numbered ones.
pub fn compare_builds(a: &str, b: &str) -> std::cmp::Ordering {
    let num = |s: &str| s.trim_start_matches('b').parse::<u64>().ok();
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(vendor: GpuVendor, backend: Backend) -> GpuInfo {
        crate::system::test_gpu(vendor, backend, Some(1))
    }

    #[test]
    fn the_embedded_manifest_is_complete() {
        let m = ReleaseManifest::embedded();
        for kind in [RuntimeKind::Llama, RuntimeKind::Diffusion] {
            let r = m.release(kind).unwrap();
            assert!(!r.executables.is_empty());
            for (platform, assets) in &r.platforms {
                assert!(platform_key_known(platform), "{platform}");
                for a in assets {
                    for sha in
                        std::iter::once(&a.sha256).chain(a.dependencies.iter().map(|d| &d.sha256))
                    {
                        assert!(
                            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                            "{}",
                            a.file
                        );
                    }
                }
            }
        }
        assert!(!m.release(RuntimeKind::Diffusion).unwrap().platforms.contains_key("darwin-x64"));
    }

    fn platform_key_known(k: &str) -> bool {
        ["linux-x64", "win32-x64", "darwin-arm64", "darwin-x64"].contains(&k)
    }

    #[test]
    fn variant_choice_table() {
        let m = ReleaseManifest::embedded();
        let llama = m.release(RuntimeKind::Llama).unwrap();
        let names = |platform: &str, gpus: &[GpuInfo]| -> Vec<Variant> {
            candidates(llama, platform, gpus).unwrap().iter().map(|a| a.variant).collect()
        };
        let nvidia = gpu(GpuVendor::Nvidia, Backend::Cuda);
        let nvidia_no_driver = gpu(GpuVendor::Nvidia, Backend::Vulkan);
        let amd = gpu(GpuVendor::Amd, Backend::Vulkan);
        assert_eq!(
            names("win32-x64", std::slice::from_ref(&nvidia)),
            [Variant::Cuda, Variant::Vulkan, Variant::Cpu]
        );
        assert_eq!(
            names("win32-x64", std::slice::from_ref(&amd)),
            [Variant::Vulkan, Variant::Cpu],
            "no CUDA without NVIDIA"
        );
        assert_eq!(names("win32-x64", &[nvidia_no_driver]), [Variant::Vulkan, Variant::Cpu]);
        assert_eq!(names("win32-x64", &[]), [Variant::Cpu]);
        assert_eq!(names("linux-x64", &[]), [Variant::Cpu], "no Vulkan download without a GPU");
        assert_eq!(names("linux-x64", &[amd]), [Variant::Vulkan, Variant::Cpu]);
        assert_eq!(names("darwin-arm64", &[]), [Variant::Metal]);
        let diffusion = m.release(RuntimeKind::Diffusion).unwrap();
        assert!(candidates(diffusion, "darwin-x64", &[]).is_err());
        assert_eq!(platform_key("linux", "x86_64"), Some("linux-x64"));
        assert_eq!(platform_key("linux", "aarch64"), None);
    }

    #[test]
    fn mirrors_and_build_numbers() {
        let m = ReleaseManifest::embedded();
        let r = m.release(RuntimeKind::Llama).unwrap();
        assert_eq!(
            r.url("x.zip", None),
            "https://github.com/ggml-org/llama.cpp/releases/download/b9860/x.zip"
        );
        assert_eq!(r.url("x.zip", Some("http://127.0.0.1:9/rel/")), "http://127.0.0.1:9/rel/x.zip");
        assert_eq!(r.url("x.zip", Some(" ")), r.url("x.zip", None));
        use std::cmp::Ordering::*;
        assert_eq!(compare_builds("b10001", "b9860"), Greater);
        assert_eq!(compare_builds("b9860", "b9860"), Equal);
        assert_eq!(compare_builds("master-782", "b1"), Greater);
    }
}
