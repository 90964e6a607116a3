//! Deploy-time vetting: a component's imports against its policy.

use serde::{Deserialize, Serialize};

use crate::Policy;

/// What Runway does with one import of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ImportVerdict {
    /// Part of every function's sandbox (HTTP types, clocks, random, I/O, stdout).
    Provided,
    /// A capability the policy grants; calls are checked against the grants.
    Granted {
        /// The grants that apply, as written.
        grants: Vec<String>,
    },
    /// A capability the policy does not grant: linked, but every call is refused and audited.
    NotGranted {
        /// The grant that would allow it, as a `[function.policy]` line.
        needs: String,
    },
    /// Never provided by Runway, whatever the policy: linked so the component loads, inert.
    NeverProvided {
        /// What the function sees instead.
        why: String,
    },
}

/// One import and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VettedImport {
    /// The interface as the component names it, for example `wasi:keyvalue/store@0.2.0-draft`.
    pub import: String,
    /// What Runway does with it.
    #[serde(flatten)]
    pub verdict: ImportVerdict,
}

/// The vetting report stored with every release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VettingReport {
    /// Every import, in the component's order.
    pub imports: Vec<VettedImport>,
    /// The trusted key whose signature was checked at deploy, when the environment
    /// requires signatures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// The artifact's size in bytes (checked against the node's limit at upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

impl VettingReport {
    /// The imports the policy does not grant.
    pub fn not_granted(&self) -> impl Iterator<Item = (&str, &str)> {
        self.imports.iter().filter_map(|i| match &i.verdict {
            ImportVerdict::NotGranted { needs } => Some((i.import.as_str(), needs.as_str())),
            _ => None,
        })
    }

    /// The least `[function.policy]` shape these imports need, with placeholders for what
    /// only observed use can tell (tables, keys, hosts, secret names).
    pub fn least_policy(&self) -> String {
        let mut lines: Vec<&str> = Vec::new();
        for import in &self.imports {
            let line = match interface(&import.import) {
                "runway:platform/sql" => "sql = [\"select:<table>\"]",
                "wasi:keyvalue/store" | "wasi:keyvalue/atomics" | "wasi:keyvalue/batch" => {
                    "kv = [\"read:<prefix>/*\"]"
                }
                "wasi:http/outgoing-handler" => "outbound = [\"https://<host>\"]",
                "wasi:config/store" => "secrets = [\"<NAME>\"]   # only if it reads secrets",
                _ => continue,
            };
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        let mut out = String::from("[function.policy]\n");
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// The interface name without its version: `wasi:http/types@0.2.3` → `wasi:http/types`.
pub fn interface(import: &str) -> &str {
    import.split_once('@').map_or(import, |(name, _)| name)
}

/// Compares each import with the policy.
pub fn vet<S: AsRef<str>>(imports: &[S], policy: &Policy) -> VettingReport {
    fn strings<T: std::fmt::Display>(items: &[T]) -> Vec<String> {
        items.iter().map(T::to_string).collect()
    }
    let imports = imports
        .iter()
        .map(|import| {
            let import = import.as_ref();
            let name = interface(import);
            let granted = |grants: Vec<String>, needs: &str| {
                if grants.is_empty() {
                    ImportVerdict::NotGranted {
                        needs: needs.to_owned(),
                    }
                } else {
                    ImportVerdict::Granted { grants }
                }
            };
            let verdict = match name {
                "runway:platform/sql" => {
                    granted(strings(&policy.sql), "sql = [\"<operation>:<table>\"]")
                }
                "wasi:keyvalue/store" | "wasi:keyvalue/atomics" | "wasi:keyvalue/batch" => {
                    granted(strings(&policy.kv), "kv = [\"read:<prefix>/*\"]")
                }
                "wasi:http/outgoing-handler" => {
                    granted(strings(&policy.outbound), "outbound = [\"https://<host>\"]")
                }
                "wasi:config/store" => ImportVerdict::Granted {
                    grants: std::iter::once("the function's own [function.config]".to_owned())
                        .chain(policy.secrets.iter().map(|s| format!("secret {s}")))
                        .collect(),
                },
                _ if name.starts_with("wasi:filesystem/") => ImportVerdict::NeverProvided {
                    why: "no directories are preopened: the function sees no host files".into(),
                },
                _ if name.starts_with("wasi:sockets/") => ImportVerdict::NeverProvided {
                    why: "sockets are never provided: every call fails (use outbound HTTP)".into(),
                },
                _ => ImportVerdict::Provided,
            };
            VettedImport {
                import: import.to_owned(),
                verdict,
            }
        })
        .collect();
    VettingReport {
        imports,
        signed_by: None,
        size_bytes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_imports_against_the_policy() {
        let policy: Policy = toml::from_str("kv = [\"read:cache/*\"]").unwrap();
        let report = vet(
            &[
                "wasi:http/types@0.2.3",
                "wasi:http/outgoing-handler@0.2.3",
                "wasi:keyvalue/store@0.2.0-draft",
                "wasi:filesystem/preopens@0.2.3",
                "wasi:sockets/tcp@0.2.3",
                "runway:platform/sql@0.1.0",
            ],
            &policy,
        );
        let verdicts: Vec<&ImportVerdict> = report.imports.iter().map(|i| &i.verdict).collect();
        assert_eq!(verdicts[0], &ImportVerdict::Provided);
        assert!(matches!(verdicts[1], ImportVerdict::NotGranted { .. }));
        assert_eq!(
            verdicts[2],
            &ImportVerdict::Granted {
                grants: vec!["read:cache/*".into()]
            }
        );
        assert!(matches!(verdicts[3], ImportVerdict::NeverProvided { .. }));
        assert!(matches!(verdicts[4], ImportVerdict::NeverProvided { .. }));
        let missing: Vec<&str> = report.not_granted().map(|(i, _)| i).collect();
        assert_eq!(
            missing,
            [
                "wasi:http/outgoing-handler@0.2.3",
                "runway:platform/sql@0.1.0"
            ]
        );
        let least = report.least_policy();
        assert!(least.contains("outbound = "), "{least}");
        assert!(least.contains("sql = "), "{least}");
    }
}
