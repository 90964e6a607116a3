//! Checking, compiling, caching and preparing components.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::Runtime;
use crate::state::InstanceState;

/// The export every function must provide.
pub const HANDLER_EXPORT: &str = "wasi:http/incoming-handler";

/// Why an artifact cannot be deployed.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Bigger than the node accepts.
    #[error(
        "the component is {size} bytes, over this node's limit of {limit} bytes \
         (raise it with `--max-artifact-size`)"
    )]
    TooLarge {
        /// The artifact's size.
        size: u64,
        /// The node's limit.
        limit: u64,
    },
    /// Not WebAssembly at all.
    #[error("the file is not WebAssembly (it does not start with the `\\0asm` header)")]
    NotWasm,
    /// A core module rather than a component.
    #[error(
        "the file is a core WebAssembly module, not a component: build for `wasm32-wasip2` \
         (or wrap it with `wasm-tools component new`) so that it exports `{HANDLER_EXPORT}`"
    )]
    CoreModule,
    /// wasmtime could not compile it.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// It does not export the HTTP handler.
    #[error(
        "the component does not export `{HANDLER_EXPORT}@0.2.x`, so it cannot serve HTTP; it \
         exports: {}", if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
    )]
    MissingHandler {
        /// What it does export.
        exports: Vec<String>,
    },
    /// It imports something this node does not provide, or its handler has the wrong type.
    #[error("the component cannot be linked: {0}")]
    Unlinkable(String),
    /// The compile cache could not be written.
    #[error("cannot write compiled code to {path}: {source}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedFrom {
    /// Read from the on-disk cache without compiling.
    Cache,
    /// Compiled now (and written to the cache).
    Compiled,
}

/// A component compiled for this engine.
pub struct CompiledArtifact {
    component: Component,
    /// Whether it was compiled now or read from the cache.
    pub loaded_from: LoadedFrom,
    /// Time spent compiling or loading.
    pub load_time: Duration,
    /// SHA-256 of the compiled code as cached, to record (after a compile) beside the
    /// release so that only these bytes are ever loaded again.
    pub code_sha256: String,
}

/// Why compiled code was not loaded from the cache (the caller compiles instead).
#[derive(Debug)]
pub enum CacheMiss {
    /// Nothing is cached for this digest and engine.
    Absent,
    /// A file is there but this node never recorded compiling it.
    Unrecorded,
    /// The file is not what this node compiled: its bytes changed.
    Altered {
        /// The cache file.
        path: PathBuf,
        /// What its bytes hash to now.
        actual: String,
    },
    /// The file could not be read or deserialised.
    Unusable(String),
}

impl CompiledArtifact {
    /// The component's imports (`wasi:keyvalue/store@0.2.0-draft`, ...), for vetting.
    pub fn imports(&self) -> Vec<String> {
        let engine = self.component.engine();
        self.component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect()
    }
}

/// A release's component linked and type-checked once, ready to instantiate per request.
pub struct Prepared {
    pub(crate) pre: ProxyPre<InstanceState>,
}

impl Runtime {
    /// Cheap checks that need no compilation: size, WebAssembly header, component layer.
    pub fn check_artifact(&self, bytes: &[u8]) -> Result<(), ArtifactError> {
        let limit = self.config.max_artifact_bytes;
        if bytes.len() as u64 > limit {
            return Err(ArtifactError::TooLarge {
                size: bytes.len() as u64,
                limit,
            });
        }
        if wasmparser::Parser::is_component(bytes) {
            Ok(())
        } else if wasmparser::Parser::is_core_wasm(bytes) {
            Err(ArtifactError::CoreModule)
        } else {
            Err(ArtifactError::NotWasm)
        }
    }

    /// The name compiled code for `digest` is cached under: the digest and this engine's
    /// compatibility hash (a new wasmtime or other settings compile anew).
    pub fn cache_key(&self, digest: &str) -> String {
        let mut hasher = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        format!("{digest}-{:016x}", hasher.finish())
    }

    fn cache_path(&self, digest: &str) -> PathBuf {
        self.config
            .cache_dir
            .join(format!("{}.cwasm", self.cache_key(digest)))
    }

