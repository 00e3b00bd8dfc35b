//! `validate --check-remote`: proves the sink reachable and writable by writing, reading
//! back and deleting one probe object through the real sink plugin.

use std::time::Instant;

use crate::pipeline::{Context, RunError};
use crate::repository::{get_bytes, put_bytes};

/// Where probe objects go: beside the repository's layout, never inside it.
const PROBE_PREFIX: &str = "runner-probe";

/// Checks the sink end to end; returns what was checked, for the report.
pub async fn check_sink(ctx: &Context) -> Result<serde_json::Value, RunError> {
    let spec = ctx.sink_spec()?;
    let storage = spec
        .grants
        .storage
        .as_ref()
        .map(|s| s.description().to_string())
        .unwrap_or_else(|| spec.label.clone());
    let fail = |step: &str, e: &dyn std::fmt::Display| {
        RunError::Failed(format!("{}: {storage}: {step} failed: {e}", spec.label))
    };
    let started = Instant::now();
    let mut sink = ctx.start_sink(&spec).await?;
    sink.check()
        .await
        .map_err(|e| fail("reaching the storage", &e))?;
    let key = format!("{PROBE_PREFIX}/{}", hex::encode(rand::random::<[u8; 8]>()));
    let payload = rand::random::<[u8; 32]>();
    put_bytes(&mut sink, &key, &payload, true)
        .await
        .map_err(|e| fail("writing a probe object", &e))?;
    let read = get_bytes(&mut sink, &key)
        .await
        .map_err(|e| fail("reading the probe object back", &e))?;
    let deleted = sink.delete(&key).await;
    if read.as_deref() != Some(&payload[..]) {
        return Err(fail(
            "reading the probe object back",
            &"its content differs from what was written",
        ));
    }
    deleted.map_err(|e| fail("deleting the probe object", &e))?;
    let millis = started.elapsed().as_millis() as u64;
    Ok(serde_json::json!({
        "storage": storage,
        "summary": format!("write, read back and delete of {key} in {millis} ms"),
        "millis": millis,
    }))
}
