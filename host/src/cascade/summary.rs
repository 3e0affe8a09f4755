//! What `tierhost check` prints about a loaded cascade: each tier's plugin, digest, limits and
//! policies, or why it did not load.
use std::fmt::Write as _;
use std::path::Path;

use super::Cascade;

impl Cascade {
    /// A human-readable summary: one heading line, then per tier `ok` with its plugin, digest,
    /// limits and policy chain, or `FAIL` with the load error.
    pub fn summary(&self, source: &Path) -> String {
        let mut out = format!(
            "cascade \"{}\" ({}): {} tiers, budget {} ms\n",
            self.name(),
            source.display(),
            self.tiers().len(),
            self.budget().as_millis()
        );
        let _ = writeln!(
            out,
            "  config_digest {} (answers name it as served_by.config_digest)",
            self.config_digest()
        );
        for tier in self.tiers() {
            let name = &tier.config.name;
            // Writing to a String cannot fail.
            let _ = match &tier.sandbox {
                Ok(sandbox) => {
                    let info = sandbox.plugin().info();
                    let l = sandbox.limits();
                    writeln!(
                        out,
                        "  ok    {name:<14} {} {} ({}) sha256 {}  fuel {} mem {} MiB deadline {} ms min_confidence {}\n        {:<14} policies: {}",
                        info.name,
                        info.version,
                        info.kind,
                        &info.sha256[..16],
                        l.fuel,
                        l.max_memory_mib,
                        l.deadline_ms,
                        tier.config.min_confidence,
                        "",
                        tier.policies.names().join(" > ")
                    )
                    .and_then(|()| match &tier.config.features {
                        // Debug quoting: an allowlist name is shown exactly, look-alikes
                        // and all.
                        Some(names) => writeln!(out, "        {:<14} features: {names:?}", ""),
                        None => Ok(()),
                    })
                    .and_then(|()| match &tier.config.http {
                        Some(http) => writeln!(
                            out,
                            "        {:<14} http: {} (max {} requests per call, responses up to {} bytes)",
                            "",
                            http.rules()
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", "),
                            http.max_requests,
                            http.max_response_bytes
                        ),
                        None => Ok(()),
                    })
                }
                Err(e) => writeln!(out, "  FAIL  {name:<14} plugin {}: {e}", tier.config.plugin),
            };
        }
        #[cfg(feature = "escalation")]
        if let Some(escalation) = self.escalation() {
            let queue = escalation.queue();
            let backlog = match queue.store().stats() {
                Ok(s) => format!("{} pending, oldest {:.0} s", s.pending, s.oldest_pending_s),
                Err(e) => format!("unreadable: {e}"),
            };
            let _ = writeln!(
                out,
                "  escalation: abstentions{} -> {} ({backlog})",
                escalation
                    .config()
                    .tiers
                    .iter()
                    .map(|t| format!(", {t}"))
                    .collect::<String>(),
                queue.path().display()
            );
        }
        out
    }
}