    /// Compiled code for `digest` from the cache, loaded only if its bytes have the SHA-256
    /// this node recorded when it compiled them (`expected_sha256`, from the store).
    ///
    /// Compiled code is machine code run without further checks, so a file that is not
    /// provably ours is never loaded: it is read into memory, hashed, and deserialised from
    /// that same buffer (never mapped from a file that could still change).
    pub fn load_cached(
        &self,
        digest: &str,
        expected_sha256: Option<&str>,
    ) -> Result<CompiledArtifact, CacheMiss> {
        let started = Instant::now();
        let path = self.cache_path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(CacheMiss::Absent);
            }
            Err(err) => return Err(CacheMiss::Unusable(err.to_string())),
        };
        let Some(expected) = expected_sha256 else {
            return Err(CacheMiss::Unrecorded);
        };
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != expected {
            return Err(CacheMiss::Altered { path, actual });
        }
        // SAFETY: these exact bytes hash to what this node recorded when
        // `Engine::precompile_component` produced them (see `compile`), and they are
        // deserialised from this private buffer; wasmtime checks the header again.
        match unsafe { Component::deserialize(&self.engine, &bytes) } {
            Ok(component) => Ok(CompiledArtifact {
                component,
                loaded_from: LoadedFrom::Cache,
                load_time: started.elapsed(),
                code_sha256: actual,
            }),
            Err(err) => Err(CacheMiss::Unusable(format!("{err:#}"))),
        }
    }

    /// Checks and compiles `bytes`, writing the result to the cache under `digest`.
    pub fn compile(&self, digest: &str, bytes: &[u8]) -> Result<CompiledArtifact, ArtifactError> {
        self.check_artifact(bytes)?;
        let started = Instant::now();
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|err| ArtifactError::Compile(format!("{err:#}")))?;
        let path = self.cache_path(digest);
        write_atomically(&path, &compiled).map_err(|source| ArtifactError::Cache {
            path: path.clone(),
            source,
        })?;
        let code_sha256 = hex::encode(Sha256::digest(&compiled));
        // SAFETY: `compiled` was produced just above by this engine's `precompile_component`.
        let component = unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|err| ArtifactError::Compile(format!("{err:#}")))?;
        Ok(CompiledArtifact {
            component,
            loaded_from: LoadedFrom::Compiled,
            load_time: started.elapsed(),
            code_sha256,
        })
    }

    /// Links and type-checks a compiled component so it can serve requests.
    pub fn prepare(&self, artifact: &CompiledArtifact) -> Result<Prepared, ArtifactError> {
        let component = &artifact.component;
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let has_handler = exports.iter().any(|name| {
            name.strip_prefix(HANDLER_EXPORT)
                .is_some_and(|version| version.starts_with("@0.2."))
        });
        if !has_handler {
            return Err(ArtifactError::MissingHandler { exports });
        }
        let instance_pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|err| ArtifactError::Unlinkable(format!("{err:#}")))?;
        let pre = ProxyPre::new(instance_pre)
            .map_err(|err| ArtifactError::Unlinkable(format!("{err:#}")))?;
        Ok(Prepared { pre })
    }
}

/// A component's top-level imports and exports, as interface names with versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentInterfaces {
    /// What it imports, e.g. `wasi:keyvalue/store@0.2.0-draft`.
    pub imports: Vec<String>,
    /// What it exports, e.g. `wasi:http/incoming-handler@0.2.3`.
    pub exports: Vec<String>,
}

/// Reads a component's imports and exports without compiling it.
pub fn component_interfaces(bytes: &[u8]) -> Result<ComponentInterfaces, ArtifactError> {
    use wasmparser::{Parser, Payload};
    if !Parser::is_component(bytes) {
        return Err(if Parser::is_core_wasm(bytes) {
            ArtifactError::CoreModule
        } else {
            ArtifactError::NotWasm
        });
    }
    let mut interfaces = ComponentInterfaces::default();
    // Nested modules and components have imports of their own; only depth 0 is the
    // component's interface with the host.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|err| ArtifactError::Compile(err.to_string()))?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|err| ArtifactError::Compile(err.to_string()))?;
                    interfaces.imports.push(import.name.0.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|err| ArtifactError::Compile(err.to_string()))?;
                    interfaces.exports.push(export.name.0.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(interfaces)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
