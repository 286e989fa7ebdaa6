//! `sealkit deks`: the DEK store behind compact envelopes.

use clap::Subcommand;
use sealkit::KeyUri;
use sealkit::core::dek_store::DekRecord;
use serde_json::json;

use crate::commands::{Ctx, iso8601};

/// `deks` subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum DeksCommand {
    /// List the stored DEKs: id, key and version of each wrap, scope, subject, budget, state.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Count the stored DEKs by key, version and state.
    Stats,
    /// Rewrap the stored DEKs wrapped under FROM to TO's primary version (default: FROM's
    /// own, after a rotation). No data row is written: the cost is one provider call or two
    /// per DEK.
    Rewrap {
        /// The key the DEKs are wrapped under now.
        #[arg(long)]
        from: String,
        /// The key to wrap them under (default: FROM).
        #[arg(long)]
        to: Option<String>,
        /// Keep the wraps under FROM beside the new ones (dual wrap, during a provider move):
        /// either provider opens the DEKs until `deks drop-wraps FROM`.
        #[arg(long)]
        keep_old: bool,
    },
    /// After a provider move's cut-over: remove the wraps under KEY from DEKs that have
    /// another wrap.
    DropWraps {
        /// The old key.
        key: String,
    },
}

fn record_json(r: &DekRecord) -> serde_json::Value {
    json!({
        "id": hex::encode(r.id),
        "key": r.key.as_str(),
        "wraps": r.wraps.iter().map(|w| json!({ "key": w.key.uri.as_str(), "version": w.key.version.as_str() })).collect::<Vec<_>>(),
        "scope": serde_json::from_str::<serde_json::Value>(&r.scope).unwrap_or(serde_json::Value::Null),
        "subject": r.subject,
        "algorithm": r.algorithm.as_str(),
        "created": iso8601(r.created_unix.max(0) as u64),
        "message_limit": r.message_limit,
        "reserved": r.reserved,
        "used": r.used,
        "state": r.state.as_str(),
    })
}

pub(crate) async fn run(ctx: &Ctx, command: DeksCommand) -> anyhow::Result<()> {
    let keyring = ctx.keyring().await?;
    let store = keyring.dek_store().cloned().ok_or_else(|| {
        sealkit::Error::misconfigured(
            "no DEK store: set [deks] store (or SEALKIT_DEK_STORE) to the application's database",
        )
    })?;
    match command {
        DeksCommand::List { limit } => {
            let records = store.list(None, limit).await?;
            let items: Vec<_> = records.iter().map(record_json).collect();
            if ctx.json {
                println!("{}", json!({ "deks": items }));
            } else {
                for r in &records {
                    let wraps: Vec<String> = r
                        .wraps
                        .iter()
                        .map(|w| format!("{}#v{}", w.key.uri, w.key.version))
                        .collect();
                    println!(
                        "{}  {:<9} used {:>8}, reserved {:>8} of {:<8} {}  {}{}",
                        hex::encode(r.id),
                        r.state.as_str(),
                        r.used,
                        r.reserved,
                        r.message_limit,
                        if wraps.is_empty() {
                            "(no wraps)".to_string()
                        } else {
                            wraps.join(" + ")
                        },
                        r.scope,
                        r.subject
                            .as_deref()
                            .map(|s| format!("  subject {s}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        DeksCommand::Stats => {
            let counts = keyring.dek_stats().await?;
            let items: Vec<_> = counts
                .iter()
                .map(|c| json!({ "key": c.key, "version": c.version, "state": c.state.as_str(), "count": c.count }))
                .collect();
            if ctx.json {
                println!("{}", json!({ "counts": items }));
            } else if counts.is_empty() {
                println!("no DEKs stored");
            } else {
                for c in &counts {
                    println!(
                        "{:<40} v{:<6} {:<9} {:>8}",
                        c.key,
                        c.version,
                        c.state.as_str(),
                        c.count
                    );
                }
            }
        }
        DeksCommand::Rewrap { from, to, keep_old } => {
            let from = KeyUri::parse(&from)?;
            let to = to
                .as_deref()
                .map(KeyUri::parse)
                .transpose()?
                .unwrap_or_else(|| from.clone());
            let calls = keyring.stats().kms_calls;
            let report = keyring.rewrap_deks(&from, &to, keep_old).await?;
            let calls = keyring.stats().kms_calls - calls;
            if ctx.json {
                println!(
                    "{}",
                    json!({ "deks": report.deks, "rewrapped": report.rewrapped, "current": report.current, "conflicts": report.conflicts, "kms_calls": calls })
                );
            } else {
                println!(
                    "{} DEKs under {from}: {} rewrapped to {to}, {} already current, {} changed meanwhile (run again); {calls} KMS calls, no data row written",
                    report.deks, report.rewrapped, report.current, report.conflicts
                );
            }
        }
        DeksCommand::DropWraps { key } => {
            let dropped = keyring.drop_dek_wraps(&KeyUri::parse(&key)?).await?;
            if ctx.json {
                println!("{}", json!({ "key": key, "dropped": dropped }));
            } else {
                println!("removed the wraps under {key} from {dropped} DEKs");
            }
        }
    }
    keyring.flush_audit()?;
    Ok(())
}
